"""Vault / OpenBao Transit as a key-encryption key: ``transit://mount/key-name``.

Wrap: Transit ``encrypt`` of the 32-byte DEK under a **derived** key, with
the envelope's context (team, GUN, role, key ID) as the derivation
``context`` (``base64(canonical_json(context))``): every key file gets its
own Transit sub-key, and the ciphertext does not decrypt under any other
context (T6). Transit's ``associated_data`` is not used: its ``rewrap`` is
known to fail with it (hashicorp/vault#29532; docs/vault.md), and our own
header AAD and commitment already bind the envelope.

Unwrap: ``decrypt`` with the same context. A ciphertext that does not
authenticate (tampered, or bound to another key's context) is an
IntegrityError; a ciphertext older than the key's ``min_decryption_version``
is :class:`TransitKeyVersionTooOldError` with what to do about it.

Rotate (``keyvault rewrap --rotate``): Transit ``rewrap`` moves the entry to
the newest key version inside Vault; keyvault never sees the DEK. An entry
already on the newest version is returned unchanged.

The key must exist and be derived: keyvault checks it once per process
(``transit/keys/<name>``, if the policy allows reading it) and never lets
Transit create a key on the fly. The ciphertext's key version is recorded in
the entry's params (``key_version``) and checked against the ciphertext.

Address and authentication are those of the KV store (``[vault]``, VAULT_ADDR,
VAULT_TOKEN...; see :mod:`keyvault.stores._vault_client`), and both share one
client; ``[transit] address`` points the wrapper at another Vault.
"""

from __future__ import annotations

import base64
import binascii
import re
import threading
from collections.abc import Callable, Mapping
from typing import Any, NoReturn, Self

from keyvault.canonical import canonical_json
from keyvault.errors import (
    AccessDeniedError,
    BackendUnavailableError,
    IntegrityError,
    NotFoundError,
    UsageError,
)
from keyvault.plugins import BackendOptions
from keyvault.redact import shown_uri
from keyvault.stores import _vault_client as vc
from keyvault.wrappers.base import DEK_SIZE, WrappedKey

ALG = "vault-transit-derived"
PARAM_KEY_VERSION = "key_version"
#: Transit key types that can wrap a DEK with a derivation context.
KEY_TYPES = ("aes256-gcm96", "aes128-gcm96", "chacha20-poly1305", "xchacha20-poly1305")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_CIPHERTEXT = re.compile(r"vault:v([1-9][0-9]{0,9}):([A-Za-z0-9+/]+={0,2})")
_MAX_BLOB = 1024
_TOO_OLD = "disallowed by policy (too old)"
_NO_KEY = "encryption key not found"
_NOT_AUTHENTIC = (
    "message authentication failed",
    "invalid ciphertext",
    "could not decode",
    "missing 'context'",
    "invalid key version",
    "failed to decode",
    "invalid version",
    "key version",
    "context",
)


class TransitKeyVersionTooOldError(AccessDeniedError):
    """The ciphertext's key version is below the Transit key's ``min_decryption_version``."""


class TransitKeyNotFoundError(NotFoundError):
    """No Transit key of that name exists at that mount."""


