"""PKCS#8 in Notary's dialect: PBES2 decryption and private key parsing.

Why not pyca/cryptography: since 45 it refuses every key Notary writes.
Notary (``tuf/utils/pkcs8.go``) encodes an ECDSA PrivateKeyInfo with version 1
but no ``[1] publicKey``, an RSA one with no NULL after the algorithm OID, and
an ed25519 one under OID 1.3.6.1.4.1.11591.15.1 holding 96 raw bytes
(public || seed || public). So the outer structure is decoded here with a
strict DER reader, and the key inside is re-wrapped as a plain version-0
PrivateKeyInfo before cryptography loads it.

Notary decrypts only PBES2 + PBKDF2 + AES-256-CBC and always derives the key
with HMAC-SHA1: Go's ASN.1 decoder ignores the trailing ``keyLength`` and
``prf`` fields. A key whose PRF is not SHA-1 or whose cipher is not
AES-256-CBC can be decrypted here but Notary cannot use it; ``notary_issue``
says why, so a deep check can warn.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from dataclasses import dataclass, field

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from keyvault.errors import InvalidInputError
from keyvault.trust import der
from keyvault.trust.keyid import PrivateKey

OID_PBES2 = "1.2.840.113549.1.5.13"
OID_PBKDF2 = "1.2.840.113549.1.5.12"
OID_RSA = "1.2.840.113549.1.1.1"
OID_EC = "1.2.840.10045.2.1"
OID_ED25519_NOTARY = "1.3.6.1.4.1.11591.15.1"
OID_ED25519 = "1.3.101.112"
OID_HMAC_SHA1 = "1.2.840.113549.2.7"
OID_AES256_CBC = "2.16.840.1.101.3.4.1.42"
_PRFS = {
    OID_HMAC_SHA1: "sha1",
    "1.2.840.113549.2.8": "sha224",
    "1.2.840.113549.2.9": "sha256",
    "1.2.840.113549.2.10": "sha384",
    "1.2.840.113549.2.11": "sha512",
}
_AES_CBC = {
    "2.16.840.1.101.3.4.1.2": 16,
    "2.16.840.1.101.3.4.1.22": 24,
    OID_AES256_CBC: 32,
}
_CURVES: dict[str, type[ec.EllipticCurve]] = {
    "1.3.132.0.33": ec.SECP224R1,
    "1.2.840.10045.3.1.7": ec.SECP256R1,
    "1.3.132.0.34": ec.SECP384R1,
    "1.3.132.0.35": ec.SECP521R1,
}
#: A hostile file must not make us spin: Notary writes 2048, OpenSSL defaults to 2048.
MAX_ITERATIONS = 1_000_000
NOTARY_ITERATIONS = 2048
MAX_RSA_BITS = 8192


class WrongPassphrase(Exception):  # noqa: N818 - internal signal, turned into AccessDeniedError
    """Padding or structure check failed after decryption: almost surely the passphrase."""


@dataclass(frozen=True)
class Pbes2:
    """The parameters and ciphertext of an EncryptedPrivateKeyInfo."""

    salt: bytes
    iterations: int
    prf: str  # hashlib name
    key_size: int  # AES key bytes
    iv: bytes
    ciphertext: bytes = field(repr=False)

    @property
    def notary_issue(self) -> str | None:
        """Why Notary 0.7 could not decrypt this key even with the right passphrase."""
        if self.prf != "sha1":
            return f"it uses PBKDF2-HMAC-{self.prf.upper()}; notary only derives with HMAC-SHA1"
        if self.key_size != 32:
            return f"it uses AES-{self.key_size * 8}-CBC; notary only decrypts AES-256-CBC"
        return None


def parse_encrypted(data: bytes) -> Pbes2:
    """Decode an EncryptedPrivateKeyInfo; anything unexpected is InvalidInputError."""
    what = "encrypted PKCS#8 key"
    outer = der.DerReader(der.parse_single(data, der.SEQUENCE, what), what)
    algorithm = outer.sequence()
    ciphertext = outer.octet_string()
    outer.finish()
    if algorithm.oid() != OID_PBES2:
        raise InvalidInputError(f"{what}: not PBES2 (notary only reads PBES2)")
    params = algorithm.sequence()
    algorithm.finish()
    kdf, scheme = params.sequence(), params.sequence()
    params.finish()
    if kdf.oid() != OID_PBKDF2:
        raise InvalidInputError(f"{what}: key derivation is not PBKDF2")
    kdf_params = kdf.sequence()
    kdf.finish()
    salt = kdf_params.octet_string()
    iterations = kdf_params.small_uint(MAX_ITERATIONS)
    key_size: int | None = None
    if kdf_params.peek_tag() == der.INTEGER:
        key_size = kdf_params.small_uint(64)
    prf = "sha1"
    if not kdf_params.at_end():
        prf_alg = kdf_params.sequence()
        prf_oid = prf_alg.oid()
        if prf_oid not in _PRFS:
            raise InvalidInputError(f"{what}: unsupported PBKDF2 PRF {prf_oid}")
        prf = _PRFS[prf_oid]
        if not prf_alg.at_end():
            prf_alg.null()
        prf_alg.finish()
    kdf_params.finish()
    cipher_oid = scheme.oid()
    if cipher_oid not in _AES_CBC:
        raise InvalidInputError(f"{what}: unsupported cipher {cipher_oid}")
    iv = scheme.octet_string()
    scheme.finish()
    size = _AES_CBC[cipher_oid]
    if key_size is not None and key_size != size:
        raise InvalidInputError(f"{what}: key length does not match the cipher")
    if iterations < 1 or len(iv) != 16 or not salt:
        raise InvalidInputError(f"{what}: bad PBES2 parameters")
    if not ciphertext or len(ciphertext) % 16:
        raise InvalidInputError(f"{what}: ciphertext is not whole AES blocks")
    return Pbes2(salt, iterations, prf, size, iv, ciphertext)


def cbc_decrypt(key: bytes, iv: bytes, ciphertext: bytes) -> bytes:
    """AES-CBC with PKCS#7 padding; bad padding raises WrongPassphrase."""
    if not ciphertext or len(ciphertext) % 16:
        raise WrongPassphrase
    decryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).decryptor()
    plain = decryptor.update(ciphertext) + decryptor.finalize()
    pad = plain[-1]
    if not 1 <= pad <= 16 or not hmac.compare_digest(plain[-pad:], bytes([pad]) * pad):
        raise WrongPassphrase
    return plain[:-pad]


