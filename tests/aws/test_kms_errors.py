"""The error responses real KMS sends, and the typed errors keyvault makes of them.

moto does not enforce key state or policy (docs/testing.md), so these cases
use a tiny HTTP responder on 127.0.0.1 that answers every KMS call with a
scripted JSON error body (``__type`` and ``message``, as AWS's JSON 1.1
protocol does) and HTTP status. The SDK, its retry logic and keyvault's
translation all run for real; only the server's answer is scripted.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from contracts.wrapper_contract import CONTEXT

from keyvault.errors import (
    AccessDeniedError,
    BackendUnavailableError,
    IntegrityError,
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

ARN = "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"
SECRET = "responder-secret-key-xyz"


class Responder:
    """Answers KMS requests from a script: a list of (status, body) consumed in order;
    the last entry repeats."""

    def __init__(self) -> None:
        self.script: list[tuple[int, dict[str, object]]] = []
        self.requests: list[tuple[str, dict[str, object]]] = []
        self.times: list[float] = []
        responder = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = json.loads(self.rfile.read(length) or b"{}")
                target = self.headers.get("X-Amz-Target", "")
                responder.requests.append((target.rpartition(".")[2], body))
                responder.times.append(time.monotonic())
                index = min(len(responder.requests), len(responder.script)) - 1
                status, doc = responder.script[index]
                raw = json.dumps(doc).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/x-amz-json-1.1")
                self.send_header("x-amzn-RequestId", "00000000-0000-0000-0000-000000000000")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def responder() -> Iterator[Responder]:
    r = Responder()
    yield r
    r.close()


def wrapper_for(responder: Responder, *, attempts: int = 1) -> AwsKmsWrapper:
    options = BackendOptions(
        env={"AWS_ACCESS_KEY_ID": "AKIDRESPONDER", "AWS_SECRET_ACCESS_KEY": SECRET,
             "AWS_DEFAULT_REGION": "us-east-1"},
        settings={"awskms": {"connect_timeout": 1, "read_timeout": 5,
                             "max_attempts": attempts}})
    return AwsKmsWrapper.from_uri(f"awskms://127.0.0.1:{responder.port}/{ARN}", options)


def entry() -> WrappedKey:
    return WrappedKey(f"awskms:///{ARN}", "aws-kms-symmetric", b"\x01" * 150, dict(CONTEXT),
                      {"key_arn": ARN})


def pinned(uri: str) -> WrappedKey:
    e = entry()
    return WrappedKey(uri, e.alg, e.blob, e.context, e.params)


def error(kind: str, message: str) -> dict[str, object]:
    return {"__type": kind, "message": message}


# What real KMS answers (types and statuses from the AWS KMS API reference).
CASES = [
    ("DisabledException", 400, f"{ARN} is disabled.", KmsKeyDisabledError, 4, "disabled"),
    ("AccessDeniedException", 400,
     f"User: arn:aws:iam::111122223333:user/ci is not authorized to perform: kms:Decrypt on "
     f"resource: {ARN} because no resource-based policy allows the kms:Decrypt action",
     KmsAccessDeniedError, 4, "access denied"),
    ("NotFoundException", 400, f"Key '{ARN}' does not exist", KmsKeyNotFoundError, 3,
     "no such KMS key"),
    ("KMSInvalidStateException", 400, f"{ARN} is pending deletion.", KmsKeyStateError, 4,
     "pending deletion"),
    ("InvalidCiphertextException", 400, "", IntegrityError, 5, "does not authenticate"),
    ("IncorrectKeyException", 400, "The key ID in the request does not identify a KMS key "
     "that can perform this operation.", IntegrityError, 5, "another KMS key"),
    ("KMSInternalException", 500, "internal", BackendUnavailableError, 6, "KMS failed"),
    ("UnrecognizedClientException", 400, "The security token included in the request is "
     "invalid.", AccessDeniedError, 4, "access denied"),
]


@pytest.mark.parametrize(("kind", "status", "message", "error_type", "code", "text"), CASES,
                         ids=[c[0] for c in CASES])
def test_unwrap_errors_are_typed(responder: Responder, kind: str, status: int, message: str,
                                 error_type: type, code: int, text: str) -> None:
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
            assert secret not in str(err) or secret == ""
    ((op, body),) = responder.requests
    assert op == "Decrypt"
    assert body["KeyId"] == ARN  # pinned to the recorded key
    assert body["EncryptionContext"] == CONTEXT


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


def test_throttling_is_retried_with_backoff_then_succeeds(responder: Responder) -> None:
    """F04: two ThrottlingExceptions, then an answer: the SDK retried with backoff."""
    ok = {"KeyId": ARN, "Plaintext": "QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUE=",
          "EncryptionAlgorithm": "SYMMETRIC_DEFAULT"}
    responder.script = [(400, error("ThrottlingException", "Rate exceeded")),
                        (400, error("ThrottlingException", "Rate exceeded")), (200, ok)]
    w = wrapper_for(responder, attempts=4)
    assert w.unwrap(pinned(w.uri), CONTEXT) == b"A" * 32
    assert [op for op, _ in responder.requests] == ["Decrypt"] * 3
    assert all(body["KeyId"] == ARN for _, body in responder.requests)


def test_throttling_gives_up_after_max_attempts(responder: Responder) -> None:
    responder.script = [(400, error("ThrottlingException", "Rate exceeded"))]
    w = wrapper_for(responder, attempts=3)
    started = time.monotonic()
    with pytest.raises(KmsThrottledError, match="throttling") as info:
        w.unwrap(pinned(w.uri), CONTEXT)
    assert info.value.exit_code == 6
    assert len(responder.requests) == 3
    assert time.monotonic() - started < 30  # bounded: standard mode caps each wait at 20 s


def test_response_for_another_key_is_refused(responder: Responder) -> None:
    other = ARN.replace("1234abcd", "99999999")
    responder.script = [(200, {"KeyId": other,
                               "Plaintext": "QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUE="})]
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
    with pytest.raises(NotFoundError):
        wrapper_for(responder).wrap(os.urandom(DEK_SIZE), CONTEXT)
