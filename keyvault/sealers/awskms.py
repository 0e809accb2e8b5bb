"""AWS KMS as a sealing key: ``[sealing] key = "awskms:///alias/name"``.

The key is an asymmetric ``ECC_NIST_P256`` key with usage ``SIGN_VERIFY``:
its private half never leaves KMS. :attr:`AwsKmsSealer.key` is its public
half from ``GetPublicKey`` (DER SubjectPublicKeyInfo), asked for once per
process; a key of another spec or usage is refused with a UsageError before
anything is signed. :meth:`AwsKmsSealer.sign` calls ``Sign`` with
``ECDSA_SHA_256``: an ECDSA signature over SHA-256 of the message, which is
what ``ecdsa-p256-sha256`` verifies (:mod:`keyvault.sealing`).

KMS takes at most 4096 bytes as a ``RAW`` message. A message up to that size
is sent as it is (most envelopes of one Notary key with one or two wrappers
are 2 to 4 KB); a longer one goes as its SHA-256 with ``MessageType=DIGEST``,
which KMS signs without hashing again: the same signature either way. RAW
where it fits also keeps KMS emulators that ignore ``MessageType`` usable
(moto 5.2 hashes a DIGEST again: getmoto/moto#10202); the envelope's own
check right after signing refuses any signature that does not verify.

Every signature of a process comes from the key ``GetPublicKey`` described:
``Sign`` names the key as the URI does (so policies conditioned on the alias
keep working) and the key ID KMS answers with must be that key's, so an
alias moved to another key mid-run is refused, not signed with.

Verifying needs no KMS: the envelope carries the public key, and a restore
checks its fingerprint against the pins. The credentials need
``kms:GetPublicKey`` and ``kms:Sign`` on the key, nothing more.

URI grammar, endpoint (``awskms://host:port/...``, ``[awskms] endpoint_url``),
region, profile and credentials are those of the KMS wrapper
(:mod:`keyvault.wrappers.awskms`, :mod:`keyvault.stores._awsclient`).
"""

from __future__ import annotations

import hashlib
from typing import Any, NoReturn
from urllib.parse import urlsplit

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from keyvault.errors import (
    BackendUnavailableError,
    IntegrityError,
    KeyvaultError,
    UsageError,
)
from keyvault.plugins import BackendOptions
from keyvault.sealers._backend import BackendSealer
from keyvault.sealing import ECDSA_P256, MAX_SIGNATURE, SealerKey
from keyvault.stores import _awsclient as aws
from keyvault.stores.base import shown
from keyvault.wrappers.awskms import (
    KmsAccessDeniedError,
    KmsKeyDisabledError,
    KmsKeyNotFoundError,
    KmsKeyStateError,
    KmsThrottledError,
    parse_awskms_uri,
)

KEY_SPEC = "ECC_NIST_P256"
KEY_USAGE = "SIGN_VERIFY"
SIGNING_ALGORITHM = "ECDSA_SHA_256"
#: The largest message KMS signs as ``RAW``; longer ones are sent as their SHA-256.
MAX_RAW_MESSAGE = 4096
_CREATE_HINT = (
    "create one with: aws kms create-key --key-spec ECC_NIST_P256 "
    "--key-usage SIGN_VERIFY, and point the alias at it"
)
_THROTTLED = frozenset(
    {
        "ThrottlingException",
        "Throttling",
        "LimitExceededException",
        "TooManyRequestsException",
        "RequestLimitExceeded",
    }
)
#: KMS error code -> (error class, what went wrong, what to do).
_REFUSALS: dict[str, tuple[type[KeyvaultError], str, str]] = {
    "DisabledException": (
        KmsKeyDisabledError,
        "the KMS key is disabled",
        "ask its administrator to enable it (aws kms enable-key)",
    ),
    "KMSInvalidStateException": (
        KmsKeyStateError,
        "the KMS key's state forbids this (pending deletion or import)",
        "cancel a scheduled deletion (aws kms cancel-key-deletion)",
    ),
    "NotFoundException": (
        KmsKeyNotFoundError,
        "no such KMS key or alias in this account and region",
        "check the sealing key URI, the region and the account",
    ),
    "InvalidKeyUsageException": (UsageError, "the KMS key cannot sign", _CREATE_HINT),
    "UnsupportedOperationException": (UsageError, "the KMS key cannot sign", _CREATE_HINT),
    "ValidationException": (UsageError, "KMS refused the request as invalid", _CREATE_HINT),
    "InvalidArnException": (UsageError, "KMS refused the key ARN", "fix the sealing key URI"),
}


