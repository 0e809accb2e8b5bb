"""AwsKmsWrapper against moto's KMS server: the wrapper contract and the key pinning."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import replace

import pytest
from contracts.wrapper_contract import CONTEXT, WrapperContract, flipped
from fixtures.kms import KMS_CREDS, KmsKey, MotoServer, kms_client, new_kms_key

from keyvault.errors import BackendUnavailableError, IntegrityError, UsageError
from keyvault.plugins import BackendOptions
from keyvault.wrappers import check_wrapper_uri, open_wrapper
from keyvault.wrappers.awskms import (
    ALG,
    AwsKmsWrapper,
    KmsAccessDeniedError,
    KmsKeyNotFoundError,
    parse_awskms_uri,
)
from keyvault.wrappers.base import DEK_SIZE, Wrapper

from .conftest import kms_options, open_kms


class _MotoKmsContract(WrapperContract):
    @pytest.mark.parametrize("where", ["first", "middle", "last"])
    def test_tampered_blob_refused(self, wrapper: Wrapper, where: str) -> None:
        """moto's blob starts with the key ID: a flipped first byte names another key and
        moto's server answers a bare AccessDeniedException (real KMS, with the KeyId pinned,
        answers IncorrectKeyException or InvalidCiphertextException: IntegrityError, see
        test_kms_errors.py). Either way the blob is refused; the envelope's commitment and
        AAD make the same tampering an integrity failure end to end (test_aws_cli.py)."""
        wrapped = wrapper.wrap(os.urandom(DEK_SIZE), CONTEXT)
        index = {"first": 0, "middle": len(wrapped.blob) // 2, "last": -1}[where]
        expected = (IntegrityError, KmsAccessDeniedError) if where == "first" else IntegrityError
        with pytest.raises(expected):
            wrapper.unwrap(replace(wrapped, blob=flipped(wrapped.blob, index)), CONTEXT)


class TestAwsKmsAliasContract(_MotoKmsContract):
    @pytest.fixture
    def wrapper(self, moto_kms: MotoServer, kms_key: KmsKey) -> Iterator[Wrapper]:
        w = open_kms(moto_kms, kms_key.alias_uri)
        yield w
        w.close()

    @pytest.fixture
    def secret_strings(self) -> list[str]:
        return [KMS_CREDS[1]]


class TestAwsKmsArnContract(_MotoKmsContract):
    @pytest.fixture
    def wrapper(self, moto_kms: MotoServer, kms_key: KmsKey) -> Iterator[Wrapper]:
        w = open_kms(moto_kms, kms_key.arn_uri)
        yield w
        w.close()

    @pytest.fixture
    def secret_strings(self) -> list[str]:
        return [KMS_CREDS[1]]


class TestAwsKmsEndpointInUriContract(_MotoKmsContract):
    """``awskms://127.0.0.1:port/<key>``: the endpoint comes from the URI, not the config."""

    @pytest.fixture
    def wrapper(self, moto_kms: MotoServer, kms_key: KmsKey) -> Iterator[Wrapper]:
        options = BackendOptions(
            env={
                "AWS_ACCESS_KEY_ID": KMS_CREDS[0],
                "AWS_SECRET_ACCESS_KEY": KMS_CREDS[1],
                "AWS_DEFAULT_REGION": "us-east-1",
            },
            settings={"awskms": {"connect_timeout": 1, "max_attempts": 1}},
        )
        w = open_wrapper(f"awskms://{moto_kms.host_port}/{kms_key.key_id}", options)
        yield w
        w.close()

    @pytest.fixture
    def secret_strings(self) -> list[str]:
        return [KMS_CREDS[1]]


# -- URIs ------------------------------------------------------------------------------

ARN = "arn:aws:kms:eu-west-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"


