"""Envelope format v2 (and v1, read-only): one JSON document per key file.

Sealing
  1. A fresh 32-byte data key (DEK) per key file.
  2. The header (who the key is, where it came from, a digest of its bytes)
     is serialized canonically (:func:`keyvault.canonical.canonical_json`).
  3. The key file's bytes, exactly as found on disk, are encrypted with
     AES-256-GCM under the DEK, a 96-bit random nonce, and the header bytes
     as associated data: an envelope moved to another name, team or GUN, or
     with any header field changed, does not open.
  4. Commitment ``HMAC-SHA256(DEK, "keyvault/v1/commit" || header)`` is stored
     and checked before decryption, so every wrapped copy of the DEK must be
     the same DEK (no multi-key ciphertexts).
  5. The DEK is wrapped by one or more wrappers, each bound to the context
     (team, GUN, role, key ID). Adding or removing a wrapper never touches the
     ciphertext.

  6. (v2) A ``chain`` names the version's sequence number and the SHA-256 of
     the stored bytes of the version beneath it, and a ``signature`` by a
     sealing key (:mod:`keyvault.sealing`) covers everything else in the
     document: header, ciphertext, commitment, wrapped keys and chain.

Opening is strict: the signature is checked against the pinned sealers
before any wrapper is asked for the DEK (v1 envelopes carry no signature and
open only when the caller explicitly allows unsigned ones), and the caller
says which wrappers it trusts; the envelope never chooses a KMS key or an
identity. Parsing is strict too: a size limit
before parsing, exact field sets, allow-listed versions and algorithms,
base64 without junk, duplicate JSON keys refused. See docs/envelope.md.
"""

from __future__ import annotations

import binascii
import hashlib
import hmac
import os
import re
import secrets
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, TypeVar, cast

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from keyvault import shamir
from keyvault.bounded import TooDeep, json_loads
from keyvault.canonical import canonical_json, pretty_json
from keyvault.errors import AccessDeniedError, IntegrityError, KeyvaultError, UsageError
from keyvault.keyring import DEK_SIZE, WrappedKey, Wrapper
from keyvault.names import (
    SCOPE_CONTEXT,
    TEAM_SCOPE,
    CertAddress,
    KeyAddress,
    PinAddress,
    key_words,
    lacks_fact,
    role_shown,
)
from keyvault.redact import redact
from keyvault.sealing import (
    MAX_PUBLIC_KEY,
    MAX_SIGNATURE,
    Ed25519FileSealer,
    Sealer,
    SealerKey,
    SealerTrust,
)
from keyvault.trust.model import MAX_KEY_FILE_SIZE

FORMAT = "keyvault-envelope"
#: What ``seal`` writes. Version 1 (unsigned) is still read, on an explicit choice only.
VERSION = 2
UNSIGNED_VERSION = 1
VERSIONS = (UNSIGNED_VERSION, VERSION)
SIGN_LABEL = b"keyvault/v2/envelope\n"
CIPHER = "AES-256-GCM"
COMMIT_LABEL = b"keyvault/v1/commit"
NONCE_SIZE = 12
TAG_SIZE = 16
#: Envelopes larger than this are refused before JSON parsing (T10).
MAX_ENVELOPE_SIZE = 2 * 1024 * 1024
MAX_WRAPPED_KEYS = 16
MAX_WRAPPED_BLOB = 8192
_HEX_DIGEST = re.compile(r"[0-9a-f]{64}")
_TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2}T(?:[01]\d|2[0-3]):[0-5]\d:[0-5]\dZ")
_ALGORITHMS = frozenset({"ecdsa", "rsa", "ed25519"})
_DOC_FIELDS = frozenset(
    {"format", "version", "header", "cipher", "nonce", "ciphertext", "commitment", "wrapped_keys"}
)
_SIGNED_DOC_FIELDS = _DOC_FIELDS | {"chain", "signature"}
_CHAIN_FIELDS = frozenset({"sequence", "previous"})
_SIGNATURE_FIELDS = frozenset({"alg", "public_key", "value"})
MAX_SEQUENCE = 2**53
_HEADER_FIELDS = frozenset(
    {
        "format",
        "version",
        "team",
        "gun",
        "role",
        "key_id",
        "algorithm",
        "created",
        "source_name",
        "source_mode",
        "size",
        "sha256",
    }
)
#: A trust pin's header says so; a key's header has no ``kind`` (its format is unchanged).
_PIN_HEADER_FIELDS = _HEADER_FIELDS | {"kind"}
PIN_KIND = "pin"
#: A certificate file the notary client config pins (docs/envelope.md section 11.1).
CERT_KIND = "cert"
_WRAPPED_FIELDS = frozenset({"uri", "alg", "wrapped", "context", "params"})


