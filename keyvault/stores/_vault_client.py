"""One authenticated hvac client per Vault, shared by the KV v2 store and the Transit wrapper.

Only :mod:`keyvault.stores.vaultkv` and :mod:`keyvault.wrappers.transit`
import this module, and hvac is imported inside functions only, so the core
and ``keyvault --help`` never load it. It lives under ``stores/`` because
only backend packages may touch an SDK (tests/core/test_layers.py).

Where settings come from, the way Vault users expect (most specific first):
the ``[vault]`` config section, then the captured environment:

- ``address`` / ``VAULT_ADDR`` (default ``https://127.0.0.1:8200``, as the
  ``vault`` CLI), ``namespace`` / ``VAULT_NAMESPACE``;
- ``cacert`` / ``VAULT_CACERT``; ``skip_verify`` / ``VAULT_SKIP_VERIFY``
  turns TLS verification off with a loud :class:`VaultInsecureWarning`;
- ``auth = "token"`` (default): ``VAULT_TOKEN``, else ``token_file``, else
  ``$HOME/.vault-token``;
- ``auth = "approle"``: role ID from ``role_id``, ``role_id_file`` or
  ``KEYVAULT_VAULT_ROLE_ID``; secret ID from ``KEYVAULT_VAULT_SECRET_ID`` or
  ``secret_id_file``; at ``approle_mount`` (default ``approle``);
- ``auth = "jwt"`` (CI agents): the CI's ID token from the variable named by
  ``jwt_env`` (default ``KEYVAULT_VAULT_JWT``) or the file ``jwt_file``,
  exchanged for a short-lived token at ``jwt_mount`` (default ``jwt``) with
  role ``jwt_role``.

Nothing secret is ever taken from the command line. Token, role-ID and
secret-ID files must be private to their owner (like ``~/.ssh`` keys).

Clients are shared within a process per (address, namespace, TLS, auth
identity); the identity is a salted digest, never the secret. A token that
nears the end of its TTL is renewed (or, for AppRole and JWT, obtained again
by logging in) before the next request; a token that has expired gives
:class:`VaultTokenExpiredError`. A 403 names the path and the token's
policies (from ``lookup-self``). A sealed, standby or unreachable server is
retried briefly (``max_attempts`` in all, pausing ``retry_delay``), then
reported; each attempt reports to the run's circuit breaker (keyvault.breaker),
which may refuse the next one once Vault is known to be down (429 is throttling,
never a down signal). Responses larger than
``MAX_RESPONSE`` are refused before they are parsed (T10).

Errors: hvac exception texts can carry response bodies, so they are only
*classified* here (status, known Vault error phrases), never shown.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import threading
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from keyvault import fsutil
from keyvault.bounded import json_loads
from keyvault.breaker import NEVER, Breaker
from keyvault.errors import (
    AccessDeniedError,
    BackendUnavailableError,
    InvalidInputError,
    KeyvaultError,
    NotFoundError,
    ThrottledError,
    UsageError,
)
from keyvault.plugins import BackendOptions
from keyvault.stores._endpoint import check_endpoint_url

DEFAULT_ADDRESS = "https://127.0.0.1:8200"
DEFAULT_TIMEOUT = 10.0
DEFAULT_MAX_ATTEMPTS = 4
MAX_ATTEMPTS_LIMIT = 10


def retry_delay(attempt: int) -> float:
    """The pause before retry ``attempt`` (0-based) when Vault is sealed, in standby,
    throttling or unreachable: 0.25 s, doubling, at most 2 s."""
    return float(min(0.25 * 2**attempt, 2.0))


#: Largest response body read from Vault; larger ones are refused before JSON parsing.
MAX_RESPONSE = 32 * 1024 * 1024
MAX_SECRET_FILE = 64 * 1024
AUTH_METHODS = ("token", "approle", "jwt")
DEFAULT_JWT_ENV = "KEYVAULT_VAULT_JWT"
ROLE_ID_ENV = "KEYVAULT_VAULT_ROLE_ID"
SECRET_ID_ENV = "KEYVAULT_VAULT_SECRET_ID"  # noqa: S105 - a variable name
_MOUNT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}(?:/[A-Za-z0-9][A-Za-z0-9._-]{0,127}){0,7}")
_ROLE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,127}")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
_NAMESPACE = re.compile(r"[A-Za-z0-9._/-]{1,256}")
_SALT = os.urandom(16)
_T = TypeVar("_T")


class VaultInsecureWarning(UserWarning):
    """TLS verification towards Vault is off (VAULT_SKIP_VERIFY / skip_verify)."""


class VaultPermissionError(AccessDeniedError):
    """Vault's ACL refused this token the path (HTTP 403)."""


