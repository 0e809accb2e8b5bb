"""Key files for unit tests, made in-process (no notary binary needed).

``key_file`` writes notary's format with keyvault's own writer; the sample
tests prove with the real notary that this writer's output is what notary
reads, so unit tests can rely on it.
"""

from __future__ import annotations

import datetime as dt

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from keyvault.trust.keyid import PrivateKey, private_key_id
from keyvault.trust.sample import notary_key_file

PASSPHRASE = "unit-test-passphrase"
GUN = "example.com/unit/app"


def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def key_file(
    role: str = "targets",
    gun: str | None = GUN,
    passphrase: str = PASSPHRASE,
    key: PrivateKey | None = None,
) -> tuple[str, bytes]:
    """(key ID, file bytes) of a fresh key in notary's format."""
    key = key or ec_key()
    return private_key_id(key), notary_key_file(key, role, gun, passphrase)


def with_headers(data: bytes, headers: str) -> bytes:
    """Replace the header block of a notary key file with ``headers`` ("k: v" lines)."""
    begin, *rest = data.decode().splitlines(keepends=True)
    body = [line for line in rest if ": " not in line and line.strip()]
    head = "".join(f"{line}\n" for line in headers.splitlines())
    return (begin + head + ("\n" if head else "") + "".join(body)).encode()


def self_signed_cert(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey, cn: str) -> bytes:
    """A PEM certificate like notary's root certificates (CN=<gun>, 10 years)."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=3650))
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)