#: Where a :class:`Header` keeps what it derives from its fields, as Envelope keeps _VERIFIED.
_ADDRESS, _CANONICAL = "_keyvault_address", "_keyvault_canonical"


@dataclass(frozen=True)
class Header:
    """The authenticated facts about one key file. Every field is in the AAD."""

    team: str
    gun: str | None
    role: str | None
    key_id: str
    algorithm: str | None
    created: str
    source_name: str
    source_mode: int
    size: int
    sha256: str
    #: The format version this header was sealed under (it is part of the AAD).
    version: int = VERSION
    #: ``"pin"`` for a GUN's trust pin (its root.json), None for a key. In the AAD.
    kind: str | None = None

    def __post_init__(self) -> None:
        if self.version not in VERSIONS:
            raise UsageError(f"unknown envelope version {self.version!r}")
        # Every name is validated by building the address, which is kept: the header is
        # frozen, and a reader asks for it.
        if self.kind == CERT_KIND:
            object.__setattr__(self, _ADDRESS, self._check_cert())
            return
        if self.kind is not None:
            object.__setattr__(self, _ADDRESS, self._check_pin())
            return
        object.__setattr__(self, _ADDRESS, KeyAddress(self.team, self.gun, self.role, self.key_id))
        if self.algorithm is not None and self.algorithm not in _ALGORITHMS:
            raise UsageError(f"unknown key algorithm {self.algorithm[:20]!r}")
        _check_source_name(self.source_name)
        self._check_common()

    def _check_pin(self) -> PinAddress:
        """A pin: signed (v2), no algorithm, and its source is exactly its GUN's root.json."""
        if self.kind != PIN_KIND or self.version != VERSION:
            raise UsageError(f"unknown envelope kind {str(self.kind)[:20]!r}")
        address = PinAddress(self.team, self.gun, self.role, self.key_id)  # validates names
        if self.algorithm is not None or self.source_name != address.relpath:
            raise UsageError(
                "a trust pin's header names no algorithm and its own GUN's root.json as its source"
            )
        self._check_common()
        return address

    def _check_cert(self) -> CertAddress:
        """A pinned certificate: signed (v2), no algorithm; its source is shown, never used."""
        if self.version != VERSION:
            raise UsageError(f"unknown envelope kind {str(self.kind)[:20]!r}")
        address = CertAddress(self.team, self.gun, self.role, self.key_id)  # validates names
        name = self.source_name
        if self.algorithm is not None or not (0 < len(name) <= 512 and name.isprintable()):
            raise UsageError(
                "a pinned certificate's header names no algorithm and the "
                "printable path its config named"
            )
        self._check_common()
        return address

    def _check_common(self) -> None:
        if not 0 <= self.source_mode <= 0o7777:
            raise UsageError("source_mode out of range")
        if not 0 < self.size <= MAX_KEY_FILE_SIZE:
            raise UsageError("key file size out of range")
        if not _is_hex_digest(self.sha256):
            raise UsageError("sha256 must be 64 lower-case hex digits")
        _parse_timestamp(self.created)

    @property
    def address(self) -> KeyAddress:
        """Where the key (a pin's, a CA file's) lives: built, and so validated, by
        ``__post_init__``."""
        return cast(KeyAddress, self.__dict__[_ADDRESS])

    def context(self) -> dict[str, str]:
        """The facts every wrapper binds the DEK to (KMS EncryptionContext shape)."""
        ctx = {"keyvault:team": self.team, "keyvault:key_id": self.key_id}
        if self.role is not None:
            ctx["keyvault:role"] = self.role
        if self.gun is not None:
            ctx["keyvault:gun"] = self.gun
        if lacks_fact(self.role, self.gun):  # what KMS and Transit policies deny CI
            ctx[SCOPE_CONTEXT] = TEAM_SCOPE
        return ctx

    def to_json(self) -> dict[str, Any]:
        kind = {} if self.kind is None else {"kind": self.kind}
        return kind | {
            "format": FORMAT,
            "version": self.version,
            "team": self.team,
            "gun": self.gun,
            "role": self.role,
            "key_id": self.key_id,
            "algorithm": self.algorithm,
            "created": self.created,
            "source_name": self.source_name,
            "source_mode": self.source_mode,
            "size": self.size,
            "sha256": self.sha256,
        }

    def canonical(self) -> bytes:
        """What the commitment binds, the AAD, and part of what the sealer signs: made once
        per header (it is frozen; a changed copy, dataclasses.replace, is a new header)."""
        kept = self.__dict__.get(_CANONICAL)
        if kept is None:
            kept = canonical_json(self.to_json())
            object.__setattr__(self, _CANONICAL, kept)
        return cast(bytes, kept)

    @classmethod
    def from_json(cls, doc: Any) -> Header:
        pin = isinstance(doc, dict) and "kind" in doc
        obj = _expect_object(doc, "header", _PIN_HEADER_FIELDS if pin else _HEADER_FIELDS)
        if obj["format"] != FORMAT or not _is_version(obj["version"]):
            raise IntegrityError("envelope header names another format or version")
        try:
            return cls(
                team=_expect(obj, "team", str),
                gun=_expect_optional(obj, "gun", str),
                role=_expect_optional(obj, "role", str),
                key_id=_expect(obj, "key_id", str),
                algorithm=_expect_optional(obj, "algorithm", str),
                created=_expect(obj, "created", str),
                source_name=_expect(obj, "source_name", str),
                source_mode=_expect(obj, "source_mode", int),
                size=_expect(obj, "size", int),
                sha256=_expect(obj, "sha256", str),
                version=obj["version"],
                kind=_expect(obj, "kind", str) if pin else None,
            )
        except UsageError as exc:
            raise IntegrityError(f"envelope header is invalid: {exc.message}") from None