class VaultTokenExpiredError(AccessDeniedError):
    """The Vault token expired, was revoked, or was never valid."""


class VaultLoginError(AccessDeniedError):
    """AppRole or JWT login was refused (bad role, secret ID, claims, audience, expiry)."""


class VaultMountNotFoundError(NotFoundError):
    """No secrets engine or auth method is mounted at the path keyvault was told to use."""


class VaultUnavailableError(BackendUnavailableError):
    """Vault could not be reached, or was sealed or in standby, even after brief retries."""


class VaultThrottledError(VaultUnavailableError, ThrottledError):
    """Vault kept answering HTTP 429 (a rate limit quota) after the brief retries."""


@dataclass(frozen=True)
class VaultSettings:
    """Where and how to reach Vault, validated; holds no secret (only where to find them)."""

    address: str
    namespace: str | None
    verify: bool | str
    timeout: float
    auth: str
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    token_file: Path | None = None
    approle_mount: str = "approle"
    role_id_file: Path | None = None
    secret_id_file: Path | None = None
    jwt_mount: str = "jwt"
    jwt_role: str | None = None
    jwt_file: Path | None = None
    jwt_env: str = DEFAULT_JWT_ENV
    role_id: str | None = field(default=None, repr=False)
    address_from_default: bool = False


def vault_settings(options: BackendOptions, *, address: str | None = None) -> VaultSettings:
    """Merge ``[vault]`` and the captured environment (``address`` overrides both)."""
    cfg = options.for_scheme("vault")
    env = options.env
    default = not (address or _str(cfg, "address") or env.get("VAULT_ADDR"))
    addr = check_address(
        address or _str(cfg, "address") or env.get("VAULT_ADDR") or DEFAULT_ADDRESS
    )
    namespace = _str(cfg, "namespace") or env.get("VAULT_NAMESPACE") or None
    if namespace is not None and (not _NAMESPACE.fullmatch(namespace) or ".." in namespace):
        raise UsageError(f"Vault namespace {namespace[:60]!r} is not a valid namespace path")
    skip = cfg.get("skip_verify")
    if skip is None:
        skip = _truthy(env.get("VAULT_SKIP_VERIFY", ""))
    cacert = _str(cfg, "cacert") or env.get("VAULT_CACERT") or None
    verify: bool | str = True
    if skip:
        verify = False
    elif cacert:
        if not Path(cacert).is_file():
            raise NotFoundError(
                f"Vault CA certificate {cacert} does not exist",
                hint="fix [vault] cacert or VAULT_CACERT",
            )
        verify = cacert
    timeout = cfg.get("timeout", DEFAULT_TIMEOUT)
    if (
        isinstance(timeout, bool)
        or not isinstance(timeout, int | float)
        or not (0 < timeout <= 600)
    ):
        raise UsageError("[vault] timeout must be a number of seconds between 0 and 600")
    attempts = cfg.get("max_attempts", DEFAULT_MAX_ATTEMPTS)
    if (
        isinstance(attempts, bool)
        or not isinstance(attempts, int)
        or not (1 <= attempts <= MAX_ATTEMPTS_LIMIT)
    ):
        raise UsageError(f"[vault] max_attempts must be between 1 and {MAX_ATTEMPTS_LIMIT}")
    auth = _str(cfg, "auth") or "token"
    if auth not in AUTH_METHODS:
        raise UsageError(f"[vault] auth {auth[:20]!r} is not one of {', '.join(AUTH_METHODS)}")
    jwt_env = _str(cfg, "jwt_env") or DEFAULT_JWT_ENV
    if not _ENV_NAME.fullmatch(jwt_env):
        raise UsageError(f"[vault] jwt_env {jwt_env[:40]!r} is not an environment variable name")
    jwt_role = _str(cfg, "jwt_role")
    if auth == "jwt" and not jwt_role:
        raise UsageError('[vault] auth = "jwt" needs jwt_role (the role at the JWT auth mount)')
    if jwt_role is not None and not _ROLE.fullmatch(jwt_role):
        raise UsageError(f"[vault] jwt_role {jwt_role[:40]!r} is not a valid role name")
    return VaultSettings(
        address=addr,
        namespace=namespace,
        verify=verify,
        timeout=float(timeout),
        auth=auth,
        max_attempts=attempts,
        token_file=_path(cfg, "token_file"),
        approle_mount=_mount(cfg, "approle_mount", "approle"),
        role_id_file=_path(cfg, "role_id_file"),
        secret_id_file=_path(cfg, "secret_id_file"),
        jwt_mount=_mount(cfg, "jwt_mount", "jwt"),
        jwt_role=jwt_role,
        jwt_file=_path(cfg, "jwt_file"),
        jwt_env=jwt_env,
        role_id=_str(cfg, "role_id"),
        address_from_default=default,
    )


