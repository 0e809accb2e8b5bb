"""Prove a restored private key signs for the public key the TUF metadata publishes.

A drill decrypts each restored key (with its Notary passphrase), signs a
fresh random challenge, and verifies the signature with the public key taken
from the published metadata (the certificate for ``*-x509`` keys). Passing
means the restored file is the key the trust server relies on, not merely a
file with the right name.
"""

from __future__ import annotations

import os

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

from keyvault.errors import IntegrityError, InvalidInputError
from keyvault.trust.keyid import X509_KEYTYPES, PrivateKey


def published_public_key(keytype: str, public: bytes) -> object:
    """The public key object a TUF key entry describes."""
    try:
        if keytype in X509_KEYTYPES:
            return x509.load_pem_x509_certificate(public).public_key()
        if keytype in ("ecdsa", "rsa"):
            return serialization.load_der_public_key(public)
        if keytype == "ed25519":
            return ed25519.Ed25519PublicKey.from_public_bytes(public)
    except ValueError:
        raise InvalidInputError(f"the published {keytype} key is unreadable") from None
    raise InvalidInputError(f"unknown published key type {keytype[:20]!r}")


def prove_signature(private: PrivateKey, keytype: str, public: bytes, label: str) -> None:
    """Sign a random challenge and verify it with the published key; IntegrityError if not."""
    challenge = b"keyvault drill challenge " + os.urandom(32)
    published = published_public_key(keytype, public)
    try:
        if isinstance(private, ec.EllipticCurvePrivateKey) and isinstance(
            published, ec.EllipticCurvePublicKey
        ):
            published.verify(
                private.sign(challenge, ec.ECDSA(hashes.SHA256())),
                challenge,
                ec.ECDSA(hashes.SHA256()),
            )
        elif isinstance(private, rsa.RSAPrivateKey) and isinstance(published, rsa.RSAPublicKey):
            pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)
            published.verify(
                private.sign(challenge, pss, hashes.SHA256()), challenge, pss, hashes.SHA256()
            )
        elif isinstance(private, ed25519.Ed25519PrivateKey) and isinstance(
            published, ed25519.Ed25519PublicKey
        ):
            published.verify(private.sign(challenge), challenge)
        else:
            raise IntegrityError(f"{label}: its algorithm differs from the published key's")
    except InvalidSignature:
        raise IntegrityError(
            f"{label}: a signature made with the restored key does not verify "
            "against the published key"
        ) from None
