"""F07: ``keyvault restore`` killed with SIGKILL once some files are in place.

A real process dies by a real SIGKILL at a chosen step (the second file about
to move into place), so nothing of keyvault runs after it: the trust directory
then holds whole key files only, next to staged temporary files; the next
restore removes those and completes.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from cli.conftest import KV
from keyvault.fsutil import TEMP_PREFIX
from keyvault.trust.sample import write_sample_trust_dir

GUN = "example.com/team-a/app"
#: keyvault's CLI, killed by SIGKILL when the second file is about to move into place.
KILLED_AT_THE_SECOND_FILE = """
import os, signal, sys
from keyvault.cli.app import main
from keyvault.trust import restore

real = restore._Transaction._commit_one
done = []

def commit_one(self, planned):
    if done:
        os.kill(os.getpid(), signal.SIGKILL)
    real(self, planned)
    done.append(planned)

restore._Transaction._commit_one = commit_one
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.proves("F07")
def test_a_sigkilled_restore_leaves_whole_files_and_the_next_restore_completes(
    kv: KV, home: Path, tmp_path: Path
) -> None:
    keys = write_sample_trust_dir(
        home / ".docker" / "trust", dict.fromkeys(("root", "targets", "snapshot"), "pw"), (GUN,)
    )
    assert kv("init").code == 0 and kv("backup").code == 0
    target = tmp_path / "target"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    killed = subprocess.run(
        [
            sys.executable,
            "-c",
            KILLED_AT_THE_SECOND_FILE,
            "--trust-dir",
            str(target),
            "restore",
            "--all",
        ],
        env=env,
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr.decode()

    by_name = {Path(k.relpath).name: k.data for k in keys}
    files = [p for p in (target / "private").rglob("*") if p.is_file()]
    placed = [p for p in files if not p.name.startswith(TEMP_PREFIX)]
    staged = [p for p in files if p.name.startswith(TEMP_PREFIX)]
    assert len(placed) == 1 and placed[0].read_bytes() == by_name[placed[0].name]
    assert staged, "the killed run staged its other files"
    assert all(p.stat().st_mode & 0o077 == 0 for p in staged)

    run = kv("--trust-dir", target, "restore", "--all")
    assert run.code == 0, run.err
    assert not [p for p in (target / "private").rglob(f"{TEMP_PREFIX}*")]
    for key in keys:
        assert (target / "private" / key.relpath).read_bytes() == key.data
