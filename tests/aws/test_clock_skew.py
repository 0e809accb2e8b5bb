"""A skewed clock is named as such, not as "access denied" or "refused" (#21).

S3: a real SeaweedFS refuses requests signed an hour ahead (botocore's signing
clock is moved, the server's is not) with ``RequestTimeTooSkewed``. KMS: moto
does not check signature times, so the answers real KMS sends for them are
scripted (fixtures/kms_responder.py). And the breaker: throttling never counts
as a backend being down.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import replace

import pytest
from fixtures.kms_responder import ARN, Responder, error
from fixtures.s3 import WeedServer, new_bucket

from keyvault.breaker import Breaker
from keyvault.errors import AccessDeniedError
from keyvault.plugins import BackendOptions
from keyvault.stores._awsclient import ClockSkewError
from keyvault.wrappers.awskms import AwsKmsWrapper
from keyvault.wrappers.base import DEK_SIZE

from .conftest import open_s3

CONTEXT = {
    "keyvault:team": "team-a",
    "keyvault:gun": "example.com/app",
    "keyvault:role": "targets",
    "keyvault:key_id": "ab" * 32,
}


def test_s3_refusing_a_skewed_clock_says_so(weed: WeedServer) -> None:
    bucket = new_bucket(weed)
    store = open_s3(weed, f"s3://{bucket}/kv")
    store.write("team-a/obj", b"x")
    with pytest.MonkeyPatch.context() as patch:
        import botocore.auth

        real = botocore.auth.get_current_datetime
        patch.setattr(
            botocore.auth,
            "get_current_datetime",
            lambda *a, **k: real(*a, **k) + datetime.timedelta(hours=1),
        )
        with pytest.raises(ClockSkewError, match="clock differs") as caught:
            store.read("team-a/obj")
    assert "RequestTimeTooSkewed" in caught.value.message and caught.value.exit_code == 4
    assert "NTP" in (caught.value.hint or "")
    assert store.read("team-a/obj").data == b"x"  # the clock back: the same request works


def kms(responder: Responder, breaker: Breaker | None = None, attempts: int = 1) -> AwsKmsWrapper:
    options = BackendOptions(
        env={
            "AWS_ACCESS_KEY_ID": "AKIDRESPONDER",
            "AWS_SECRET_ACCESS_KEY": "s",
            "AWS_DEFAULT_REGION": "us-east-1",
        },
        settings={"awskms": {"connect_timeout": 1, "read_timeout": 5, "max_attempts": attempts}},
    )
    if breaker is not None:
        options = replace(options, breaker=breaker)
    return AwsKmsWrapper.from_uri(f"awskms://127.0.0.1:{responder.port}/{ARN}", options)


@pytest.mark.parametrize(
    ("code", "message"),
    [
        (
            "RequestTimeTooSkewed",
            "The difference between the request time and the current time is too large.",
        ),
        (
            "InvalidSignatureException",
            "Signature expired: 20261205T090000Z is now earlier than "
            "20261205T094500Z (20261205T100000Z - 15 min.)",
        ),
    ],
)
def test_kms_refusing_a_skewed_clock_says_so(responder: Responder, code: str, message: str) -> None:
    responder.script = [(400, error(code, message))]
    with pytest.raises(ClockSkewError, match="clock differs") as caught:
        kms(responder).wrap(os.urandom(DEK_SIZE), CONTEXT)
    assert code in caught.value.message and caught.value.exit_code == 4


def test_a_bad_signature_is_not_called_a_clock_problem(responder: Responder) -> None:
    responder.script = [
        (
            400,
            error(
                "InvalidSignatureException", "The request signature we calculated does not match"
            ),
        )
    ]
    with pytest.raises(AccessDeniedError) as caught:
        kms(responder).wrap(os.urandom(DEK_SIZE), CONTEXT)
    assert not isinstance(caught.value, ClockSkewError)
    assert caught.value.exit_code == 4


def test_throttling_never_trips_the_breaker(responder: Responder) -> None:
    """Three ThrottlingExceptions in a row with a breaker that opens at one down signal:
    the call goes on to its answer, and the breaker stays closed."""
    ok: dict[str, object] = {
        "KeyId": ARN,
        "CiphertextBlob": "QUFBQQ==",
        "EncryptionAlgorithm": "SYMMETRIC_DEFAULT",
    }
    responder.script = [(400, error("ThrottlingException", "Rate exceeded"))] * 3 + [(200, ok)]
    breaker = Breaker(threshold=1)
    kms(responder, breaker, attempts=4).wrap(os.urandom(DEK_SIZE), CONTEXT)
    assert not breaker.is_open and len(responder.requests) == 4


def test_a_failing_kms_opens_the_breaker_and_stops_the_retries(responder: Responder) -> None:
    responder.script = [(500, error("KMSInternalException", "internal"))]
    breaker = Breaker(threshold=2)
    with pytest.raises(Exception, match="gave up: a backend is down"):
        kms(responder, breaker, attempts=5).wrap(os.urandom(DEK_SIZE), CONTEXT)
    assert breaker.is_open and len(responder.requests) == 2  # not 5
