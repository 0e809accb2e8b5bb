"""VaultKvStore and TransitWrapper pass the shared Store and Wrapper contracts on real OpenBao."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from contracts.store_contract import StoreContract
from contracts.wrapper_contract import WrapperContract
from fixtures.vault import ROOT_TOKEN, BaoServer

from keyvault.stores.base import Store
from keyvault.wrappers.base import Wrapper

from .conftest import open_kv, open_transit


class TestVaultKvStoreContract(StoreContract):
    @pytest.fixture
    def store(self, bao: BaoServer) -> Iterator[Store]:
        store = open_kv(bao)
        yield store
        store.close()


class TestTransitWrapperContract(WrapperContract):
    @pytest.fixture
    def wrapper(self, bao: BaoServer) -> Iterator[Wrapper]:
        wrapper = open_transit(bao, bao.transit_key())
        yield wrapper
        wrapper.close()

    @pytest.fixture
    def secret_strings(self) -> list[str]:
        return [ROOT_TOKEN]