def decrypt(info: Pbes2, passphrase: str) -> bytes:
    """The inner PrivateKeyInfo DER (not yet checked)."""
    key = hashlib.pbkdf2_hmac(
        info.prf, passphrase.encode("utf-8"), info.salt, info.iterations, info.key_size
    )
    return cbc_decrypt(key, info.iv, info.ciphertext)


def encrypt_notary(private_key_info: bytes, passphrase: str) -> bytes:
    """EncryptedPrivateKeyInfo exactly as Notary writes it (pyca cannot emit this).

    PBES2, PBKDF2 with an 8-byte salt, 2048 iterations and no PRF field (so
    HMAC-SHA1), AES-256-CBC with a random IV.
    """
    salt, iv = os.urandom(8), os.urandom(16)
    key = hashlib.pbkdf2_hmac("sha1", passphrase.encode("utf-8"), salt, NOTARY_ITERATIONS, 32)
    pad = 16 - len(private_key_info) % 16
    encryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
    ciphertext = encryptor.update(private_key_info + bytes([pad]) * pad) + encryptor.finalize()
    kdf = der.sequence(
        der.oid(OID_PBKDF2), der.sequence(der.octet_string(salt), der.integer(NOTARY_ITERATIONS))
    )
    scheme = der.sequence(der.oid(OID_AES256_CBC), der.octet_string(iv))
    algorithm = der.sequence(der.oid(OID_PBES2), der.sequence(kdf, scheme))
    return der.sequence(algorithm, der.octet_string(ciphertext))


def notary_private_key_info(key: PrivateKey) -> bytes:
    """A PrivateKeyInfo in Notary's dialect (what ``ConvertTUFKeyToPKCS8`` builds)."""
    if isinstance(key, ec.EllipticCurvePrivateKey):
        sec1 = key.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
        curve = next(o for o, c in _CURVES.items() if isinstance(key.curve, c))
        return der.sequence(
            der.integer(1), der.sequence(der.oid(OID_EC), der.oid(curve)), der.octet_string(sec1)
        )
    if isinstance(key, rsa.RSAPrivateKey):
        pkcs1 = key.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
        return der.sequence(der.integer(0), der.sequence(der.oid(OID_RSA)), der.octet_string(pkcs1))
    seed = key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    return der.sequence(
        der.integer(0),
        der.sequence(der.oid(OID_ED25519_NOTARY)),
        der.octet_string(public + seed + public),
    )


