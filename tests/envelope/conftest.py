"""Fixtures for the envelope format tests (helpers and test wrappers: _support.py)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from keyvault import envelope as ev
from keyvault.wrappers.base import Wrapper

from ._support import SEALER, TRUST, AeadWrapper, key_bytes, make_header


@pytest.fixture
def data() -> bytes:
    return key_bytes()


@pytest.fixture
def header(data: bytes) -> ev.Header:
    return make_header(data=data)


@pytest.fixture
def wrapper_a() -> AeadWrapper:
    return AeadWrapper("transit://test/a")


@pytest.fixture
def wrapper_b() -> AeadWrapper:
    return AeadWrapper("transit://test/b")


@pytest.fixture
def sealed(
    header: ev.Header, data: bytes, wrapper_a: AeadWrapper, wrapper_b: AeadWrapper
) -> ev.Envelope:
    """An envelope wrapped by two wrappers, A and B."""
    return ev.seal(header, data, [wrapper_a, wrapper_b], sealer=SEALER)


@pytest.fixture
def dek_of() -> Callable[[ev.Envelope, Wrapper], bytes]:
    """The DEK of an envelope, through the given wrapper (the one legitimate way)."""

    def get(envelope: ev.Envelope, wrapper: Wrapper) -> bytes:
        return ev.unwrap_dek(envelope, [wrapper], sealers=TRUST)

    return get
