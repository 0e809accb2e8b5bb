"""``keyvault coverage`` against a notary client's TUF cache (the server case is in e2e)."""

from __future__ import annotations

import base64
import datetime
import json
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from cli.conftest import KV
from keyvault.trust.deep import load_private_key
from keyvault.trust.keyid import private_key_id, tuf_key_id
from keyvault.trust.sample import write_sample_trust_dir

GUN = "example.com/cov/app"
PASS = "p"


def cert(key: Any, cn: str) -> bytes:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = datetime.datetime.now(datetime.UTC)
    built = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
             .public_key(key.public_key()).serial_number(1).not_valid_before(now)
             .not_valid_after(now + datetime.timedelta(days=30)).sign(key, hashes.SHA256()))
    return built.public_bytes(serialization.Encoding.PEM)


def spki(key: Any) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.DER,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)


def tuf_key(keytype: str, public: bytes) -> dict[str, Any]:
    return {"keytype": keytype, "keyval": {"private": None,
                                           "public": base64.b64encode(public).decode()}}


def test_coverage_reports_each_status(kv: KV, home: Path) -> None:
    trust = home / ".docker" / "trust"
    keys = write_sample_trust_dir(trust, dict.fromkeys(("root", "targets", "snapshot"), PASS),
                                  (GUN,))
    private = {k.role: load_private_key(k, PASS) for k in keys}
    new_targets, timestamp, delegate = (ec.generate_private_key(ec.SECP256R1())
                                        for _ in range(3))
    root_cert = cert(private["root"], GUN)
    root_listed = tuf_key_id("ecdsa-x509", root_cert)
    role_keys = {"targets": new_targets, "snapshot": private["snapshot"],
                 "timestamp": timestamp}
    listed = {role: tuf_key_id("ecdsa", spki(k)) for role, k in role_keys.items()}
    root_doc = {"signed": {
        "_type": "Root", "version": 1, "expires": "2035-01-01T00:00:00Z",
        "consistent_snapshot": False,
        "keys": {root_listed: tuf_key("ecdsa-x509", root_cert),
                 **{listed[r]: tuf_key("ecdsa", spki(k)) for r, k in role_keys.items()}},
        "roles": {"root": {"keyids": [root_listed], "threshold": 1},
                  **{r: {"keyids": [listed[r]], "threshold": 1} for r in role_keys}}},
        "signatures": []}
    deleg_cert = cert(delegate, "releases")
    deleg_listed = tuf_key_id("ecdsa-x509", deleg_cert)
    targets_doc = {"signed": {
        "_type": "Targets", "version": 2, "expires": "2035-01-01T00:00:00Z", "targets": {},
        "delegations": {"keys": {deleg_listed: tuf_key("ecdsa-x509", deleg_cert)},
                        "roles": [{"name": "targets/releases", "keyids": [deleg_listed],
                                   "threshold": 1, "paths": [""]}]}},
        "signatures": []}
    meta = trust / "tuf" / GUN / "metadata"
    meta.mkdir(parents=True)
    (meta / "root.json").write_text(json.dumps(root_doc))
    (meta / "targets.json").write_text(json.dumps(targets_doc))

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