@dataclass(frozen=True)
class Chain:
    """Where a version sits in its key's history: signed, so it cannot be replayed on top.

    ``previous`` is the SHA-256 (hex) of the stored bytes of the version right
    beneath this one in the store, None for a key's first version.
    """

    sequence: int
    previous: str | None = None

    def __post_init__(self) -> None:
        if type(self.sequence) is not int or not 1 <= self.sequence <= MAX_SEQUENCE:
            raise IntegrityError("envelope chain sequence out of range")
        if self.previous is not None and not _is_hex_digest(self.previous):
            raise IntegrityError("envelope chain previous must be 64 lower-case hex digits")

    def to_json(self) -> dict[str, Any]:
        return {"sequence": self.sequence, "previous": self.previous}

    @classmethod
    def from_json(cls, doc: Any) -> Chain:
        obj = _expect_object(doc, "envelope chain", _CHAIN_FIELDS)
        return cls(_expect(obj, "sequence", int), _expect_optional(obj, "previous", str))


#: The chain of a key's first version.
FIRST = Chain(1, None)


@dataclass(frozen=True)
class Signature:
    """A sealer's signature over everything else in the envelope."""

    sealer: SealerKey
    value: bytes = field(repr=False)

    def to_json(self) -> dict[str, Any]:
        return {
            "alg": self.sealer.alg,
            "public_key": _b64(self.sealer.public_key),
            "value": _b64(self.value),
        }

    @classmethod
    def from_json(cls, doc: Any) -> Signature:
        obj = _expect_object(doc, "envelope signature", _SIGNATURE_FIELDS)
        public_key, value = _unb64(obj, "public_key"), _unb64(obj, "value")
        if not 0 < len(public_key) <= MAX_PUBLIC_KEY or not 0 < len(value) <= MAX_SIGNATURE:
            raise IntegrityError("envelope signature has an invalid length")
        return cls(SealerKey(_expect(obj, "alg", str), public_key), value)


