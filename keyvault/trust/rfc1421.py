"""Legacy RFC 1421 PEM encryption (``Proc-Type: 4,ENCRYPTED`` + ``DEK-Info``).

Notary before 0.4 wrote ``EC/RSA/ED25519 PRIVATE KEY`` blocks encrypted this
way (Go's ``x509.EncryptPEMBlock`` with AES-256-CBC), and Notary 0.7 still
reads them (``parseLegacyPrivateKey``). The key is OpenSSL's
``EVP_BytesToKey`` with MD5, one round, salted with the first 8 bytes of the
IV: weak, which is one more reason key files count as secrets even when
encrypted.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from keyvault.errors import InvalidInputError
from keyvault.trust.pkcs8 import cbc_decrypt

_AES_KEY_SIZES = {"AES-128-CBC": 16, "AES-192-CBC": 24, "AES-256-CBC": 32}


def is_encrypted(headers: dict[str, str]) -> bool:
    """Go's ``IsEncryptedPEMBlock``: a ``DEK-Info`` header is what counts."""
    return "DEK-Info" in headers


@dataclass(frozen=True)
class Rfc1421:
    """The cipher parameters and ciphertext of a legacy encrypted block."""

    key_size: int
    iv: bytes
    ciphertext: bytes = field(repr=False)


def parse(headers: dict[str, str], data: bytes) -> Rfc1421:
    """Check ``DEK-Info`` and the ciphertext shape; InvalidInputError if unusable."""
    mode, _, hex_iv = headers.get("DEK-Info", "").partition(",")
    size = _AES_KEY_SIZES.get(mode.strip())
    if size is None:
        raise InvalidInputError(
            f"legacy encrypted key uses an unsupported cipher {mode.strip()[:20]!r}"
        )
    try:
        iv = bytes.fromhex(hex_iv.strip())
    except ValueError:
        iv = b""
    if len(iv) != 16:
        raise InvalidInputError("legacy encrypted key has a malformed DEK-Info IV")
    if not data or len(data) % 16:
        raise InvalidInputError("legacy encrypted key is not whole AES blocks")
    return Rfc1421(size, iv, data)


def _bytes_to_key(passphrase: bytes, salt: bytes, size: int) -> bytes:
    out, digest = b"", b""
    while len(out) < size:
        digest = hashlib.md5(digest + passphrase + salt, usedforsecurity=False).digest()
        out += digest
    return out[:size]


def decrypt(info: Rfc1421, passphrase: str) -> bytes:
    """The DER inside; raises ``pkcs8.WrongPassphrase`` when the padding is wrong."""
    key = _bytes_to_key(passphrase.encode("utf-8"), info.iv[:8], info.key_size)
    return cbc_decrypt(key, info.iv, info.ciphertext)