class TransitWrapper:
    """Wrap DEKs under one derived Transit key; see the module docstring."""

    def __init__(self, mount: str, key: str, options: BackendOptions) -> None:
        self._mount = mount
        self._key = key
        self._uri = f"transit://{mount}/{key}"
        address = options.for_scheme("transit").get("address")
        if address is not None and not isinstance(address, str):
            raise UsageError("[transit] address must be a string")
        self._client: vc.VaultClient | None = vc.acquire(options, address=address or None)
        self._key_checked = False
        self._lock = threading.Lock()
        self._gate: Callable[[], object] | None = None

    @classmethod
    def from_uri(cls, uri: str, options: BackendOptions) -> Self:
        mount, key = parse_transit_uri(uri)
        return cls(mount, key, options)

    @classmethod
    def check_uri(cls, uri: str) -> None:
        """UsageError unless ``uri`` is a well-formed transit: URI (no network)."""
        parse_transit_uri(uri)

    @property
    def uri(self) -> str:
        return self._uri

    def __repr__(self) -> str:
        return f"TransitWrapper({self._uri!r})"

    def wrap(self, dek: bytes, context: Mapping[str, str]) -> WrappedKey:
        if not isinstance(dek, bytes | bytearray) or len(dek) != DEK_SIZE:
            raise ValueError(f"a DEK is {DEK_SIZE} bytes")
        ctx = _context(context)
        self._check_key()
        plaintext = base64.b64encode(bytes(dek)).decode("ascii")
        try:
            resp = self._call(
                "encrypt with",
                "encrypt",
                lambda c: c.secrets.transit.encrypt_data(
                    name=self._key, plaintext=plaintext, context=ctx, mount_point=self._mount
                ),
            )
        except vc.VaultRequestError as exc:
            self._refused(exc)
        ciphertext, version = self._answer(resp)
        return WrappedKey(
            self._uri, ALG, ciphertext.encode("ascii"), dict(context), {PARAM_KEY_VERSION: version}
        )

    def unwrap(self, wrapped: WrappedKey, context: Mapping[str, str]) -> bytes:
        ciphertext = self._ciphertext(wrapped)
        ctx = _context(context)
        try:
            resp = self._call(
                "decrypt with",
                "decrypt",
                lambda c: c.secrets.transit.decrypt_data(
                    name=self._key, ciphertext=ciphertext, context=ctx, mount_point=self._mount
                ),
            )
        except vc.VaultRequestError as exc:
            self._refused(exc, wrapped=True)
        data = resp.get("data") if isinstance(resp, dict) else None
        plaintext = data.get("plaintext") if isinstance(data, dict) else None
        if not plaintext:  # the answer was lost on the way: not a wrong key (exit 6, not 5)
            raise BackendUnavailableError(
                f"Transit key {self._uri} answered a decrypt without "
                "the plaintext (an empty or cut-off answer)",
                hint="re-run to retry",
            )
        try:
            dek = base64.b64decode(str(plaintext), validate=True)
        except (binascii.Error, ValueError):
            dek = b""
        if len(dek) != DEK_SIZE:
            raise IntegrityError(f"the key wrapped for {self._uri} has the wrong length")
        return dek

    def rewrap(self, wrapped: WrappedKey, context: Mapping[str, str]) -> WrappedKey:
        """Move the entry to the newest key version inside Transit (the DEK is never seen).

        Returns ``wrapped`` itself when it already is on the newest version.
        """
        ciphertext = self._ciphertext(wrapped)
        ctx = _context(context)
        try:
            resp = self._call(
                "re-wrap with",
                "rewrap",
                lambda c: c.secrets.transit.rewrap_data(
                    name=self._key, ciphertext=ciphertext, context=ctx, mount_point=self._mount
                ),
            )
        except vc.VaultRequestError as exc:
            self._refused(exc, wrapped=True)
        new, version = self._answer(resp)
        if version == wrapped.params.get(PARAM_KEY_VERSION):
            return wrapped
        return WrappedKey(
            self._uri, ALG, new.encode("ascii"), dict(context), {PARAM_KEY_VERSION: version}
        )

    def close(self) -> None:
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.release()

    # -- internals -------------------------------------------------------------------

    def _live(self) -> vc.VaultClient:
        client = self._client
        if client is None:
            raise UsageError(f"wrapper {self._uri} is closed")
        return client

    def pace(self, gate: Callable[[], object]) -> None:
        """Call ``gate`` before every request this wrapper sends to Transit, retries
        included: a drill's ``--rate`` counts what Vault receives."""
        self._gate = gate

    def _call(self, what: str, op: str, fn: Any) -> Any:
        return self._live().call(
            f"{what} Transit key", fn, path=f"{self._mount}/{op}/{self._key}", before=self._gate
        )

    def _check_key(self) -> None:
        """Once: the key exists, is derived, and can encrypt (never let Transit upsert one)."""
        if self._key_checked:
            return
        try:
            resp = self._live().call(
                "read Transit key",
                lambda c: c.secrets.transit.read_key(name=self._key, mount_point=self._mount),
                path=f"{self._mount}/keys/{self._key}",
            )
        except vc.VaultPermissionError:
            self._key_checked = True  # the policy hides key settings; encrypt will tell
            return
        except vc.VaultRequestError as exc:
            self._refused(exc)
        data = resp.get("data") if isinstance(resp, dict) else None
        if not isinstance(data, dict):
            raise BackendUnavailableError(f"Vault answered no settings for {self._uri}")
        if data.get("type") not in KEY_TYPES or data.get("derived") is not True:
            raise UsageError(
                f"Transit key {self._uri} is {str(data.get('type'))[:30]!r} with "
                f"derived={data.get('derived')!s:.5}; keyvault needs a derived encryption key, "
                "so every key file gets its own sub-key",
                hint=f"create one: bao write -f {self._mount}/keys/NAME type=aes256-gcm96 "
                "derived=true",
            )
        self._key_checked = True

    def _ciphertext(self, wrapped: WrappedKey) -> str:
        """The entry's ciphertext, after checking the entry is one this wrapper writes."""
        if wrapped.alg != ALG or set(wrapped.params) != {PARAM_KEY_VERSION}:
            raise IntegrityError(
                f"wrapped key for {self._uri} has algorithm "
                f"{wrapped.alg[:32]!r} or parameters this wrapper never writes"
            )
        if not 0 < len(wrapped.blob) <= _MAX_BLOB:
            raise IntegrityError(f"wrapped key for {self._uri} has an implausible length")
        try:
            text = wrapped.blob.decode("ascii")
        except UnicodeDecodeError:
            text = ""
        match = _CIPHERTEXT.fullmatch(text)
        if match is None:
            raise IntegrityError(
                f"wrapped key for {self._uri} is not a Transit ciphertext: it "
                "was altered or truncated",
                hint="restore another version",
            )
        if int(match.group(1)) != wrapped.params[PARAM_KEY_VERSION]:
            raise IntegrityError(
                f"wrapped key for {self._uri}: the recorded key version does "
                "not match the ciphertext's",
                hint="restore another version",
            )
        return text

    def _answer(self, resp: Any) -> tuple[str, int]:
        data = resp.get("data") if isinstance(resp, dict) else None
        text = data.get("ciphertext") if isinstance(data, dict) else None
        match = _CIPHERTEXT.fullmatch(text) if isinstance(text, str) else None
        if text is None or match is None or len(text) > _MAX_BLOB:
            raise BackendUnavailableError(f"Transit key {self._uri} returned no usable ciphertext")
        return text, int(match.group(1))

    def _refused(self, exc: vc.VaultRequestError, *, wrapped: bool = False) -> NoReturn:
        """A 400/404 from Transit as a typed error; Vault's own text is matched, not shown."""
        where = f"Transit key {self._uri} at {self._live().address}"
        if exc.no_route:
            raise vc.VaultMountNotFoundError(
                f"no secrets engine is mounted at {self._mount}/ for {where}",
                hint=f"enable Transit there (bao secrets enable -path={self._mount} transit) or "
                "fix the wrapper URI",
            ) from None
        if exc.status == 404 or exc.says(_NO_KEY):
            raise TransitKeyNotFoundError(
                f"{where} does not exist",
                hint="create it (type=aes256-gcm96 derived=true) or fix the wrapper URI",
            ) from None
        if wrapped and exc.says(_TOO_OLD):
            raise TransitKeyVersionTooOldError(
                f"{where} refuses this wrapped key: its key version is below the key's "
                "min_decryption_version",
                hint="restore with another wrapper (the recovery "
                "identity), or have an operator lower min_decryption_version, run 'keyvault "
                "rewrap --rotate', then raise it again",
            ) from None
        if wrapped and any(exc.says(p) for p in _NOT_AUTHENTIC):
            raise IntegrityError(
                f"{where} says the wrapped key does not authenticate: it was altered, or it is "
                "bound to another key's context (team, GUN, role, key ID)",
                hint="the envelope was moved or tampered with; restore another version",
            ) from None
        raise UsageError(
            f"{where} refused the request (HTTP {exc.status})",
            hint="check the key's type and settings (derived=true)",
        ) from None