def check_address(url: str) -> str:
    """An http(s) URL with a host and no credentials, path, query or fragment."""
    return check_endpoint_url(
        url, what="Vault address", hint="set VAULT_ADDR or [vault] address; no credentials or path"
    )


# -- the shared client ----------------------------------------------------------------


class VaultClient:
    """An hvac client with its login, renewal, retries and error translation.

    Thread-safe: requests go out concurrently; logins and renewals take a lock.
    Get one with :func:`acquire` and give it back with :meth:`release`.
    """

    def __init__(
        self,
        settings: VaultSettings,
        env: Mapping[str, str],
        key: tuple[str, ...],
        breaker: Breaker = NEVER,
    ) -> None:
        self.settings = settings
        self.breaker = breaker
        self._env = env
        self._key = key
        self._lock = threading.RLock()
        self._users = 0
        self._hvac: Any = None
        self._token_ok = False
        self._expires: float | None = None  # monotonic deadline; None: no TTL (or unknown)
        self._ttl = 0.0
        self._renewable = False
        self._policies: tuple[str, ...] | None = None
        if settings.verify is False:
            warnings.warn(
                VaultInsecureWarning(
                    f"TLS certificate verification towards Vault at {settings.address} is OFF "
                    "(VAULT_SKIP_VERIFY / skip_verify): anyone on the network path can read the "
                    "token and every key. Use VAULT_CACERT instead."
                ),
                stacklevel=3,
            )

    def __repr__(self) -> str:
        return f"VaultClient({self.settings.address!r}, auth={self.settings.auth!r})"

    @property
    def address(self) -> str:
        return self.settings.address

    def call(
        self,
        what: str,
        fn: Callable[[Any], _T],
        *,
        path: str,
        before: Callable[[], object] | None = None,
    ) -> _T:
        """Run ``fn(hvac_client)``; retry briefly when Vault is unavailable; translate errors.

        ``what`` says what keyvault was doing ("read", "encrypt with"), ``path``
        the Vault path it was for; both appear in errors. Errors that are the
        caller's to interpret (400 and 404) are re-raised as :class:`VaultRequestError`.
        ``before`` runs before each attempt (a drill's pacing counts retries too).
        """
        relogged = False
        attempt = 0
        while True:
            self.breaker.check()
            client = self._ready()
            if before is not None:
                before()
            try:
                answer = fn(client)
            except KeyvaultError:
                raise
            except Exception as exc:
                kind = _classify(exc)
                self._report(kind, exc)
                if (
                    kind in ("retry", "throttled")
                    and attempt + 1 < self.settings.max_attempts
                    and not self.breaker.is_open
                ):  # Vault known down: no more retries
                    time.sleep(retry_delay(attempt))
                    attempt += 1
                    continue
                if kind == "forbidden":
                    invalid = self._token_invalid()
                    if invalid and not relogged and self._can_login():
                        relogged = True  # expired between renewals: one fresh login
                        self._invalidate()
                        continue
                    raise self._denied(what, path, invalid=invalid) from None
                raise self._translate(exc, kind, what, path, attempt + 1) from None
            self.breaker.up()
            return answer

    def _report(self, kind: str, exc: BaseException) -> None:
        """An attempt's failure to the run's breaker: Vault down, or Vault answering."""
        if kind in ("retry", "timeout", "server"):
            self.breaker.down(
                f"Vault at {self.settings.address}: "
                f"{_transport_name(exc) if _status(exc) is None else _status(exc)}"
            )
        elif kind != "throttled":
            self.breaker.up()

    def policies(self) -> tuple[str, ...] | None:
        """The token's policies (``lookup-self``), or None if Vault will not say."""
        if self._policies is None:
            with contextlib.suppress(Exception):
                self._lookup_self(self._ready())
        return self._policies

    def release(self) -> None:
        with _CACHE_LOCK:
            self._users -= 1
            if self._users > 0:
                return
            _CACHE.pop(self._key, None)
        with self._lock:
            client, self._hvac = self._hvac, None
        if client is not None:
            with contextlib.suppress(Exception):
                client.adapter.close()

    # -- token life cycle ---------------------------------------------------------

    def _ready(self) -> Any:
        """The hvac client with a token that is valid for a while yet."""
        with self._lock:
            if self._hvac is None:
                self._hvac = self._new_hvac()
            if not self._token_ok:
                self._login()
            elif self._expires is not None and self._expires - time.monotonic() < self._margin():
                self._refresh()
            return self._hvac

    def _new_hvac(self) -> Any:
        try:
            import hvac
        except ModuleNotFoundError:
            raise BackendUnavailableError(
                "the Vault backends need the Python package 'hvac'",
                hint="install it with: pip install 'keyvault[vault]'",
            ) from None
        s = self.settings
        return hvac.Client(
            url=s.address,
            token="",
            verify=s.verify,
            timeout=s.timeout,
            namespace=s.namespace,
            adapter=_bounded_adapter(),
        )

    def _margin(self) -> float:
        return max(1.0, min(300.0, self._ttl / 3))

    def _login(self) -> None:
        s = self.settings
        if s.auth == "token":
            self._hvac.token = self._static_token()
            self._token_ok = True
            self._lookup_self(self._hvac, quiet=True)
            return
        if s.auth == "approle":
            role_id, secret_id = self._approle_credentials()
            where = f"auth/{s.approle_mount}/login"

            def login(c: Any) -> Any:
                return c.auth.approle.login(
                    role_id=role_id, secret_id=secret_id, mount_point=s.approle_mount
                )
        else:
            jwt = self._jwt()
            role = s.jwt_role or ""
            where = f"auth/{s.jwt_mount}/login"

            def login(c: Any) -> Any:
                return c.auth.jwt.jwt_login(role=role, jwt=jwt, path=s.jwt_mount)

        response = self._login_request(login, where)
        auth = response.get("auth") if isinstance(response, dict) else None
        if not isinstance(auth, dict) or not isinstance(auth.get("client_token"), str):
            raise VaultLoginError(f"Vault at {s.address}: {where} returned no token")
        self._hvac.token = auth["client_token"]
        self._token_ok = True
        self._note_lease(
            auth.get("lease_duration"),
            auth.get("renewable"),
            auth.get("token_policies") or auth.get("policies"),
        )

    def _login_request(self, login: Callable[[Any], Any], where: str) -> Any:
        s = self.settings
        for attempt in range(s.max_attempts):
            self.breaker.check()
            try:
                return login(self._hvac)
            except Exception as exc:
                kind = _classify(exc)
                self._report(kind, exc)
                if kind in ("retry", "throttled") and attempt + 1 < s.max_attempts:
                    time.sleep(retry_delay(attempt))
                    continue
                if kind in ("invalid", "forbidden"):
                    method = "AppRole" if s.auth == "approle" else "JWT"
                    hint = (
                        "check the role ID and secret ID (a secret ID may be single-use or expired)"
                        if s.auth == "approle"
                        else f"check jwt_role {s.jwt_role!r} and that the CI token's issuer, "
                        "audience and claims match the role, and that it has not expired"
                    )
                    raise VaultLoginError(
                        f"Vault at {s.address} refused the {method} login "
                        f"at {where} (HTTP {_status(exc)})",
                        hint=hint,
                    ) from None
                if kind == "notfound":
                    raise VaultMountNotFoundError(
                        f"Vault at {s.address}: no auth method is mounted at {where}",
                        hint="fix [vault] approle_mount / jwt_mount",
                    ) from None
                raise self._translate(exc, kind, "log in at", where) from None
        raise AssertionError("unreachable")

    def _refresh(self) -> None:
        """Renew a renewable token; log in again where we can; else leave it to expire."""
        if self._renewable:
            try:
                response = self._hvac.auth.token.renew_self()
            except Exception:
                response = None
            auth = response.get("auth") if isinstance(response, dict) else None
            if isinstance(auth, dict):
                self._note_lease(
                    auth.get("lease_duration"),
                    auth.get("renewable"),
                    auth.get("token_policies") or auth.get("policies"),
                )
                if self._ttl >= 2 * self._margin() or not self._can_login():
                    return  # renewed for a useful while (or nothing better to do)
        if self._can_login():
            self._invalidate()
            self._login()

    def _note_lease(self, ttl: Any, renewable: Any, policies: Any) -> None:
        seconds = float(ttl) if isinstance(ttl, int | float) and not isinstance(ttl, bool) else 0
        self._ttl = seconds
        self._expires = time.monotonic() + seconds if seconds > 0 else None
        self._renewable = bool(renewable)
        if isinstance(policies, list) and all(isinstance(p, str) for p in policies):
            self._policies = tuple(sorted(set(policies)))

    def _lookup_self(self, client: Any, *, quiet: bool = False) -> None:
        try:
            data = client.auth.token.lookup_self().get("data") or {}
        except Exception:
            if quiet:
                return  # learnt on the first real request instead
            raise
        self._note_lease(data.get("ttl"), data.get("renewable"), data.get("policies"))

    def _token_invalid(self) -> bool:
        """After a 403: is the token itself unusable (expired, revoked), not just limited?"""
        try:
            self._hvac.auth.token.lookup_self()
        except Exception as exc:
            return _classify(exc) == "forbidden"
        return False

    def _can_login(self) -> bool:
        return self.settings.auth in ("approle", "jwt")

    def _invalidate(self) -> None:
        with self._lock:
            self._token_ok = False
            self._expires = None
            if self._hvac is not None:
                self._hvac.token = ""

    # -- credentials (read when needed, never kept in a field) ------------------------

    def _static_token(self) -> str:
        s = self.settings
        token = self._env.get("VAULT_TOKEN", "").strip()
        if token:
            return _check_secret(token, "VAULT_TOKEN")
        if s.token_file is not None:
            return _read_secret_file(s.token_file, "Vault token file")
        home = self._env.get("HOME")
        if home:
            path = Path(home) / ".vault-token"
            if path.exists():
                return _read_secret_file(path, "Vault token file")
        raise AccessDeniedError(
            f"no Vault token for {s.address}",
            hint="set VAULT_TOKEN, run 'vault login' / 'bao login' (writes ~/.vault-token), or "
            'configure [vault] auth = "approle" or "jwt"',
        )

    def _approle_credentials(self) -> tuple[str, str]:
        s = self.settings
        role_id = s.role_id or self._env.get(ROLE_ID_ENV, "").strip() or None
        if role_id is None and s.role_id_file is not None:
            role_id = _read_secret_file(s.role_id_file, "AppRole role ID file")
        if not role_id:
            raise AccessDeniedError(
                "AppRole login needs a role ID",
                hint=f"set [vault] role_id or role_id_file, or {ROLE_ID_ENV}",
            )
        secret_id = self._env.get(SECRET_ID_ENV, "").strip() or None
        if secret_id is None and s.secret_id_file is not None:
            secret_id = _read_secret_file(s.secret_id_file, "AppRole secret ID file")
        if not secret_id:
            raise AccessDeniedError(
                "AppRole login needs a secret ID",
                hint=f"set {SECRET_ID_ENV} or [vault] secret_id_file (never on the command line)",
            )
        return _check_secret(role_id, "role ID"), _check_secret(secret_id, "secret ID")

    def _jwt(self) -> str:
        s = self.settings
        token = self._env.get(s.jwt_env, "").strip()
        if token:
            return _check_secret(token, s.jwt_env)
        if s.jwt_file is not None:
            return _read_secret_file(s.jwt_file, "JWT file", private=False)
        raise AccessDeniedError(
            "JWT login needs the CI's ID token",
            hint=f"set {s.jwt_env} (or [vault] jwt_env to the variable your CI uses) or "
            "[vault] jwt_file",
        )

    # -- errors -------------------------------------------------------------------------

    def _denied(self, what: str, path: str, *, invalid: bool) -> AccessDeniedError:
        s = self.settings
        if invalid:
            if self._expires is not None and time.monotonic() >= self._expires:
                return VaultTokenExpiredError(
                    f"Vault at {s.address}: cannot {what} {path}: the Vault token has expired",
                    hint=self._relogin_hint(),
                )
            return VaultTokenExpiredError(
                f"Vault at {s.address}: cannot {what} {path}: the Vault token is expired, "
                "revoked or not valid",
                hint=self._relogin_hint(),
            )
        policies = self.policies()
        shown = ", ".join(policies) if policies else "unknown (lookup-self not allowed)"
        return VaultPermissionError(
            f"Vault at {s.address} refused to {what} {path}: permission denied (HTTP 403); "
            f"the token's policies: {shown}",
            hint="ask a Vault administrator for a policy granting this path "
            "('keyvault policy render' prints the policies keyvault expects)",
        )

    def _relogin_hint(self) -> str:
        if self.settings.auth == "token":
            return "log in again ('vault login' / 'bao login', or a fresh VAULT_TOKEN)"
        return "the login was retried and refused; check the credentials"

    def _translate(
        self, exc: BaseException, kind: str, what: str, path: str, attempts: int | None = None
    ) -> KeyvaultError:
        s = self.settings
        tried = f"{attempts or s.max_attempts} attempt{'s' if attempts != 1 else ''}"
        where = f"Vault at {s.address}: cannot {what} {path}"
        if kind == "retry":
            status = _status(exc)
            if status is None:
                hint = (
                    "check VAULT_ADDR and that Vault is running; nothing was changed by "
                    "this request"
                )
                if s.address_from_default:
                    hint = f"VAULT_ADDR is not set, so {DEFAULT_ADDRESS} was used; " + hint
                return VaultUnavailableError(
                    f"{where}: the server cannot be reached ({_transport_name(exc)}) after {tried}",
                    hint=hint,
                )
            if status == 503:
                return VaultUnavailableError(
                    f"{where}: Vault is sealed, in standby or unavailable (HTTP 503) after {tried}",
                    hint="unseal it or wait for the active node, then re-run",
                )
            return VaultUnavailableError(
                f"{where}: Vault failed (HTTP {status}) after {tried}", hint="re-run to retry"
            )
        if kind == "throttled":
            return VaultThrottledError(
                f"{where}: Vault kept throttling (HTTP 429) for {s.max_attempts} attempts",
                hint="re-run later, lower the concurrency or a drill's --rate, or raise "
                "Vault's rate limit quota",
            )
        if kind == "timeout":
            return VaultUnavailableError(
                f"{where}: no answer within {s.timeout:g} s",
                hint="raise [vault] timeout, or check the network; re-run to retry",
            )
        if kind == "tls":
            return VaultUnavailableError(
                f"{where}: TLS failed ({_transport_name(exc)})",
                hint="set VAULT_CACERT (or [vault] cacert) to the CA that signed Vault's "
                "certificate",
            )
        if kind == "cut":
            return VaultUnavailableError(
                f"{where}: the answer was empty or cut off on the way (no whole JSON "
                "body); nothing was used from it",
                hint="re-run to retry; check the network path to Vault (a proxy or load "
                "balancer cutting answers)",
            )
        if kind == "toolarge":
            return VaultUnavailableError(
                f"{where}: the response was larger than {MAX_RESPONSE} bytes; refused"
            )
        if kind in ("invalid", "notfound"):
            return VaultRequestError(where, _status(exc) or 0, _errors(exc))
        if kind == "unauthorized":
            return VaultTokenExpiredError(
                f"{where}: Vault says the request is not authenticated (HTTP 401)",
                hint=self._relogin_hint(),
            )
        if kind == "server":
            return VaultUnavailableError(
                f"{where}: Vault failed (HTTP {_status(exc)})", hint="re-run to retry"
            )
        if kind == "vault":
            return VaultUnavailableError(f"{where}: unexpected answer (HTTP {_status(exc)})")
        raise exc


