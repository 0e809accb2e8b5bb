"""The offline recovery wrapper: the DEK encrypted to an age X25519 recipient.

The URI is the recipient itself (``age1...``), so wrapping needs nothing
secret and can run on every backup; the identity stays offline until a
recovery. age has no associated data, so the context is bound by sealing its
digest beside the DEK: the plaintext is ``DEK || SHA-256(canonical_json(context))``
and an envelope replayed under another key's name fails the digest check (T6).
Anyone holding the identity can recover by hand: ``age -d`` and split the
64 bytes.

Unwrapping is strict: only an identity whose public key *is* this URI is
used, never whatever identity happens to decrypt (AWS Encryption SDK's strict
mode). Identity files are in age-keygen format and must be private to their
owner, as ssh demands of private keys.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Self

import pyrage

from keyvault import fsutil
from keyvault.errors import (
    AccessDeniedError,
    ConflictError,
    IntegrityError,
    InvalidInputError,
    KeyvaultError,
    UsageError,
)
from keyvault.plugins import BackendOptions
from keyvault.wrappers.base import DEK_SIZE, WrappedKey, context_digest

ALG = "age-x25519"
_DIGEST_SIZE = 32
_MAX_BLOB = 4096
_MAX_IDENTITY_FILE = 64 * 1024
_IDENTITY_LINE_PREFIX = "AGE-SECRET-KEY-1"
_IDENTITY_HINT = (
    "give the identity file of this recipient with recovery.identity_file in "
    "the config or KEYVAULT_AGE_IDENTITY=/path/to/identity.txt"
)


class AgeWrapper:
    """Wrap to one age recipient; unwrap only with that recipient's identity."""

    def __init__(self, recipient: str, identity_files: tuple[Path, ...] = ()) -> None:
        self._recipient = _parse_recipient(recipient)
        self._uri = str(self._recipient)
        self._identity_files = identity_files
        self._identity: Any = None  # pyrage.x25519.Identity once loaded; its repr shows no key

    @classmethod
    def from_uri(cls, uri: str, options: BackendOptions) -> Self:
        return cls(uri, tuple(options.age_identity_files))

    @classmethod
    def check_uri(cls, uri: str) -> None:
        """UsageError unless ``uri`` is a canonical age recipient (bech32 checksum included)."""
        if str(_parse_recipient(uri)) != uri:
            raise UsageError(f"age recipient {uri[:80]!r} is not in canonical form")

    @property
    def uri(self) -> str:
        return self._uri

    def __repr__(self) -> str:
        return f"AgeWrapper({self._uri!r})"

    def wrap(self, dek: bytes, context: Mapping[str, str]) -> WrappedKey:
        if len(dek) != DEK_SIZE:
            raise ValueError(f"a DEK is {DEK_SIZE} bytes")
        try:
            blob = pyrage.encrypt(bytes(dek) + context_digest(context), [self._recipient])
        except pyrage.EncryptError:
            raise KeyvaultError(f"age encryption to {self._uri} failed") from None
        return WrappedKey(self._uri, ALG, blob, dict(context), {})

    def unwrap(self, wrapped: WrappedKey, context: Mapping[str, str]) -> bytes:
        if wrapped.alg != ALG or wrapped.params:
            raise IntegrityError(
                f"wrapped key for {self._uri} has algorithm "
                f"{wrapped.alg[:32]!r} or parameters this wrapper never writes"
            )
        if len(wrapped.blob) > _MAX_BLOB:
            raise IntegrityError(f"wrapped key for {self._uri} is implausibly large")
        identity = self._load_identity()
        try:
            plain = pyrage.decrypt(wrapped.blob, [identity])
        except pyrage.DecryptError:
            raise IntegrityError(
                f"the key wrapped for {self._uri} does not decrypt with its "
                "identity: it was altered or truncated"
            ) from None
        if len(plain) != DEK_SIZE + _DIGEST_SIZE:
            raise IntegrityError(f"the key wrapped for {self._uri} has the wrong length")
        if not hmac.compare_digest(plain[DEK_SIZE:], context_digest(context)):
            raise IntegrityError(
                f"the key wrapped for {self._uri} is bound to another key's "
                "context (team, GUN, role or key ID)"
            )
        return bytes(plain[:DEK_SIZE])

    def close(self) -> None:
        self._identity = None

    def _load_identity(self) -> Any:
        """This recipient's identity from the configured files; read once per wrapper."""
        if self._identity is not None:
            return self._identity
        problems: list[KeyvaultError] = []
        for path in self._identity_files:
            try:
                identities = read_identity_file(path)
            except KeyvaultError as exc:  # another file may still hold the identity
                problems.append(exc)
                continue
            for identity in identities:
                if str(identity.to_public()) == self._uri:
                    self._identity = identity
                    return identity
        if problems:
            raise problems[0]
        searched = ", ".join(str(p) for p in self._identity_files) or "none configured"
        raise AccessDeniedError(
            f"no identity for recovery recipient {self._uri} (identity files: {searched})",
            hint=_IDENTITY_HINT,
        )


def read_identity_file(path: Path) -> list[Any]:
    """The X25519 identities in an age-keygen file, refusing one others can read."""
    raw = _read_private_file(path)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidInputError(f"identity file {path} is not UTF-8 text") from None
    identities = []
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if not line.startswith(_IDENTITY_LINE_PREFIX):
            raise InvalidInputError(
                f"identity file {path} line {number} is not an age X25519 "
                "identity (AGE-SECRET-KEY-1...)"
            )
        try:
            identities.append(pyrage.x25519.Identity.from_str(line))
        except pyrage.IdentityError:
            raise InvalidInputError(
                f"identity file {path} line {number} is not a valid age identity"
            ) from None
    return identities


def generate_identity(path: Path, pins: Sequence[str] = ()) -> str:
    """Write a new identity file (age-keygen format, 0600, never overwriting); its recipient.

    ``pins`` (sealer fingerprints) go in as comment lines, which age ignores and
    keyvault reads to know whose backups to trust. The parent directory is
    created 0700 if missing.
    """
    from keyvault.sealing import pin_lines

    identity = pyrage.x25519.Identity.generate()
    recipient = str(identity.to_public())
    created = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    text = f"# created: {created}\n# public key: {recipient}\n{pin_lines(pins)}{identity}\n"
    fsutil.ensure_private_dir(path.parent)
    try:
        fsutil.write_file_atomic(
            path.parent, path.name, text.encode("ascii"), mode=0o600, exclusive=True
        )
    except ConflictError:
        raise ConflictError(
            f"identity file {path} already exists; it was left untouched",
            hint="move it aside or choose another path",
        ) from None
    return recipient


def _parse_recipient(uri: str) -> Any:
    try:
        return pyrage.x25519.Recipient.from_str(uri)
    except (pyrage.RecipientError, TypeError, ValueError):
        raise UsageError(
            f"invalid age recipient {str(uri)[:80]!r}",
            hint="expected age1... as printed by 'age-keygen -y'",
        ) from None


def _read_private_file(path: Path) -> bytes:
    return fsutil.read_private_file(
        path, "identity file", _MAX_IDENTITY_FILE, missing_hint=_IDENTITY_HINT
    )
