"""Notary key IDs.

A Notary (TUF) key ID is the SHA-256 of the canonical JSON
``{"keytype":KT,"keyval":{"private":null,"public":B64}}`` of the public key
(notary ``tuf/data/keys.go``, ``TUFKey.ID``). ``public`` is the DER
SubjectPublicKeyInfo for ``ecdsa`` and ``rsa`` (Go's ``MarshalPKIXPublicKey``)
and the raw 32 bytes for ``ed25519``. A private key file is named after the
ID of its public key.

Root keys (and delegation keys) appear in TUF metadata as ``ecdsa-x509`` /
``rsa-x509`` keys whose ``public`` is a PEM certificate; that "cert ID" is not
the file name. ``cert_key_id`` maps a certificate to the ID of the private key
behind it, the way notary's ``X509PublicKeyID`` does: the bare key type over
the certificate's re-encoded SubjectPublicKeyInfo.
"""

from __future__ import annotations

import base64
import hashlib

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from keyvault.canonical import canonical_json
from keyvault.errors import InvalidInputError
from keyvault.trust.pem import decode

PublicKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey | ed25519.Ed25519PublicKey
PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey

X509_KEYTYPES = {"ecdsa-x509": "ecdsa", "rsa-x509": "rsa"}


def tuf_key_id(keytype: str, public: bytes) -> str:
    """The ID of a TUF key given its key type and its public bytes (not base64)."""
    doc = {
        "keytype": keytype,
        "keyval": {"private": None, "public": base64.b64encode(public).decode("ascii")},
    }
    return hashlib.sha256(canonical_json(doc)).hexdigest()


def public_key_bytes(key: PublicKey) -> tuple[str, bytes]:
    """Notary's key type and public bytes for a public key."""
    if isinstance(key, ed25519.Ed25519PublicKey):
        raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return "ed25519", raw
    spki = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return ("ecdsa" if isinstance(key, ec.EllipticCurvePublicKey) else "rsa"), spki


def public_key_id(key: PublicKey) -> str:
    return tuf_key_id(*public_key_bytes(key))


def private_key_id(key: PrivateKey) -> str:
    """The ID Notary names this private key's file after."""
    return public_key_id(key.public_key())


def algorithm_of(key: PrivateKey | PublicKey) -> str:
    """``ecdsa``, ``rsa`` or ``ed25519``: Notary's names for the algorithms."""
    if isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey):
        return "ecdsa"
    if isinstance(key, rsa.RSAPrivateKey | rsa.RSAPublicKey):
        return "rsa"
    return "ed25519"


def cert_key_id(keytype: str, cert_pem: bytes) -> str:
    """The private key ID behind an ``ecdsa-x509``/``rsa-x509`` key of TUF metadata.

    Like notary, only the first CERTIFICATE block without headers counts.
    """
    bare = X509_KEYTYPES.get(keytype)
    if bare is None:
        raise InvalidInputError(f"key type {keytype!r} is not an x509 key type")
    rest = cert_pem
    while True:
        block, rest = decode(rest)
        if block is None:
            raise InvalidInputError(f"{keytype} key holds no readable certificate")
        if block.type != "CERTIFICATE" or block.headers:
            continue
        try:
            public = x509.load_der_x509_certificate(block.data).public_key()
        except ValueError:
            continue
        break
    if not isinstance(public, ec.EllipticCurvePublicKey | rsa.RSAPublicKey):
        raise InvalidInputError(f"{keytype} certificate has an unsupported public key")
    if algorithm_of(public) != bare:
        raise InvalidInputError(f"{keytype} certificate holds a {algorithm_of(public)} key")
    return tuf_key_id(bare, public_key_bytes(public)[1])