class VaultRequestError(BackendUnavailableError):
    """A 400 or 404 from Vault that the caller turns into its own error.

    ``errors`` holds Vault's own error strings: compare against known phrases,
    never show them (they can quote request data).
    """

    def __init__(self, where: str, status: int, errors: tuple[str, ...]) -> None:
        super().__init__(f"{where}: Vault refused the request (HTTP {status})")
        self.status = status
        self.errors = errors

    def says(self, phrase: str) -> bool:
        return any(phrase in e for e in self.errors)

    @property
    def no_route(self) -> bool:
        """Vault's answer when nothing is mounted at the path."""
        return self.says("no handler for route")


_CACHE: dict[tuple[str, ...], VaultClient] = {}
_CACHE_LOCK = threading.Lock()


def acquire(options: BackendOptions, *, address: str | None = None) -> VaultClient:
    """The process's client for this Vault and identity (created on first use)."""
    settings = vault_settings(options, address=address)
    # One client per run (its breaker): a run's store and Transit wrapper share it.
    key = (*_identity(settings, options.env), str(id(options.breaker)))
    with _CACHE_LOCK:
        client = _CACHE.get(key)
        if client is None:
            client = VaultClient(settings, options.env, key, options.breaker)
            _CACHE[key] = client
        client._users += 1
        return client


