"""``keyvault exec`` overhead: from its start to the wrapped command's start.

What a CI job pays before its signing command runs: Python start-up, the
OpenBao JWT login, listing the GUN's prefix, reading and unwrapping (Transit)
3 envelopes (targets, snapshot, a ``targets/releases`` delegation), the
all-or-nothing restore into a fresh directory under /dev/shm, and the audit
record. Compared with a plain ``notary -d DIR key list`` run (what the job
runs anyway) and with the bare cost of starting the same probe command.
Run (OpenBao and notary needed; loopback servers started here):

    python benchmarks/exec_overhead.py [--runs 20]

The probe command is ``sh -c 'date +%s%N'``: its printed wall-clock time
minus the moment ``keyvault exec`` was spawned is "start to child start".
Results print as a Markdown table (milliseconds: median, p90).
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

ROOT = Path(__file__).resolve().parents[1]
PROBE = ["sh", "-c", "date +%s%N"]


def child_start_ms(cmd: list[str], env: dict[str, str]) -> float:
    start = time.time_ns()
    proc = subprocess.run(
        cmd, env=env, capture_output=True, text=True, check=False, stdin=subprocess.DEVNULL
    )
    if proc.returncode != 0:
        raise SystemExit(f"{cmd[:6]} failed ({proc.returncode}):\n{proc.stderr}")
    stamp = int(proc.stdout.strip().splitlines()[-1])
    return (stamp - start) / 1e6


def wall_ms(cmd: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, env=env, capture_output=True, check=True, stdin=subprocess.DEVNULL)
    return (time.perf_counter() - start) * 1000


def stats(values: list[float]) -> str:
    ordered = sorted(values)
    p90 = ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]
    return f"{statistics.median(values):.0f} | {p90:.0f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT / "tests"))
    from fixtures.vault import KV_MOUNT, TRANSIT_MOUNT, bao_server
    from notarykit import GUN_A, PASSPHRASES, Notary, build_notary_trust_dir, require_notary

    with tempfile.TemporaryDirectory() as scratch, bao_server(Path(scratch) / "bao") as bao:
        work = Path(scratch)
        notary = Notary(require_notary(), home=work / "notary-home")
        notary.home.mkdir()
        built = build_notary_trust_dir(notary, work / "owner-trust")
        home = work / "home"
        home.mkdir()
        base_env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(home),
            "XDG_STATE_HOME": str(home / "state"),
            "XDG_CONFIG_HOME": str(home / "cfg"),
            "XDG_DATA_HOME": str(home / "data"),
            "VAULT_ADDR": bao.address,
        }
        store = f"vault://{KV_MOUNT}/bench"
        wrapper = f"transit://{TRANSIT_MOUNT}/{bao.transit_key(team='team-b')}"
        common = (
            f'[keyvault]\nteam = "team-b"\nstore = "{store}"\n'
            f'wrappers = ["{wrapper}"]\n\n[vault]\ntimeout = 5\n'
        )
        owner = home / "owner.toml"
        owner.write_text(common)
        subprocess.run(
            [
                sys.executable,
                "-m",
                "keyvault",
                "--config",
                str(owner),
                "--trust-dir",
                str(built.path),
                "backup",
            ],
            env={**base_env, "VAULT_TOKEN": bao.token("team-b")},
            check=True,
            capture_output=True,
        )
        ci = home / "ci.toml"
        ci.write_text(common + 'auth = "jwt"\njwt_role = "ci-team-b"\njwt_env = "CI_JOB_JWT"\n')
        env = {
            **base_env,
            "NOTARY_TARGETS_PASSPHRASE": PASSPHRASES["targets"],
            "NOTARY_SNAPSHOT_PASSPHRASE": PASSPHRASES["snapshot"],
            "NOTARY_DELEGATION_PASSPHRASE": PASSPHRASES["delegation"],
        }
        exec_cmd = [
            sys.executable,
            "-m",
            "keyvault",
            "--config",
            str(ci),
            "exec",
            "--gun",
            GUN_A,
            "--role",
            "targets",
            "--role",
            "snapshot",
            "--role",
            "targets/releases",
            "--",
            *PROBE,
        ]
        help_cmd = [sys.executable, "-m", "keyvault", "--help"]
        notary_cmd = [notary.binary, "-d", str(built.path), "key", "list"]

        def run_exec() -> float:
            return child_start_ms(exec_cmd, {**env, "CI_JOB_JWT": bao.mint_jwt(team="team-b")})

        run_exec()  # warm the page cache and the server
        probe, overhead, startup, plain = [], [], [], []
        for _ in range(args.runs):
            probe.append(child_start_ms(PROBE, env))
            overhead.append(run_exec())
            startup.append(wall_ms(help_cmd, env))
            plain.append(wall_ms(notary_cmd, env))
        added = [o - p for o, p in zip(overhead, probe, strict=True)]
        print(
            f"`keyvault exec` overhead, {args.runs} runs, OpenBao {bao.address} (loopback), "
            "3 keys (targets, snapshot, targets/releases), JWT login, Transit unwrap\n"
        )
        print("| measurement | median ms | p90 ms |\n|---|---|---|")
        print(f"| start of the probe command alone (`sh -c 'date +%s%N'`) | {stats(probe)} |")
        print(f"| `keyvault exec` start to the command's start | {stats(overhead)} |")
        print(f"| **added by keyvault exec** | {stats(added)} |")
        print(f"| of which: `keyvault --help` (interpreter + CLI start-up) | {stats(startup)} |")
        print(f"| plain `notary -d DIR key list` (whole run) | {stats(plain)} |")
        target = statistics.median(added) < 500
        print(f"\nTarget (< 500 ms added): {'met' if target else 'NOT met'}")
        return 0 if target else 1


if __name__ == "__main__":
    raise SystemExit(main())
