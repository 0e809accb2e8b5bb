"""docs/guides/restore-laptop.md, followed step by step on two machines whose homes differ.

Machine A (``.../x/home-a``) sets up keyvault with its store on "removable media"
(a directory outside its home), backs up and splits its recovery identity. Then
A is lost: its whole directory is deleted. Machine B (``.../y/other-b``, another
path) gets only what the guide says to keep, follows the guide's steps as
written, and ``restore --all`` brings back every key byte for byte. keyvault runs
as a subprocess (``python -m keyvault``) with an environment holding nothing but
PATH, HOME and LANG: every other path comes from the config and the defaults.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from keyvault.trust.sample import write_sample_trust_dir

REPO = Path(__file__).resolve().parents[2]
GUIDE = REPO / "docs" / "guides" / "restore-laptop.md"
IDENTITY = "~/.config/keyvault/recovery-identity.txt"
CONFIG = "~/.config/keyvault/config.toml"


@dataclass
class Machine:
    home: Path

    def run(self, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.home),
            "LANG": "C.UTF-8",
            "PYTHONPATH": str(REPO),
        }
        return subprocess.run(
            [sys.executable, "-m", "keyvault", *args],
            env=env,
            cwd=self.home,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    def ok(self, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        proc = self.run(*args, stdin=stdin)
        assert proc.returncode == 0, (
            f"keyvault {' '.join(args)}: {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
        )
        return proc

    def path(self, tilde: str) -> Path:
        return self.home / tilde.removeprefix("~/")

    def keys(self) -> dict[str, bytes]:
        private = self.home / ".docker" / "trust" / "private"
        return {p.name: p.read_bytes() for p in private.iterdir()} if private.is_dir() else {}


def guide() -> str:
    return GUIDE.read_text()


def guide_command(prefix: str) -> str:
    """The one line of the guide's text that starts with ``prefix`` (inside backticks)."""
    text = " ".join(guide().split())
    found = set(re.findall(rf"`({re.escape(prefix)}[^`]*)`", text))
    assert len(found) == 1, f"the guide should show one {prefix!r} command, shows {found}"
    return str(found.pop())


@dataclass
class Kept:
    """What the guide says to keep off the laptop, and nothing more."""

    config: bytes
    identity: bytes
    share_pages: list[str]
    recipient: str
    store: Path


@pytest.fixture
def lost_laptop(tmp_path: Path) -> tuple[Kept, dict[str, bytes], Path]:
    """Machine A's life until it is lost: what was kept, its key files, and B's home."""
    a = Machine(tmp_path / "x" / "home-a")
    a.home.mkdir(parents=True)
    removable = tmp_path / "removable"
    removable.mkdir()
    store = removable / "keyvault-store"
    write_sample_trust_dir(
        a.home / ".docker" / "trust",
        dict.fromkeys(("root", "targets", "snapshot"), "laptop-passphrase"),
    )
    keys = a.keys()
    assert len(keys) == 5

    # "Keep the store off the laptop ... (keyvault --store file:///path/elsewhere init)"
    assert "keyvault --store file:///path/elsewhere init" in guide()
    init = json.loads(a.ok("--store", store.as_uri(), "init", "--json").stdout)
    assert init["store"] == store.as_uri()
    backup = json.loads(a.ok("--json", "backup").stdout)
    assert {k["action"] for k in backup["keys"]} == {"created"}
    split = json.loads(
        a.ok(
            "--json",
            "recovery",
            "split",
            "--shares",
            "3",
            "--threshold",
            "2",
            "--out",
            str(removable / "shares"),
        ).stdout
    )
    # "Keep your config (~/.config/keyvault/config.toml ...)" and the identity, or its shares.
    assert "`~/.config/keyvault/ config.toml`" in guide() or CONFIG in guide()
    kept = Kept(
        config=a.path(CONFIG).read_bytes(),
        identity=a.path(IDENTITY).read_bytes(),
        share_pages=[Path(p).read_text() for p in split["pages"][:2]],
        recipient=split["recipient"],
        store=store,
    )
    shutil.rmtree(a.home)  # the laptop is gone; the removable disk is not
    shutil.rmtree(removable / "shares")  # the pages are on paper now
    return kept, keys, tmp_path / "y" / "other-b"


def _new_machine(home: Path, kept: Kept) -> Machine:
    """Steps 1-2: keyvault is installed; the config is put back where it was."""
    b = Machine(home)
    home.mkdir(parents=True)
    config = b.path(CONFIG)
    config.parent.mkdir(parents=True, mode=0o700)
    config.write_bytes(kept.config)
    config.chmod(0o600)
    return b


def _check_and_restore(b: Machine, keys: dict[str, bytes]) -> None:
    """Steps 3-4, the commands of the guide's code blocks, in order."""
    for command in (
        "keyvault doctor",
        "keyvault list --long",
        "keyvault restore --all --dry-run",
        "keyvault restore --all",
    ):
        assert re.search(rf"^\s*{re.escape(command)}(\s|$)", guide(), re.M), command
        b.ok(*command.split()[1:])
    assert b.keys() == keys  # byte for byte


def test_the_guide_lists_what_to_keep() -> None:
    section = guide().split("## What to keep", 1)[1].split("\n## ", 1)[0]
    items = re.findall(r"^\d+\. \*\*(.+?)\*\*", section, re.M)
    assert items == ["The store", "The config file", "The recovery identity, or its shares"]


def test_restore_with_the_identity_file_on_a_home_at_another_path(
    lost_laptop: tuple[Kept, dict[str, bytes], Path],
) -> None:
    kept, keys, home = lost_laptop
    b = _new_machine(home, kept)
    # "copy the identity file to the path the config names ... (by default
    # ~/.config/keyvault/recovery-identity.txt), mode 0600"
    assert f"by default `{IDENTITY}`" in " ".join(guide().split())
    identity = b.path(IDENTITY)
    identity.write_bytes(kept.identity)
    identity.chmod(0o600)
    _check_and_restore(b, keys)


def test_restore_from_shares_on_a_home_at_another_path(
    lost_laptop: tuple[Kept, dict[str, bytes], Path],
) -> None:
    kept, keys, home = lost_laptop
    b = _new_machine(home, kept)
    # "rebuild it from shares: keyvault recovery combine --out ~/.config/... --expect age1...
    # --trust-sealer sha256:..." with the recipient and the pin printed on every share page.
    command = guide_command("keyvault recovery combine")
    pins = {
        line.split()[-1]
        for page in kept.share_pages
        for line in page.splitlines()
        if "keyvault-trusted-sealer:" in line
    }
    assert len(pins) == 1
    assert f"  {kept.recipient}" in kept.share_pages[0]
    args = (
        command.replace("age1...", kept.recipient)
        .replace("sha256:...", pins.pop())
        .replace("~/", f"{b.home}/")
        .split()[1:]
    )
    words = [" ".join(re.findall(r"^\s*\d+\. (\S+)$", page, re.M)) for page in kept.share_pages]
    b.ok(*args, stdin="\n".join(words) + "\n")
    assert b.path(IDENTITY).stat().st_mode & 0o777 == 0o600
    _check_and_restore(b, keys)
