"""AWS KMS as a key-encryption key: ``awskms:///alias/name``, ``awskms:///arn:aws:kms:...``.

Wrap: ``Encrypt`` of the 32-byte DEK under the named key (alias, key ID or
ARN) with the envelope's context as the **EncryptionContext** (team, GUN,
role, key ID; docs/envelope.md section 7), so KMS itself refuses the blob under any other
key's name and CloudTrail records which key each Decrypt was for. The key
ARN KMS reports is recorded in the entry's params (``key_arn``).

Unwrap: ``Decrypt`` pinned to that recorded key ARN (never a key the
ciphertext picks), with the same context, and the response's KeyId must be
the same ARN. The recorded ARN must also agree with the URI: equal to an
ARN URI, ending in a key-ID URI's ID, or, for an alias (which may have been
moved to a new key since), in the alias's region and account. A
KMS that does not enforce the context (moto does) is caught by the
envelope's own binding: header AAD, commitment and the object name.

``awskms://host:port/<key>`` sends requests to that endpoint (http for
loopback hosts, https otherwise); ``[awskms] endpoint_url`` does the same
for every KMS URI. Credentials, region and profile come from the standard
AWS chain (see :mod:`keyvault.stores._awsclient`).

Errors are typed: access denied, disabled key, key not found, invalid key
state (pending deletion), and the context mismatch (InvalidCiphertext,
an IntegrityError). Throttling is retried by botocore's ``standard`` mode
(exponential backoff with full jitter, bounded by ``max_attempts``), then
reported as KmsThrottledError (a ThrottledError: a drill backs off further,
see keyvault.ops.pacing). ``pace`` lets a drill count every request sent.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Mapping
from typing import Any, NoReturn, Self
from urllib.parse import urlsplit

from keyvault.errors import (
    AccessDeniedError,
    BackendUnavailableError,
    IntegrityError,
    KeyvaultError,
    NotFoundError,
    ThrottledError,
    UsageError,
)
from keyvault.plugins import BackendOptions
from keyvault.redact import shown_uri
from keyvault.stores import _awsclient as aws
from keyvault.wrappers.base import DEK_SIZE, WrappedKey

ALG = "aws-kms-symmetric"
KMS_ALGORITHM = "SYMMETRIC_DEFAULT"
PARAM_KEY_ARN = "key_arn"
_MAX_BLOB = 6144
_KEY_UUID = r"(?:mrk-[0-9a-f]{32}|[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})"
_ALIAS_NAME = r"alias/[A-Za-z0-9/_-]{1,250}"
_PARTITION = r"aws(?:-[a-z]+)*"
_REGION = r"[a-z]{2}(?:-[a-z0-9]+){1,4}"
_ARN = re.compile(
    rf"arn:(?P<partition>{_PARTITION}):kms:(?P<region>{_REGION})"
    rf":(?P<account>[0-9]{{12}}):(?P<resource>key/{_KEY_UUID}|{_ALIAS_NAME})"
)
_KEY_ID = re.compile(_KEY_UUID)
_ALIAS = re.compile(_ALIAS_NAME)
_HOST = re.compile(
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\])"
    r"(?::[0-9]{1,5})?"
)


class KmsAccessDeniedError(AccessDeniedError):
    """KMS refused these credentials (key policy, IAM, grant, or a wrong key)."""


class KmsKeyDisabledError(AccessDeniedError):
    """The KMS key is disabled: enable it (or unwrap with another wrapper)."""


class KmsKeyStateError(AccessDeniedError):
    """The KMS key is in a state that forbids use (pending deletion or import, unavailable)."""


class KmsKeyNotFoundError(NotFoundError):
    """The KMS key or alias does not exist (in this account and region)."""


class KmsThrottledError(ThrottledError):
    """KMS kept throttling after the retries: try again later or raise the quota."""


class AwsKmsWrapper:
    """Wrap DEKs under one KMS key; unwrap only with the key each entry records."""

    def __init__(self, uri: str, options: BackendOptions) -> None:
        self._uri = uri
        host, self._key = parse_awskms_uri(uri)
        self._arn = _ARN.fullmatch(self._key)
        settings = options.for_scheme("awskms")
        endpoint = None
        if host is not None:
            hostname = urlsplit(f"//{host}").hostname or ""
            endpoint = f"{'http' if aws.is_loopback(hostname) else 'https'}://{host}"
        self._cs = aws.client_settings(
            "kms",
            "awskms",
            settings,
            options.env,
            endpoint_url=endpoint,
            region=self._arn.group("region") if self._arn else None,
        )
        self._client: Any = aws.make_client(self._cs, options.env, options.breaker)
        self._lock = threading.Lock()

    @classmethod
    def from_uri(cls, uri: str, options: BackendOptions) -> Self:
        return cls(uri, options)

    @classmethod
    def check_uri(cls, uri: str) -> None:
        """UsageError unless ``uri`` is a well-formed awskms: URI (no network)."""
        parse_awskms_uri(uri)

    @property
    def uri(self) -> str:
        return self._uri

    def __repr__(self) -> str:
        return f"AwsKmsWrapper({self._uri!r})"

    def wrap(self, dek: bytes, context: Mapping[str, str]) -> WrappedKey:
        if not isinstance(dek, bytes | bytearray) or len(dek) != DEK_SIZE:
            raise ValueError(f"a DEK is {DEK_SIZE} bytes")
        ctx = _check_context(context)
        try:
            resp = self._live().encrypt(
                KeyId=self._key,
                Plaintext=bytes(dek),
                EncryptionContext=ctx,
                EncryptionAlgorithm=KMS_ALGORITHM,
            )
        except Exception as exc:
            self._raise(exc, "wrap a key with")
        arn = self._answered(resp, "KeyId", "wrap a key with")
        blob = self._answered(resp, "CiphertextBlob", "wrap a key with")
        self._check_recorded_arn(arn, "KMS answered with")
        if not isinstance(blob, bytes) or not 0 < len(blob) <= _MAX_BLOB:
            raise BackendUnavailableError(f"KMS key {self._uri} returned no usable ciphertext")
        return WrappedKey(self._uri, ALG, blob, dict(ctx), {PARAM_KEY_ARN: arn})

    def unwrap(self, wrapped: WrappedKey, context: Mapping[str, str]) -> bytes:
        arn = self._recorded_arn(wrapped)
        ctx = _check_context(context)
        try:
            resp = self._live().decrypt(
                CiphertextBlob=wrapped.blob,
                KeyId=arn,
                EncryptionContext=ctx,
                EncryptionAlgorithm=KMS_ALGORITHM,
            )
        except Exception as exc:
            self._raise(exc, "unwrap a key with", arn=arn)
        if self._answered(resp, "KeyId", "unwrap a key with") != arn:
            raise IntegrityError(
                f"KMS decrypted the key wrapped for {self._uri} with another "
                "KMS key than the one recorded; refusing it"
            )
        plain = self._answered(resp, "Plaintext", "unwrap a key with")
        if not isinstance(plain, bytes) or len(plain) != DEK_SIZE:
            raise IntegrityError(f"the key wrapped for {self._uri} has the wrong length")
        return plain

    def rewrap(self, wrapped: WrappedKey, context: Mapping[str, str]) -> WrappedKey:
        """Re-encrypt under the key this URI names *now* (ReEncrypt: the DEK never leaves KMS).

        After an alias moved to a new key, or with automatic rotation, this
        brings the entry onto the current key; the context stays the same.
        """
        arn = self._recorded_arn(wrapped)
        ctx = _check_context(context)
        try:
            resp = self._live().re_encrypt(
                CiphertextBlob=wrapped.blob,
                SourceKeyId=arn,
                SourceEncryptionContext=ctx,
                SourceEncryptionAlgorithm=KMS_ALGORITHM,
                DestinationKeyId=self._key,
                DestinationEncryptionContext=ctx,
                DestinationEncryptionAlgorithm=KMS_ALGORITHM,
            )
        except Exception as exc:
            self._raise(exc, "re-wrap a key with", arn=arn)
        if self._answered(resp, "SourceKeyId", "re-wrap a key with") != arn:
            raise IntegrityError(
                f"KMS re-encrypted the key wrapped for {self._uri} from another "
                "KMS key than the one recorded; refusing it"
            )
        new_arn = self._answered(resp, "KeyId", "re-wrap a key with")
        self._check_recorded_arn(new_arn, "KMS answered with")
        blob = self._answered(resp, "CiphertextBlob", "re-wrap a key with")
        if not isinstance(blob, bytes) or not 0 < len(blob) <= _MAX_BLOB:
            raise BackendUnavailableError(f"KMS key {self._uri} returned no usable ciphertext")
        return WrappedKey(self._uri, ALG, blob, dict(ctx), {PARAM_KEY_ARN: new_arn})

    def pace(self, gate: Callable[[], object]) -> None:
        """Call ``gate`` before every request this wrapper sends to KMS, the SDK's own
        retries included: a drill's ``--rate`` counts what KMS receives."""

        def before_send(**_: object) -> None:
            gate()  # returns None: a value here would be taken as KMS's answer

        self._live().meta.events.register("before-send.kms", before_send)

    def close(self) -> None:
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()

    # -- internals -------------------------------------------------------------------

    def _live(self) -> Any:
        client = self._client
        if client is None:
            raise UsageError(f"wrapper {self._uri} is closed")
        return client

    def _answered(self, resp: Any, field: str, action: str) -> Any:
        """``resp[field]``; a missing one means the answer was lost, not that it is wrong."""
        value = resp.get(field) if isinstance(resp, dict) else None
        if value is None or value in ("", b""):
            raise aws.cut_answer(f"cannot {action} KMS key {self._uri}", field)
        return str(value) if field.endswith("KeyId") else value

    def _recorded_arn(self, wrapped: WrappedKey) -> str:
        """The key ARN the entry was wrapped under, after checking the entry is ours."""
        if wrapped.alg != ALG or set(wrapped.params) != {PARAM_KEY_ARN}:
            raise IntegrityError(
                f"wrapped key for {self._uri} has algorithm "
                f"{wrapped.alg[:32]!r} or parameters this wrapper never writes"
            )
        if not 0 < len(wrapped.blob) <= _MAX_BLOB:
            raise IntegrityError(f"wrapped key for {self._uri} has an implausible length")
        arn = wrapped.params[PARAM_KEY_ARN]
        if not isinstance(arn, str):
            raise IntegrityError(f"wrapped key for {self._uri} records no KMS key ARN")
        self._check_recorded_arn(arn, "the envelope records")
        return arn

    def _check_recorded_arn(self, arn: str, who: str) -> None:
        """A recorded ARN is a key ARN consistent with the key this URI names."""
        match = _ARN.fullmatch(arn)
        ok = match is not None and match.group("resource").startswith("key/")
        if ok and match is not None:
            if self._arn is not None and self._arn.group("resource").startswith("key/"):
                ok = arn == self._key
            elif self._arn is not None:  # alias ARN: same partition, region and account
                ok = all(
                    match.group(g) == self._arn.group(g) for g in ("partition", "region", "account")
                )
            elif _KEY_ID.fullmatch(self._key):
                ok = match.group("resource") == f"key/{self._key}"
        if not ok:
            raise IntegrityError(
                f"{who} KMS key {arn[:120]!r}, which is not the key {self._uri} names; "
                "refusing to use it",
                hint="the envelope may have been tampered with",
            )

    def _raise(self, exc: BaseException, action: str, *, arn: str | None = None) -> NoReturn:
        if isinstance(exc, KeyvaultError):
            raise exc
        key = self._uri if arn is None or arn == self._key else f"{self._uri} ({arn})"
        where = f"cannot {action} KMS key {key}"
        transport = aws.translate_transport_error(
            exc, what=where, endpoint=self._cs.endpoint_url or "AWS KMS"
        )
        if transport is not None:
            raise transport from None
        skewed = aws.clock_skew(exc, where)
        if skewed is not None:
            raise skewed from None
        code, status = aws.error_code(exc)
        if not code and status is None:
            raise exc
        shown = f"{code or 'error'}, HTTP {status}"
        if code == "InvalidCiphertextException":
            raise IntegrityError(
                f"{where}: KMS says the wrapped key does not authenticate ({shown}): it was "
                "altered, or it is bound to another key's context (team, GUN, role, key ID)",
                hint="the envelope was moved or tampered with; restore another version",
            ) from None
        if code == "AccessDeniedException" and arn is not None and _names_other_key(exc):
            # Decrypt pinned to the recorded key, yet the blob names a key we cannot use:
            # the blob does not belong to the recorded key (moto says so for a flipped
            # key-ID byte; a real policy denial reads "... is not authorized to perform").
            raise IntegrityError(
                f"{where}: the wrapped key does not belong to the recorded KMS key ({shown}); "
                "it was altered or swapped",
                hint="restore another version",
            ) from None
        if code == "IncorrectKeyException":
            raise IntegrityError(
                f"{where}: the wrapped key was made with another KMS key ({shown})"
            ) from None
        if code == "DisabledException":
            raise KmsKeyDisabledError(
                f"{where}: the KMS key is disabled ({shown})",
                hint="ask its administrator to enable it (aws kms enable-key), or restore with "
                "another wrapper such as the recovery identity",
            ) from None
        if code == "KMSInvalidStateException":
            raise KmsKeyStateError(
                f"{where}: the KMS key's state forbids this (pending deletion or import; {shown})",
                hint="cancel a scheduled deletion (aws kms cancel-key-deletion) "
                "or restore with another wrapper",
            ) from None
        if code == "NotFoundException":
            raise KmsKeyNotFoundError(
                f"{where}: no such KMS key or alias in region {self._region()} ({shown})",
                hint="check the key URI, the region and the account",
            ) from None
        if code in (
            "ThrottlingException",
            "Throttling",
            "LimitExceededException",
            "TooManyRequestsException",
            "RequestLimitExceeded",
        ):
            raise KmsThrottledError(
                f"{where}: KMS is throttling requests and still was after "
                f"{self._cs.max_attempts} attempts ({shown})",
                hint="re-run later, lower the concurrency, or raise [awskms] max_attempts",
            ) from None
        if code in aws.ACCESS_CODES or status == 403 or code == "InvalidGrantTokenException":
            raise KmsAccessDeniedError(
                f"{where}: access denied ({shown})",
                hint="the key policy or IAM must allow kms:Encrypt/kms:Decrypt for these "
                "credentials with this encryption context",
            ) from None
        if code in (
            "InvalidKeyUsageException",
            "UnsupportedOperationException",
            "ValidationException",
            "InvalidArnException",
        ):
            raise UsageError(
                f"{where}: the KMS key cannot wrap keys ({shown})",
                hint="use a symmetric ENCRYPT_DECRYPT key",
            ) from None
        if code in aws.TRANSIENT_CODES or (status is not None and status >= 500):
            raise BackendUnavailableError(
                f"{where}: KMS failed ({shown})", hint="re-run to retry"
            ) from None
        raise BackendUnavailableError(f"{where}: KMS refused the request ({shown})") from None

    def _region(self) -> str:
        client = self._client
        region = getattr(getattr(client, "meta", None), "region_name", None)
        return str(region or self._cs.region or "?")


