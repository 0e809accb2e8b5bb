"""What the wrappers share beyond the envelope's keyring protocol.

The protocol itself (``Wrapper``, ``WrappedKey``, ``DEK_SIZE``) belongs to the
envelope format (:mod:`keyvault.keyring`); backends implement it and import
it from there or from here.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Protocol, Self, runtime_checkable

from keyvault.canonical import canonical_json
from keyvault.keyring import DEK_SIZE, ParamValue, WrappedKey, Wrapper, b64
from keyvault.plugins import BackendOptions

__all__ = [
    "DEK_SIZE",
    "ParamValue",
    "Rotatable",
    "WrappedKey",
    "Wrapper",
    "WrapperFactory",
    "b64",
    "context_digest",
]


@runtime_checkable
class Rotatable(Protocol):
    """A wrapper that can re-encrypt a wrapped DEK under its newest key version itself.

    Vault Transit ``rewrap`` and KMS ``ReEncrypt`` do this without the DEK
    ever leaving the service; ``keyvault rewrap --rotate`` uses it.
    """

    def rewrap(self, wrapped: WrappedKey, context: Mapping[str, str]) -> WrappedKey: ...


class WrapperFactory(Protocol):
    @classmethod
    def from_uri(cls, uri: str, options: BackendOptions) -> Self: ...


def context_digest(context: Mapping[str, str]) -> bytes:
    """SHA-256 of the canonical context: what wrappers without native context binding
    seal beside the DEK (age, PKCS#11 AES key wrap)."""
    return hashlib.sha256(canonical_json(context)).digest()
