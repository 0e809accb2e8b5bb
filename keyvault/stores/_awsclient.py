"""boto3 client construction and error translation shared by the S3 store and the KMS wrapper.

Only :mod:`keyvault.stores.s3` and :mod:`keyvault.wrappers.awskms` import
this module, and it imports boto3 inside functions only, so the core and
``keyvault --help`` never load the SDK. It lives under ``stores/`` because
only backend packages may touch an SDK (tests/core/test_layers.py).

Where settings come from, most specific first: the backend's config section
(``[s3]`` / ``[awskms]``), then the captured environment (``AWS_PROFILE``,
``AWS_REGION`` / ``AWS_DEFAULT_REGION``, ``AWS_ACCESS_KEY_ID`` ...), then
boto3's own chain (``~/.aws/config`` and ``credentials``, SSO, instance
roles). Nothing keyvault-specific is needed to reach AWS.

Errors: an SDK exception's text can carry request details, so only safe
facts survive into a :class:`~keyvault.errors.KeyvaultError`: the service's
error code, the HTTP status, the operation and what keyvault was doing.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from keyvault.breaker import NEVER, Breaker
from keyvault.errors import (
    AccessDeniedError,
    BackendUnavailableError,
    KeyvaultError,
    UsageError,
)
from keyvault.stores._endpoint import check_endpoint_url

DEFAULT_CONNECT_TIMEOUT = 5.0
DEFAULT_READ_TIMEOUT = 15.0
#: KMS answers Encrypt/Decrypt in milliseconds: a KMS that is silent for 5 s is hung.
DEFAULT_KMS_READ_TIMEOUT = 5.0
DEFAULT_MAX_ATTEMPTS = 4
DEFAULT_POOL = 8
MAX_ATTEMPTS_LIMIT = 10
_REGION = re.compile(r"[a-z]{2}(?:-[a-z0-9]+){1,4}")
_PROFILE = re.compile(r"[A-Za-z0-9_.@+-]{1,128}")

#: Service error codes that mean "these credentials may not do this".
ACCESS_CODES = frozenset(
    {
        "AccessDenied",
        "AccessDeniedException",
        "Forbidden",
        "SignatureDoesNotMatch",
        "InvalidAccessKeyId",
        "InvalidClientTokenId",
        "UnrecognizedClientException",
        "ExpiredToken",
        "ExpiredTokenException",
        "InvalidToken",
        "AllAccessDisabled",
        "AccountProblem",
        "InvalidSignatureException",
        "MissingAuthenticationToken",
        "IncompleteSignature",
        "RequestTimeTooSkewed",
    }
)
#: Service error codes that mean "try again later".
TRANSIENT_CODES = frozenset(
    {
        "SlowDown",
        "ServiceUnavailable",
        "InternalError",
        "InternalFailure",
        "RequestTimeout",
        "Throttling",
        "ThrottlingException",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "ProvisionedThroughputExceededException",
        "KMSInternalException",
        "DependencyTimeoutException",
        "KeyUnavailableException",
        "LimitExceededException",
        "ServiceUnavailableException",
        "503",
        "500",
        "502",
        "504",
    }
)


#: Answers that say "slow down": the backend is up (never a circuit breaker's down signal).
THROTTLING_CODES = frozenset(
    {
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "ProvisionedThroughputExceededException",
        "LimitExceededException",
    }
)


@dataclass(frozen=True)
class ClientSettings:
    """What a boto3 client needs, validated (no secrets: credentials stay in boto3's chain)."""

    service: str
    endpoint_url: str | None
    region: str | None
    profile: str | None
    connect_timeout: float
    read_timeout: float
    max_attempts: int
    max_pool_connections: int = DEFAULT_POOL
    s3_addressing_style: str | None = None


def client_settings(
    service: str,
    section: str,
    settings: Mapping[str, Any],
    env: Mapping[str, str],
    *,
    endpoint_url: str | None = None,
    region: str | None = None,
) -> ClientSettings:
    """Merge the config section, the captured environment and explicit overrides."""
    endpoint = (
        endpoint_url or _str(settings, section, "endpoint_url") or _env_endpoint(service, env)
    )
    if endpoint is not None:
        endpoint = check_endpoint_url(endpoint, what=f"[{section}] endpoint_url")
    region = (
        region
        or _str(settings, section, "region")
        or env.get("AWS_REGION")
        or env.get("AWS_DEFAULT_REGION")
        or None
    )
    if region is not None and not _REGION.fullmatch(region):
        raise UsageError(
            f"[{section}] region {region[:40]!r} is not an AWS region name", hint="e.g. us-east-1"
        )
    profile = _str(settings, section, "profile") or env.get("AWS_PROFILE") or None
    if profile is not None and not _PROFILE.fullmatch(profile):
        raise UsageError(f"[{section}] profile {profile[:40]!r} is not a valid profile name")
    return ClientSettings(
        service=service,
        endpoint_url=endpoint,
        region=region,
        profile=profile,
        connect_timeout=_seconds(settings, section, "connect_timeout", DEFAULT_CONNECT_TIMEOUT),
        read_timeout=_seconds(
            settings,
            section,
            "read_timeout",
            DEFAULT_KMS_READ_TIMEOUT if service == "kms" else DEFAULT_READ_TIMEOUT,
        ),
        max_attempts=_attempts(settings, section),
        max_pool_connections=_pool(settings, section),
        s3_addressing_style=_addressing(settings, section) if service == "s3" else None,
    )


def make_client(cs: ClientSettings, env: Mapping[str, str], breaker: Breaker = NEVER) -> Any:
    """One boto3 client (thread-safe; sessions are not, so each client gets its own).

    Each attempt reports to the run's ``breaker`` and, once it is open, is refused
    before it is sent (so no more retries go to a backend known to be down).
    """
    try:
        import boto3
        import botocore.config
        import botocore.exceptions
    except ModuleNotFoundError:
        raise BackendUnavailableError(
            f"the {cs.service} backend needs the Python package 'boto3'",
            hint="install it with: pip install 'keyvault[aws]'",
        ) from None
    credentials: dict[str, str] = {}
    # The captured environment wins over the process's (tests and the daemon pass their own).
    if env.get("AWS_ACCESS_KEY_ID") and env.get("AWS_SECRET_ACCESS_KEY"):
        credentials = {
            "aws_access_key_id": env["AWS_ACCESS_KEY_ID"],
            "aws_secret_access_key": env["AWS_SECRET_ACCESS_KEY"],
        }
        if env.get("AWS_SESSION_TOKEN"):
            credentials["aws_session_token"] = env["AWS_SESSION_TOKEN"]
    try:
        session = boto3.Session(
            profile_name=None if credentials else cs.profile,
            region_name=cs.region,
            botocore_session=_botocore_session(),
            **credentials,
        )
    except botocore.exceptions.ProfileNotFound:
        raise UsageError(
            f"AWS profile {cs.profile!r} is not in the AWS config files",
            hint="check AWS_PROFILE or the profile setting",
        ) from None
    options: dict[str, Any] = {
        "connect_timeout": cs.connect_timeout,
        "read_timeout": cs.read_timeout,
        "retries": {"mode": "standard", "total_max_attempts": cs.max_attempts},
        "max_pool_connections": cs.max_pool_connections,
        "user_agent_extra": "keyvault",
    }
    if cs.s3_addressing_style:
        options["s3"] = {"addressing_style": cs.s3_addressing_style}
    region = cs.region or session.region_name or "us-east-1"
    try:
        client = session.client(
            cs.service,
            region_name=region,
            endpoint_url=cs.endpoint_url,
            config=botocore.config.Config(**options),
        )
    except botocore.exceptions.BotoCoreError as exc:
        raise UsageError(
            f"cannot configure the AWS {cs.service} client ({type(exc).__name__})"
        ) from None
    if breaker is not NEVER:
        _report_to(breaker, client, cs.endpoint_url or f"AWS {cs.service.upper()}")
    return client


#: Where a request's context keeps its last transport failure (for the breaker's refusal).
_LAST_DOWN = "keyvault_last_down"


def _report_to(breaker: Breaker, client: Any, endpoint: str) -> None:
    """Hook the client's attempts to the run's circuit breaker (keyvault.breaker)."""
    import botocore.exceptions as bx

    down_exceptions = (
        bx.EndpointConnectionError,
        bx.ConnectionClosedError,
        bx.ConnectTimeoutError,
        bx.ReadTimeoutError,
        bx.ProxyConnectionError,
    )

    def before_send(request: Any = None, **_: Any) -> None:
        if not breaker.is_open:
            return
        # A retry of a request that just failed: report that failure, not the breaker.
        last = (getattr(request, "context", None) or {}).get(_LAST_DOWN)
        failed = (
            None
            if last is None
            else translate_transport_error(
                last, what="a backend is down, so no more requests were sent", endpoint=endpoint
            )
        )
        if failed is not None:
            raise failed
        breaker.check()

    def received(
        exception: BaseException | None = None,
        response_dict: Any = None,
        parsed_response: Any = None,
        context: Any = None,
        **_: Any,
    ) -> None:
        if isinstance(exception, down_exceptions):
            breaker.down(f"{endpoint}: {type(exception).__name__}")
            if isinstance(context, dict):
                context[_LAST_DOWN] = exception
            return
        if exception is not None or not isinstance(response_dict, dict):
            return
        status = response_dict.get("status_code")
        error = (
            (parsed_response or {}).get("Error") or {} if isinstance(parsed_response, dict) else {}
        )
        code = str(error.get("Code") or "")
        if code in THROTTLING_CODES or status == 429:
            return  # up, and asking to be paced: never a down signal
        if isinstance(status, int) and status >= 500:
            breaker.down(f"{endpoint}: HTTP {status} {code[:40]}".rstrip())
        else:
            breaker.up()

    client.meta.events.register("before-send", before_send)
    client.meta.events.register("response-received", received)


def _botocore_session() -> Any:
    """A botocore session whose clients parse timestamps the fast way (see parse_timestamp)."""
    import botocore.session

    core = botocore.session.get_session()
    core.get_component("response_parser_factory").set_parser_defaults(
        timestamp_parser=parse_timestamp
    )
    return core


def parse_timestamp(value: Any) -> datetime:
    """A response timestamp, as botocore's default parser reads it, about 100x faster.

    Every listed object and every read carries one (``LastModified``), and
    botocore's general-purpose parser costs about 0.3 ms each here: a third of
    a bulk restore's client CPU went to it. The two forms S3 sends (ISO 8601 in
    listings, RFC 7231 in headers) are read directly; anything else goes to
    botocore's parser.
    """
    if isinstance(value, str):
        try:
            if value.endswith(" GMT"):
                return _http_date(value)
            parsed = datetime.fromisoformat(value)
            if parsed.tzinfo is not None:
                return parsed
        except ValueError:
            pass
    from botocore.utils import parse_timestamp as botocore_parse

    parsed_by_botocore: datetime = botocore_parse(value)
    return parsed_by_botocore


_MONTHS = {
    name: number
    for number, name in enumerate(
        ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1
    )
}


def _http_date(value: str) -> datetime:
    """``Sat, 05 Dec 2026 04:26:31 GMT`` (RFC 7231), without strptime's locale."""
    _weekday, day, month, year, clock, _gmt = value.split(" ")
    hour, minute, second = clock.split(":")
    if month not in _MONTHS:
        raise ValueError(value)
    return datetime(
        int(year), _MONTHS[month], int(day), int(hour), int(minute), int(second), tzinfo=UTC
    )


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def error_code(exc: BaseException) -> tuple[str, int | None]:
    """(service error code, HTTP status) of a botocore ClientError; ("", None) otherwise."""
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return "", None
    error = response.get("Error") or {}
    code = str(error.get("Code") or "")[:64]
    status = (response.get("ResponseMetadata") or {}).get("HTTPStatusCode")
    return (code if code.isprintable() else "?"), (status if isinstance(status, int) else None)


def translate_transport_error(
    exc: BaseException, *, what: str, endpoint: str
) -> KeyvaultError | None:
    """Connection, timeout and credential failures (botocore.exceptions.BotoCoreError)."""
    import botocore.exceptions as bx

    name = type(exc).__name__
    if isinstance(exc, bx.NoCredentialsError | bx.PartialCredentialsError):
        return AccessDeniedError(
            f"{what}: no AWS credentials found",
            hint="set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE, "
            "or run where an IAM role is available",
        )
    if isinstance(exc, bx.ProfileNotFound):
        return UsageError(f"{what}: the AWS profile is not in the AWS config files")
    if isinstance(
        exc,
        bx.EndpointConnectionError
        | bx.ConnectionClosedError
        | bx.ConnectTimeoutError
        | bx.ReadTimeoutError
        | bx.ProxyConnectionError
        | bx.HTTPClientError
        | bx.SSLError,
    ):
        return BackendUnavailableError(
            f"{what}: cannot reach {endpoint} ({name}); nothing was changed by this request",
            hint="check the endpoint, the network, or the service's status; re-run to retry",
        )
    if isinstance(exc, bx.ParamValidationError):
        return UsageError(f"{what}: the request was refused by the AWS SDK ({name})")
    if isinstance(exc, bx.BotoCoreError):
        return BackendUnavailableError(f"{what}: AWS SDK failure ({name})")
    return None


class ClockSkewError(AccessDeniedError):
    """The service refused a signed request because this machine's clock is off."""


#: Codes a service answers when a request's signature time is too far from its clock.
_SKEW_CODES = frozenset({"RequestTimeTooSkewed", "RequestExpired"})


def clock_skew(exc: BaseException, what: str) -> ClockSkewError | None:
    """A refusal for a skewed clock as a clear error (exit 4), else None.

    SigV4 signatures carry the client's time; S3 answers ``RequestTimeTooSkewed``
    and KMS ``InvalidSignatureException`` ("Signature expired") when it is more
    than 15 minutes off. Retrying never helps and credentials are not at fault.
    """
    code, status = error_code(exc)
    error = (getattr(exc, "response", None) or {}).get("Error") or {}
    message = str(error.get("Message") or "").lower() if isinstance(error, dict) else ""
    if code not in _SKEW_CODES and not (
        code == "InvalidSignatureException"
        and ("signature expired" in message or "not yet current" in message)
    ):
        return None
    return ClockSkewError(
        f"{what}: the service refused the request because this machine's clock differs "
        f"from its clock by too much ({code}, HTTP {status})",
        hint="fix the clock (NTP: timedatectl set-ntp true); 'keyvault doctor' shows the "
        "skew against each endpoint",
    )


def cut_answer(what: str, field: str) -> BackendUnavailableError:
    """An answer without a field the service always sends: empty or cut off on the way.

    botocore does not hold a body to its Content-Length, so a 200 whose body was
    lost arrives as ``{}``: that is a backend fault (exit 6), never tampering.
    """
    return BackendUnavailableError(
        f"{what}: the answer came without {field} (empty or cut off on the way); "
        "nothing was used from it",
        hint="re-run to retry; check the network path to the "
        "service (a proxy or load balancer cutting answers)",
    )


def _env_endpoint(service: str, env: Mapping[str, str]) -> str | None:
    specific = f"AWS_ENDPOINT_URL_{service.upper()}"
    return env.get(specific) or env.get("AWS_ENDPOINT_URL") or None


def _str(settings: Mapping[str, Any], section: str, key: str) -> str | None:
    value = settings.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value.isprintable():
        raise UsageError(f"[{section}] {key} must be a string")
    return value or None


def _seconds(settings: Mapping[str, Any], section: str, key: str, default: float) -> float:
    value = settings.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 600:
        raise UsageError(f"[{section}] {key} must be a number of seconds between 0 and 600")
    return float(value)


def _attempts(settings: Mapping[str, Any], section: str) -> int:
    value = settings.get("max_attempts", DEFAULT_MAX_ATTEMPTS)
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or not (1 <= value <= MAX_ATTEMPTS_LIMIT)
    ):
        raise UsageError(f"[{section}] max_attempts must be between 1 and {MAX_ATTEMPTS_LIMIT}")
    return value


def _pool(settings: Mapping[str, Any], section: str) -> int:
    value = settings.get("max_pool_connections", DEFAULT_POOL)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 256:
        raise UsageError(f"[{section}] max_pool_connections must be between 1 and 256")
    return value


def _addressing(settings: Mapping[str, Any], section: str) -> str | None:
    value = _str(settings, section, "addressing_style")
    if value is not None and value not in ("auto", "path", "virtual"):
        raise UsageError(f"[{section}] addressing_style must be auto, path or virtual")
    return value