def parse_awskms_uri(uri: str) -> tuple[str | None, str]:
    """``awskms://[host:port]/<alias/name | key-id | key or alias ARN>`` -> (host, key)."""
    if not isinstance(uri, str) or len(uri) > 2048 or not uri.isprintable():
        raise UsageError("invalid awskms URI")
    scheme, sep, rest = uri.partition("://")
    if scheme.lower() != "awskms" or not sep:
        raise UsageError(
            f"not an awskms URI: {shown_uri(uri)}",
            hint="use awskms:///alias/name or awskms:///arn:aws:kms:...",
        )
    host, slash, key = rest.partition("/")
    if not slash or not key:
        raise UsageError(
            f"awskms URI {shown_uri(uri)} names no key",
            hint="use awskms:///alias/name or awskms:///arn:aws:kms:...",
        )
    if host and (not _HOST.fullmatch(host) or "@" in host):
        raise UsageError(
            f"awskms URI {shown_uri(uri)} has an invalid endpoint",
            hint="awskms://host:port/<key> (no credentials)",
        )
    if not (_ALIAS.fullmatch(key) or _KEY_ID.fullmatch(key) or _ARN.fullmatch(key)):
        raise UsageError(
            f"awskms URI {shown_uri(uri)}: {key[:80]!r} is not a KMS alias, key ID or ARN",
            hint="alias/name, a key ID, or arn:aws:kms:region:account:key/... or :alias/...",
        )
    if key.startswith("alias/aws/"):
        raise UsageError(
            f"awskms URI {shown_uri(uri)} names an AWS-managed key",
            hint="use a customer-managed key: its policy can be restricted",
        )
    return host or None, key


def _names_other_key(exc: BaseException) -> bool:
    """KMS's "the ciphertext refers to a ... key" denial (read, never shown: SDK text)."""
    response = getattr(exc, "response", None)
    error = response.get("Error") if isinstance(response, dict) else None
    message = str(error.get("Message") or "") if isinstance(error, dict) else ""
    return "ciphertext refers to" in message.lower()


def _check_context(context: Mapping[str, str]) -> dict[str, str]:
    ctx = dict(context)
    if not all(isinstance(k, str) and isinstance(v, str) and k for k, v in ctx.items()):
        raise UsageError("a KMS encryption context maps non-empty strings to strings")
    return ctx