@dataclass(frozen=True)
class Envelope:
    """A sealed key file. Nothing in it is secret except under encryption.

    Version 2 envelopes carry a ``chain`` and a ``signature``; version 1 ones
    (read-only) carry neither.
    """

    header: Header
    nonce: bytes
    ciphertext: bytes = field(repr=False)
    commitment: bytes
    wrapped_keys: tuple[WrappedKey, ...]
    chain: Chain | None = None
    signature: Signature | None = None

    @property
    def address(self) -> KeyAddress:
        return self.header.address

    @property
    def version(self) -> int:
        return self.header.version

    @property
    def signed(self) -> bool:
        return self.signature is not None

    @property
    def wrapper_uris(self) -> tuple[str, ...]:
        return tuple(w.uri for w in self.wrapped_keys)

    @property
    def threshold(self) -> int | None:
        """M of its threshold group (dual control), signed with the rest; None: no group."""
        return max((w.threshold or 0 for w in self.wrapped_keys), default=0) or None

    def unsigned_json(self) -> dict[str, Any]:
        """Everything but the signature: what the signature covers."""
        doc = {
            "format": FORMAT,
            "version": self.version,
            "header": self.header.to_json(),
            "cipher": CIPHER,
            "nonce": _b64(self.nonce),
            "ciphertext": _b64(self.ciphertext),
            "commitment": _b64(self.commitment),
            "wrapped_keys": [w.to_json() for w in self.wrapped_keys],
        }
        if self.version != UNSIGNED_VERSION:
            if self.chain is None:
                raise ValueError("a version 2 envelope needs a chain")
            doc["chain"] = self.chain.to_json()
        return doc

    def signed_message(self) -> bytes:
        """The bytes a sealer signs: a label, then the canonical unsigned document."""
        return SIGN_LABEL + canonical_json(self.unsigned_json())

    def to_json(self) -> dict[str, Any]:
        doc = self.unsigned_json()
        if self.version != UNSIGNED_VERSION:
            if self.signature is None:
                raise ValueError("an unsigned version 2 envelope cannot be stored")
            doc["signature"] = self.signature.to_json()
        return doc

    def to_bytes(self) -> bytes:
        """Stable, human-readable serialization (indent 2, sorted keys, trailing newline)."""
        return (pretty_json(self.to_json()) + "\n").encode("utf-8")

    @classmethod
    def from_bytes(cls, data: bytes) -> Envelope:
        """Parse strictly; anything unexpected is an IntegrityError (exit 5)."""
        if len(data) > MAX_ENVELOPE_SIZE:
            raise IntegrityError(f"envelope is larger than {MAX_ENVELOPE_SIZE} bytes; refused")
        try:
            doc = json_loads(
                data.decode("utf-8"), object_pairs_hook=_no_duplicates, parse_constant=_no_constants
            )
        except TooDeep as exc:
            raise IntegrityError(f"envelope is {exc}; refused") from None
        except (UnicodeDecodeError, ValueError):
            raise IntegrityError("envelope is not valid JSON (truncated or corrupt)") from None
        try:  # a lone surrogate ("\\udc80") parses, but has no canonical (signed) form;
            if b"\\u" in data:  # only an escape can make one (UTF-8 cannot encode it)
                canonical_json(doc if isinstance(doc, dict) else {"": doc})
        except (UnicodeEncodeError, ValueError):
            raise IntegrityError("envelope holds text that is not valid Unicode") from None
        return cls.from_json(doc)

    @classmethod
    def from_json(cls, doc: Any) -> Envelope:
        if not isinstance(doc, dict):
            raise IntegrityError("envelope must be a JSON object")
        if doc.get("format") != FORMAT:
            raise IntegrityError("not a keyvault envelope (format field)")
        if not _is_version(doc.get("version")):
            raise IntegrityError(
                f"unsupported envelope version {str(doc.get('version'))[:16]!r}; this keyvault "
                f"reads versions {', '.join(map(str, VERSIONS))}",
                hint="upgrade keyvault to read newer envelopes",
            )
        version: int = doc["version"]
        if version != UNSIGNED_VERSION and "signature" not in doc:
            raise IntegrityError(
                "the envelope carries no signature (stripped?); a version 2 "
                "envelope is always signed",
                hint="investigate who wrote it",
            )
        obj = _expect_object(
            doc, "envelope", _DOC_FIELDS if version == UNSIGNED_VERSION else _SIGNED_DOC_FIELDS
        )
        if obj["cipher"] != CIPHER:
            raise IntegrityError("unsupported envelope cipher")
        header = Header.from_json(obj["header"])
        if header.version != version:
            raise IntegrityError("envelope header names another format version")
        nonce = _unb64(obj, "nonce")
        ciphertext = _unb64(obj, "ciphertext")
        commitment = _unb64(obj, "commitment")
        if len(nonce) != NONCE_SIZE or len(commitment) != 32:
            raise IntegrityError("envelope nonce or commitment has the wrong length")
        if len(ciphertext) != header.size + TAG_SIZE:
            raise IntegrityError("envelope ciphertext length does not match its header")
        raw_wrapped = obj["wrapped_keys"]
        if not isinstance(raw_wrapped, list) or not 0 < len(raw_wrapped) <= MAX_WRAPPED_KEYS:
            raise IntegrityError("envelope wrapped_keys must list 1 to 16 entries")
        wrapped = tuple(_wrapped_from_json(w) for w in raw_wrapped)
        if version == UNSIGNED_VERSION:
            return cls(header, nonce, ciphertext, commitment, wrapped)
        return cls(
            header,
            nonce,
            ciphertext,
            commitment,
            wrapped,
            Chain.from_json(obj["chain"]),
            Signature.from_json(obj["signature"]),
        )


def new_header(
    *,
    address: KeyAddress,
    algorithm: str | None,
    source_name: str,
    source_mode: int,
    data: bytes,
    created: datetime | None = None,
) -> Header:
    when = (created or datetime.now(UTC)).astimezone(UTC).replace(microsecond=0)
    return Header(
        team=address.team,
        gun=address.gun,
        role=address.role,
        key_id=address.key_id,
        algorithm=algorithm,
        created=when.strftime("%Y-%m-%dT%H:%M:%SZ"),
        source_name=source_name,
        source_mode=source_mode & 0o7777,
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        kind=(
            PIN_KIND
            if isinstance(address, PinAddress)
            else CERT_KIND
            if isinstance(address, CertAddress)
            else None
        ),
    )


