"""How long a backup takes to fail when its wrapper's backend is down (#21).

Two dead backends, each under a real ``keyvault backup`` run (a subprocess,
file store, ``--jobs 8``):

- **sealed OpenBao**: a private ``bao server -dev`` with a Transit key, sealed
  with ``sys/seal``; the wrapper is ``transit://``; every request answers 503;
- **hung KMS**: a listener that accepts connections and never answers; the
  wrapper is ``awskms://127.0.0.1:PORT/alias/...`` with the default timeouts.

A ``--dry-run`` of the same backup (start-up and the scan, no wrapper request)
gives the fixed cost. Each is run with the circuit breaker (the default ``give_up_after = 5``) and
without it (``give_up_after = 0``; for the hung KMS also the former 15 s read
timeout), the way a run behaved before. Run (OpenBao needed):

    python benchmarks/dead_backend.py [--keys 400] [--hung-keys-without 8]

The hung KMS without the breaker is run on fewer keys (``--hung-keys-without``,
one batch of 8): at 400 keys it would take about 50 minutes. Prints a Markdown
table: wall seconds, exit code, keys not attempted, requests the backend saw.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PASSPHRASE = "bench"


class Hung:
    """Accepts every connection, reads the request, never answers."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self.held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            self.held.append(conn)

    def close(self) -> None:
        self.sock.close()
        for conn in self.held:
            conn.close()


class Counter:
    """A pass-through TCP proxy counting connections (one per request: Vault keeps none
    alive while it is sealed, each attempt of hvac opens a fresh one or reuses)."""

    def __init__(self, upstream: int) -> None:
        sys.path.insert(0, str(ROOT / "tests"))
        from fixtures.answer_proxy import AnswerProxy

        self.proxy = AnswerProxy(upstream, lambda _: False, "empty")
        self.port = self.proxy.port

    @property
    def requests(self) -> int:
        return self.proxy.requests

    def close(self) -> None:
        self.proxy.close()


def make_trust_dir(path: Path, count: int) -> None:
    from cryptography.hazmat.primitives.asymmetric import ec

    from keyvault.trust.keyid import private_key_id
    from keyvault.trust.sample import notary_key_file

    private = path / "private"
    private.mkdir(parents=True, mode=0o700)
    for i in range(count):
        key = ec.generate_private_key(ec.SECP256R1())
        gun = f"registry.example.com/bench/app-{i // 2:04d}"
        target = private / f"{private_key_id(key)}.key"
        target.write_bytes(notary_key_file(key, ("targets", "snapshot")[i % 2], gun, PASSPHRASE))
        target.chmod(0o600)


def backup(
    work: Path,
    trust: Path,
    wrapper: str,
    give_up_after: int,
    sections: list[str],
    env: dict[str, str],
    *extra: str,
) -> tuple[float, int, int]:
    from keyvault.plugins import BackendOptions
    from keyvault.stores.file import FileStore

    store = Path(tempfile.mkdtemp(dir=work))
    FileStore.from_uri(f"file://{store}", BackendOptions(), create=True).close()
    config = work / "config.toml"
    config.write_text(
        "\n".join(
            [
                "[keyvault]",
                'team = "bench"',
                f'store = "file://{store}"',
                f"wrappers = [{json.dumps(wrapper)}]",
                f"give_up_after = {give_up_after}",
                "concurrency = 8",
                "",
                *sections,
                "",
            ]
        )
    )
    start = time.perf_counter()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "keyvault",
            "--config",
            str(config),
            "--trust-dir",
            str(trust),
            "--json",
            "backup",
            "--no-pins",
            *extra,
        ],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    seconds = time.perf_counter() - start
    try:
        skipped = int(json.loads(proc.stdout).get("not_attempted", 0))
    except ValueError:
        skipped = -1
    return seconds, proc.returncode, skipped


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--keys", type=int, default=400)
    parser.add_argument("--hung-keys-without", type=int, default=8)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT / "tests"))
    from fixtures.vault import ROOT_TOKEN, TRANSIT_MOUNT, bao_server

    rows: list[str] = []
    with tempfile.TemporaryDirectory(prefix="kv-dead-") as tmp:
        work = Path(tmp)
        home = work / "home"
        home.mkdir()
        env = {
            **os.environ,
            "HOME": str(home),
            "PYTHONPATH": str(ROOT),
            "XDG_CONFIG_HOME": str(home / ".config"),
            "XDG_DATA_HOME": str(home / ".local/share"),
            "XDG_STATE_HOME": str(home / ".local/state"),
            "KEYVAULT_PASSPHRASE": PASSPHRASE,
            "VAULT_TOKEN": ROOT_TOKEN,
            "AWS_ACCESS_KEY_ID": "bench",
            "AWS_SECRET_ACCESS_KEY": "bench",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_CONFIG_FILE": str(work / "none"),
            "AWS_SHARED_CREDENTIALS_FILE": str(work / "none"),
        }
        trust, few = work / "trust", work / "trust-few"
        make_trust_dir(trust, args.keys)
        make_trust_dir(few, args.hung_keys_without)
        with bao_server(work / "bao") as bao:
            key = bao.transit_key(team="bench")
            bao.root().sys.seal()
            seconds, code, _ = backup(
                work,
                trust,
                f"transit://{TRANSIT_MOUNT}/{key}",
                5,
                ["[vault]", f'address = "{bao.address}"'],
                env,
                "--dry-run",
            )
            rows.append(
                f"| baseline: start-up and scan, `--dry-run` (no wrapper request), "
                f"{args.keys} keys | {seconds:.1f} | {code} | - | 0 |"
            )
            for give_up in (5, 0):
                counter = Counter(bao.port)
                try:
                    seconds, code, skipped = backup(
                        work,
                        trust,
                        f"transit://{TRANSIT_MOUNT}/{key}",
                        give_up,
                        ["[vault]", f'address = "http://127.0.0.1:{counter.port}"'],
                        env,
                    )
                finally:
                    counter.close()
                label = "with the breaker" if give_up else "without (give_up_after = 0)"
                rows.append(
                    f"| sealed OpenBao, {args.keys} keys, {label} | {seconds:.1f} | "
                    f"{code} | {skipped} | {counter.requests} |"
                )
        for give_up, count, timeout in ((5, args.keys, None), (0, args.hung_keys_without, 15)):
            hung = Hung()
            try:
                sections = ["[awskms]", "connect_timeout = 5"]
                if timeout is not None:
                    sections.append(f"read_timeout = {timeout}")
                seconds, code, skipped = backup(
                    work,
                    trust if count == args.keys else few,
                    f"awskms://127.0.0.1:{hung.port}/alias/bench",
                    give_up,
                    sections,
                    env,
                )
            finally:
                hung.close()
            label = (
                "with the breaker, default 5 s read timeout"
                if give_up
                else "without, 15 s read timeout (as before)"
            )
            rows.append(
                f"| hung KMS, {count} keys, {label} | {seconds:.1f} | {code} | "
                f"{skipped} | {hung.accepted} connections |"
            )
    print("| run | wall s | exit | not attempted | requests the backend saw |")
    print("|---|---|---|---|---|")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
