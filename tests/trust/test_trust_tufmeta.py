"""tufmeta: which private keys each GUN's root.json relies on (cert ID -> key file ID)."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from keyvault.errors import InvalidInputError, UsageError
from keyvault.trust.keyid import cert_key_id, private_key_id, public_key_id, tuf_key_id
from keyvault.trust.tufmeta import KeyUse, parse_root_json, read_trust_metadata

from ._keys import ec_key, self_signed_cert

GUN_A, GUN_B = "example.com/meta/a", "registry.example.com:5000/meta/b"


def tuf_key(keytype: str, public: bytes) -> dict[str, Any]:
    return {
        "keytype": keytype,
        "keyval": {"private": None, "public": base64.b64encode(public).decode()},
    }


def root_json(gun: str, root_key: Any, targets_key: Any) -> tuple[bytes, str]:
    """A notary-style root.json; returns it and the root cert ID."""
    cert = self_signed_cert(root_key, gun)
    cert_id = tuf_key_id("ecdsa-x509", cert)
    targets = tuf_key("ecdsa", _spki(targets_key))
    targets_id = public_key_id(targets_key.public_key())
    signed = {
        "_type": "Root",
        "consistent_snapshot": False,
        "expires": "2035-01-01T00:00:00Z",
        "version": 1,
        "keys": {cert_id: tuf_key("ecdsa-x509", cert), targets_id: targets},
        "roles": {
            "root": {"keyids": [cert_id], "threshold": 1},
            "targets": {"keyids": [targets_id], "threshold": 1},
        },
    }
    return json.dumps({"signed": signed, "signatures": []}).encode(), cert_id


def _spki(key: Any) -> bytes:
    spki: bytes = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return spki


def write_meta(trust: Path, gun: str, data: bytes) -> None:
    meta = trust / "tuf" / gun / "metadata"
    meta.mkdir(parents=True)
    (meta / "root.json").write_bytes(data)


def test_root_key_shared_by_two_guns(tmp_path: Path) -> None:
    root, targets_a, targets_b = ec_key(), ec_key(), ec_key()
    doc_a, cert_a = root_json(GUN_A, root, targets_a)
    doc_b, cert_b = root_json(GUN_B, root, targets_b)
    write_meta(tmp_path, GUN_A, doc_a)
    write_meta(tmp_path, GUN_B, doc_b)
    meta = read_trust_metadata(tmp_path)
    assert meta.problems == ()
    root_id = private_key_id(root)
    assert cert_a != cert_b and root_id not in (cert_a, cert_b)
    assert meta.uses_of(root_id) == (
        KeyUse(GUN_A, "root", root_id, cert_a),
        KeyUse(GUN_B, "root", root_id, cert_b),
    )
    targets_id = private_key_id(targets_a)
    assert meta.uses_of(targets_id) == (KeyUse(GUN_A, "targets", targets_id, targets_id),)


def test_rsa_certificate_maps_to_rsa_key_id() -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    cert = self_signed_cert(key, GUN_A)
    assert cert_key_id("rsa-x509", cert) == private_key_id(key)
    with pytest.raises(InvalidInputError, match="rsa key"):
        cert_key_id("ecdsa-x509", cert)


def test_certificate_with_headers_is_skipped_like_notary() -> None:
    key, other = ec_key(), ec_key()
    with_headers = self_signed_cert(other, "x").replace(b"-----\n", b"-----\nnote: skipped\n\n", 1)
    assert cert_key_id("ecdsa-x509", with_headers + self_signed_cert(key, "y")) == private_key_id(
        key
    )


@pytest.mark.parametrize(
    ("mangle", "reason"),
    [
        (lambda d: d[:-5], "not valid JSON"),
        (lambda d: d.replace(b'"Root"', b'"root"'), "_type"),
        (lambda d: d.replace(b'{"signed"', b'{"signed": 1, "signed"'), "duplicate"),
        (lambda d: d.replace(b'"threshold": 1', b'"threshold": NaN', 1), "NaN"),
        (lambda d: d.replace(b'"keyids": [', b'"keyids": ["' + b"f" * 64 + b'", ', 1), "missing"),
        (lambda d: b"[" * 100000 + b"]" * 100000, "nested more than 32 levels deep"),
    ],
)
def test_bad_root_json_is_a_problem_and_others_still_read(
    tmp_path: Path, mangle: Any, reason: str
) -> None:
    doc_a, _ = root_json(GUN_A, ec_key(), ec_key())
    doc_b, cert_b = root_json(GUN_B, ec_key(), ec_key())
    write_meta(tmp_path, GUN_A, mangle(doc_a))
    write_meta(tmp_path, GUN_B, doc_b)
    meta = read_trust_metadata(tmp_path)
    assert [p.path for p in meta.problems] == [f"tuf/{GUN_A}/metadata/root.json"]
    assert reason in meta.problems[0].reason
    assert {u.gun for u in meta.uses} == {GUN_B}
    assert cert_b in {u.listed_id for u in meta.uses}


def test_symlinked_and_oversized_root_json(tmp_path: Path) -> None:
    doc, _ = root_json(GUN_A, ec_key(), ec_key())
    (tmp_path / "elsewhere.json").write_bytes(doc)
    meta_dir = tmp_path / "trust" / "tuf" / GUN_A / "metadata"
    meta_dir.mkdir(parents=True)
    (meta_dir / "root.json").symlink_to(tmp_path / "elsewhere.json")
    big = tmp_path / "trust" / "tuf" / GUN_B / "metadata"
    big.mkdir(parents=True)
    (big / "root.json").write_bytes(b" " * (1024 * 1024 + 1))
    meta = read_trust_metadata(tmp_path / "trust")
    assert meta.uses == ()
    assert len(meta.problems) == 2


def test_no_tuf_dir_means_no_metadata(tmp_path: Path) -> None:
    meta = read_trust_metadata(tmp_path)
    assert meta.uses == () and meta.problems == ()


def test_parse_refuses_a_bad_gun() -> None:
    doc, _ = root_json(GUN_A, ec_key(), ec_key())
    with pytest.raises(UsageError, match=r"invalid GUN '\.\./x'"):
        parse_root_json(doc, "../x")
