"""Shared helpers for the Vault backend tests (the server comes from tests/fixtures/vault.py)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fixtures.vault import KV_MOUNT, ROOT_TOKEN, TRANSIT_MOUNT, BaoServer, unique

from keyvault.plugins import BackendOptions
from keyvault.stores.vaultkv import VaultKvStore
from keyvault.wrappers.transit import TransitWrapper


def vault_options(
    bao: BaoServer,
    token: str | None = ROOT_TOKEN,
    *,
    env: dict[str, str] | None = None,
    **settings: Any,
) -> BackendOptions:
    full_env = {"VAULT_ADDR": bao.address, **(env or {})}
    if token is not None:
        full_env["VAULT_TOKEN"] = token
    return BackendOptions(env=full_env, settings={"vault": {"timeout": 5, **settings}})


def open_kv(
    bao: BaoServer, prefix: str | None = None, token: str | None = ROOT_TOKEN, **kw: Any
) -> VaultKvStore:
    return VaultKvStore.from_uri(
        f"vault://{KV_MOUNT}/{prefix or unique('kv')}", vault_options(bao, token, **kw)
    )


def open_transit(
    bao: BaoServer, key: str, token: str | None = ROOT_TOKEN, **kw: Any
) -> TransitWrapper:
    return TransitWrapper.from_uri(
        f"transit://{TRANSIT_MOUNT}/{key}", vault_options(bao, token, **kw)
    )


@pytest.fixture
def kv_store(bao: BaoServer) -> Iterator[VaultKvStore]:
    store = open_kv(bao)
    yield store
    store.close()


# Soft delete belongs to the operator ('bao kv delete' / 'bao kv undelete'), never to
# keyvault (T12): tests that need a deleted version ask OpenBao directly.


def kv_path(store: VaultKvStore, name: str) -> str:
    return f"{store.uri.removeprefix(f'vault://{KV_MOUNT}/')}/{name}"


def soft_delete_latest(bao: BaoServer, store: VaultKvStore, name: str) -> str:
    """What 'bao kv delete' does: the latest version is soft-deleted; returns its number."""
    kv = bao.root().secrets.kv.v2
    current = kv.read_secret_metadata(kv_path(store, name), mount_point=KV_MOUNT)["data"][
        "current_version"
    ]
    kv.delete_latest_version_of_secret(kv_path(store, name), mount_point=KV_MOUNT)
    return str(current)


def undelete(bao: BaoServer, store: VaultKvStore, name: str, versions: list[str]) -> None:
    """What 'bao kv undelete' does."""
    bao.root().secrets.kv.v2.undelete_secret_versions(
        kv_path(store, name), versions=[int(v) for v in versions], mount_point=KV_MOUNT
    )
