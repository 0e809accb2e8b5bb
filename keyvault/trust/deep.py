"""Deep checks: decrypt a key file in memory and prove its name is its key ID (B11).

Backups never need this (key files are carried as opaque bytes); ``verify
--deep`` and drills do. Every PEM type Notary 0.7 reads is handled: PKCS#8
(``PRIVATE KEY``, ``ENCRYPTED PRIVATE KEY``) and the legacy ``EC``/``RSA``/
``ED25519 PRIVATE KEY`` blocks, plain or RFC 1421-encrypted. Failures are
keyvault errors only: a wrong passphrase is AccessDeniedError, a malformed
file InvalidInputError, a misnamed file IntegrityError. Nothing secret is put
in a message; the decrypted key lives only in the returned object.
"""

from __future__ import annotations

from dataclasses import dataclass

from keyvault.errors import AccessDeniedError, IntegrityError, InvalidInputError, UsageError
from keyvault.names import key_words
from keyvault.trust import pkcs8, rfc1421
from keyvault.trust.keyid import PrivateKey, algorithm_of, private_key_id
from keyvault.trust.model import KeyFile
from keyvault.trust.passphrases import passphrase_hint
from keyvault.trust.pem import PemBlock, decode_first

LEGACY_TYPES = ("EC PRIVATE KEY", "RSA PRIVATE KEY", "ED25519 PRIVATE KEY")
PKCS8_TYPES = ("PRIVATE KEY", "ENCRYPTED PRIVATE KEY")
KEY_TYPES = PKCS8_TYPES + LEGACY_TYPES  # what notary's ParsePEMPrivateKey accepts


@dataclass(frozen=True)
class OpenedKey:
    """A decrypted key and, if Notary could not decrypt the file itself, why not."""

    key: PrivateKey
    notary_issue: str | None = None

    def __repr__(self) -> str:
        return f"OpenedKey(algorithm={algorithm_of(self.key)!r})"


def key_label(key: KeyFile) -> str:
    """``targets key 1a2b3c4d5e6f of example.com/app``: how messages name a key."""
    return key_words(key.role, key.gun, key.key_id[:12])


def is_encrypted(block: PemBlock) -> bool:
    if block.type == "ENCRYPTED PRIVATE KEY":
        return True
    return block.type in LEGACY_TYPES and rfc1421.is_encrypted(block.headers)


def _parse_plain(block_type: str, data: bytes) -> PrivateKey:
    """The key in a decrypted (or never encrypted) block body."""
    try:
        if block_type in PKCS8_TYPES:
            return pkcs8.parse_private_key_info(data)
        if block_type == "EC PRIVATE KEY":
            return pkcs8.ec_key_from_sec1(data, None)
        if block_type == "RSA PRIVATE KEY":
            return pkcs8.rsa_key_from_pkcs1(data)
        if block_type == "ED25519 PRIVATE KEY":
            return pkcs8.ed25519_key_from_notary(data)
    except (ValueError, TypeError, OverflowError) as exc:  # belt and braces for pyca
        raise InvalidInputError("the key material is invalid") from exc
    raise InvalidInputError(f"notary does not read {block_type[:40]!r} blocks")


class NoPassphraseError(UsageError):
    """An encrypted key and no passphrase for it: a check that was not possible, not a
    broken key (``verify --deep`` reports it as not checked)."""


def open_block(
    block: PemBlock, passphrase: str | None, label: str, role: str | None = ""
) -> OpenedKey:
    """Decrypt (when needed) and load the key in ``block``."""
    try:
        if not is_encrypted(block):
            return OpenedKey(_parse_plain(block.type, block.data))
        cipher: pkcs8.Pbes2 | rfc1421.Rfc1421
        if block.type == "ENCRYPTED PRIVATE KEY":
            cipher = pkcs8.parse_encrypted(block.data)
        else:
            cipher = rfc1421.parse(block.headers, block.data)
    except InvalidInputError as exc:
        raise InvalidInputError(f"{label}: {exc.message}") from exc
    if not passphrase:
        raise NoPassphraseError(
            f"{label} is encrypted and no passphrase was given",
            hint=passphrase_hint(role) if role != "" else None,
        )
    try:
        if isinstance(cipher, pkcs8.Pbes2):
            key = _parse_plain("PRIVATE KEY", pkcs8.decrypt(cipher, passphrase))
            return OpenedKey(key, cipher.notary_issue)
        return OpenedKey(_parse_plain(block.type, rfc1421.decrypt(cipher, passphrase)))
    except (pkcs8.WrongPassphrase, InvalidInputError):
        hint = passphrase_hint(role) + "; " if role != "" else ""
        raise AccessDeniedError(
            f"wrong passphrase for {label}",
            hint=hint + "if the passphrase is right, the key file is damaged",
        ) from None


def load_private_key(key: KeyFile, passphrase: str | None) -> PrivateKey:
    """The private key in a key file (decrypted in memory with ``passphrase``)."""
    return _open(key, passphrase).key


def _open(key: KeyFile, passphrase: str | None) -> OpenedKey:
    label = key_label(key)
    block = decode_first(key.data)
    if block is None:
        raise InvalidInputError(f"{label}: the file holds no PEM block")
    return open_block(block, passphrase, label, key.role)


def verify_key_id(key: KeyFile, passphrase: str | None) -> str:
    """Decrypt ``key`` and return its real ID; IntegrityError if the file name differs (B11).

    Also refuses (InvalidInputError) a key Notary itself could not decrypt,
    e.g. one re-encrypted with PBKDF2-HMAC-SHA256: such a backup would
    restore a key that cannot sign.
    """
    opened = _open(key, passphrase)
    computed = private_key_id(opened.key)
    if computed != key.key_id:
        raise IntegrityError(
            f"{key_label(key)}: the file name is not the key's ID; the key inside is {computed}",
            hint=f"notary cannot sign with a misnamed key file; rename it to {computed}.key",
        )
    if opened.notary_issue:
        raise InvalidInputError(
            f"{key_label(key)} cannot be decrypted by notary: {opened.notary_issue}",
            hint="re-encrypt it with 'openssl pkcs8 -topk8 -v2 aes-256-cbc -v2prf hmacWithSHA1' "
            "and put the role:/gun: headers back, or re-import it with notary",
        )
    return computed
