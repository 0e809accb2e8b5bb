"""What the backend sealers share: their URI, their client, and a public key read once.

A backend sealer's public half is asked of the backend the first time it is
needed and then kept for the process, together with what pins it (the KMS
key ID, the Transit key version): every signature of the run must come from
that key, or a restore could meet a signature whose public key was never
announced.
"""

from __future__ import annotations

import threading
from typing import Any, Generic, Self, TypeVar

from keyvault.errors import UsageError
from keyvault.plugins import BackendOptions
from keyvault.sealing import SealerKey

_Pin = TypeVar("_Pin")


class BackendSealer(Generic[_Pin]):
    """Subclasses say how to reach the backend (:meth:`_connect`), read the public half
    (:meth:`_public_key`), sign, and let go of the client (:meth:`_release`)."""

    def __init__(self, uri: str, options: BackendOptions) -> None:
        self._uri = uri
        self._lock = threading.Lock()
        self._described: tuple[SealerKey, _Pin] | None = None
        self._client: Any = self._connect(options)

    @classmethod
    def from_uri(cls, uri: str, options: BackendOptions) -> Self:
        return cls(uri, options)

    @property
    def uri(self) -> str:
        return self._uri

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._uri!r})"

    @property
    def key(self) -> SealerKey:
        return self._describe()[0]

    def close(self) -> None:
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            self._release(client)

    def _live(self) -> Any:
        client = self._client
        if client is None:
            raise UsageError(f"sealer {self._uri} is closed")
        return client

    def _describe(self) -> tuple[SealerKey, _Pin]:
        """Once per process: the public half and its pin, after checking the key can seal."""
        with self._lock:
            if self._described is None:
                self._described = self._public_key()
            return self._described

    def _connect(self, options: BackendOptions) -> Any:
        """Check :attr:`uri`, and open (or acquire) the backend's client."""
        raise NotImplementedError

    def _public_key(self) -> tuple[SealerKey, _Pin]:
        raise NotImplementedError

    def _release(self, client: Any) -> None:
        raise NotImplementedError
