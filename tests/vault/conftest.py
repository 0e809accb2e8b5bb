"""Shared helpers for the Vault backend tests (the server comes from tests/fixtures/vault.py)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fixtures.vault import KV_MOUNT, ROOT_TOKEN, TRANSIT_MOUNT, BaoServer, unique

from keyvault.plugins import BackendOptions
from keyvault.stores.vaultkv import VaultKvStore
from keyvault.wrappers.transit import TransitWrapper


def vault_options(bao: BaoServer, token: str | None = ROOT_TOKEN, *,
                  env: dict[str, str] | None = None, **settings: Any) -> BackendOptions:
    full_env = {"VAULT_ADDR": bao.address, **(env or {})}
    if token is not None:
        full_env["VAULT_TOKEN"] = token
    return BackendOptions(env=full_env, settings={"vault": {"timeout": 5, **settings}})


def open_kv(bao: BaoServer, prefix: str | None = None, token: str | None = ROOT_TOKEN, **kw: Any
            ) -> VaultKvStore:
    return VaultKvStore.from_uri(f"vault://{KV_MOUNT}/{prefix or unique('kv')}",
                                 vault_options(bao, token, **kw))


def open_transit(bao: BaoServer, key: str, token: str | None = ROOT_TOKEN, **kw: Any
                 ) -> TransitWrapper:
    return TransitWrapper.from_uri(f"transit://{TRANSIT_MOUNT}/{key}",
                                   vault_options(bao, token, **kw))


@pytest.fixture
def kv_store(bao: BaoServer) -> Iterator[VaultKvStore]:
    store = open_kv(bao)
    yield store
    store.close()
