"""Memory of the per-key bookkeeping of a bulk backup and restore: held whole, or spooled.

    python benchmarks/report_memory.py [--keys 10000 100000] [--window 1000] [--only after]
                                       [--json FILE]

No server, no key: synthetic records of the shapes a run keeps per key, built with
keyvault's own classes, and its real ``--json`` writers (to /dev/null). For each key
count, tracemalloc's peak (the Python heap, the benchmark's own inputs included) of:

- **backup, before**: what ``keyvault backup --json`` held before #20: a list of
  BackupOutcome (a released KeyFile each), then the whole document (a dict per key,
  its text, the redacted text) at once;
- **backup, after**: each outcome spooled (keyvault.spool: ``--window`` in memory, the
  rest in an unnamed file) and the document streamed from the spool
  (``keyvault.cli.keys._backup_report``);
- **restore, before**: the Restored and PlannedWrite records, the transaction's
  rollback records (one per staged file), the report's entries, then the document;
- **restore, after**: the same records in spools (the rollback records twice: staged
  and committed, as a restore that moved every file into place), the document
  streamed (``keyvault.cli.keys._restore_report``);
- **restore, residue**: what a restore still keeps per key, beside the spools: the
  planned paths and key IDs (its duplicate checks) and the written keys' references
  for the audit record.

"Bytes per key" is the peak divided by the key count. A bounded run's peak is flat
from 10,000 to 100,000 keys; what still grows is named in docs/performance.md. This
is a benchmark, not a test: tests/cli/test_spooled_reports.py checks the bound (no
spool holds more than its window) and the output (the same bytes).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import hashlib
import json
import os
import sys
import time
import tracemalloc
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent))

from keyvault import spool  # noqa: E402
from keyvault.names import KeyAddress  # noqa: E402
from keyvault.ops.backup import UNCHANGED, BackupOutcome, BackupReport  # noqa: E402
from keyvault.ops.restore import (  # noqa: E402
    Restored,
    RestoreEntries,
    RestoreEntry,
    RestoreReport,
    restored_spool,
)
from keyvault.spool import keyed_digest  # noqa: E402
from keyvault.trust.model import KeyFile, Layout  # noqa: E402
from keyvault.trust.restore import (  # noqa: E402
    Action,
    PlannedWrite,
    _Staged,
    _staged_spool,
    planned_spool,
)

TEAM = "bench"
STORE = "file:///var/lib/keyvault/store"


def _address(i: int) -> KeyAddress:
    role = "targets" if i % 2 else "snapshot"
    return KeyAddress(TEAM, f"registry.example.com/team{i % 50}/app{i // 100}", role, _key_id(i))


def _key_id(i: int) -> str:
    return hashlib.sha256(i.to_bytes(8, "big")).hexdigest()


def _key_file(a: KeyAddress) -> KeyFile:
    return KeyFile(
        a.key_id,
        a.role,
        a.gun,
        "ecdsa",
        f"{a.key_id}.key",
        0o600,
        Layout.CURRENT,
        True,
        b"",
        digest=hashlib.sha256(a.key_id.encode()).hexdigest(),
        length=365,
    )


def _restored(i: int, a: KeyAddress) -> Restored:
    return Restored(a, f"{i:010d}", f"{a.key_id}.key", "SHA256:" + "ab" * 32, 3)


def _planned(a: KeyAddress) -> PlannedWrite:
    return PlannedWrite(f"{a.key_id}.key", f"targets key {a.key_id[:12]}", Action.CREATE)


def _staged(a: KeyAddress, committed: bool) -> _Staged:
    tmp = f".{a.key_id}.key.keyvault-tmp-{a.key_id[:8]}"
    aside = f"{a.key_id}.key.keyvault-old-20261205T103000Z-1a2b3c4d" if committed else None
    inode = (2049, int(a.key_id[:8], 16))
    return _Staged(
        f"{a.key_id}.key",
        5,
        f"{a.key_id}.key",
        tmp,
        keyed_digest(tmp.encode()),
        inode,
        aside,
        inode,
    )


class _State:
    """What the report writers read of the CLI's state: --json, the store and the team."""

    json = True

    def config(self) -> Any:
        return SimpleNamespace(store=STORE, team=TEAM)


def _scan() -> Any:
    return SimpleNamespace(trust_dir="/home/user/.docker/trust", problems=[])


