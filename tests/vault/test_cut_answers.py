"""A Vault answer lost on the way is a backend fault (exit 6), never tampering (#21).

An AnswerProxy in front of the real OpenBao cuts the answer after its headers
or answers 200 with no body: KV reads and writes, Transit decrypt and the
Transit sealer's signature are then "unavailable", not "changed outside keyvault".
"""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest
from fixtures.answer_proxy import AnswerProxy
from fixtures.vault import BaoServer, unique

from keyvault.errors import BackendUnavailableError, IntegrityError
from keyvault.wrappers.base import DEK_SIZE

from .conftest import open_kv, open_transit

CONTEXT = {
    "keyvault:team": "team-a",
    "keyvault:gun": "example.com/app",
    "keyvault:role": "targets",
    "keyvault:key_id": "ab" * 32,
}
LOST = ("headers", "empty")


def through(
    proxies: list[AnswerProxy], bao: BaoServer, match: Callable[[bytes], bool], mode: str
) -> dict[str, str]:
    proxy = AnswerProxy(bao.port, match, mode)
    proxies.append(proxy)
    return {"VAULT_ADDR": proxy.endpoint}


def is_request(method: str, part: str) -> Callable[[bytes], bool]:
    return lambda request: (
        request.startswith(method.encode() + b" ")
        and part.encode() in (request.split(b"\r\n", 1)[0])
    )


def refused_as_unavailable(call: Callable[[], object]) -> BackendUnavailableError:
    with pytest.raises(BackendUnavailableError, match="empty or cut") as caught:
        call()
    assert not isinstance(caught.value, IntegrityError) and caught.value.exit_code == 6
    return caught.value


@pytest.mark.parametrize("mode", LOST)
def test_kv_read_answer_lost_is_unavailable(
    bao: BaoServer, proxies: list[AnswerProxy], mode: str
) -> None:
    prefix = unique("kv")
    open_kv(bao, prefix).write("team-a/obj", b"x" * 300)
    cut = open_kv(bao, prefix, env=through(proxies, bao, is_request("GET", "/data/"), mode))
    refused_as_unavailable(lambda: cut.read("team-a/obj"))
    assert proxies[0].changed >= 1


@pytest.mark.parametrize("mode", LOST)
def test_kv_write_answer_lost_is_unavailable(
    bao: BaoServer, proxies: list[AnswerProxy], mode: str
) -> None:
    cut = open_kv(bao, env=through(proxies, bao, is_request("POST", "/data/"), mode))
    refused_as_unavailable(lambda: cut.write("team-a/obj", b"x" * 300))
    assert proxies[0].changed >= 1


@pytest.mark.parametrize("mode", LOST)
def test_transit_decrypt_answer_lost_is_unavailable(
    bao: BaoServer, proxies: list[AnswerProxy], mode: str
) -> None:
    key = bao.transit_key(team="team-a")
    wrapped = open_transit(bao, key).wrap(os.urandom(DEK_SIZE), CONTEXT)
    cut = open_transit(bao, key, env=through(proxies, bao, is_request("POST", "/decrypt/"), mode))
    refused_as_unavailable(lambda: cut.unwrap(wrapped, CONTEXT))
    assert proxies[0].changed >= 1
