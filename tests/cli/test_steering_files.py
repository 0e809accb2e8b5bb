"""Files that steer keyvault are refused when someone else could have changed them.

Issue 17 item 9: a config.toml with mode 666 had a recipient added by another
user, and the next backup wrapped for it. The config, the policy, the secret
files (identities with their sealer pins, the sealing key, high-water marks)
must be owned by the user or root and not group/world-writable, and so must
every directory above them (a sticky directory such as /tmp aside): exit 4,
naming the file and the command that fixes it. 0600 and 0644 files of the
user's own still work.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pyrage
import pytest
from fixtures.host import NOBODY, needs_root_for_nobody, open_to_nobody, run_as_nobody

from cli.conftest import KV
from keyvault.config import load_config
from keyvault.ops.session import local_principal
from keyvault.trust.model import KeyFile
from keyvault.trust.sample import write_sample_trust_dir

PASS = "steer pass"
GUN = "example.com/team-a/app"


@pytest.fixture
def keys(kv: KV, home: Path) -> tuple[KeyFile, ...]:
    made = write_sample_trust_dir(
        home / ".docker" / "trust", {"root": PASS, "targets": PASS, "snapshot": PASS}, (GUN,)
    )
    run = kv("init")
    assert run.code == 0, run.err
    return made


@pytest.fixture
def config(home: Path, keys: tuple[KeyFile, ...]) -> Path:
    return home / ".config" / "keyvault" / "config.toml"


@pytest.fixture
def policy(config: Path, tmp_path: Path) -> Iterator[Path]:
    """A team policy with the local user as a member, named in the config."""
    me = local_principal().split("@")[0]
    path = tmp_path / "policy" / "policy.toml"
    path.parent.mkdir(mode=0o755)
    path.write_text(f'[teams.default]\nguns = ["example.com/*"]\nmembers = ["local:{me}"]\n')
    path.chmod(0o644)
    config.write_text(
        config.read_text().replace("[keyvault]\n", f'[keyvault]\npolicy = "{path}"\n')
    )
    yield path


def stored_keys(kv: KV) -> list[str]:
    run = kv("--json", "list")
    assert run.code == 0, run.err
    return [k["key_id"] for k in run.json()["keys"]]


def backs_up_every_key(kv: KV, keys: tuple[KeyFile, ...]) -> None:
    run = kv("backup")
    assert run.code == 0, run.err
    assert sorted(stored_keys(kv)) == sorted(k.key_id for k in keys)


def shared(path: Path) -> None:
    """Put ``path`` in a group other users are in (nogroup), as root can: group-write there
    lets them in. (A user's private group holds nobody else: see the next test.)"""
    if os.geteuid() == 0:
        os.chown(path, -1, NOBODY)


def test_group_write_in_the_users_private_group_is_fine(
    kv: KV, config: Path, keys: tuple[KeyFile, ...], tmp_path: Path
) -> None:
    """umask 002 on Debian, Ubuntu, Fedora: files 0664 and directories 0775 in the user's
    private group (named after the user, no other member), which lets no one else write."""
    import grp
    import pwd

    me = pwd.getpwuid(os.geteuid())
    group = grp.getgrgid(me.pw_gid)
    if group.gr_name != me.pw_name or set(group.gr_mem) - {me.pw_name}:
        pytest.fail(
            f"this test needs a user private group; {me.pw_name}'s primary group is {group.gr_name}"
        )
    shared_dir = tmp_path / "umask-002"
    shared_dir.mkdir()
    moved = shared_dir / "config.toml"
    moved.write_text(config.read_text())
    os.chown(moved, -1, me.pw_gid)
    os.chown(shared_dir, -1, me.pw_gid)
    moved.chmod(0o664)
    shared_dir.chmod(0o775)
    run = kv("--config", moved, "backup")
    assert run.code == 0, run.err
    listed = kv("--config", moved, "--json", "list")
    assert sorted(k["key_id"] for k in listed.json()["keys"]) == sorted(k.key_id for k in keys)


def refused(run_code: int, err: str, path: Path, fix: str) -> bool:
    return run_code == 4 and str(path) in err and fix in err


@pytest.mark.parametrize(
    ("mode", "fixed"),
    [
        (0o666, 0o644),
        pytest.param(0o620, 0o600, marks=needs_root_for_nobody),  # a shared group: see shared()
        (0o602, 0o644),
    ],
    ids=["666-then-644", "620-then-600", "602-then-644"],
)
def test_a_config_others_can_write_is_refused_before_any_backup(
    kv: KV, config: Path, keys: tuple[KeyFile, ...], mode: int, fixed: int
) -> None:
    """The finding: another user adds a recipient to a writable config; no backup wraps for
    it. Once the owner has checked the file and fixed its mode, backups work again."""
    original = config.read_text()
    stranger = pyrage.x25519.Identity.generate().to_public()
    config.write_text(original.replace('wrappers = ["', f'wrappers = ["{stranger}", "'))
    shared(config)
    config.chmod(mode)
    run = kv("backup")
    assert refused(run.code, run.err, config, f"chmod go-w {config}"), run.err
    assert "config file" in run.err and f"{mode:04o}" in run.err
    config.write_text(original)  # the owner checks it and removes the stranger...
    config.chmod(fixed)  # ...and runs what the hint says: the user's own 0600/0644 file
    assert stored_keys(kv) == []  # nothing was wrapped, for the stranger or anyone
    backs_up_every_key(kv, keys)


@needs_root_for_nobody
def test_a_config_owned_by_another_user_is_refused(kv: KV, config: Path) -> None:
    os.chown(config, NOBODY, NOBODY)
    config.chmod(0o644)
    run = kv("backup")
    assert refused(run.code, run.err, config, f"chown root {config}"), run.err
    assert "owned by nobody" in run.err


def test_a_config_in_a_directory_others_can_write_is_refused(
    kv: KV, config: Path, tmp_path: Path
) -> None:
    """Whoever can write the directory can swap the file, whatever its own mode."""
    shared = tmp_path / "shared"
    shared.mkdir()
    moved = shared / "config.toml"
    config.rename(moved)
    moved.chmod(0o600)
    shared.chmod(0o777)
    run = kv("--config", moved, "backup")
    assert refused(run.code, run.err, moved, f"chmod go-w {shared}"), run.err
    shared.chmod(0o1777)  # sticky, like /tmp: others cannot replace what they do not own
    run = kv("--config", moved, "backup")
    assert run.code == 0, run.err


@needs_root_for_nobody
def test_a_directory_owned_by_another_user_is_refused(kv: KV, config: Path, tmp_path: Path) -> None:
    theirs = tmp_path / "theirs"
    theirs.mkdir(mode=0o755)
    os.chown(theirs, NOBODY, NOBODY)
    moved = theirs / "config.toml"
    config.rename(moved)
    run = kv("--config", moved, "list")
    assert run.code == 4 and f"in {theirs}, owned by nobody" in run.err, run.err


@pytest.mark.parametrize(
    "mode", [0o666, pytest.param(0o620, marks=needs_root_for_nobody)], ids=["666", "620"]
)
def test_a_policy_others_can_write_is_refused(
    kv: KV, policy: Path, keys: tuple[KeyFile, ...], mode: int
) -> None:
    shared(policy)
    policy.chmod(mode)
    run = kv("backup")
    assert refused(run.code, run.err, policy, f"chmod go-w {policy}"), run.err
    assert "policy file" in run.err
    validate = kv("policy", "validate", policy)
    assert refused(validate.code, validate.err, policy, f"chmod go-w {policy}")
    policy.chmod(0o644)  # the user's own, readable by all: fine
    assert stored_keys(kv) == []
    backs_up_every_key(kv, keys)


@needs_root_for_nobody
def test_a_policy_owned_by_another_user_is_refused(kv: KV, policy: Path) -> None:
    os.chown(policy, NOBODY, NOBODY)
    run = kv("backup")
    assert refused(run.code, run.err, policy, f"chown root {policy}"), run.err


@needs_root_for_nobody
def test_as_another_user_a_root_owned_config_is_fine_and_theirs_is_not(
    home: Path, tmp_path: Path, shared_dir: Path
) -> None:
    """Run as nobody: root's 0644 file is accepted (root can do anything anyway), a file
    of yet another user is not."""
    mine = shared_dir / "root-owned.toml"
    mine.write_text('[keyvault]\nteam = "a"\n')
    mine.chmod(0o644)
    other = shared_dir / "other-owned.toml"
    other.write_text('[keyvault]\nteam = "b"\n')
    other.chmod(0o644)
    os.chown(other, NOBODY + 1, NOBODY + 1)
    env = {"HOME": str(home)}
    with open_to_nobody(tmp_path):
        ok = run_as_nobody(lambda: load_config(mine, env).team)
        bad = run_as_nobody(lambda: load_config(other, env).team)
    assert ok == {"result": "a"}, ok
    assert bad["error"] == "AccessDeniedError" and f"uid {NOBODY + 1}" in bad["message"], bad


@needs_root_for_nobody
def test_an_identity_owned_by_another_user_is_refused(
    kv: KV, home: Path, keys: tuple[KeyFile, ...], tmp_path: Path
) -> None:
    """The identity file carries sealer pins and opens every backup."""
    assert kv("backup").code == 0
    identity = home / ".config" / "keyvault" / "recovery-identity.txt"
    assert stat.S_IMODE(identity.stat().st_mode) == 0o600
    os.chown(identity, NOBODY, NOBODY)
    run = kv("--trust-dir", tmp_path / "restored", "restore", "--all")
    assert refused(run.code, run.err, identity, f"chown root {identity}"), run.err
    assert not (tmp_path / "restored").exists()


def test_high_water_marks_in_a_directory_others_can_write_are_refused(
    kv: KV, home: Path, keys: tuple[KeyFile, ...], tmp_path: Path
) -> None:
    """Whoever can remove the marks can make a rolled-back version pass."""
    assert kv("backup").code == 0
    marks = home / ".local" / "state" / "keyvault" / "highwater"
    assert list(marks.glob("*.json"))
    marks.chmod(0o777)
    run = kv("--trust-dir", tmp_path / "restored", "restore", "--all")
    assert run.code == 4 and "high-water file" in run.err, run.err
    assert f"chmod go-w {marks}" in run.err
    assert not (tmp_path / "restored").exists()
