"""The Vault client and a run's circuit breaker (keyvault.breaker), on a real OpenBao.

A rate-limit quota makes OpenBao answer 429: throttling, retried, and never a
down signal. A sealed OpenBao answers 503: each attempt is one, and once the
breaker opens no further request is sent.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest
from fixtures.answer_proxy import AnswerProxy
from fixtures.vault import TRANSIT_MOUNT, BaoServer

from keyvault.breaker import BackendDownError, Breaker
from keyvault.errors import BackendUnavailableError
from keyvault.plugins import BackendOptions
from keyvault.wrappers.base import DEK_SIZE
from keyvault.wrappers.transit import TransitWrapper

from .conftest import vault_options

CONTEXT = {
    "keyvault:team": "team-a",
    "keyvault:gun": "example.com/app",
    "keyvault:role": "targets",
    "keyvault:key_id": "ab" * 32,
}


def transit(
    bao: BaoServer, key: str, breaker: Breaker, address: str | None = None
) -> TransitWrapper:
    base = vault_options(bao, env={"VAULT_ADDR": address} if address else None)
    options = BackendOptions(env=base.env, settings=base.settings, breaker=breaker)
    return TransitWrapper.from_uri(f"transit://{TRANSIT_MOUNT}/{key}", options)


def test_vault_throttling_never_trips_the_breaker(make_bao: Callable[[], BaoServer]) -> None:
    bao = make_bao()  # a private server: the quota must not slow anyone else
    key = bao.transit_key(team="team-a")
    bao.root().sys.create_or_update_quota(
        "kv-throttle", 1.0, path=f"{TRANSIT_MOUNT}/", interval="1s"
    )
    counter = AnswerProxy(bao.port, lambda request: False, "empty")
    breaker = Breaker(threshold=1)
    wrapper = transit(bao, key, breaker, counter.endpoint)
    try:
        for _ in range(4):  # one request a second is allowed: most of these get a 429 first
            try:
                wrapper.wrap(os.urandom(DEK_SIZE), CONTEXT)
            except BackendUnavailableError as exc:
                assert "throttling" in exc.message and not isinstance(exc, BackendDownError)
    finally:
        wrapper.close()
        counter.close()
    assert counter.requests > 4  # some answers were 429s, retried
    assert not breaker.is_open


def test_a_sealed_vault_opens_the_breaker_and_no_more_is_sent(
    make_bao: Callable[[], BaoServer],
) -> None:
    bao = make_bao()
    key = bao.transit_key(team="team-a")
    bao.root().sys.seal()
    counter = AnswerProxy(bao.port, lambda request: False, "empty")
    breaker = Breaker(threshold=2)
    wrapper = transit(bao, key, breaker, counter.endpoint)
    try:
        with pytest.raises(BackendUnavailableError, match=r"sealed.*after 2 attempts"):
            wrapper.wrap(os.urandom(DEK_SIZE), CONTEXT)  # the request in flight: its cause
        sent = counter.requests
        with pytest.raises(BackendDownError, match="gave up: a backend is down"):
            wrapper.wrap(os.urandom(DEK_SIZE), CONTEXT)  # a new request: not sent at all
    finally:
        wrapper.close()
        counter.close()
    # the token's lookup at login, then 2 attempts (not 4); then nothing at all
    assert breaker.is_open and sent == 3 and counter.requests == sent
