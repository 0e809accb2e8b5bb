"""Start-up benchmark: `keyvault --help` and `keyvault list` against `python -c "import typer"`.

The floor is the cost of the interpreter plus typer, measured in the same run
on the same machine, so the ratio is stable across machines. Target: both
commands within 1.5x of the floor. Run:

    python benchmarks/startup.py [--runs 30]

It builds a throw-away embedded-default setup (file store, age identity,
the generated sample trust directory backed up) under a temporary HOME, so
`list` reads a real store. Results are printed as a Markdown table.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def measure(cmd: list[str], env: dict[str, str], runs: int) -> list[float]:
    subprocess.run(cmd, env=env, check=True, capture_output=True)  # warm the page cache
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(cmd, env=env, check=True, capture_output=True)
        times.append((time.perf_counter() - start) * 1000)
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    python = sys.executable
    with tempfile.TemporaryDirectory(prefix="kv-bench-") as tmp:
        home = Path(tmp)
        env = {
            **os.environ,
            "HOME": str(home),
            "XDG_CONFIG_HOME": str(home / ".config"),
            "XDG_DATA_HOME": str(home / ".local/share"),
            "XDG_STATE_HOME": str(home / ".local/state"),
        }
        for name in ("KEYVAULT_CONFIG", "DOCKER_CONFIG", "PYTHONDONTWRITEBYTECODE"):
            env.pop(name, None)  # bytecode caches on, as on a user's machine after pip install
        kv = [python, "-m", "keyvault"]
        subprocess.run([*kv, "quickstart"], env=env, check=True, capture_output=True)
        cases = {
            'python -c "import typer" (floor)': [python, "-c", "import typer"],
            "keyvault --help": [*kv, "--help"],
            "keyvault list": [*kv, "--team", "sample", "list"],
            "keyvault list --json": [*kv, "--team", "sample", "--json", "list"],
        }
        results = {name: measure(cmd, env, args.runs) for name, cmd in cases.items()}
    floor = statistics.median(next(iter(results.values())))
    print(
        f"runs per command: {args.runs}; python {sys.version.split()[0]}; {os.cpu_count()} CPUs\n"
    )
    print("| command | median ms | p90 ms | ratio to floor |")
    print("|---|---|---|---|")
    worst = 0.0
    for name, times in results.items():
        med = statistics.median(times)
        p90 = statistics.quantiles(times, n=10)[-1]
        ratio = med / floor
        if "floor" not in name:
            worst = max(worst, ratio)
        print(f"| `{name}` | {med:.1f} | {p90:.1f} | {ratio:.2f}x |")
    print(f"\nworst ratio: {worst:.2f}x (target <= 1.5x): {'PASS' if worst <= 1.5 else 'FAIL'}")
    return 0 if worst <= 1.5 else 1


if __name__ == "__main__":
    raise SystemExit(main())