def commitment(dek: bytes, header: Header) -> bytes:
    return _commitment(dek, header.canonical())


def _commitment(dek: bytes, canonical_header: bytes) -> bytes:
    return hmac.new(dek, COMMIT_LABEL + canonical_header, hashlib.sha256).digest()


def seal(
    header: Header,
    data: bytes,
    wrappers: Sequence[Wrapper],
    threshold: int | None = None,
    *,
    sealer: Sealer,
    chain: Chain = FIRST,
) -> Envelope:
    """Encrypt ``data`` (a key file's bytes) under a fresh DEK wrapped by every wrapper,
    and sign the result with ``sealer`` as version ``chain`` of the key.

    With ``threshold`` M, the DEK is split into one Shamir share per wrapper
    instead, and any M of the wrappers are needed to open it (dual control).
    """
    if header.version != VERSION:
        raise ValueError("only the current envelope version is sealed")
    if not wrappers:
        raise UsageError("at least one wrapper is needed to seal a key")
    if threshold is not None and not 2 <= threshold <= len(wrappers):
        raise UsageError(
            f"a threshold of {threshold} needs at least {threshold} wrappers "
            f"(got {len(wrappers)}), and at least 2"
        )
    if hashlib.sha256(data).hexdigest() != header.sha256 or len(data) != header.size:
        raise ValueError("header does not describe these bytes")
    dek = bytearray(secrets.token_bytes(DEK_SIZE))
    try:
        aad = header.canonical()
        nonce = os.urandom(NONCE_SIZE)
        ciphertext = AESGCM(bytes(dek)).encrypt(nonce, data, aad)
        context = header.context()
        if threshold is None:
            wrapped = tuple(through(w, w.wrap, bytes(dek), context) for w in wrappers)
        else:
            shares = shamir.split(bytes(dek), threshold, len(wrappers))
            wrapped = tuple(
                replace(through(w, w.wrap, shares[i], context), share=i, threshold=threshold)
                for i, w in enumerate(wrappers, start=1)
            )
        draft = Envelope(header, nonce, ciphertext, _commitment(bytes(dek), aad), wrapped)
        return sign(draft, sealer, chain)
    finally:
        _wipe(dek)


def sign(envelope: Envelope, sealer: Sealer, chain: Chain) -> Envelope:
    """``envelope`` as version 2, at ``chain``, signed by ``sealer``.

    Also how an envelope is re-sealed after rewrap or a migration from v1: the
    ciphertext and commitment are kept; a v1 header is not re-sealed here (its
    version is in the AAD), so migrating v1 means decrypting and sealing anew.
    """
    if envelope.header.version != VERSION:
        raise ValueError("a version 1 envelope must be sealed again, not re-signed")
    draft = replace(envelope, chain=chain, signature=None)
    key = sealer.key
    message = draft.signed_message()
    value = sealer.sign(message)
    # A backend could sign with another key than it described (an alias moved): check it.
    # A local key file signs with the very key it describes, so that check would only cost.
    if not isinstance(sealer, Ed25519FileSealer) and not key.verify(message, value):
        raise IntegrityError(
            "the sealer's signature does not verify with its own public key",
            hint="check the sealing key configuration",
        )
    return replace(draft, signature=Signature(key, value))


def authenticate(
    envelope: Envelope, sealers: SealerTrust, *, allow_unsigned: bool = False
) -> SealerKey | None:
    """Check who sealed ``envelope``; raise IntegrityError (exit 5) unless a trusted sealer.

    Returns the sealer's key, or None for an unsigned (v1) envelope that the
    caller explicitly allowed. Called before any wrapper sees the envelope.
    """
    verified = envelope.__dict__.get(_VERIFIED)
    if verified is not None and verified[0] is sealers:  # this very object, these very pins
        return cast(SealerKey, verified[1])
    header = envelope.header
    what = key_words(header.role, header.gun, header.key_id)
    if envelope.signature is None:
        if allow_unsigned and envelope.version == UNSIGNED_VERSION:
            return None
        raise IntegrityError(
            f"{what}: the envelope is unsigned (format v{envelope.version}); anyone who can "
            "write the store could have sealed it, so it is refused",
            hint="if you trust this store's history, pass --allow-unsigned once and re-seal it "
            "with 'keyvault rewrap --all --reseal --allow-unsigned'",
        )
    sealer = envelope.signature.sealer
    sealers.check(sealer, what)
    if not sealer.verify(envelope.signed_message(), envelope.signature.value):
        raise IntegrityError(
            f"{what}: the envelope's signature does not verify (altered "
            f"after sealing by {sealer.fingerprint}); refused",
            hint="restore another version, and investigate who wrote it",
        )
    # Remembered on the (frozen) object itself: the reader checks before the chain, and the
    # unwrap checks again; any changed copy (dataclasses.replace) is a new object, unmarked.
    object.__setattr__(envelope, _VERIFIED, (sealers, sealer))
    return sealer


