"""Generate tests/envelope/vectors.json: envelope test vectors, format v1 and v2.

Run ``python tests/envelope/make_vectors.py`` to rewrite vectors.json. This
generator is a second implementation of docs/envelope.md, written with the
standard library and ``cryptography`` only (no keyvault import), so that the
vectors do not merely echo keyvault's own code. test_vectors.py asserts the
committed JSON, recomputing it with keyvault and with this generator.

Every input is fixed: DEKs, nonces, salts and the sealers' private keys are
derived from labels with SHA-256, and both signature algorithms are
deterministic (Ed25519 by design, ECDSA as RFC 6979: cryptography 44 or
newer). The plaintexts are test strings and random-looking bytes; none is a
key, and the sealers are test constants that seal nothing else. Never put
real key material (or PEM private key blocks) in here.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import unicodedata
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

VECTORS_FILE = Path(__file__).with_name("vectors.json")
COMMIT_LABEL = b"keyvault/v1/commit"
SIGN_LABEL = b"keyvault/v2/envelope\n"
ED25519, ECDSA_P256 = "ed25519", "ecdsa-p256-sha256"
PASSPHRASE_ALG = "scrypt-aes256gcm"
CHECK_LABEL = b"keyvault/v1/passphrase-check"
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1  # n = 2**14: the smallest n keyvault accepts


def derive(label: str, size: int) -> bytes:
    """Fixed, random-looking bytes: SHA-256 in counter mode over a label."""
    out = b""
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(f"keyvault vectors/{label}/{counter}".encode()).digest()
        counter += 1
    return out[:size]


def canonical_json(value: dict[str, Any]) -> bytes:
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def stored_bytes(envelope: dict[str, Any]) -> bytes:
    """The layout keyvault stores (and the next version's chain digests): indent 2, sorted."""
    return (json.dumps(envelope, indent=2, sort_keys=True) + "\n").encode("utf-8")


def sealer_private_bytes(alg: str) -> bytes:
    """A test sealer's private key: the Ed25519 seed, or the P-256 scalar (big-endian)."""
    raw = derive(f"sealer/{alg}", 32)
    if alg == ECDSA_P256:  # a scalar in 1 .. n-1 (this one is, far below the group order)
        raw = bytes([raw[0] & 0x7F]) + raw[1:]
    return raw


def sign(alg: str, private: bytes, message: bytes) -> tuple[bytes, bytes]:
    """(DER SubjectPublicKeyInfo, signature) of a test sealer over ``message``."""
    key: ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey
    if alg == ED25519:
        key = ed25519.Ed25519PrivateKey.from_private_bytes(private)
        signature = key.sign(message)
    else:
        key = ec.derive_private_key(int.from_bytes(private, "big"), ec.SECP256R1())
        signature = key.sign(message, ec.ECDSA(hashes.SHA256(), deterministic_signing=True))
    public = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return public, signature


def context_of(header: dict[str, Any]) -> dict[str, str]:
    context = {
        "keyvault:team": header["team"],
        "keyvault:role": header["role"],
        "keyvault:key_id": header["key_id"],
    }
    if header["gun"] is not None:
        context["keyvault:gun"] = header["gun"]
    return context


def object_name(header: dict[str, Any]) -> str:
    base = f"v1/teams/{header['team']}"
    segment = header["role"].replace("/", "~")
    if header["role"] == "root":
        return f"{base}/root/{header['key_id']}.json"
    if header["gun"] is None:
        return f"{base}/delegations/{segment}/{header['key_id']}.json"
    return f"{base}/guns/{header['gun']}/{segment}/{header['key_id']}.json"


CASES: list[dict[str, Any]] = [
    {
        "name": "targets key of a GUN, current layout, text plaintext",
        "label": "targets",
        "team": "team-a",
        "gun": "registry.example.com/team-a/app",
        "role": "targets",
        "algorithm": "ecdsa",
        "created": "2024-05-06T07:08:09Z",
        "source_name": "{id}.key",
        "source_mode": 0o600,
        "plaintext": b"keyvault test vector\n",
        "passphrase": "correct horse battery staple (test vector only)",
    },
    {
        "name": "root key (no GUN, so no keyvault:gun in the context), random-looking bytes",
        "label": "root",
        "team": "platform",
        "gun": None,
        "role": "root",
        "algorithm": None,
        "created": "2023-12-31T23:59:59Z",
        "source_name": "root_keys/{id}.key",
        "source_mode": 0o400,
        "plaintext": derive("root plaintext", 97),
        "passphrase": "another test passphrase",
    },
    {
        "name": "delegation key without a GUN; non-ASCII and a quote in the source name "
        "(canonical JSON keeps UTF-8 literal and escapes the quote)",
        "label": "delegation",
        "team": "team-b",
        "gun": None,
        "role": "targets/releases",
        "algorithm": "ed25519",
        "created": "2025-01-02T03:04:05Z",
        "source_name": 'équipe/"q"/{id}.key',
        "source_mode": 0o640,
        "plaintext": derive("delegation plaintext", 16),
        # typed in NFD (as macOS keyboards produce it); scrypt gets its NFC form
        "passphrase": unicodedata.normalize("NFD", "pässwörd çà (test vector only)"),
    },
]


def make_vector(case: dict[str, Any], version: int = 1) -> dict[str, Any]:
    """A case sealed as ``version``; v2 without its chain and signature (see ``signed``)."""
    key_id = hashlib.sha256(f"keyvault vectors/{case['label']}/key id".encode()).hexdigest()
    label = case["label"] if version == 1 else f"v{version}/{case['label']}"  # fresh DEK, nonce
    plaintext: bytes = case["plaintext"]
    dek, nonce = derive(f"{label}/dek", 32), derive(f"{label}/nonce", 12)
    header = {
        "format": "keyvault-envelope",
        "version": version,
        "team": case["team"],
        "gun": case["gun"],
        "role": case["role"],
        "key_id": key_id,
        "algorithm": case["algorithm"],
        "created": case["created"],
        "source_name": case["source_name"].format(id=key_id),
        "source_mode": case["source_mode"],
        "size": len(plaintext),
        "sha256": hashlib.sha256(plaintext).hexdigest(),
    }
    aad = canonical_json(header)
    commitment = hmac.new(dek, COMMIT_LABEL + aad, hashlib.sha256).digest()
    ciphertext = AESGCM(dek).encrypt(nonce, plaintext, aad)
    context = context_of(header)
    context_bytes = canonical_json(context)
    context_digest = hashlib.sha256(context_bytes).digest()

    salt, wrap_nonce = derive(f"{label}/salt", 16), derive(f"{label}/wrap nonce", 12)
    passphrase = unicodedata.normalize("NFC", case["passphrase"]).encode("utf-8")
    kek = Scrypt(salt=salt, length=32, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P).derive(passphrase)
    check = hmac.new(kek, CHECK_LABEL, hashlib.sha256).digest()[:16]
    wrapped = AESGCM(kek).encrypt(wrap_nonce, dek, context_bytes)
    entry = {
        "uri": "passphrase:",
        "alg": PASSPHRASE_ALG,
        "wrapped": b64(wrapped),
        "context": context,
        "params": {
            "kdf": "scrypt",
            "salt": b64(salt),
            "n": SCRYPT_N,
            "r": SCRYPT_R,
            "p": SCRYPT_P,
            "nonce": b64(wrap_nonce),
            "check": b64(check),
        },
    }
    envelope = {
        "format": "keyvault-envelope",
        "version": version,
        "header": header,
        "cipher": "AES-256-GCM",
        "nonce": b64(nonce),
        "ciphertext": b64(ciphertext),
        "commitment": b64(commitment),
        "wrapped_keys": [entry],
    }
    return {
        "name": case["name"],
        "inputs": {
            "header": header,
            "plaintext_hex": plaintext.hex(),
            "dek_hex": dek.hex(),
            "nonce_hex": nonce.hex(),
        },
        "canonical_header": aad.decode("utf-8"),
        "aad_hex": aad.hex(),
        "commitment_hex": commitment.hex(),
        "ciphertext_hex": ciphertext.hex(),
        "tag_hex": ciphertext[-16:].hex(),
        "object_name": object_name(header),
        "context": context,
        "context_canonical": context_bytes.decode("utf-8"),
        "age_plaintext_hex": (dek + context_digest).hex(),
        "passphrase_wrap": {
            "passphrase": case["passphrase"],
            "passphrase_nfc_utf8_hex": passphrase.hex(),
            "salt_hex": salt.hex(),
            "n": SCRYPT_N,
            "r": SCRYPT_R,
            "p": SCRYPT_P,
            "nonce_hex": wrap_nonce.hex(),
            "kek_hex": kek.hex(),
            "check_hex": check.hex(),
            "wrapped_hex": wrapped.hex(),
        },
        "envelope": envelope,
    }


def signed(vector: dict[str, Any], name: str, alg: str, chain: dict[str, Any]) -> dict[str, Any]:
    """``vector`` (format v2) as version ``chain`` of its key, signed by the ``alg`` sealer."""
    envelope = {**vector["envelope"], "chain": chain}
    message = SIGN_LABEL + canonical_json(envelope)
    private = sealer_private_bytes(alg)
    public, signature = sign(alg, private, message)
    envelope["signature"] = {"alg": alg, "public_key": b64(public), "value": b64(signature)}
    return {
        **vector,
        "name": name,
        "inputs": {**vector["inputs"], "chain": chain},
        "sealer": {
            "alg": alg,
            "private_key_hex": private.hex(),
            "public_key_der_hex": public.hex(),
            "fingerprint": "sha256:" + hashlib.sha256(public).hexdigest(),
        },
        "signed_message_hex": message.hex(),
        "signature_hex": signature.hex(),
        "envelope": envelope,
        "stored_sha256": hashlib.sha256(stored_bytes(envelope)).hexdigest(),
    }


def v2_vectors() -> list[dict[str, Any]]:
    """Each case as its key's first version, and the targets key sealed again on top of it."""
    targets, root, delegation = (make_vector(case, 2) for case in CASES)
    first = signed(targets, CASES[0]["name"], ED25519, {"sequence": 1, "previous": None})
    again = signed(
        targets,
        "the same targets key re-sealed as its second version (rewrap "
        "--reseal): only chain and signature change",
        ED25519,
        {"sequence": 2, "previous": first["stored_sha256"]},
    )
    return [
        first,
        again,
        signed(
            root,
            CASES[1]["name"] + "; sealed with ECDSA P-256",
            ECDSA_P256,
            {"sequence": 1, "previous": None},
        ),
        signed(delegation, CASES[2]["name"], ED25519, {"sequence": 1, "previous": None}),
    ]


def generate() -> dict[str, Any]:
    return {
        "description": "keyvault envelope test vectors (docs/envelope.md): format v1 "
        "(read-only) in vectors, format v2 in vectors_v2. Regenerate with: "
        "python tests/envelope/make_vectors.py",
        "commit_label": COMMIT_LABEL.decode("ascii"),
        "sign_label": SIGN_LABEL.decode("ascii"),
        "vectors": [make_vector(case) for case in CASES],
        "vectors_v2": v2_vectors(),
    }


def render(vectors: dict[str, Any]) -> str:
    return json.dumps(vectors, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


if __name__ == "__main__":
    VECTORS_FILE.write_text(render(generate()), encoding="utf-8")
    print(f"wrote {VECTORS_FILE}")
