"""The core CLI on the embedded default: init, scan, backup, list, restore, verify."""

from __future__ import annotations

import json
import re
import shutil
import stat
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fixtures.host import tree

from cli.conftest import KV
from keyvault.trust.model import KeyFile
from keyvault.trust.sample import write_sample_trust_dir

REPO = Path(__file__).resolve().parents[2]

PASS = "correct horse"
PASSPHRASES = {"root": PASS, "targets": PASS, "snapshot": PASS}
GUNS = ("example.com/team-a/app", "example.com/team-a/web")


@pytest.fixture
def trust(home: Path) -> tuple[Path, tuple[KeyFile, ...]]:
    path = home / ".docker" / "trust"
    keys = write_sample_trust_dir(path, PASSPHRASES, GUNS)
    return path, keys


def store_dir(home: Path) -> Path:
    return home / ".local" / "share" / "keyvault" / "store"


def test_init_writes_private_config_identity_and_store(kv: KV, home: Path) -> None:
    run = kv("--json", "init")
    assert run.code == 0, run.err
    doc = run.json()
    config = Path(doc["config_file"])
    identity = Path(doc["identity_file"])
    assert doc["identity_created"] and doc["wrappers"][0].startswith("age1")
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    assert stat.S_IMODE(identity.stat().st_mode) == 0o600
    assert stat.S_IMODE(store_dir(home).stat().st_mode) == 0o700
    assert "AGE-SECRET-KEY" not in run.out + run.err
    again = kv("--json", "init")
    assert again.code == 0 and not again.json()["config_created"]
    assert again.json()["wrappers"] == doc["wrappers"]


def test_init_writes_no_path_of_this_home_and_keeps_an_older_absolute_config(
    kv: KV, home: Path, ready: tuple[Path, tuple[KeyFile, ...]]
) -> None:
    """The defaults are left out of the config (they resolve under whichever HOME reads
    it); a config an older init wrote with the same values as absolute paths still
    works, and init again keeps it rather than calling it a conflict."""
    config = home / ".config" / "keyvault" / "config.toml"
    text = config.read_text()
    assert str(home) not in text and "store =" not in text and "identity_file =" not in text
    identity = home / ".config" / "keyvault" / "recovery-identity.txt"
    old = (
        text.replace("wrappers =", f"store = {json.dumps(store_dir(home).as_uri())}\nwrappers =")
        + f"identity_file = {json.dumps(str(identity))}\n"
    )
    config.write_text(old)
    again = kv("--json", "init")
    assert again.code == 0, again.err
    assert not again.json()["config_created"] and config.read_text() == old
    target = home / "restored"
    assert kv("--trust-dir", target, "restore", "--all").code == 0
    assert len(list((target / "private").iterdir())) == len(ready[1])


def test_a_failed_init_creates_nothing(kv: KV, home: Path) -> None:
    """A config with other settings is a conflict (exit 7) found before the store, the
    sealing key or the identity is made: nothing is left for the next init to trip on."""
    config = home / ".config" / "keyvault" / "config.toml"
    config.parent.mkdir(parents=True, mode=0o700)
    config.write_text('[keyvault]\nteam = "other"\n')
    config.chmod(0o600)
    before = tree(home)
    run = kv("init")
    assert run.code == 7, run.err
    assert "nothing was created" in run.err
    assert tree(home) == before
    assert not store_dir(home).exists()


def test_init_on_a_new_machine_never_makes_an_empty_store_for_a_copied_config(
    kv: KV, home: Path, tmp_path: Path
) -> None:
    """The lost laptop: its config and identity are copied to a new HOME, but the store
    they name lived on the lost disk. init says so and makes nothing; the restore that
    would have shown an empty table is never reached."""
    assert kv("init").code == 0
    old = home / ".config" / "keyvault"
    laptop = tmp_path / "new-laptop"
    (laptop / ".config").mkdir(parents=True, mode=0o700)
    shutil.copytree(old, laptop / ".config" / "keyvault")
    gone = store_dir(home)
    shutil.rmtree(gone)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HOME", str(laptop))
        mp.setenv("XDG_CONFIG_HOME", str(laptop / ".config"))
        mp.setenv("XDG_DATA_HOME", str(laptop / ".local" / "share"))
        mp.setenv("XDG_STATE_HOME", str(laptop / ".local" / "state"))
        run = kv("init")
        assert run.code == 3, run.err
        assert "does not exist here" in run.err and "nothing was created" in run.err
        assert "point 'store'" in run.err
        assert not gone.exists() and not (laptop / ".local").exists()
        # Making a new store is a choice the user states.
        fresh = tmp_path / "new-store"
        run = kv("--json", "--store", fresh.as_uri(), "--config", laptop / "fresh.toml", "init")
        assert run.code == 0, run.err
        assert (fresh / "keyvault-store.json").is_file()


