"""Test doubles and helpers for the envelope format tests.

The wrappers here are test doubles that implement the Wrapper protocol with
plain AES-256-GCM, so the envelope layer is exercised without any backend:

* ``AeadWrapper`` binds the context as AES-GCM associated data, like an HSM or
  the passphrase wrapper does;
* ``LaxWrapper`` ignores the context, like a fake KMS that does not enforce
  EncryptionContext: the envelope's own checks must still refuse a swap.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from keyvault import envelope as ev
from keyvault.canonical import canonical_json
from keyvault.errors import IntegrityError, UsageError
from keyvault.names import KeyAddress
from keyvault.sealing import Ed25519FileSealer, SealerTrust
from keyvault.wrappers.base import WrappedKey

KEY_ID = "5f3c2b1a" * 8
GUN = "registry.example.com/team-a/app"
CREATED = datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)


def key_bytes(n: int = 229, seed: bytes = b"keyvault envelope tests") -> bytes:
    """Random-looking, deterministic bytes standing in for a key file (never a real key)."""
    out = b""
    counter = 0
    while len(out) < n:
        out += hashlib.sha256(seed + counter.to_bytes(4, "big")).digest()
        counter += 1
    return out[:n]


@dataclass
class AeadWrapper:
    """AES-256-GCM wrap with the canonical context as AAD (context-binding backend)."""

    uri: str
    kek: bytes = field(default_factory=lambda: os.urandom(32), repr=False)
    alg: str = "test-aes-256-gcm"
    calls: int = 0

    def wrap(self, dek: bytes, context: Mapping[str, str]) -> WrappedKey:
        nonce = os.urandom(12)
        blob = nonce + AESGCM(self.kek).encrypt(nonce, dek, self._aad(context))
        return WrappedKey(uri=self.uri, alg=self.alg, blob=blob, context=dict(context), params={})

    def unwrap(self, wrapped: WrappedKey, context: Mapping[str, str]) -> bytes:
        self.calls += 1
        if wrapped.alg != self.alg:
            raise UsageError(f"{self.uri}: unsupported alg {wrapped.alg[:20]!r}")
        try:
            return AESGCM(self.kek).decrypt(
                wrapped.blob[:12], wrapped.blob[12:], self._aad(context)
            )
        except (InvalidTag, ValueError):
            raise IntegrityError(f"{self.uri}: wrapped key failed authentication") from None

    def close(self) -> None:
        pass

    def _aad(self, context: Mapping[str, str]) -> bytes:
        return canonical_json(context)


@dataclass
class LaxWrapper(AeadWrapper):
    """Like AeadWrapper but the context is not bound (a backend that ignores it)."""

    alg: str = "test-lax"

    def _aad(self, context: Mapping[str, str]) -> bytes:
        return b""


def make_header(
    address: KeyAddress | None = None, data: bytes | None = None, algorithm: str | None = "ecdsa"
) -> ev.Header:
    address = address or KeyAddress("team-a", GUN, "targets", KEY_ID)
    return ev.new_header(
        address=address,
        algorithm=algorithm,
        source_name=f"tuf_keys/{GUN}/{address.key_id}.key",
        source_mode=0o600,
        data=key_bytes() if data is None else data,
        created=CREATED,
    )


#: The sealer the envelope tests sign with, and the trust that accepts only it.
SEALER = Ed25519FileSealer(
    Path("/nonexistent/test-sealer.key"), ed25519.Ed25519PrivateKey.generate()
)
TRUST = SealerTrust.of([SEALER.key.fingerprint])


def as_v1(sealed: ev.Envelope, wrapper: AeadWrapper, data: bytes) -> ev.Envelope:
    """The same key sealed as format v1 would have been (no chain, no signature)."""
    header = replace(sealed.header, version=1)
    dek = os.urandom(32)
    nonce = os.urandom(12)
    ciphertext = AESGCM(dek).encrypt(nonce, data, header.canonical())
    wrapped = (wrapper.wrap(dek, header.context()),)
    v1 = ev.Envelope(header, nonce, ciphertext, ev.commitment(dek, header), wrapped)
    return ev.Envelope.from_bytes(v1.to_bytes())
