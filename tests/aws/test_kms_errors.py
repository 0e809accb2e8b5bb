"""The error responses real KMS sends, and the typed errors keyvault makes of them.

moto does not enforce key state or policy (docs/testing.md), so these cases
use a tiny HTTP responder on 127.0.0.1 that answers every KMS call with a
scripted JSON error body (``__type`` and ``message``, as AWS's JSON 1.1
protocol does) and HTTP status. The SDK, its retry logic and keyvault's
translation all run for real; only the server's answer is scripted.
"""

from __future__ import annotations

import os

import pytest
from contracts.wrapper_contract import CONTEXT
from fixtures.kms_responder import ARN, Responder, error

from keyvault.errors import (
    AccessDeniedError,
    BackendUnavailableError,
    IntegrityError,
    KeyvaultError,
    NotFoundError,
)
from keyvault.plugins import BackendOptions
from keyvault.wrappers.awskms import (
    AwsKmsWrapper,
    KmsAccessDeniedError,
    KmsKeyDisabledError,
    KmsKeyNotFoundError,
    KmsKeyStateError,
    KmsThrottledError,
)
from keyvault.wrappers.base import DEK_SIZE, WrappedKey

SECRET = "responder-secret-key-xyz"


def wrapper_for(responder: Responder, *, attempts: int = 1) -> AwsKmsWrapper:
    options = BackendOptions(
        env={
            "AWS_ACCESS_KEY_ID": "AKIDRESPONDER",
            "AWS_SECRET_ACCESS_KEY": SECRET,
            "AWS_DEFAULT_REGION": "us-east-1",
        },
        settings={"awskms": {"connect_timeout": 1, "read_timeout": 5, "max_attempts": attempts}},
    )
    return AwsKmsWrapper.from_uri(f"awskms://127.0.0.1:{responder.port}/{ARN}", options)


def entry() -> WrappedKey:
    return WrappedKey(
        f"awskms:///{ARN}", "aws-kms-symmetric", b"\x01" * 150, dict(CONTEXT), {"key_arn": ARN}
    )


def pinned(uri: str) -> WrappedKey:
    e = entry()
    return WrappedKey(uri, e.alg, e.blob, e.context, e.params)


# What real KMS answers (types and statuses from the AWS KMS API reference).
CASES = [
    ("DisabledException", 400, f"{ARN} is disabled.", KmsKeyDisabledError, 4, "disabled"),
    (
        "AccessDeniedException",
        400,
        f"User: arn:aws:iam::111122223333:user/ci is not authorized to perform: kms:Decrypt on "
        f"resource: {ARN} because no resource-based policy allows the kms:Decrypt action",
        KmsAccessDeniedError,
        4,
        "access denied",
    ),
    (
        "NotFoundException",
        400,
        f"Key '{ARN}' does not exist",
        KmsKeyNotFoundError,
        3,
        "no such KMS key",
    ),
    (
        "KMSInvalidStateException",
        400,
        f"{ARN} is pending deletion.",
        KmsKeyStateError,
        4,
        "pending deletion",
    ),
    ("InvalidCiphertextException", 400, "", IntegrityError, 5, "does not authenticate"),
    (
        "IncorrectKeyException",
        400,
        "The key ID in the request does not identify a KMS key that can perform this operation.",
        IntegrityError,
        5,
        "another KMS key",
    ),
    ("KMSInternalException", 500, "internal", BackendUnavailableError, 6, "KMS failed"),
    (
        "UnrecognizedClientException",
        400,
        "The security token included in the request is invalid.",
        AccessDeniedError,
        4,
        "access denied",
    ),
]


