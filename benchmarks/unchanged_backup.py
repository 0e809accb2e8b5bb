"""Requests per unchanged key: a backup that finds nothing changed, and a daemon's reconciliation.

    python benchmarks/unchanged_backup.py [--keys 10000] [--machine-keys 1000] [--jobs 8]
                                          [--json FILE]

Starts its own ``weed mini`` and ``moto_server`` (as benchmarks/bulk_s3_kms.py
does), writes ``--keys`` Notary-format key files and seeds the store with
keyvault's own first backup (real envelopes, one real KMS data key each,
reported separately as the seeding). Then, counting every HTTP request with
botocore ``before-send`` hooks on the clients keyvault holds:

- **unchanged, this machine**: the same backup again: the team's listing only
  (keyvault.known: each listed ETag is the one this machine recorded);
- **unchanged, a machine with no records** (its own state directory, the same
  sealing key): each key read once and authenticated, as every backup did
  before; then once more, now listing only;
- **one changed key** (``notary key passwd``): its wrapper call and its write;
- **one daemon reconciliation** (in process, on its own team of
  ``--machine-keys`` keys): the cost per daemon behind the fleet arithmetic.

This is a benchmark, not a test: it asserts nothing about time;
tests/aws/test_known_versions.py pins the request counts.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT.parent / "tests"))

import bulk_s3_kms as bulk  # noqa: E402 - the servers, key files and counter of the bulk run


def _session(common: dict[str, Any], team: str, trust: Path, state: Path) -> Any:
    from keyvault.config import Config, Paths
    from keyvault.ops.session import Session

    config = Config(
        source=None,
        paths=Paths(common["config"], state / "data", state / "state"),
        team=team,
        store=common["store"],
        wrappers=(common["wrapper"],),
        trust_dir=trust,
        identity_files=(),
        settings={"s3": common["s3"], "awskms": common["kms"]},
        concurrency=common["jobs"],
        audit_to_store=False,
        env=common["env"],
    )
    return Session(config)


def _backup(session: Any, trust: Path, team: str) -> dict[str, Any]:
    """One backup of every key in ``trust``: seconds, requests, actions."""
    from keyvault.ops.backup import backup_keys
    from keyvault.trust.scan import scan_trust_dir

    counter = bulk._open_counted(session)
    keys = scan_trust_dir(trust, keep_bytes=False).keys
    start = time.perf_counter()
    outcomes = backup_keys(
        session, keys, team=team, concurrency=session.config.concurrency, trust_dir=trust
    )
    seconds = time.perf_counter() - start
    for client in _clients(session):
        client.meta.events.unregister("before-send", counter._on_send)
    return {
        "keys": len(keys),
        "seconds": round(seconds, 2),
        "requests": dict(counter.counts),
        "actions": dict(Counter(o.action for o in outcomes)),
    }


def _clients(session: Any) -> list[Any]:
    return [session.store()._client, *(w._client for w in session.wrappers())]


def _reconcile(session: Any, trust: Path, work: Path) -> dict[str, Any]:
    """One reconciliation of the daemon's loop, in process, on ``session``."""
    from keyvault.daemon.health import Metrics
    from keyvault.daemon.journal import Journal
    from keyvault.daemon.service import Daemon, DaemonOptions

    daemon = Daemon(session.config, DaemonOptions(trust_dirs=(trust,)))
    state = work / "daemon-state"
    state.mkdir(mode=0o700, exist_ok=True)
    daemon._session, daemon.metrics = session, Metrics()
    daemon._journal = journal = Journal.open(state)
    counter = bulk._open_counted(session)
    start = time.perf_counter()
    try:
        daemon._reconcile()
    finally:
        journal.close()
    return {
        "keys": sum(daemon._watched.values()),
        "seconds": round(time.perf_counter() - start, 2),
        "requests": dict(counter.counts),
    }