def _identity(s: VaultSettings, env: Mapping[str, str]) -> tuple[str, ...]:
    """What makes two clients the same: where, how, and a salted digest of the credentials."""
    if s.auth == "token":
        material = [env.get("VAULT_TOKEN", ""), str(s.token_file), env.get("HOME", "")]
    elif s.auth == "approle":
        material = [
            s.role_id or env.get(ROLE_ID_ENV, ""),
            str(s.role_id_file),
            env.get(SECRET_ID_ENV, ""),
            str(s.secret_id_file),
            s.approle_mount,
        ]
    else:
        material = [env.get(s.jwt_env, ""), str(s.jwt_file), s.jwt_mount, s.jwt_role or ""]
    digest = hashlib.sha256(_SALT + "\0".join(material).encode()).hexdigest()
    return (s.address, s.namespace or "", str(s.verify), str(s.timeout), s.auth, digest)


# -- hvac plumbing ------------------------------------------------------------------------

_ADAPTER: Any = None


def _bounded_adapter() -> Any:
    """hvac's JSONAdapter, reading at most MAX_RESPONSE bytes of any answer before parsing."""
    global _ADAPTER
    if _ADAPTER is not None:
        return _ADAPTER
    from hvac.adapters import JSONAdapter, RawAdapter

    class BoundedJSONAdapter(JSONAdapter):  # type: ignore[misc]
        def request(
            self,
            method: str,
            url: str,
            headers: Any = None,
            raise_exception: bool = True,
            **kwargs: Any,
        ) -> Any:
            response = RawAdapter.request(
                self, method, url, headers=headers, raise_exception=False, stream=True, **kwargs
            )
            try:
                body = bytearray()
                for chunk in response.iter_content(64 * 1024):
                    body += chunk
                    if len(body) > MAX_RESPONSE:
                        raise ResponseTooLargeError(url)
                response._content = bytes(body)
            finally:
                response.close()
            if not response.ok and raise_exception and not self.ignore_exceptions:
                self._raise_for_error(method, url, response)
            if response.status_code == 200:
                try:
                    return json_loads(response.content)
                except ValueError:
                    raise CutAnswerError(url) from None  # Vault answers 200 with JSON only
            return response

    _ADAPTER = BoundedJSONAdapter
    return _ADAPTER


