"""Build notary-shaped TUF documents (root.json, targets.json) for tests without a server."""

from __future__ import annotations

import base64
import datetime
import json
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID

from keyvault.trust.keyid import tuf_key_id


def cert(key: Any, cn: str) -> bytes:
    """A self-signed certificate like the ones notary puts in root.json."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = datetime.datetime.now(datetime.UTC)
    built = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    return built.public_bytes(serialization.Encoding.PEM)


def spki(key: Any) -> bytes:
    return bytes(
        key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


def tuf_key(keytype: str, public: bytes) -> dict[str, Any]:
    return {
        "keytype": keytype,
        "keyval": {"private": None, "public": base64.b64encode(public).decode()},
    }


def root_json(gun: str, root_key: Any, role_keys: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """root.json with the root key as a certificate; returns it and the root's listed ID."""
    root_cert = cert(root_key, gun)
    root_listed = tuf_key_id("ecdsa-x509", root_cert)
    listed = {role: tuf_key_id("ecdsa", spki(k)) for role, k in role_keys.items()}
    doc = {
        "signed": {
            "_type": "Root",
            "version": 1,
            "expires": "2035-01-01T00:00:00Z",
            "consistent_snapshot": False,
            "keys": {
                root_listed: tuf_key("ecdsa-x509", root_cert),
                **{listed[r]: tuf_key("ecdsa", spki(k)) for r, k in role_keys.items()},
            },
            "roles": {
                "root": {"keyids": [root_listed], "threshold": 1},
                **{r: {"keyids": [listed[r]], "threshold": 1} for r in role_keys},
            },
        },
        "signatures": [],
    }
    return doc, root_listed


def targets_json(delegations: dict[str, Any]) -> dict[str, Any]:
    """targets.json delegating each named role to one key (as a certificate)."""
    keys, roles = {}, []
    for name, key in delegations.items():
        pem = cert(key, name)
        listed = tuf_key_id("ecdsa-x509", pem)
        keys[listed] = tuf_key("ecdsa-x509", pem)
        roles.append({"name": name, "keyids": [listed], "threshold": 1, "paths": [""]})
    return {
        "signed": {
            "_type": "Targets",
            "version": 2,
            "expires": "2035-01-01T00:00:00Z",
            "targets": {},
            "delegations": {"keys": keys, "roles": roles},
        },
        "signatures": [],
    }


def write_cache(trust: Path, gun: str, docs: dict[str, dict[str, Any]]) -> None:
    """Put documents where a notary client caches them: tuf/<gun>/metadata/<role>.json."""
    meta = trust / "tuf" / gun / "metadata"
    meta.mkdir(parents=True, exist_ok=True)
    for role, doc in docs.items():
        (meta / f"{role}.json").write_text(json.dumps(doc))