def test_init_says_when_the_store_is_on_this_machines_disk(kv: KV, home: Path) -> None:
    """The embedded default keeps the store beside the keys: init says it is lost with the
    machine and where else to keep it."""
    run = kv("init")
    assert run.code == 0, run.err
    assert f"The store {store_dir(home)} is on the same disk as your home" in run.err
    assert "keyvault --store file:///path/elsewhere init" in run.err


def test_init_says_nothing_of_a_store_on_another_disk(kv: KV, home: Path) -> None:
    """A store on another file system (here RAM-backed /dev/shm, as a USB disk would be)."""
    elsewhere = Path(tempfile.mkdtemp(prefix="keyvault-test-store-", dir="/dev/shm"))
    try:
        assert elsewhere.stat().st_dev != home.stat().st_dev
        run = kv("--store", (elsewhere / "store").as_uri(), "init")
        assert run.code == 0, run.err
        assert "same disk" not in run.err
    finally:
        shutil.rmtree(elsewhere)


def test_init_human_output_warns_to_move_identity_offline(kv: KV) -> None:
    run = kv("init")
    assert run.code == 0
    assert "offline" in run.err and "recovery identity" in run.err


def test_scan_lists_every_sample_key(kv: KV, trust: tuple[Path, tuple[KeyFile, ...]]) -> None:
    _, keys = trust
    run = kv("--json", "scan")
    assert run.code == 0, run.err
    found = {(k["key_id"], k["role"], k["gun"]) for k in run.json()["keys"]}
    assert found == {(k.key_id, k.role, k.gun) for k in keys}


def test_backup_is_idempotent(kv: KV, ready: tuple[Path, tuple[KeyFile, ...]], home: Path) -> None:
    _, keys = ready
    before = tree(store_dir(home))
    run = kv("--json", "backup")
    assert run.code == 0
    assert {k["action"] for k in run.json()["keys"]} == {"unchanged"}
    assert tree(store_dir(home)) == before
    assert len(run.json()["keys"]) == len(keys)


def test_changed_key_gets_a_new_version_and_the_old_one_stays(
    kv: KV, ready: tuple[Path, tuple[KeyFile, ...]]
) -> None:
    trust_dir, keys = ready
    target = next(k for k in keys if k.role == "targets")
    path = trust_dir / "private" / target.relpath
    path.write_bytes(path.read_bytes() + b"\n")  # as after 'notary key passwd': new bytes
    run = kv("--json", "backup", "--key-id", target.key_id)
    assert run.code == 0, run.err
    (only,) = run.json()["keys"]
    assert only["action"] == "updated" and only["version"] == "0000000002"


def test_list_shows_what_was_backed_up(kv: KV, ready: tuple[Path, tuple[KeyFile, ...]]) -> None:
    _, keys = ready
    run = kv("--json", "list", "--long")
    assert run.code == 0, run.err
    listed = {(k["key_id"], k["role"], k["gun"]) for k in run.json()["keys"]}
    assert listed == {(k.key_id, k.role, k.gun) for k in keys}
    assert all(k["wrappers"][0].startswith("age1") for k in run.json()["keys"])
    one = kv("--json", "list", "--gun", GUNS[0])
    assert {k["gun"] for k in one.json()["keys"]} == {GUNS[0]}


def test_restore_all_into_a_fresh_dir_is_byte_identical(
    kv: KV, ready: tuple[Path, tuple[KeyFile, ...]], tmp_path: Path
) -> None:
    trust_dir, keys = ready
    fresh = tmp_path / "laptop" / "trust"
    run = kv("--trust-dir", fresh, "--json", "restore", "--all")
    assert run.code == 0, run.err
    assert {k["action"] for k in run.json()["keys"]} == {"create"}
    for key in keys:
        restored = fresh / "private" / key.relpath
        assert restored.read_bytes() == (trust_dir / "private" / key.relpath).read_bytes()
        assert stat.S_IMODE(restored.stat().st_mode) == 0o600
    assert stat.S_IMODE((fresh / "private").stat().st_mode) == 0o700
    again = kv("--trust-dir", fresh, "--json", "restore", "--all")
    assert {k["action"] for k in again.json()["keys"]} == {"unchanged"}


