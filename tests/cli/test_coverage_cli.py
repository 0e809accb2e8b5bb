"""``keyvault coverage`` against a notary client's TUF cache (the server case is in e2e)."""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec
from tufdocs import root_json, targets_json, write_cache

from cli.conftest import KV
from keyvault.trust.deep import load_private_key
from keyvault.trust.keyid import private_key_id
from keyvault.trust.sample import write_sample_trust_dir

GUN = "example.com/cov/app"
PASS = "p"


def test_coverage_reports_each_status(kv: KV, home: Path) -> None:
    trust = home / ".docker" / "trust"
    keys = write_sample_trust_dir(
        trust, dict.fromkeys(("root", "targets", "snapshot"), PASS), (GUN,)
    )
    private = {k.role: load_private_key(k, PASS) for k in keys}
    new_targets, timestamp, delegate = (ec.generate_private_key(ec.SECP256R1()) for _ in range(3))
    root_doc, root_listed = root_json(
        GUN,
        private["root"],
        {"targets": new_targets, "snapshot": private["snapshot"], "timestamp": timestamp},
    )
    write_cache(
        trust, GUN, {"root": root_doc, "targets": targets_json({"targets/releases": delegate})}
    )

    assert kv("init").code == 0
    assert kv("backup").code == 0
    run = kv("--json", "coverage", "--gun", GUN)
    assert run.code == 8, run.err
    doc = run.json()
    status = {(r["role"], r["key_id"]): r["status"] for r in doc["keys"]}
    by_role = {k.role: k.key_id for k in keys}
    assert status == {
        ("root", by_role["root"]): "backed-up",
        ("targets", private_key_id(new_targets)): "missing",
        ("snapshot", by_role["snapshot"]): "backed-up",
        ("timestamp", private_key_id(timestamp)): "server-managed",
        ("targets/releases", private_key_id(delegate)): "missing",
        ("targets", by_role["targets"]): "stale",
    }
    root_row = next(r for r in doc["keys"] if r["role"] == "root")
    assert root_row["listed_id"] == root_listed != root_row["key_id"]
    assert not doc["complete"]
    human = kv("coverage", "--gun", GUN)
    assert human.code == 8 and "targets key" in human.err and "is not backed up" in human.err


def test_coverage_of_an_unknown_gun(kv: KV, home: Path) -> None:
    assert kv("init").code == 0
    run = kv("coverage", "--gun", "example.com/nothing/here")
    assert run.code == 3 and "no published TUF metadata" in run.err
    bad = kv("coverage", "--gun", "../x")
    assert bad.code == 2
    http = kv("coverage", "--gun", GUN, "--server", "http://example.com")
    assert http.code == 2 and "https://" in http.err