def run(args: argparse.Namespace, work: Path, s3_url: str, kms_url: str) -> dict[str, Any]:
    from fixtures.kms import kms_client
    from fixtures.s3 import ADMIN, s3_client

    from keyvault.trust.sample import notary_key_file

    admin = s3_client(s3_url)
    admin.create_bucket(Bucket="kv-unchanged")
    admin.put_bucket_versioning(
        Bucket="kv-unchanged", VersioningConfiguration={"Status": "Enabled"}
    )
    kms = kms_client(kms_url)
    key_id = kms.create_key(Description="keyvault unchanged benchmark")["KeyMetadata"]["KeyId"]
    kms.create_alias(AliasName="alias/kv-unchanged", TargetKeyId=key_id)
    common = {
        "store": "s3://kv-unchanged/kv",
        "wrapper": "awskms:///alias/kv-unchanged",
        "jobs": args.jobs,
        "config": work / "config",
        "s3": {"endpoint_url": s3_url, "region": "us-east-1", "addressing_style": "path"},
        "kms": {"endpoint_url": kms_url, "region": "us-east-1"},
        "env": {
            "AWS_ACCESS_KEY_ID": ADMIN[0],
            "AWS_SECRET_ACCESS_KEY": ADMIN[1],
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_CONFIG_FILE": str(work / "none"),
            "AWS_SHARED_CREDENTIALS_FILE": str(work / "none"),
        },
    }
    results: dict[str, Any] = {"keys": args.keys, "machine_keys": args.machine_keys}
    trust = work / "trust"
    start = time.perf_counter()
    bulk.make_trust_dir(trust, args.keys)
    results["generate_s"] = round(time.perf_counter() - start, 1)
    with _session(common, "big", trust, work / "machine") as session:
        results["seeding"] = _backup(session, trust, "big")
        log("seeding (first backup)", results["seeding"])
        results["unchanged"] = _backup(session, trust, "big")
        log("unchanged, this machine", results["unchanged"])
        changed = next((trust / "private").iterdir())
        _passwd(changed, notary_key_file)
        results["one_changed"] = _backup(session, trust, "big")
        log("one changed key", results["one_changed"])
        results["reconcile_big"] = _reconcile(session, trust, work)
        log(f"reconciliation, {args.keys} keys", results["reconcile_big"])
    other = work / "other-machine"
    with _session(common, "big", trust, other) as session:
        results["no_records"] = _backup(session, trust, "big")
        log("unchanged, a machine with no records", results["no_records"])
        results["no_records_again"] = _backup(session, trust, "big")
        log("the same machine again", results["no_records_again"])
    small = work / "trust-machine"
    bulk.copy_subset(trust, small, args.machine_keys)
    with _session(common, "fleet", small, work / "daemon-machine") as session:
        _backup(session, small, "fleet")
        results["reconcile"] = _reconcile(session, small, work)
        log(f"reconciliation, {args.machine_keys} keys", results["reconcile"])
    return results


def _passwd(path: Path, notary_key_file: Any) -> None:
    """``notary key passwd`` on one key file: the same key, new bytes."""
    from keyvault.trust.deep import load_private_key
    from keyvault.trust.scan import scan_trust_dir

    (found,) = [k for k in scan_trust_dir(path.parent.parent).keys if k.relpath == path.name]
    key = load_private_key(found, bulk.PASSPHRASE)
    path.write_bytes(notary_key_file(key, found.role, found.gun, "another passphrase"))


def log(what: str, r: dict[str, Any]) -> None:
    print(
        f"{what}: {r.get('keys')} keys, {r['seconds']:.2f} s, {r['requests']}, "
        f"{r.get('actions', '')}",
        file=sys.stderr,
    )


def report(r: dict[str, Any]) -> None:
    print(f"\n{r['keys']} keys (S3 = SeaweedFS, KMS = moto), {r['machine_keys']} for the daemon\n")
    print("| run | keys | requests | requests per key | s |")
    print("|---|---|---|---|---|")
    for name, what in (
        ("seeding", "seeding: first backup"),
        ("unchanged", "unchanged, this machine"),
        ("no_records", "unchanged, a machine with no records (before)"),
        ("no_records_again", "the same machine, second run"),
        ("one_changed", "one key changed"),
        ("reconcile_big", "one daemon reconciliation, the whole team"),
        ("reconcile", "one daemon reconciliation, a team of its own"),
    ):
        row = r[name]
        total = sum(row["requests"].values())
        shown = ", ".join(f"{op} {n}" for op, n in sorted(row["requests"].items()))
        print(
            f"| {what} | {row['keys']} | {shown} | {total / row['keys']:.4f} | "
            f"{row['seconds']:.2f} |"
        )
    per = sum(r["reconcile"]["requests"].values())
    print(
        f"\nfleet: 10,000 daemons x {per} request(s) / 600 s = {10_000 * per / 600:.1f} requests/s"
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--keys", type=int, default=10_000)
    parser.add_argument("--machine-keys", type=int, default=1000)
    parser.add_argument("--jobs", type=int, default=8)
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="kv-unchanged-") as tmp:
        work = Path(tmp)
        with bulk.servers(work) as (s3_url, kms_url):
            results = run(args, work, s3_url, kms_url)
        shutil.rmtree(work / "trust", ignore_errors=True)
    report(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
