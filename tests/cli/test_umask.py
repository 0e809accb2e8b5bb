"""Under ``umask 000`` every directory keyvault makes, parents included, is 0700.

``Path.mkdir(mode=0o700, parents=True)`` made the parents 0777 less the umask,
so a restore into a new ``a/b/trust`` left ``a`` and ``b`` world-writable. The
CLI runs in a child process with the umask cleared, then every directory below
the test's own is checked.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from keyvault.trust.sample import write_sample_trust_dir

pytestmark = pytest.mark.proves("T8")

PASS = "correct horse"
GUN = "example.com/umask/app"
CHILD = """
import os, sys
os.umask(0)
from keyvault.cli.app import main
for args in ([\"init\"], [\"backup\"], [\"--trust-dir\", sys.argv[1], \"restore\", \"--all\"]):
    code = main(args)
    if code:
        raise SystemExit(f"{args}: exit {code}")
"""


def test_every_directory_made_under_umask_000_is_private(tmp_path: Path) -> None:
    home = tmp_path / "home"
    trust = home / ".docker" / "trust"
    write_sample_trust_dir(trust, dict.fromkeys(("root", "targets", "snapshot"), PASS), (GUN,))
    made_before = {p for p in tmp_path.rglob("*") if p.is_dir()}
    fresh = tmp_path / "new" / "parents" / "trust"
    env = {
        "PATH": os.environ["PATH"],
        "PYTHONPATH": os.environ.get("PYTHONPATH", ""),
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(tmp_path / "xdg" / "config"),
        "XDG_DATA_HOME": str(tmp_path / "xdg" / "data"),
        "XDG_STATE_HOME": str(tmp_path / "xdg" / "state"),
    }
    run = subprocess.run(
        [sys.executable, "-c", CHILD, str(fresh)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    assert (fresh / "private").is_dir()
    made = sorted(p for p in tmp_path.rglob("*") if p.is_dir() and p not in made_before)
    assert tmp_path / "new" in made and tmp_path / "xdg" / "state" in made
    loose = {
        str(p.relative_to(tmp_path)): oct(stat.S_IMODE(p.stat().st_mode))
        for p in made
        if stat.S_IMODE(p.stat().st_mode) != 0o700
    }
    assert loose == {}
