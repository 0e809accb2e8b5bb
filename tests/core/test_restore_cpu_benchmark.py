"""benchmarks/restore_cpu.py runs: docs/performance.md quotes its figures.

Only that it restores every key and reports each step; the figures themselves
are never asserted (they are a benchmark's, not a test's).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_the_restore_cpu_benchmark_restores_every_key_and_times_each_step() -> None:
    script = REPO / "benchmarks" / "restore_cpu.py"
    run = subprocess.run(
        [sys.executable, str(script), "--keys", "12", "--rounds", "2", "--steps"],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        check=False,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    rounds = re.search(r"^12 keys, one thread: (\d+) (\d+) µs", run.stdout, re.MULTILINE)
    assert rounds is not None, run.stdout
    steps = dict(re.findall(r"^  (\S+)\s+([\d.]+) µs per key", run.stdout, re.MULTILINE))
    # Every key was proven and opened in the timed round: its signature, chain and unwrap.
    for step in ("SealerKey.verify", "AuthenticReader.check_chain", "unwrap_dek"):
        assert float(steps[step]) > 0, run.stdout