def parse_transit_uri(uri: str) -> tuple[str, str]:
    """``transit://mount/key-name`` -> (mount, key)."""
    if not isinstance(uri, str) or len(uri) > 512 or not uri.isprintable():
        raise UsageError("invalid transit URI")
    scheme, sep, rest = uri.partition("://")
    if scheme.lower() != "transit" or not sep:
        raise UsageError(
            f"not a transit URI: {shown_uri(uri)}", hint="use transit://mount/key-name"
        )
    mount, slash, key = rest.partition("/")
    if not slash or not _NAME.fullmatch(mount) or not _NAME.fullmatch(key):
        raise UsageError(
            f"transit URI {shown_uri(uri)} must be transit://mount/key-name",
            hint="mount and key name: letters, digits and ._- (no credentials, "
            "query or further path)",
        )
    return mount, key


def _context(context: Mapping[str, str]) -> str:
    ctx = dict(context)
    if not all(isinstance(k, str) and isinstance(v, str) and k for k, v in ctx.items()):
        raise UsageError("a wrap context maps non-empty strings to strings")
    return base64.b64encode(canonical_json(ctx)).decode("ascii")


__all__ = [
    "ALG",
    "TransitKeyNotFoundError",
    "TransitKeyVersionTooOldError",
    "TransitWrapper",
    "parse_transit_uri",
]