def test_restore_one_gun_and_role(
    kv: KV, ready: tuple[Path, tuple[KeyFile, ...]], tmp_path: Path
) -> None:
    _, keys = ready
    fresh = tmp_path / "ci"
    run = kv("--trust-dir", fresh, "--json", "restore", "--gun", GUNS[0], "--role", "targets")
    assert run.code == 0, run.err
    expected = [k for k in keys if k.gun == GUNS[0] and k.role == "targets"]
    assert sorted(p.name for p in (fresh / "private").iterdir()) == [expected[0].relpath]


def test_restore_needs_a_selection(
    kv: KV, ready: tuple[Path, tuple[KeyFile, ...]], tmp_path: Path
) -> None:
    run = kv("--trust-dir", tmp_path / "x", "restore")
    assert run.code == 2 and "say which keys" in run.err
    assert not (tmp_path / "x").exists()


@pytest.mark.proves("B28")
def test_restore_conflict_and_force(
    kv: KV, ready: tuple[Path, tuple[KeyFile, ...]], tmp_path: Path
) -> None:
    """B28: an existing file with different bytes is never overwritten without --force."""
    _, keys = ready
    fresh = tmp_path / "t"
    root = next(k for k in keys if k.role == "root")
    (fresh / "private").mkdir(parents=True)
    victim = fresh / "private" / root.relpath
    victim.write_bytes(b"local edit\n")
    before = tree(fresh)
    run = kv("--trust-dir", fresh, "restore", "--all")
    assert run.code == 7
    assert "already exist with different bytes" in run.err and "--force" in run.err
    after = tree(fresh)
    after.pop(".keyvault.lock", None)
    assert after == before
    dry = kv("--trust-dir", fresh, "--json", "restore", "--all", "--dry-run")
    assert dry.code == 7
    assert {k["action"] for k in dry.json()["keys"]} == {"conflict", "create"}
    started = datetime.now(UTC).replace(microsecond=0)
    forced = kv("--trust-dir", fresh, "--json", "restore", "--all", "--force")
    finished = datetime.now(UTC)
    assert forced.code == 0, forced.err
    (aside,) = forced.json()["kept_aside"]
    assert (fresh / "private" / aside).read_bytes() == b"local edit\n"
    assert victim.read_bytes() == root.data
    # The name the README promises: <name>.keyvault-old-<time>-<random>, time in UTC.
    assert "`<name>.keyvault-old-<time>-<random>`" in (REPO / "README.md").read_text()
    name = re.fullmatch(
        rf"{re.escape(root.relpath)}\.keyvault-old-(\d{{8}}T\d{{6}}Z)-"
        r"[0-9a-f]{8}",
        Path(aside).name,
    )
    assert name, aside
    kept_at = datetime.strptime(name.group(1), "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    assert started <= kept_at <= finished


def test_dry_run_writes_nothing(
    kv: KV, ready: tuple[Path, tuple[KeyFile, ...]], tmp_path: Path
) -> None:
    run = kv("--trust-dir", tmp_path / "t", "--json", "restore", "--all", "--dry-run")
    assert run.code == 0 and run.json()["dry_run"]
    assert not (tmp_path / "t").exists()


def test_verify_reports_ok_then_drift(kv: KV, ready: tuple[Path, tuple[KeyFile, ...]]) -> None:
    trust_dir, keys = ready
    run = kv("--json", "verify", "--all")
    assert run.code == 0, run.err
    assert {k["status"] for k in run.json()["keys"]} == {"ok"}
    changed = keys[0]
    (trust_dir / "private" / changed.relpath).write_bytes(changed.data + b"\n")
    drift = kv("--json", "verify", "--all")
    assert drift.code == 5
    statuses = {k["key_id"]: k["status"] for k in drift.json()["keys"]}
    assert statuses[changed.key_id] == "differs"


def test_verify_deep_checks_key_ids_with_env_passphrases(
    kv: KV, ready: tuple[Path, tuple[KeyFile, ...]], monkeypatch: pytest.MonkeyPatch
) -> None:
    for var in (
        "NOTARY_ROOT_PASSPHRASE",
        "NOTARY_TARGETS_PASSPHRASE",
        "NOTARY_SNAPSHOT_PASSPHRASE",
    ):
        monkeypatch.setenv(var, PASS)
    run = kv("--json", "verify", "--all", "--deep")
    assert run.code == 0, run.err
    assert {k["deep"] for k in run.json()["keys"]} == {"key ID verified"}
    assert PASS not in run.out + run.err


@pytest.mark.proves("B14")
def test_verify_deep_wrong_passphrase_is_access_denied(
    kv: KV, ready: tuple[Path, tuple[KeyFile, ...]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """B14."""
    for var in (
        "NOTARY_ROOT_PASSPHRASE",
        "NOTARY_TARGETS_PASSPHRASE",
        "NOTARY_SNAPSHOT_PASSPHRASE",
    ):
        monkeypatch.setenv(var, "wrong-guess")
    run = kv("verify", "--all", "--deep")
    assert run.code == 4
    assert "wrong passphrase" in run.err and "wrong-guess" not in run.out + run.err


def test_verify_deep_without_passphrases_checks_what_it_can_and_breaks_nothing(
    kv: KV, ready: tuple[Path, tuple[KeyFile, ...]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: every key was 'broken', exit 2. The backups open and match; only the key ID
    check needs the passphrase, and one variable given checks that role's keys."""
    for var in (
        "NOTARY_ROOT_PASSPHRASE",
        "NOTARY_TARGETS_PASSPHRASE",
        "NOTARY_SNAPSHOT_PASSPHRASE",
    ):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NOTARY_TARGETS_PASSPHRASE", PASS)
    run = kv("--json", "verify", "--all", "--deep")
    assert run.code == 0, run.err
    keys = run.json()["keys"]
    assert {k["status"] for k in keys} == {"ok"}
    for k in keys:
        if k["role"] == "targets":
            assert k["deep"] == "key ID verified", k
        else:
            assert k["deep"].startswith("not-checked: no passphrase"), k
            assert f"NOTARY_{k['role'].upper()}_PASSPHRASE" in k["deep"], k


@pytest.mark.proves("B15")
def test_verify_deep_empty_passphrase_variable(
    kv: KV, ready: tuple[Path, tuple[KeyFile, ...]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """B15: a passphrase variable set but empty."""
    monkeypatch.setenv("NOTARY_ROOT_PASSPHRASE", "")
    run = kv("--json", "verify", "--role", "root", "--deep")
    assert run.code == 2
    (only,) = run.json()["keys"]
    assert "NOTARY_ROOT_PASSPHRASE is set but empty" in only["error"]["message"]


def test_json_output_is_one_document(kv: KV, ready: tuple[Path, tuple[KeyFile, ...]]) -> None:
    for args in (["scan"], ["backup"], ["list"], ["verify", "--all"]):
        run = kv("--json", *args)
        json.loads(run.out)


def test_version_and_help(kv: KV) -> None:
    assert kv("--version").out.startswith("keyvault ")
    run = kv("--help")
    assert run.code == 0 and "Exit codes" in run.out and "integrity" in run.out


def test_versions_and_restoring_an_older_version(
    kv: KV, ready: tuple[Path, tuple[KeyFile, ...]], tmp_path: Path
) -> None:
    trust_dir, keys = ready
    target = next(k for k in keys if k.role == "targets")
    path = trust_dir / "private" / target.relpath
    path.write_bytes(target.data + b"\n")
    assert kv("backup", "--key-id", target.key_id).code == 0
    run = kv("--json", "versions", "--key-id", target.key_id)
    assert run.code == 0, run.err
    (entry,) = run.json()["keys"]
    assert [v["version"] for v in entry["versions"]] == ["0000000002", "0000000001"]
    assert [v["latest"] for v in entry["versions"]] == [True, False]
    old = tmp_path / "old"
    restored = kv(
        "--trust-dir", old, "restore", "--key-id", target.key_id, "--version", "0000000001"
    )
    assert restored.code == 0, restored.err
    assert (old / "private" / target.relpath).read_bytes() == target.data
    ambiguous = kv("--trust-dir", old, "restore", "--all", "--version", "0000000001")
    assert ambiguous.code == 2 and "exactly one key" in ambiguous.err
    assert kv("versions").code == 2


def test_restore_version_takes_the_number_versions_shows(
    kv: KV, ready: tuple[Path, tuple[KeyFile, ...]], tmp_path: Path
) -> None:
    """``--version 3`` is the key's third version (its NUMBER), as the laptop guide says;
    the store's 10-digit ID still works, and a number no version has is exit 3."""
    trust_dir, keys = ready
    target = next(k for k in keys if k.role == "targets")
    path = trust_dir / "private" / target.relpath
    contents = [target.data + b"\n" * n for n in range(4)]  # versions 1 to 4
    for data in contents[1:]:
        path.write_bytes(data)
        assert kv("backup", "--key-id", target.key_id).code == 0
    listed = kv("versions", "--key-id", target.key_id[:6])
    assert "NUMBER is a version's place in the key's signed chain" in listed.out
    restored = kv("--json", "restore", "--key-id", target.key_id[:6], "--version", "3", "--force")
    assert restored.code == 0, restored.err
    assert path.read_bytes() == contents[2]
    assert restored.json()["keys"][0]["version"] == "0000000003"
    fresh = tmp_path / "fresh"
    by_id = kv(
        "--trust-dir", fresh, "restore", "--key-id", target.key_id, "--version", "0000000002"
    )
    assert by_id.code == 0, by_id.err
    assert (fresh / "private" / target.relpath).read_bytes() == contents[1]
    missing = kv(
        "--trust-dir", tmp_path / "none", "restore", "--key-id", target.key_id, "--version", "9"
    )
    assert missing.code == 3
    assert "no version '9' (its version numbers: 1, 2, 3, 4)" in missing.err
    assert not (tmp_path / "none").exists()
    assert "NUMBER in 'keyvault versions'" in " ".join(kv("restore", "--help").out.split())


def test_init_writes_the_config_file_it_is_given(kv: KV, tmp_path: Path) -> None:
    target = tmp_path / "etc" / "keyvault.toml"
    run = kv("--config", target, "--json", "init")
    assert run.code == 0, run.err
    assert Path(run.json()["config_file"]) == target and target.exists()
    assert kv("--config", target, "--json", "list").code == 0
    assert kv("--config", tmp_path / "other.toml", "list").code == 3


@pytest.mark.parametrize("command", [("restore", "--all"), ("drill", "--all", "--no-metadata")])
def test_restore_or_drill_of_a_store_with_nothing_for_the_team_is_not_found(
    kv: KV, trust: tuple[Path, tuple[KeyFile, ...]], tmp_path: Path, command: tuple[str, ...]
) -> None:
    """An empty store (a new machine's fresh one, or the wrong team) restores nothing: that
    is exit 3 with the store and team named, never an empty table and exit 0."""
    assert kv("init").code == 0
    target = tmp_path / "fresh"
    run = kv("--trust-dir", target, *command)
    assert run.code == 3, (run.code, run.err)
    assert "holds no keys for team" in run.err and "keyvault doctor" in run.err
    assert not target.exists()


def test_policy_whoami_needs_no_policy_file_and_says_when_in_no_team(
    kv: KV, home: Path, tmp_path: Path
) -> None:
    """Before: exit 2 ("no policy file") for a question any user may ask."""
    assert kv("init").code == 0
    run = kv("--json", "policy", "whoami")
    assert run.code == 0, run.err
    doc = run.json()
    assert doc["principal"].startswith("local:") and doc["teams"] == {}
    assert doc["policy"] is None
    text = kv("policy", "whoami")
    assert text.code == 0 and "no policy file" in text.out
    policy = tmp_path / "policy.toml"
    policy.write_text('[teams.others]\nguns = ["example.com/*"]\nmembers = ["local:nobody-here"]\n')
    policy.chmod(0o600)
    text = kv("policy", "whoami", policy)
    assert text.code == 0, text.err
    assert f"not in any team of {policy}" in text.out


def test_backup_with_a_wrapper_the_backups_lack_says_it_cannot_restore_them(
    kv: KV, trust: tuple[Path, tuple[KeyFile, ...]]
) -> None:
    """Before: 'unchanged', exit 0, and the user believed the new wrapper could restore."""
    import pyrage

    init = kv("--json", "init")
    assert init.code == 0, init.err
    (mine,) = init.json()["wrappers"]
    assert kv("backup").code == 0
    other = str(pyrage.x25519.Identity.generate().to_public())
    run = kv("--json", "--wrapper", mine, "--wrapper", other, "backup")
    assert run.code == 0, run.err
    for outcome in run.json()["keys"]:
        assert outcome["action"] == "unchanged", outcome
        assert f"not wrapped for {other}" in outcome["warning"], outcome
        assert f"keyvault rewrap --all --add {other}" in outcome["warning"], outcome
    same = kv("--json", "backup")
    assert all(o["warning"] is None for o in same.json()["keys"]), same.out


def test_backup_and_restore_end_with_a_one_line_tally(
    kv: KV, ready: tuple[Path, tuple[KeyFile, ...]], tmp_path: Path
) -> None:
    _, keys = ready
    run = kv("backup")
    assert run.code == 0, run.err
    assert run.out.rstrip().splitlines()[-1] == f"{len(keys)} keys: {len(keys)} unchanged"
    run = kv("--trust-dir", tmp_path / "fresh", "restore", "--all")
    assert run.code == 0, run.err
    assert run.out.rstrip().splitlines()[-1] == f"{len(keys)} keys: {len(keys)} create"
    assert not (tmp_path / "fresh" / ".keyvault.lock").exists()  # nothing of ours left
