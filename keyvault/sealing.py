"""Sealer keys: who may write an envelope that a restore will install.

Encryption keeps a key secret from whoever reads the store, but anyone who
can *write* it can seal: an age recipient or an RSA public key is public, and
a KMS key seals for every principal allowed to Encrypt. So every envelope of
format v2 is signed by a *sealing key*, and opening checks that signature
against the sealers this machine pins, before any wrapper is asked to unwrap
and before anything is written.

A sealer is named by its *fingerprint*: ``sha256:`` and the hex SHA-256 of
its public key in DER SubjectPublicKeyInfo form. The envelope carries the
public key, so verifying needs no backend, only the pinned fingerprints (the
standalone recovery script does the same with ``cryptography`` alone). The
default sealer is an Ed25519 key file (0600); backends that keep the
private half in a KMS or Transit implement :class:`Sealer` too.

Pins come from the machine config, the team policy, the recovery identity
file (``# keyvault-trusted-sealer: sha256:...`` lines that ``init`` writes),
and an explicit ``--trust-sealer``. A revoked fingerprint is refused even
where it is also pinned.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

from keyvault.errors import IntegrityError, UsageError
from keyvault.names import validate_fingerprint

ED25519 = "ed25519"
ECDSA_P256 = "ecdsa-p256-sha256"
ALGORITHMS = (ED25519, ECDSA_P256)
#: The comment line that carries a sealer pin in an age identity file or a share file.
PIN_LINE = "# keyvault-trusted-sealer: "
MAX_PUBLIC_KEY = 1024
MAX_SIGNATURE = 1024


@dataclass(frozen=True)
class SealerKey:
    """The public half of a sealing key, as an envelope carries it."""

    alg: str
    public_key: bytes  # DER SubjectPublicKeyInfo

    def __post_init__(self) -> None:
        if self.alg not in ALGORITHMS:
            raise IntegrityError(f"unknown sealer algorithm {self.alg[:24]!r}")
        if not 0 < len(self.public_key) <= MAX_PUBLIC_KEY:
            raise IntegrityError("sealer public key has an invalid length")

    @property
    def fingerprint(self) -> str:
        return "sha256:" + hashlib.sha256(self.public_key).hexdigest()

    def verify(self, message: bytes, signature: bytes) -> bool:
        """True only for a valid signature by this key over ``message``."""
        key = _public_key(self.public_key)
        if key is None:
            return False
        try:
            if self.alg == ED25519 and isinstance(key, ed25519.Ed25519PublicKey):
                key.verify(signature, message)
                return True
            if (
                self.alg == ECDSA_P256
                and isinstance(key, ec.EllipticCurvePublicKey)
                and isinstance(key.curve, ec.SECP256R1)
            ):
                key.verify(signature, message, ec.ECDSA(hashes.SHA256()))
                return True
        except InvalidSignature:
            return False
        return False


@functools.lru_cache(maxsize=64)
def _public_key(der: bytes) -> PublicKeyTypes | None:
    """A sealer's public key, parsed once: a bulk restore verifies many envelopes by few
    sealers. None if the bytes are not a public key."""
    try:
        return serialization.load_der_public_key(der)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        return None


class Sealer(Protocol):
    """Signs envelopes. The private half may live in a file, a KMS or Transit."""

    @property
    def key(self) -> SealerKey: ...

    def sign(self, message: bytes) -> bytes: ...


@dataclass(frozen=True)
class Ed25519FileSealer:
    """The embedded default: an Ed25519 private key in a 0600 PEM file."""

    path: Path
    _private: ed25519.Ed25519PrivateKey = field(repr=False, compare=False)
    #: The public half, derived once: every envelope a backup seals names it.
    key: SealerKey = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        spki = self._private.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        object.__setattr__(self, "key", SealerKey(ED25519, spki))

    def sign(self, message: bytes) -> bytes:
        return self._private.sign(message)

    @classmethod
    def load(cls, path: Path) -> Ed25519FileSealer:
        from keyvault.fsutil import read_private_file

        data = read_private_file(path, "sealing key", 16 * 1024)
        try:
            private = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError):
            raise UsageError(
                f"sealing key {path} is not an unencrypted PEM private key",
                hint="point [sealing] key at an Ed25519 key file, or remove the "
                "setting to use the default one 'keyvault init' makes",
            ) from None
        if not isinstance(private, ed25519.Ed25519PrivateKey):
            raise UsageError(f"sealing key {path} is not an Ed25519 key")
        return cls(path, private)

    @classmethod
    def generate(cls, path: Path) -> Ed25519FileSealer:
        """A new key, written create-only (0600, its directory 0700)."""
        from keyvault.fsutil import ensure_private_dir, write_file_atomic

        private = ed25519.Ed25519PrivateKey.generate()
        pem = private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        ensure_private_dir(path.parent)
        write_file_atomic(path.parent, path.name, pem, exclusive=True)
        return cls(path, private)


@dataclass(frozen=True)
class SealerTrust:
    """The sealers this machine accepts, and those it refuses even when pinned."""

    trusted: frozenset[str] = frozenset()
    revoked: frozenset[str] = frozenset()
    #: Where the pins came from, for messages ("config", "identity file", ...).
    sources: tuple[str, ...] = ()

    @classmethod
    def of(
        cls, trusted: Iterable[str], revoked: Iterable[str] = (), sources: Iterable[str] = ()
    ) -> SealerTrust:
        return cls(
            frozenset(map(validate_fingerprint, trusted)),
            frozenset(map(validate_fingerprint, revoked)),
            tuple(sources),
        )

    def with_trusted(self, fingerprints: Iterable[str], source: str) -> SealerTrust:
        added = frozenset(map(validate_fingerprint, fingerprints))
        if not added:
            return self
        return SealerTrust(self.trusted | added, self.revoked, (*self.sources, source))

    def check(self, key: SealerKey, what: str) -> None:
        """IntegrityError unless ``key`` is pinned here and not revoked."""
        fingerprint = key.fingerprint
        if fingerprint in self.revoked:
            raise IntegrityError(
                f"{what} is sealed by revoked sealer {fingerprint}; refused",
                hint="it was written with a sealing key you revoked: "
                "restore an older version sealed before, or investigate",
            )
        if fingerprint not in self.trusted:
            pinned = ", ".join(sorted(self.trusted)) or "none"
            raise IntegrityError(
                f"{what} is sealed by {fingerprint}, which this machine does not trust "
                f"(trusted sealers: {pinned}); refused",
                hint="if that is your own sealer, pin it in the config ([sealing] trusted) or "
                "for one run with --trust-sealer FINGERPRINT (compare it with what "
                "'keyvault init' printed); otherwise someone else wrote this envelope",
            )


def pins_in_text(text: str) -> list[str]:
    """The sealer pins carried in an identity or share file's comment lines."""
    return [
        validate_fingerprint(line[len(PIN_LINE) :])
        for line in text.splitlines()
        if line.startswith(PIN_LINE)
    ]


def pin_lines(fingerprints: Iterable[str]) -> str:
    return "".join(f"{PIN_LINE}{validate_fingerprint(fp)}\n" for fp in fingerprints)