@pytest.mark.parametrize(
    ("uri", "host", "key"),
    [
        ("awskms:///alias/team-a", None, "alias/team-a"),
        ("awskms:///alias/team/a_b-c", None, "alias/team/a_b-c"),
        (f"awskms:///{ARN}", None, ARN),
        (
            "awskms:///arn:aws:kms:us-east-1:123456789012:alias/x",
            None,
            "arn:aws:kms:us-east-1:123456789012:alias/x",
        ),
        (
            "awskms:///1234abcd-12ab-34cd-56ef-1234567890ab",
            None,
            "1234abcd-12ab-34cd-56ef-1234567890ab",
        ),
        (
            "awskms:///mrk-1234abcd12ab34cd56ef1234567890ab",
            None,
            "mrk-1234abcd12ab34cd56ef1234567890ab",
        ),
        ("awskms://127.0.0.1:4566/alias/x", "127.0.0.1:4566", "alias/x"),
        ("awskms://kms.internal.example:443/alias/x", "kms.internal.example:443", "alias/x"),
        (
            f"awskms:///{ARN.replace('arn:aws:', 'arn:aws-us-gov:')}",
            None,
            ARN.replace("arn:aws:", "arn:aws-us-gov:"),
        ),
    ],
)
def test_uri_forms(uri: str, host: str | None, key: str) -> None:
    assert parse_awskms_uri(uri) == (host, key)
    AwsKmsWrapper.check_uri(uri)
    check_wrapper_uri(uri)


@pytest.mark.parametrize(
    "uri",
    [
        "awskms://",
        "awskms:///",
        "awskms:alias/x",
        "awskms:///alias/",
        "awskms:///alias/a b",
        "awskms:///alias/aws/s3",
        "awskms:///key/1234",
        "awskms:///not-a-key",
        "awskms://user:pw@host:1/alias/x",
        "awskms://host:port/alias/x",
        "awskms:///alias/x?y=1",
        "awskms:///arn:aws:kms:eu-west-1:1234:key/1234abcd-12ab-34cd-56ef-1234567890ab",
        "awskms:///arn:aws:s3:::bucket",
        "awskms:///alias/x\n",
    ],
)
def test_bad_uris(uri: str) -> None:
    with pytest.raises(UsageError):
        AwsKmsWrapper.check_uri(uri)


# -- pinning and binding ---------------------------------------------------------------


@pytest.mark.proves("T6")
def test_entry_records_the_key_arn_and_context(moto_kms: MotoServer, kms_key: KmsKey) -> None:
    w = open_kms(moto_kms, kms_key.alias_uri)
    wrapped = w.wrap(os.urandom(DEK_SIZE), CONTEXT)
    assert wrapped.alg == ALG
    assert dict(wrapped.params) == {"key_arn": kms_key.arn}
    assert dict(wrapped.context) == CONTEXT


def test_gunless_context_round_trips(moto_kms: MotoServer, kms_key: KmsKey) -> None:
    ctx = {k: v for k, v in CONTEXT.items() if k != "keyvault:gun"}
    w = open_kms(moto_kms, kms_key.alias_uri)
    dek = os.urandom(DEK_SIZE)
    assert w.unwrap(w.wrap(dek, ctx), ctx) == dek


def test_unwrap_is_pinned_to_the_recorded_key_even_after_the_alias_moves(
    moto_kms: MotoServer, kms_key: KmsKey
) -> None:
    w = open_kms(moto_kms, kms_key.alias_uri)
    dek = os.urandom(DEK_SIZE)
    old = w.wrap(dek, CONTEXT)
    newer = new_kms_key(moto_kms)
    moto_kms.client().update_alias(AliasName=kms_key.alias, TargetKeyId=newer.key_id)
    assert w.unwrap(old, CONTEXT) == dek  # Decrypt pinned to the old key's ARN
    fresh = w.wrap(dek, CONTEXT)
    assert fresh.params["key_arn"] == newer.arn
    moved = w.rewrap(old, CONTEXT)  # ReEncrypt onto the alias's current key
    assert moved.params["key_arn"] == newer.arn
    assert w.unwrap(moved, CONTEXT) == dek


@pytest.mark.proves("T2")
def test_recorded_arn_of_another_key_is_refused(moto_kms: MotoServer, kms_key: KmsKey) -> None:
    """An envelope may not pick the KMS key: the recorded ARN must be the URI's key."""
    other = new_kms_key(moto_kms)
    mine = open_kms(moto_kms, kms_key.arn_uri)
    theirs = open_kms(moto_kms, other.arn_uri)
    wrapped = theirs.wrap(os.urandom(DEK_SIZE), CONTEXT)
    forged = replace(wrapped, uri=mine.uri)
    with pytest.raises(IntegrityError, match="not the key"):
        mine.unwrap(forged, CONTEXT)
    with pytest.raises(IntegrityError):
        mine.unwrap(
            replace(wrapped, params={"key_arn": "arn:aws:kms:us-east-1:123456789012:alias/evil"}),
            CONTEXT,
        )


