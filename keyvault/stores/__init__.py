"""Envelope storage, chosen by URI. See :mod:`keyvault.stores.base` for the protocol."""

from __future__ import annotations

from typing import cast

from keyvault.plugins import BackendOptions, load_class
from keyvault.stores.base import ObjectVersion, Store, StoredObject

STORE_FOR_SCHEME: dict[str, str] = {
    "file": "keyvault.stores.file:FileStore",
    "s3": "keyvault.stores.s3:S3Store",
    "vault": "keyvault.stores.vaultkv:VaultKvStore",
}


def open_store(uri: str, options: BackendOptions, *, create: bool = False) -> Store:
    """Build the store a URI names. ``create`` lets ``init`` make a missing local store."""
    cls = load_class(STORE_FOR_SCHEME, "store", uri)
    return cast(Store, cls.from_uri(uri, options, create=create))


__all__ = ["STORE_FOR_SCHEME", "ObjectVersion", "Store", "StoredObject", "open_store"]
