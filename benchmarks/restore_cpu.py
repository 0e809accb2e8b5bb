"""keyvault's own CPU per key in a restore: no network, no wrapper, one thread.

    python benchmarks/restore_cpu.py [--keys 1000] [--rounds 5] [--steps]

In the bulk benchmark (benchmarks/bulk_s3_kms.py) a restore's requests cost the
client as much CPU as the floor's; what makes keyvault slower is its own work
per key (parse, signature, chain, high-water mark, the durable writes), which
holds the interpreter lock the request threads share. This measures that work
alone: ``restore_keys`` of ``--keys`` keys in one thread, from a store held in
memory, through a wrapper that hands back the data key it was given (so no KMS
and no S3 time is in it). It prints the process CPU per key of each round
(every thread: the staging pool and the marks' save included), and with
``--steps`` the thread CPU per key of each step of the last round.

Compare two trees with ``PYTHONPATH=<tree> python benchmarks/restore_cpu.py``.
This is a benchmark, not a test: it asserts nothing about time.
"""

from __future__ import annotations

import argparse
import collections
import importlib
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bulk_s3_kms as bulk

TEAM = bulk.TEAM
URI = "awskms:///alias/kv-bulk"

#: The steps --steps times: (module, qualified name).
STEPS = [
    ("keyvault.ops.stored", "parse_stored"),
    ("keyvault.envelope", "Envelope.from_bytes"),
    ("keyvault.ops.authentic", "AuthenticReader.authenticate"),
    ("keyvault.envelope", "Envelope.signed_message"),
    ("keyvault.sealing", "SealerKey.verify"),
    ("keyvault.ops.authentic", "AuthenticReader.check_chain"),
    ("keyvault.highwater", "HighWater.check"),
    ("keyvault.highwater", "HighWater.note"),
    ("keyvault.ops.session", "Session.open"),
    ("keyvault.envelope", "unwrap_dek"),
    ("keyvault.envelope", "decrypt_with_dek"),
    ("keyvault.trust.restore", "_Transaction.stage"),
    ("keyvault.trust.restore", "_Transaction.commit"),
    ("keyvault.highwater", "HighWater.save"),
    ("keyvault.spool", "Spool.append"),
]


class HandBack:
    """A wrapper whose wrapped key is the data key itself: no KMS time in the figures."""

    uri = URI

    def wrap(self, dek: bytes, context: Mapping[str, str]) -> Any:
        from keyvault.keyring import WrappedKey

        return WrappedKey(self.uri, "hand-back", dek, dict(context), {})

    def unwrap(self, wrapped: Any, context: Mapping[str, str]) -> bytes:
        return bytes(wrapped.blob)

    def close(self) -> None:
        pass


class MemoryStore:
    """The store calls a restore makes, on a dict: one version per object."""

    uri = "s3://kv-bulk/kv-1"

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}

    def list(self, prefix: str, *, after: str = "") -> Iterator[str]:
        return iter(sorted(n for n in self.objects if n.startswith(prefix) and n > after))

    def read(self, name: str, version: str | None = None) -> Any:
        from keyvault.errors import NotFoundError
        from keyvault.stores.base import StoredObject

        if name not in self.objects:
            raise NotFoundError(f"{name} not found")
        return StoredObject(name, "v1", self.objects[name])

    def write(self, name: str, data: bytes, *, replaces: str | None = None) -> str:
        self.objects[name] = data  # the restore's audit checkpoint
        return "v1"

    def versions(self, name: str) -> list[Any]:
        from keyvault.stores.base import ObjectVersion

        return [ObjectVersion(name, "v1", len(self.objects[name]), None, True)]

    def close(self) -> None:
        pass


def sealed_store(trust: Path, sealer: Any) -> MemoryStore:
    """Every key of ``trust`` sealed as a first backup would seal it."""
    from keyvault.envelope import FIRST, new_header, seal
    from keyvault.names import KeyAddress
    from keyvault.trust.scan import read_key_bytes, scan_trust_dir

    store = MemoryStore()
    for key in scan_trust_dir(trust, keep_bytes=False).keys:
        data = read_key_bytes(trust, key)
        address = KeyAddress(TEAM, key.gun, key.role, key.key_id)
        header = new_header(
            address=address,
            algorithm=key.algorithm,
            source_name=key.relpath,
            source_mode=key.mode,
            data=data,
        )
        envelope = seal(header, data, [HandBack()], None, sealer=sealer, chain=FIRST)
        store.objects[address.object_name] = envelope.to_bytes()
    return store


def timed_steps(spent: collections.Counter[str]) -> None:
    """Add each step's thread CPU to ``spent`` (a wrapper around each, for the last round)."""

    def timing(name: str, call: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.thread_time()
            try:
                return call(*args, **kwargs)
            finally:
                spent[name] += time.thread_time() - started

        return timed

    for module_name, qualified in STEPS:
        owner_name, _, attribute = qualified.rpartition(".")
        module = importlib.import_module(module_name)
        owner = getattr(module, owner_name) if owner_name else module
        setattr(owner, attribute, timing(qualified, getattr(owner, attribute)))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keys", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", action="store_true", help="time each step (last round)")
    args = parser.parse_args()

    from keyvault.ops.restore import restore_keys
    from keyvault.ops.selection import Selection
    from keyvault.sealing import Ed25519FileSealer

    with tempfile.TemporaryDirectory(prefix="kv-restore-cpu-") as tmp:
        work = Path(tmp)
        trust = work / "trust"
        bulk.make_trust_dir(trust, args.keys)
        sealer = Ed25519FileSealer.generate(work / "sealer.key")
        store = sealed_store(trust, sealer)
        spent: collections.Counter[str] = collections.Counter()
        per_key = []
        for round_ in range(args.rounds):
            if args.steps and round_ == args.rounds - 1:
                timed_steps(spent)
            spec = {
                "env": {},
                "wrapper": URI,
                "s3": {},
                "kms": {},
                "sealer": str(sealer.path),
                "trusted": [sealer.key.fingerprint],
                "trust": str(trust),
                "store": store.uri,
                "state": str(work / f"state-{round_}"),
                "jobs": 1,
            }
            with bulk._session(spec) as session:
                session._store, session._wrappers = store, [HandBack()]
                session.sealers()
                session.highwater()
                started = time.process_time()
                report = restore_keys(
                    session,
                    team=TEAM,
                    selection=Selection(everything=True),
                    trust_dir=work / f"restored-{round_}",
                    concurrency=1,
                )
                per_key.append((time.process_time() - started) / args.keys * 1e6)
                if len(report.entries) != args.keys:
                    print(f"restored {len(report.entries)} of {args.keys} keys", file=sys.stderr)
                    return 1
                report.close()
    print(f"{args.keys} keys, one thread: " + " ".join(f"{us:.0f}" for us in per_key), end="")
    print(f" µs of process CPU per key (best {min(per_key):.0f})")
    for step, seconds in spent.most_common():
        print(f"  {step:36s} {seconds / args.keys * 1e6:7.1f} µs per key (thread CPU)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