#: Where :func:`authenticate` marks an envelope object it verified, with the pins used.
_VERIFIED = "_keyvault_verified_by"
_T = TypeVar("_T")


def through(wrapper: Wrapper, call: Callable[..., _T], *args: Any) -> _T:
    """``call(*args)``, a call to ``wrapper``; a KeyvaultError it raises names the wrapper,
    so a wrapper that fails for every key can be reported once, not once per key."""
    try:
        return call(*args)
    except KeyvaultError as exc:
        if exc.wrapper is None:
            exc.wrapper = redact(wrapper.uri)
        raise


#: Raises for a wrapper URI that no wrapper could have written (see keyvault.wrappers).
UriCheck = Callable[[str], None]


def unwrap_dek(
    envelope: Envelope,
    wrappers: Iterable[Wrapper],
    check_uri: UriCheck | None = None,
    *,
    sealers: SealerTrust,
    allow_unsigned: bool = False,
) -> bytes:
    """The DEK, through the first trusted wrapper that holds a copy and opens it.

    The sealer's signature is checked first (:func:`authenticate`): no wrapper
    is asked to unwrap anything a non-sealer wrote. Strict mode: only entries
    whose URI equals a wrapper the caller passed are tried. The recorded
    context must equal the header's, and the DEK must match the commitment,
    before anything is decrypted.
    """
    authenticate(envelope, sealers, allow_unsigned=allow_unsigned)
    expected_context = envelope.header.context()
    by_uri = {w.uri: w for w in wrappers}
    candidates = [w for w in envelope.wrapped_keys if w.uri in by_uri]
    if not candidates:
        raise _no_matching_wrapper(envelope, check_uri)
    failures: list[KeyvaultError] = []
    shares: dict[int, bytes] = {}
    for entry in sorted(candidates, key=lambda e: e.share is not None):
        if dict(entry.context) != expected_context:
            failures.append(
                IntegrityError(
                    f"key {envelope.header.key_id}: wrapped key for {entry.uri} is bound to "
                    "another key's context"
                )
            )
            continue
        try:
            dek = through(by_uri[entry.uri], by_uri[entry.uri].unwrap, entry, expected_context)
        except KeyvaultError as exc:
            failures.append(exc)
            continue
        if len(dek) != DEK_SIZE:
            failures.append(
                IntegrityError(
                    f"key {envelope.header.key_id}: wrapper {entry.uri} "
                    "returned a DEK of wrong length"
                )
            )
            continue
        if entry.share is not None:
            shares[entry.share] = dek
            dek = _from_shares(envelope, shares)
            if not dek:
                continue
        if not hmac.compare_digest(commitment(dek, envelope.header), envelope.commitment):
            failures.append(
                IntegrityError(
                    f"key {envelope.header.key_id}: DEK from {entry.uri} does not match the "
                    "envelope's commitment"
                )
            )
            continue
        return dek
    group = [e for e in envelope.wrapped_keys if e.share is not None]
    if group and not any(isinstance(f, IntegrityError) for f in failures):
        why = "; ".join(f.message for f in failures)
        raise AccessDeniedError(
            f"key {envelope.header.key_id[:12]} needs {group[0].threshold} of its "
            f"{len(group)} wrappers (dual control); only {len(shares)} opened here"
            + (f" ({why})" if why else ""),
            hint="run it with enough of the wrappers: " + ", ".join(e.uri for e in group),
        )
    raise _worst(failures, envelope)


def _from_shares(envelope: Envelope, shares: dict[int, bytes]) -> bytes:
    """The DEK once a threshold group has enough shares, else b"" (keep collecting)."""
    group = [e for e in envelope.wrapped_keys if e.share is not None]
    thresholds = {e.threshold for e in group}
    if len(thresholds) != 1 or len({e.share for e in group}) != len(group):
        raise IntegrityError(
            f"key {envelope.header.key_id[:12]}: its threshold group is inconsistent (altered)"
        )
    (needed,) = thresholds
    if needed is None or len(shares) < needed:
        return b""
    return shamir.combine(dict(list(shares.items())[:needed]))