def test_blob_of_another_key_under_the_recorded_arn_is_refused(
    moto_kms: MotoServer, kms_key: KmsKey
) -> None:
    """Decrypt is pinned to the recorded key, so a blob of another key is refused. moto
    answers a bare AccessDeniedException (no message to tell it from a policy denial):
    access denied, exit 4. Real KMS answers IncorrectKeyException, an IntegrityError
    (test_kms_errors.py). Either way no DEK comes back."""
    other = new_kms_key(moto_kms)
    mine = open_kms(moto_kms, kms_key.arn_uri)
    theirs = open_kms(moto_kms, other.arn_uri)
    swapped = replace(
        mine.wrap(os.urandom(DEK_SIZE), CONTEXT),
        blob=theirs.wrap(os.urandom(DEK_SIZE), CONTEXT).blob,
    )
    with pytest.raises(KmsAccessDeniedError, match="access denied") as info:
        mine.unwrap(swapped, CONTEXT)
    assert info.value.exit_code == 4 and kms_key.arn_uri in str(info.value)


def test_missing_key_is_not_found(moto_kms: MotoServer) -> None:
    w = open_kms(moto_kms, "awskms:///alias/kv-does-not-exist")
    with pytest.raises(KmsKeyNotFoundError, match="alias/kv-does-not-exist"):
        w.wrap(os.urandom(DEK_SIZE), CONTEXT)


def test_shared_across_threads(moto_kms: MotoServer, kms_key: KmsKey) -> None:
    from concurrent.futures import ThreadPoolExecutor

    w = open_kms(moto_kms, kms_key.alias_uri, max_pool_connections=8)
    deks = [os.urandom(DEK_SIZE) for _ in range(24)]
    with ThreadPoolExecutor(8) as pool:
        wrapped = list(pool.map(lambda d: w.wrap(d, CONTEXT), deks))
        assert list(pool.map(lambda x: w.unwrap(x, CONTEXT), wrapped)) == deks


@pytest.mark.proves("F03")
def test_unreachable_kms_is_backend_unavailable() -> None:
    """F03."""
    from fixtures.servers import free_port

    port = free_port()
    options = BackendOptions(
        env={
            "AWS_ACCESS_KEY_ID": "k",
            "AWS_SECRET_ACCESS_KEY": "s",
            "AWS_DEFAULT_REGION": "us-east-1",
        },
        settings={"awskms": {"connect_timeout": 0.5, "max_attempts": 1}},
    )
    w = AwsKmsWrapper.from_uri(f"awskms://127.0.0.1:{port}/alias/x", options)
    with pytest.raises(BackendUnavailableError, match=f"cannot reach http://127.0.0.1:{port}"):
        w.wrap(os.urandom(DEK_SIZE), CONTEXT)


def test_closed_wrapper_refuses(moto_kms: MotoServer, kms_key: KmsKey) -> None:
    w = open_kms(moto_kms, kms_key.alias_uri)
    w.close()
    with pytest.raises(UsageError, match="closed"):
        w.wrap(os.urandom(DEK_SIZE), CONTEXT)


def test_moto_does_not_enforce_disabled_keys(moto_kms: MotoServer, kms_key: KmsKey) -> None:
    """Documents the fake's leniency (docs/testing.md): if this starts failing, moto now
    enforces key state and the disabled-key CLI test can use it directly."""
    w = open_kms(moto_kms, kms_key.alias_uri)
    wrapped = w.wrap(os.urandom(DEK_SIZE), CONTEXT)
    kms_client(moto_kms.endpoint).disable_key(KeyId=kms_key.key_id)
    assert len(w.unwrap(wrapped, CONTEXT)) == DEK_SIZE


def test_options_env_region_is_used(moto_kms: MotoServer, kms_key: KmsKey) -> None:
    options = kms_options(moto_kms, region="eu-west-1")
    w = AwsKmsWrapper.from_uri(kms_key.alias_uri, options)
    with pytest.raises(KmsKeyNotFoundError, match="eu-west-1"):  # moto state is per region
        w.wrap(os.urandom(DEK_SIZE), CONTEXT)