def backup_before(n: int) -> None:
    from keyvault.cli.keys import outcome_json
    from keyvault.cli.output import emit_json

    outcomes = []
    for i in range(n):
        a = _address(i)
        outcomes.append(BackupOutcome(_key_file(a), a, UNCHANGED, f"{i:010d}"))
    emit_json(
        {
            "trust_dir": "/home/user/.docker/trust",
            "store": STORE,
            "team": TEAM,
            "dry_run": False,
            "keys": [outcome_json(o) for o in outcomes],
            "not_attempted": 0,
            "problems": [],
        }
    )


def backup_after(n: int) -> None:
    from keyvault.cli.keys import _backup_report

    with contextlib.closing(BackupReport()) as outcomes:
        for i in range(n):
            a = _address(i)
            outcomes.note(BackupOutcome(_key_file(a), a, UNCHANGED, f"{i:010d}"))
        _backup_report(_State(), _scan(), outcomes, False)  # type: ignore[arg-type]


def restore_before(n: int) -> None:
    from keyvault.cli.keys import restore_entry_json
    from keyvault.cli.output import emit_json

    stored, plan, staged = [], [], {}
    for i in range(n):
        a = _address(i)
        stored.append(_restored(i, a))
        plan.append(_planned(a))
        staged[f"{a.key_id}.key"] = _staged(a, committed=True)
    entries = [RestoreEntry(s, p.action, p.reason) for s, p in zip(stored, plan, strict=True)]
    emit_json(
        {
            "trust_dir": "/home/user/.docker/trust",
            "store": STORE,
            "team": TEAM,
            "dry_run": False,
            "kept_aside": [],
            "keys": [restore_entry_json(e, on_purpose=False) for e in entries],
        }
    )


def restore_after(n: int) -> None:
    from keyvault.cli.keys import _restore_report

    stored, plan = restored_spool(), planned_spool()
    with _staged_spool() as staged, _staged_spool() as committed:
        for i in range(n):
            a = _address(i)
            stored.append(_restored(i, a))
            plan.append(_planned(a))
            staged.append(_staged(a, committed=False))
        for entry in staged:  # as a commit that moved every file into place
            committed.append(replace(entry, aside=f"{entry.name}.keyvault-old-20261205T103000Z-1a"))
        report = RestoreReport(
            Path("/home/user/.docker/trust"), RestoreEntries(stored, plan), (), False
        )
        try:
            _restore_report(_State(), report, None, False)  # type: ignore[arg-type]
        finally:
            report.close()


def restore_still_per_key(n: int) -> None:
    """What a restore still keeps per key: the paths and key IDs it planned (to refuse two
    keys restored to one path, or one key to two) and the written keys' audit references."""
    from keyvault.ops.session import key_ref
    from keyvault.trust.restore import _Seen

    seen, written = _Seen(), []
    for i in range(n):
        a = _address(i)
        relpath = f"{a.key_id}.key"  # one string, as the restore's item holds it
        seen.relpaths.add(relpath)
        seen.by_key_id[a.key_id] = relpath
        written.append(key_ref(a))


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """stdout to /dev/null: the document is written, not kept."""
    with open(os.devnull, "w") as null:
        saved, sys.stdout = sys.stdout, null
        try:
            yield
        finally:
            sys.stdout = saved


def measure(run: Callable[[int], None], n: int) -> dict[str, float]:
    gc.collect()
    tracemalloc.start()
    started = time.perf_counter()
    with _quiet():
        run(n)
    seconds = time.perf_counter() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {
        "keys": n,
        "peak_bytes": peak,
        "bytes_per_key": round(peak / n),
        "seconds": round(seconds, 2),
    }


RUNS = {
    "backup, before": backup_before,
    "backup, after": backup_after,
    "restore, before": restore_before,
    "restore, after": restore_after,
    "restore, residue": restore_still_per_key,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--keys", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--window", type=int, default=spool.WINDOW)
    parser.add_argument("--only", default="", help="only the runs whose name holds this")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    spool.WINDOW = args.window
    results: dict[str, list[dict[str, float]]] = {}
    print(f"{'run':<18}{'keys':>9}{'peak MiB':>11}{'bytes/key':>11}{'seconds':>9}")
    for name, run in RUNS.items():
        for n in args.keys if args.only in name else ():
            spool.Stats.reset()
            figures = measure(run, n)
            figures["records_held_at_most"] = spool.Stats.peak
            results.setdefault(name, []).append(figures)
            print(
                f"{name:<18}{n:>9}{figures['peak_bytes'] / 2**20:>11.1f}"
                f"{figures['bytes_per_key']:>11}{figures['seconds']:>9}"
            )
    if args.json:
        args.json.write_text(json.dumps({"window": args.window, "runs": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