def open_envelope(
    envelope: Envelope,
    wrappers: Iterable[Wrapper],
    check_uri: UriCheck | None = None,
    *,
    sealers: SealerTrust,
    allow_unsigned: bool = False,
) -> bytes:
    """Authenticate and decrypt; returns the key file's original bytes.

    ``check_uri`` lets the caller tell a corrupt envelope (exit 5) from one
    wrapped only for wrappers it does not hold (exit 4).
    """
    dek = unwrap_dek(envelope, wrappers, check_uri, sealers=sealers, allow_unsigned=allow_unsigned)
    return decrypt_with_dek(envelope, dek)


def decrypt_with_dek(envelope: Envelope, dek: bytes) -> bytes:
    header = envelope.header
    aad = header.canonical()  # what the commitment binds, and the AAD: made once
    if len(dek) != DEK_SIZE or not hmac.compare_digest(_commitment(dek, aad), envelope.commitment):
        raise IntegrityError(f"key {header.key_id[:12]}: DEK does not match the commitment")
    try:
        data = AESGCM(dek).decrypt(envelope.nonce, envelope.ciphertext, aad)
    except InvalidTag:
        raise IntegrityError(
            f"key {header.key_id[:12]} ({role_shown(header.role)}): envelope failed "
            "authentication; "
            "it was altered, truncated or moved",
            hint="restore another version or wrapper",
        ) from None
    if not hmac.compare_digest(hashlib.sha256(data).hexdigest(), header.sha256):
        raise IntegrityError(f"key {header.key_id[:12]}: decrypted bytes do not match the digest")
    return data


def rewrap(
    envelope: Envelope, dek: bytes, add: Sequence[Wrapper], remove: Iterable[str] = ()
) -> Envelope:
    """Add and/or remove wrapped copies of the DEK; the ciphertext is untouched.

    The result is unsigned: the caller signs it (:func:`sign`) as the next version.
    """
    if len(dek) != DEK_SIZE or not hmac.compare_digest(
        commitment(dek, envelope.header), envelope.commitment
    ):
        raise IntegrityError("DEK does not match the envelope's commitment")
    if any(w.share is not None for w in envelope.wrapped_keys) and add:
        raise UsageError(
            f"key {envelope.header.key_id[:12]} is under a threshold group: a "
            "wrapper added to it would open it alone; back it up again with "
            "--threshold instead"
        )
    dropped = set(remove)
    unknown = dropped - set(envelope.wrapper_uris)
    if unknown:
        raise UsageError(
            f"key {envelope.header.key_id[:12]} is not wrapped by "
            f"{', '.join(sorted(unknown))}; nothing to remove"
        )
    kept = [w for w in envelope.wrapped_keys if w.uri not in dropped]
    present = {w.uri for w in kept}
    context = envelope.header.context()
    kept.extend(through(w, w.wrap, dek, context) for w in add if w.uri not in present)
    if not kept:
        raise UsageError("an envelope must keep at least one wrapper")
    group = [w for w in kept if w.share is not None]
    if group and len(group) < (group[0].threshold or 0):
        raise UsageError(
            f"key {envelope.header.key_id[:12]}: removing that would leave "
            f"{len(group)} shares of a {group[0].threshold}-of-N group: unopenable"
        )
    return replace(envelope, wrapped_keys=tuple(kept), signature=None)  # to be signed again


def _no_matching_wrapper(envelope: Envelope, check_uri: UriCheck | None) -> KeyvaultError:
    """Corrupt (a URI no wrapper could have written) or simply wrapped for someone else."""
    for entry in envelope.wrapped_keys:
        if check_uri is None:
            break
        try:
            check_uri(entry.uri)
        except KeyvaultError:
            return IntegrityError(
                f"key {envelope.header.key_id[:12]}: a wrapped key names a malformed wrapper "
                "URI; the envelope is corrupt",
                hint="restore another version",
            )
    return AccessDeniedError(
        f"key {envelope.header.key_id[:12]} is not wrapped by any wrapper you hold "
        f"(it is wrapped by: {', '.join(envelope.wrapper_uris)})",
        hint="configure one of those wrappers (--wrapper URI), with its identity or credentials",
    )


def _worst(failures: list[KeyvaultError], envelope: Envelope) -> KeyvaultError:
    """Report the most telling failure: integrity beats access beats availability."""

    def rank(exc: KeyvaultError) -> int:
        return {5: 0, 4: 1, 3: 2, 6: 3}.get(exc.exit_code, 4)

    best = min(failures, key=rank)
    if len(failures) == 1:
        return best
    details = "; ".join(f.message for f in failures)
    return type(best)(
        f"key {envelope.header.key_id[:12]}: no wrapper could open it: {details}", hint=best.hint
    )


def _is_version(value: Any) -> bool:
    """Exactly an integer version we read: not True, not 1.0 (both compare equal to 1)."""
    return type(value) is int and value in VERSIONS