@pytest.mark.parametrize(
    ("kind", "status", "message", "error_type", "code", "text"), CASES, ids=[c[0] for c in CASES]
)
def test_unwrap_errors_are_typed(
    responder: Responder,
    kind: str,
    status: int,
    message: str,
    error_type: type[KeyvaultError],
    code: int,
    text: str,
) -> None:
    responder.script = [(status, error(kind, message))]
    w = wrapper_for(responder)
    with pytest.raises(error_type) as info:
        w.unwrap(pinned(w.uri), CONTEXT)
    err = info.value
    assert err.exit_code == code
    assert text in str(err)
    assert ARN in str(err)  # names the key
    assert kind in str(err)
    for secret in (SECRET, message):  # the service's own text is never passed through
        if secret:
            assert secret not in str(err)
    ((op, body),) = responder.requests
    assert op == "Decrypt"
    assert body["KeyId"] == ARN  # pinned to the recorded key
    assert body["EncryptionContext"] == CONTEXT


@pytest.mark.proves("B38")
def test_wrap_under_a_disabled_key_names_it(responder: Responder) -> None:
    """B38: what 'keyvault backup' shows for a disabled key."""
    responder.script = [(400, error("DisabledException", f"{ARN} is disabled."))]
    w = wrapper_for(responder)
    with pytest.raises(KmsKeyDisabledError, match="disabled") as info:
        w.wrap(os.urandom(DEK_SIZE), CONTEXT)
    assert ARN in str(info.value) and "enable" in str(info.value)
    ((op, body),) = responder.requests
    assert op == "Encrypt" and body["EncryptionContext"] == CONTEXT
    assert body["KeyId"] == ARN


@pytest.mark.proves("F04")
def test_throttling_is_retried_with_backoff_then_succeeds(responder: Responder) -> None:
    """F04: two ThrottlingExceptions, then an answer: the SDK retried with backoff."""
    ok: dict[str, object] = {
        "KeyId": ARN,
        "Plaintext": "QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUE=",
        "EncryptionAlgorithm": "SYMMETRIC_DEFAULT",
    }
    responder.script = [
        (400, error("ThrottlingException", "Rate exceeded")),
        (400, error("ThrottlingException", "Rate exceeded")),
        (200, ok),
    ]
    w = wrapper_for(responder, attempts=4)
    assert w.unwrap(pinned(w.uri), CONTEXT) == b"A" * 32
    assert [op for op, _ in responder.requests] == ["Decrypt"] * 3
    assert all(body["KeyId"] == ARN for _, body in responder.requests)


@pytest.mark.proves("F04")
def test_throttling_gives_up_after_max_attempts(responder: Responder) -> None:
    responder.script = [(400, error("ThrottlingException", "Rate exceeded"))]
    w = wrapper_for(responder, attempts=3)
    with pytest.raises(KmsThrottledError, match="throttling") as info:
        w.unwrap(pinned(w.uri), CONTEXT)
    assert info.value.exit_code == 6
    assert len(responder.requests) == 3  # gave up after max_attempts


def test_response_for_another_key_is_refused(responder: Responder) -> None:
    other = ARN.replace("1234abcd", "99999999")
    responder.script = [
        (200, {"KeyId": other, "Plaintext": "QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUE="})
    ]
    w = wrapper_for(responder)
    with pytest.raises(IntegrityError, match="another KMS key"):
        w.unwrap(pinned(w.uri), CONTEXT)


def test_wrap_answer_naming_another_key_is_refused(responder: Responder) -> None:
    other = ARN.replace("1234abcd", "99999999")
    responder.script = [(200, {"KeyId": other, "CiphertextBlob": "AQID"})]
    w = wrapper_for(responder)
    with pytest.raises(IntegrityError, match="not the key"):
        w.wrap(os.urandom(DEK_SIZE), CONTEXT)


def test_not_found_exit_code_is_three(responder: Responder) -> None:
    responder.script = [(400, error("NotFoundException", "Alias not found"))]
    with pytest.raises(NotFoundError) as info:
        wrapper_for(responder).wrap(os.urandom(DEK_SIZE), CONTEXT)
    assert info.value.exit_code == 3
