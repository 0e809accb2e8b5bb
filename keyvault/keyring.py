"""The keyring protocol the envelope format needs: wrap and unwrap a data key.

The envelope format owns this contract; every backend in ``keyvault.wrappers``
implements it. A wrapper never sees key files, only 32-byte DEKs. Every wrap
is bound to a *context*: the facts of the envelope header (team, GUN, role,
key ID) as a flat string map. Backends that take a context bind it natively
(KMS EncryptionContext, Transit derivation context, AES-GCM AAD in an HSM);
backends that cannot (age) seal a digest of it beside the DEK. ``unwrap``
must fail with :class:`~keyvault.errors.IntegrityError` when the context
differs, so an envelope replayed under another team's name does not open.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

DEK_SIZE = 32
#: Params values a wrapped entry may carry (scrypt cost, mechanism names, KMS key IDs...).
ParamValue = str | int


@dataclass(frozen=True)
class WrappedKey:
    """One wrapped copy of a DEK, as stored in an envelope's ``wrapped_keys``."""

    uri: str
    alg: str
    blob: bytes = field(repr=False)
    context: Mapping[str, str] = field(default_factory=dict)
    params: Mapping[str, ParamValue] = field(default_factory=dict)
    #: In a threshold group: this entry wraps Shamir share ``share`` (1..N) of the DEK,
    #: and ``threshold`` shares are needed (None: the entry wraps the whole DEK).
    share: int | None = None
    threshold: int | None = None

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "uri": self.uri,
            "alg": self.alg,
            "wrapped": b64(self.blob),
            "context": dict(self.context),
            "params": dict(self.params),
        }
        if self.share is not None:
            doc["share"] = {"index": self.share, "threshold": self.threshold}
        return doc


@runtime_checkable
class Wrapper(Protocol):
    """A key-encryption-key provider. The whole contract fits on this screen."""

    @property
    def uri(self) -> str:
        """The canonical URI that names this wrapper (no secrets in it)."""
        ...

    def wrap(self, dek: bytes, context: Mapping[str, str]) -> WrappedKey:
        """Encrypt ``dek`` bound to ``context``. Raises KeyvaultError subclasses."""
        ...

    def unwrap(self, wrapped: WrappedKey, context: Mapping[str, str]) -> bytes:
        """Return the DEK; IntegrityError if the blob or context does not authenticate."""
        ...

    def close(self) -> None:
        """Release sessions and connections."""
        ...


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