class ResponseTooLargeError(Exception):
    pass


class CutAnswerError(Exception):
    """A 200 whose body is empty or not whole JSON: lost on the way, not a wrong answer."""


def _classify(exc: BaseException) -> str:
    """One word for an hvac/requests exception; its text is never looked at here."""
    import hvac.exceptions as hx
    import requests.exceptions as rx

    if isinstance(exc, ResponseTooLargeError):
        return "toolarge"
    if isinstance(exc, CutAnswerError | rx.ChunkedEncodingError | rx.ContentDecodingError):
        return "cut"  # headers came, the body did not (whole): lost, not refused
    if isinstance(exc, rx.SSLError):
        return "tls"
    if isinstance(exc, rx.ConnectTimeout | rx.ConnectionError):
        return "retry"
    if isinstance(exc, rx.Timeout):
        return "timeout"
    if isinstance(exc, rx.RequestException):
        return "retry"
    if isinstance(exc, hx.Forbidden):
        return "forbidden"
    if isinstance(exc, hx.InvalidRequest):
        return "invalid"
    if isinstance(exc, hx.InvalidPath):
        return "notfound"
    if isinstance(exc, hx.Unauthorized):
        return "unauthorized"
    if isinstance(exc, hx.RateLimitExceeded):
        return "throttled"
    if isinstance(exc, hx.VaultDown | hx.BadGateway):
        return "retry"
    if isinstance(exc, hx.InternalServerError | hx.VaultNotInitialized):
        return "server"
    if isinstance(exc, hx.VaultError):
        return "vault"
    return "bug"