def _is_hex_digest(value: str) -> bool:
    return _HEX_DIGEST.fullmatch(value) is not None


def _check_source_name(name: str) -> None:
    parts = name.split("/")
    if (
        not name
        or len(name) > 512
        or name.startswith("/")
        or not name.isprintable()
        or any(p in ("", ".", "..") for p in parts)
        or not name.endswith(".key")
    ):
        raise UsageError(f"invalid source file name {name[:80]!r}")


def _parse_timestamp(value: str) -> None:
    """Exactly ``YYYY-MM-DDTHH:MM:SSZ`` (strptime alone accepts unpadded fields and :60)."""
    try:
        if not _TIMESTAMP.fullmatch(value):
            raise ValueError(value)
        datetime.fromisoformat(value[:-1])  # the calendar: no February 30
    except ValueError:
        raise UsageError(f"invalid timestamp {value[:40]!r}") from None


def _wrapped_from_json(doc: Any) -> WrappedKey:
    share: int | None = None
    threshold: int | None = None
    if isinstance(doc, dict) and "share" in doc:
        doc = dict(doc)
        share, threshold = _share_from_json(doc.pop("share"))
    obj = _expect_object(doc, "wrapped key", _WRAPPED_FIELDS)
    uri = _expect(obj, "uri", str)
    alg = _expect(obj, "alg", str)
    blob = _unb64(obj, "wrapped")
    if not (0 < len(uri) <= 2048 and uri.isprintable() and 0 < len(alg) <= 64):
        raise IntegrityError("wrapped key has an invalid uri or alg")
    if not 0 < len(blob) <= MAX_WRAPPED_BLOB:
        raise IntegrityError("wrapped key blob has an invalid length")
    context = obj["context"]
    if not isinstance(context, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in context.items()
    ):
        raise IntegrityError("wrapped key context must map strings to strings")
    params = obj["params"]
    if (
        not isinstance(params, dict)
        or len(params) > 32
        or not all(
            isinstance(k, str) and isinstance(v, str | int) and not isinstance(v, bool)
            for k, v in params.items()
        )
    ):
        raise IntegrityError("wrapped key params must map strings to strings or integers")
    return WrappedKey(
        uri=uri,
        alg=alg,
        blob=blob,
        context=context,
        params=params,
        share=share,
        threshold=threshold,
    )


def _share_from_json(doc: Any) -> tuple[int, int]:
    obj = _expect_object(doc, "wrapped key share", frozenset({"index", "threshold"}))
    index, threshold = _expect(obj, "index", int), _expect(obj, "threshold", int)
    if not 2 <= threshold <= MAX_WRAPPED_KEYS or not 1 <= index <= MAX_WRAPPED_KEYS:
        raise IntegrityError("wrapped key share has an index or threshold out of range")
    return index, threshold


def _expect_object(doc: Any, what: str, fields: frozenset[str]) -> dict[str, Any]:
    if not isinstance(doc, dict):
        raise IntegrityError(f"{what} must be a JSON object")
    keys = set(doc)
    if keys != fields:
        missing, extra = sorted(fields - keys), sorted(keys - fields)
        raise IntegrityError(
            f"{what} has unexpected fields (missing: {', '.join(missing) or '-'}; "
            f"unknown: {', '.join(ascii(k[:32]) for k in extra[:5]) or '-'})"
        )
    return doc


def _expect(obj: Mapping[str, Any], name: str, kind: type) -> Any:
    value = obj[name]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise IntegrityError(f"field {name!r} has the wrong type")
    return value


def _expect_optional(obj: Mapping[str, Any], name: str, kind: type) -> Any:
    return None if obj[name] is None else _expect(obj, name, kind)


def _unb64(obj: Mapping[str, Any], name: str) -> bytes:
    value = _expect(obj, name, str)
    try:  # strict: only the alphabet, padding only at the end (ValueError: not ASCII)
        data = binascii.a2b_base64(value, strict_mode=True)
    except (binascii.Error, ValueError):
        raise IntegrityError(f"field {name!r} is not valid base64") from None
    if _b64(data) != value:  # unused trailing bits would let a flipped character pass
        raise IntegrityError(f"field {name!r} is not canonical base64")
    return data


def _b64(data: bytes) -> str:
    return binascii.b2a_base64(data, newline=False).decode("ascii")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError("duplicate key")
        out[key] = value
    return out


def _no_constants(name: str) -> Any:
    raise ValueError(f"non-standard JSON constant {name}")


def _wipe(buf: bytearray) -> None:
    """Best effort: Python may have copied the bytes; this clears our own buffer."""
    for i in range(len(buf)):
        buf[i] = 0