def parse_private_key_info(data: bytes) -> PrivateKey:
    """Load a PrivateKeyInfo (version 0 or 1, Notary's dialect or the standard one)."""
    what = "PKCS#8 private key"
    info = der.DerReader(der.parse_single(data, der.SEQUENCE, what), what)
    version = info.small_uint(1)
    algorithm = info.sequence()
    private = info.octet_string()
    info.read_optional(der.CONTEXT_0)  # attributes
    if version == 1:
        info.read_optional(der.CONTEXT_1_PRIMITIVE)  # publicKey
    info.finish()
    oid = algorithm.oid()
    if oid == OID_EC:
        curve = algorithm.oid()
        algorithm.finish()
        return ec_key_from_sec1(private, curve)
    if oid == OID_RSA:
        if not algorithm.at_end():
            algorithm.null()
        algorithm.finish()
        return rsa_key_from_pkcs1(private)
    if oid == OID_ED25519_NOTARY:
        algorithm.finish()
        return ed25519_key_from_notary(private)
    if oid == OID_ED25519:
        raise InvalidInputError(f"{what}: an RFC 8410 ed25519 key, which notary 0.7 cannot use")
    raise InvalidInputError(f"{what}: unsupported algorithm {oid}")


def _load(pkcs8_v0: bytes, what: str) -> PrivateKey:
    try:
        key = serialization.load_der_private_key(pkcs8_v0, password=None)
    except (ValueError, TypeError) as exc:
        raise InvalidInputError(f"{what}: the key material is invalid") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise InvalidInputError(f"{what}: unexpected key type")
    return key


def ec_key_from_sec1(sec1: bytes, curve_oid: str | None) -> PrivateKey:
    """An ECDSA key from SEC1 ``ECPrivateKey``; the public point is recomputed.

    Go's ``ParseECPrivateKey`` ignores the stored public key and derives it
    from the scalar, so the key ID must be computed the same way.
    """
    what = "EC private key"
    reader = der.DerReader(der.parse_single(sec1, der.SEQUENCE, what), what)
    if reader.small_uint(1) != 1:
        raise InvalidInputError(f"{what}: bad version")
    scalar = reader.octet_string()
    params = reader.read_optional(der.CONTEXT_0)
    reader.read_optional(der.CONTEXT_1)
    reader.finish()
    if params is not None:
        inner = der.decode_oid(der.parse_single(params, der.OID, what), what)
        if curve_oid is not None and inner != curve_oid:
            raise InvalidInputError(f"{what}: curve parameters disagree")
        curve_oid = inner
    if curve_oid not in _CURVES:
        raise InvalidInputError(f"{what}: unsupported or missing curve")
    value = int.from_bytes(scalar, "big")
    try:
        return ec.derive_private_key(value, _CURVES[curve_oid]())
    except ValueError as exc:
        raise InvalidInputError(f"{what}: the key material is invalid") from exc


def rsa_key_from_pkcs1(pkcs1: bytes) -> PrivateKey:
    """An RSA key from PKCS#1; its shape is checked first so no huge number reaches OpenSSL."""
    what = "RSA private key"
    reader = der.DerReader(der.parse_single(pkcs1, der.SEQUENCE, what), what)
    if reader.small_uint(0) != 0:
        raise InvalidInputError(f"{what}: multi-prime keys are not supported")
    if reader.integer().bit_length() > MAX_RSA_BITS:
        raise InvalidInputError(f"{what}: modulus larger than {MAX_RSA_BITS} bits")
    for _ in range(7):
        reader.integer()
    reader.finish()
    wrapped = der.sequence(
        der.integer(0), der.sequence(der.oid(OID_RSA), der.null()), der.octet_string(pkcs1)
    )
    return _load(wrapped, "RSA private key")


def ed25519_key_from_notary(raw: bytes) -> PrivateKey:
    """Notary's 96-byte ed25519 serialization: public || seed || public."""
    if len(raw) != 96:
        raise InvalidInputError("ed25519 private key: expected 96 bytes")
    key = ed25519.Ed25519PrivateKey.from_private_bytes(raw[32:64])
    public = key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    if not (hmac.compare_digest(public, raw[:32]) and hmac.compare_digest(public, raw[64:])):
        raise InvalidInputError("ed25519 private key: public half does not match")
    return key