class AwsKmsSealer(BackendSealer[str]):
    """Signs envelopes with an ECC_NIST_P256 SIGN_VERIFY key in KMS; see the module docstring.

    What pins its public key is the key ID ``GetPublicKey`` answered with.
    """

    _key_name: str
    _cs: aws.ClientSettings

    def sign(self, message: bytes) -> bytes:
        """ECDSA P-256 over SHA-256(message), made by KMS with the key :attr:`key` names."""
        _, key_id = self._describe()
        if len(message) <= MAX_RAW_MESSAGE:
            kind, payload = "RAW", bytes(message)
        else:
            kind, payload = "DIGEST", hashlib.sha256(message).digest()
        try:
            resp = self._live().sign(
                KeyId=self._key_name,
                Message=payload,
                MessageType=kind,
                SigningAlgorithm=SIGNING_ALGORITHM,
            )
        except Exception as exc:
            self._raise(exc, "sign with")
        if not resp.get("KeyId") or not resp.get("Signature"):
            raise aws.cut_answer(
                f"cannot sign with KMS sealing key {self._uri}",
                "KeyId" if not resp.get("KeyId") else "Signature",
            )
        if _key_uuid(resp.get("KeyId")) != _key_uuid(key_id):
            raise IntegrityError(
                f"KMS signed with another key than the one {self._uri} named when this run "
                "began (was the alias moved?); refused",
                hint="run again: the new key is a new sealer, to be pinned where you restore",
            )
        signature = resp.get("Signature")
        if not isinstance(signature, bytes) or not 0 < len(signature) <= MAX_SIGNATURE:
            raise BackendUnavailableError(f"KMS key {self._uri} returned no usable signature")
        return signature

    # -- internals -------------------------------------------------------------------

    def _connect(self, options: BackendOptions) -> Any:
        host, self._key_name = parse_awskms_uri(self._uri)
        endpoint = None
        if host is not None:  # http for a loopback emulator, https anywhere else
            loopback = aws.is_loopback(urlsplit(f"//{host}").hostname or "")
            endpoint = f"{'http' if loopback else 'https'}://{host}"
        region = self._key_name.split(":")[3] if self._key_name.startswith("arn:") else None
        self._cs = aws.client_settings(
            "kms",
            "awskms",
            options.for_scheme("awskms"),
            options.env,
            endpoint_url=endpoint,
            region=region,
        )
        return aws.make_client(self._cs, options.env, options.breaker)

    def _release(self, client: Any) -> None:
        client.close()

    def _public_key(self) -> tuple[SealerKey, str]:
        try:
            resp = self._live().get_public_key(KeyId=self._key_name)
        except Exception as exc:
            self._raise(exc, "read the public key of")
        if not resp.get("KeyId"):
            raise aws.cut_answer(
                f"cannot read the public key of KMS sealing key {self._uri}", "KeyId"
            )
        spec = resp.get("KeySpec") or resp.get("CustomerMasterKeySpec")
        usage = resp.get("KeyUsage")
        if (spec, usage) != (KEY_SPEC, KEY_USAGE) or SIGNING_ALGORITHM not in (
            resp.get("SigningAlgorithms") or ()
        ):
            raise UsageError(
                f"KMS key {self._uri} is a {shown(spec)} key with usage {shown(usage)}; a "
                f"sealing key must be an asymmetric {KEY_SPEC} key with usage {KEY_USAGE}",
                hint=_CREATE_HINT,
            )
        der, key_id = resp.get("PublicKey"), resp.get("KeyId")
        if not isinstance(der, bytes) or not _is_p256(der) or not _key_uuid(key_id):
            raise BackendUnavailableError(f"KMS key {self._uri} returned no usable public key")
        return SealerKey(ECDSA_P256, der), str(key_id)

    def _raise(self, exc: BaseException, action: str) -> NoReturn:
        """An SDK exception as a keyvault error: only the code and status are kept."""
        if isinstance(exc, KeyvaultError):
            raise exc
        where = f"cannot {action} KMS sealing key {self._uri}"
        code, status = aws.error_code(exc)
        if not code and status is None:  # no answer from KMS: network, credentials, or a bug
            transport = aws.translate_transport_error(
                exc, what=where, endpoint=self._cs.endpoint_url or "AWS KMS"
            )
            if transport is None:
                raise exc
            raise transport from None
        skewed = aws.clock_skew(exc, where)
        if skewed is not None:
            raise skewed from None
        shown_code = f"{code or 'error'}, HTTP {status}"
        if code in _REFUSALS:
            cls, what, hint = _REFUSALS[code]
            raise cls(f"{where}: {what} ({shown_code})", hint=hint) from None
        if code in _THROTTLED:
            raise KmsThrottledError(
                f"{where}: KMS kept throttling after {self._cs.max_attempts} attempts "
                f"({shown_code})",
                hint="re-run later, or raise [awskms] max_attempts",
            ) from None
        if code in aws.ACCESS_CODES or status == 403:
            raise KmsAccessDeniedError(
                f"{where}: access denied ({shown_code})",
                hint="the key policy or IAM must allow kms:GetPublicKey and kms:Sign on this "
                "key for these credentials",
            ) from None
        if code in aws.TRANSIENT_CODES or (status is not None and status >= 500):
            raise BackendUnavailableError(
                f"{where}: KMS failed ({shown_code})", hint="re-run to retry"
            ) from None
        raise BackendUnavailableError(f"{where}: KMS refused the request ({shown_code})") from None


def _is_p256(der: bytes) -> bool:
    try:
        key = serialization.load_der_public_key(der)
    except (ValueError, TypeError):
        return False
    return isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1)


def _key_uuid(key_id: object) -> str:
    """A key's ID whether KMS names it by ID or by ARN (``...:key/<id>``)."""
    return str(key_id or "").rpartition("key/")[2]


__all__ = ["KEY_SPEC", "KEY_USAGE", "MAX_RAW_MESSAGE", "SIGNING_ALGORITHM", "AwsKmsSealer"]
