"""The Store protocol: create-only, versioned storage of small objects.

Stores hold envelopes (a few KiB each) under validated object names (see
:mod:`keyvault.names`). A store never overwrites silently: ``write`` either
creates a new object, or adds a new version on top of the version the writer
last saw (compare-and-set), and raises ConflictError otherwise. Every older
version stays readable. This maps onto S3 (``If-None-Match: *`` / ``If-Match``
plus bucket versioning), Vault KV v2 (``cas``) and the local file store.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Protocol, Self, runtime_checkable

from keyvault.plugins import BackendOptions

#: Largest object a store returns; larger ones are refused before parsing (T10).
MAX_OBJECT_SIZE = 2 * 1024 * 1024


@dataclass(frozen=True)
class StoredObject:
    name: str
    version: str
    data: bytes = field(repr=False)


@dataclass(frozen=True)
class ObjectVersion:
    name: str
    version: str
    size: int
    created: str | None
    latest: bool


@runtime_checkable
class Store(Protocol):
    """Envelope storage. The whole contract fits on this screen."""

    @property
    def uri(self) -> str:
        """The canonical URI of the store (no credentials in it)."""
        ...

    def read(self, name: str, version: str | None = None) -> StoredObject:
        """The latest (or the given) version; NotFoundError if absent."""
        ...

    def write(self, name: str, data: bytes, *, replaces: str | None = None) -> str:
        """Create ``name`` (``replaces=None``) or add a version on top of ``replaces``.

        Returns the new version. ConflictError when the object exists (create)
        or its latest version is not ``replaces`` (someone wrote in between).
        """
        ...

    def versions(self, name: str) -> list[ObjectVersion]:
        """Every version of ``name``, newest first; NotFoundError if absent."""
        ...

    def list(self, prefix: str) -> Iterator[str]:
        """Names of the objects under ``prefix`` (recursively), paginating as needed."""
        ...

    def close(self) -> None: ...


class StoreFactory(Protocol):
    @classmethod
    def from_uri(cls, uri: str, options: BackendOptions, *, create: bool = False) -> Self: ...