def _status(exc: BaseException) -> int | None:
    import hvac.exceptions as hx

    for cls, status in (
        (hx.InvalidRequest, 400),
        (hx.Unauthorized, 401),
        (hx.Forbidden, 403),
        (hx.InvalidPath, 404),
        (hx.RateLimitExceeded, 429),
        (hx.InternalServerError, 500),
        (hx.VaultNotInitialized, 501),
        (hx.BadGateway, 502),
        (hx.VaultDown, 503),
    ):
        if isinstance(exc, cls):
            return status
    return None


def _errors(exc: BaseException) -> tuple[str, ...]:
    errors = getattr(exc, "errors", None)
    if isinstance(errors, list):
        return tuple(str(e)[:500] for e in errors)
    return ()


def _transport_name(exc: BaseException) -> str:
    text = type(exc).__name__
    cause: BaseException | None = exc
    for _ in range(6):  # requests wraps urllib3, which wraps the socket error
        cause = cause.__context__ if cause is not None else None
        if isinstance(cause, ConnectionRefusedError):
            return "connection refused"
        if isinstance(cause, OSError) and cause.strerror:
            return cause.strerror.lower()
    return text


# -- small helpers ----------------------------------------------------------------------


def _read_secret_file(path: Path, what: str, *, private: bool = True) -> str:
    """The stripped text of a small secret file, refusing one others can read (or write)."""
    raw = fsutil.read_private_file(path, what, MAX_SECRET_FILE, private=private)
    try:
        text = raw.decode("ascii").strip()
    except UnicodeDecodeError:
        raise InvalidInputError(f"{what} {path} is not ASCII text") from None
    if not text:
        raise InvalidInputError(f"{what} {path} is empty")
    return _check_secret(text, what)


def _check_secret(value: str, what: str) -> str:
    if not value.isascii() or not value.isprintable() or any(c.isspace() for c in value):
        raise InvalidInputError(f"{what} contains spaces or control characters")
    return value


def _str(cfg: Mapping[str, Any], key: str) -> str | None:
    value = cfg.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value.isprintable():
        raise UsageError(f"[vault] {key} must be a string")
    return value or None


def _path(cfg: Mapping[str, Any], key: str) -> Path | None:
    value = _str(cfg, key)
    return Path(value).expanduser() if value else None


def _mount(cfg: Mapping[str, Any], key: str, default: str) -> str:
    value = (_str(cfg, key) or default).strip("/")
    if not _MOUNT.fullmatch(value) or ".." in value.split("/"):
        raise UsageError(f"[vault] {key} {value[:60]!r} is not a valid mount path")
    return value


def _truthy(value: str) -> bool:
    return value.strip().lower() in ("1", "true", "yes", "on", "t")
