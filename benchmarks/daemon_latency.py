"""Daemon benchmark: detection-to-durable-backup latency, idle CPU, RSS.

For each store (the file store always; S3 on SeaweedFS ``weed mini`` with
``--s3``), a daemon runs in a subprocess with an isolated HOME; keys are
written one at a time into its trust directory and the time from the end of
the write (``close``) until the envelope is readable in the store is taken.
Then the daemon sits idle for ``--idle`` seconds and its CPU time is read from
``/proc/<pid>/stat``; RSS from ``/proc/<pid>/status``.

    python benchmarks/daemon_latency.py [--keys 100] [--idle 60] [--debounce 250] [--s3]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402

from keyvault.trust.keyid import private_key_id  # noqa: E402
from keyvault.trust.sample import notary_key_file  # noqa: E402

GUN = "example.com/bench/app"


def make_key() -> tuple[str, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    return private_key_id(key), notary_key_file(key, "targets", GUN, "")


def user_env(home: Path) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "XDG_DATA_HOME": str(home / ".local" / "share"),
        "XDG_STATE_HOME": str(home / ".local" / "state"),
    }


def poll(predicate: Callable[[], bool], timeout: float = 30.0, every: float = 0.001) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("timed out")
        time.sleep(every)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_kib(pid: int) -> dict[str, int]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0])
    return out


@contextlib.contextmanager
def daemon(home: Path, trust: Path, debounce: int, env: dict[str, str]) -> Iterator[int]:
    log = home / "daemon.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "keyvault",
                "daemon",
                "--trust-dir",
                str(trust),
                "--listen",
                "127.0.0.1:0",
                "--debounce",
                str(debounce),
            ],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        poll(lambda: b'"reconciled"' in log.read_bytes(), every=0.02)
        yield proc.pid
    finally:
        proc.terminate()
        proc.wait(30)


def measure(
    name: str,
    exists: Callable[[str], bool],
    home: Path,
    env: dict[str, str],
    args: argparse.Namespace,
) -> dict[str, Any]:
    trust = home / "trust"
    (trust / "private").mkdir(parents=True, mode=0o700)
    latencies = []
    with daemon(home, trust, args.debounce, env) as pid:
        for _ in range(args.keys):
            key_id, data = make_key()
            path = trust / "private" / f"{key_id}.key"
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            os.write(fd, data)
            os.close(fd)
            start = time.perf_counter()
            poll(lambda key_id=key_id: exists(key_id))
            latencies.append(time.perf_counter() - start)
        time.sleep(2)  # let the last backups' audit records and logs settle
        cpu0, t0 = cpu_seconds(pid), time.monotonic()
        time.sleep(args.idle)
        idle = (cpu_seconds(pid) - cpu0) / (time.monotonic() - t0)
        memory = rss_kib(pid)
    latencies.sort()
    q = statistics.quantiles(latencies, n=100, method="inclusive")
    return {
        "store": name,
        "keys": args.keys,
        "debounce_ms": args.debounce,
        "p50_ms": round(q[49] * 1000, 1),
        "p99_ms": round(q[98] * 1000, 1),
        "max_ms": round(latencies[-1] * 1000, 1),
        "idle_cpu_percent": round(idle * 100, 3),
        "idle_seconds": args.idle,
        "rss_mib": round(memory["VmRSS"] / 1024, 1),
        "peak_rss_mib": round(memory["VmHWM"] / 1024, 1),
    }


def file_store(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="kv-bench-") as tmp:
        home = Path(tmp) / "home"
        env = user_env(home)
        subprocess.run(
            [sys.executable, "-m", "keyvault", "init"], env=env, check=True, capture_output=True
        )
        prefix = (
            home / ".local/share/keyvault/store/objects/v1/teams/default/guns" / GUN / "targets"
        )
        return measure(
            "file",
            lambda key_id: (prefix / f"{key_id}.json" / "0000000001").exists(),
            home,
            env,
            args,
        )


def s3_store(args: argparse.Namespace) -> dict[str, Any]:
    from fixtures.s3 import ADMIN, REGION, new_bucket, weed_server

    with (
        tempfile.TemporaryDirectory(prefix="kv-bench-") as tmp,
        weed_server(Path(tmp) / "weed") as weed,
    ):
        bucket = new_bucket(weed)
        home = Path(tmp) / "home"
        env = {**user_env(home), "AWS_ACCESS_KEY_ID": ADMIN[0], "AWS_SECRET_ACCESS_KEY": ADMIN[1]}
        subprocess.run(
            [sys.executable, "-m", "keyvault", "init"], env=env, check=True, capture_output=True
        )
        config = home / ".config" / "keyvault" / "config.toml"
        text = config.read_text().replace(
            f'store = "file://{home}/.local/share/keyvault/store"', f'store = "s3://{bucket}/bench"'
        )
        config.write_text(
            text + f'\n[s3]\nendpoint_url = "{weed.endpoint}"\n'
            f'region = "{REGION}"\naddressing_style = "path"\n'
        )
        client = weed.admin()

        def exists(key_id: str) -> bool:
            key = f"bench/v1/teams/default/guns/{GUN}/targets/{key_id}.json"
            try:
                client.head_object(Bucket=bucket, Key=key)
                return True
            except client.exceptions.ClientError:
                return False

        return measure("s3 (weed mini)", exists, home, env, args)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=100)
    parser.add_argument("--idle", type=float, default=60.0)
    parser.add_argument("--debounce", type=int, default=250)
    parser.add_argument("--s3", action="store_true", help="also measure S3 (weed mini)")
    args = parser.parse_args()
    results = [file_store(args)]
    if args.s3:
        results.append(s3_store(args))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
