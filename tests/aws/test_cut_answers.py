"""A KMS or S3 answer lost on the way is a backend fault (exit 6), never tampering (#21).

botocore does not hold a body to its Content-Length: a 200 whose body was cut
arrives as ``{}``. An AnswerProxy in front of the real moto and SeaweedFS
servers cuts the answer after its headers, or answers 200 with no body; only a
KeyId that is present and names another key is an integrity failure (exit 5).
"""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest
from fixtures.answer_proxy import AnswerProxy
from fixtures.kms import KmsKey, MotoServer, new_kms_key
from fixtures.s3 import WeedServer, new_bucket

from keyvault.errors import BackendUnavailableError, IntegrityError
from keyvault.wrappers.base import DEK_SIZE

from .conftest import open_kms, open_s3

CONTEXT = {
    "keyvault:team": "team-a",
    "keyvault:gun": "example.com/app",
    "keyvault:role": "targets",
    "keyvault:key_id": "ab" * 32,
}
LOST = ("headers", "empty")


def kms_call(operation: str) -> Callable[[bytes], bool]:
    return lambda request: f"TrentService.{operation}".encode() in request


def port_of(endpoint: str) -> int:
    return int(endpoint.rsplit(":", 1)[1])


def through(
    proxies: list[AnswerProxy],
    endpoint: str,
    match: Callable[[bytes], bool],
    mode: str,
    **kw: object,
) -> AnswerProxy:
    proxy = AnswerProxy(port_of(endpoint), match, mode, **kw)  # type: ignore[arg-type]
    proxies.append(proxy)
    return proxy


@pytest.mark.parametrize("mode", LOST)
def test_kms_decrypt_answer_lost_is_unavailable(
    moto_kms: MotoServer, kms_key: KmsKey, proxies: list[AnswerProxy], mode: str
) -> None:
    wrapped = open_kms(moto_kms, kms_key.alias_uri).wrap(os.urandom(DEK_SIZE), CONTEXT)
    proxy = through(proxies, moto_kms.endpoint, kms_call("Decrypt"), mode)
    cut = open_kms(moto_kms, kms_key.alias_uri, endpoint_url=proxy.endpoint)
    with pytest.raises(BackendUnavailableError, match="cut off") as caught:
        cut.unwrap(wrapped, CONTEXT)
    assert not isinstance(caught.value, IntegrityError)
    assert caught.value.exit_code == 6 and proxy.changed >= 1


@pytest.mark.parametrize("mode", LOST)
def test_kms_encrypt_answer_lost_is_unavailable(
    moto_kms: MotoServer, kms_key: KmsKey, proxies: list[AnswerProxy], mode: str
) -> None:
    proxy = through(proxies, moto_kms.endpoint, kms_call("Encrypt"), mode)
    cut = open_kms(moto_kms, kms_key.alias_uri, endpoint_url=proxy.endpoint)
    with pytest.raises(BackendUnavailableError, match="cut off") as caught:
        cut.wrap(os.urandom(DEK_SIZE), CONTEXT)
    assert caught.value.exit_code == 6 and proxy.changed >= 1


def test_kms_decrypt_naming_another_key_is_still_integrity(
    moto_kms: MotoServer, kms_key: KmsKey, proxies: list[AnswerProxy]
) -> None:
    """A KeyId that is present and names another key: tampering, exit 5, as before."""
    other = new_kms_key(moto_kms)
    wrapped = open_kms(moto_kms, kms_key.alias_uri).wrap(os.urandom(DEK_SIZE), CONTEXT)
    proxy = through(
        proxies,
        moto_kms.endpoint,
        kms_call("Decrypt"),
        "rewrite",
        rewrite=lambda body: body.replace(kms_key.arn.encode(), other.arn.encode()),
    )
    cut = open_kms(moto_kms, kms_key.alias_uri, endpoint_url=proxy.endpoint)
    with pytest.raises(IntegrityError, match="another KMS key") as caught:
        cut.unwrap(wrapped, CONTEXT)
    assert caught.value.exit_code == 5 and proxy.changed == 1


@pytest.mark.parametrize("mode", LOST)
def test_s3_read_answer_lost_is_unavailable(
    weed: WeedServer, proxies: list[AnswerProxy], mode: str
) -> None:
    bucket = new_bucket(weed)
    open_s3(weed, f"s3://{bucket}/kv").write("team-a/obj", b"x" * 300)
    proxy = through(proxies, weed.endpoint, lambda r: r.startswith(b"GET /"), mode)
    cut = open_s3(weed, f"s3://{bucket}/kv", endpoint_url=proxy.endpoint)
    with pytest.raises(BackendUnavailableError) as caught:
        cut.read("team-a/obj")
    assert not isinstance(caught.value, IntegrityError)
    assert caught.value.exit_code == 6 and proxy.changed >= 1


@pytest.mark.parametrize("mode", LOST)
def test_s3_listing_answer_lost_is_unavailable_not_absent(
    weed: WeedServer, proxies: list[AnswerProxy], mode: str
) -> None:
    """An empty listing page would read as "no such object" (exit 3) or "no keys"."""
    bucket = new_bucket(weed)
    open_s3(weed, f"s3://{bucket}/kv").write("team-a/obj", b"x" * 300)
    proxy = through(
        proxies,
        weed.endpoint,
        lambda r: (
            b"?versions" in r.split(b"\r\n", 1)[0] or b"list-type=2" in r.split(b"\r\n", 1)[0]
        ),
        mode,
    )
    cut = open_s3(weed, f"s3://{bucket}/kv", endpoint_url=proxy.endpoint)
    for call in (lambda: cut.versions("team-a/obj"), lambda: list(cut.list("team-a/"))):
        with pytest.raises(BackendUnavailableError) as caught:
            call()
        assert caught.value.exit_code == 6
    assert proxy.changed >= 2
