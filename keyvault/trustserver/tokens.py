"""Bearer tokens from a registry's auth service (the Docker registry token protocol).

``GET realm?service=…&scope=…``, with HTTP Basic when the user has a login
and anonymously otherwise (an identity token, docker's OAuth2 refresh token,
is sent as ``POST realm`` with ``grant_type=refresh_token`` instead); the
answer's ``token`` (or ``access_token``) is reused for the same realm, service
and scope until ``expires_in`` seconds (60 when absent, as the docker token
spec says) have passed, or until the trust server refuses it.
"""

from __future__ import annotations

import base64
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field

from keyvault.bounded import json_loads
from keyvault.errors import AccessDeniedError, BackendUnavailableError
from keyvault.trustserver.challenge import Challenge, scope_repository
from keyvault.trustserver.credentials import Credentials
from keyvault.trustserver.transport import Transport, checked_url

DEFAULT_LIFETIME = 60.0
MAX_ANSWER = 1024 * 1024
CLIENT_ID = "keyvault"  # the OAuth2 client_id the token spec asks of a refresh-token POST


@dataclass(frozen=True)
class Token:
    value: str = field(repr=False)
    expires: float  # on the monotonic clock


class Tokens:
    """Tokens by (realm, service, scope), fetched on demand and reused until they expire."""

    def __init__(self, transport: Transport, clock: Callable[[], float] = time.monotonic) -> None:
        self.transport = transport
        self.clock = clock
        self._cache: dict[tuple[str, str | None, str | None], Token] = {}
        #: Token requests made (for `--json` diagnostics and the tests' reuse checks).
        self.fetched = 0

    def cached(self, challenge: Challenge) -> str | None:
        token = self._cache.get(_key(challenge))
        return token.value if token and token.expires > self.clock() else None

    def fetch(self, challenge: Challenge, login: Credentials | None) -> str:
        """A new token for ``challenge``; AccessDeniedError if the realm refuses the login."""
        checked_url(challenge.realm, "token realm")
        query = {k: v for k, v in (("service", challenge.service), ("scope", challenge.scope)) if v}
        url = (
            challenge.realm
            + ("&" if "?" in challenge.realm else "?")
            + urllib.parse.urlencode(query)
        )
        headers = {}
        form = None
        if login is not None and login.identity_token:
            url = challenge.realm
            form = urllib.parse.urlencode(
                {
                    **query,
                    "grant_type": "refresh_token",
                    "client_id": CLIENT_ID,
                    "refresh_token": login.secret,
                }
            ).encode()
        elif login is not None:
            pair = f"{login.username}:{login.secret}".encode()
            headers["Authorization"] = "Basic " + base64.b64encode(pair).decode()
        status, _, body = self.transport.get(url, headers, limit=MAX_ANSWER, form=form)
        self.fetched += 1
        if status in (401, 403):
            who = f"the login {login}" if login else "an anonymous request"
            raise AccessDeniedError(
                f"the registry's auth service refused {who} for {challenge.scope or 'a token'}"
            )
        if status != 200:
            raise BackendUnavailableError(f"the registry's auth service answered {status}")
        try:
            answer = json_loads(body)
            value = answer.get("token") or answer.get("access_token")
            lifetime = float(answer.get("expires_in") or DEFAULT_LIFETIME)
            if not isinstance(value, str) or not value:
                raise ValueError("no token")
        except (ValueError, TypeError, AttributeError):
            raise BackendUnavailableError(
                "the registry's auth service answered without a token"
            ) from None
        self._cache[_key(challenge)] = Token(value, self.clock() + max(lifetime, 0.0))
        return value

    def forget(self, challenge: Challenge) -> None:
        self._cache.pop(_key(challenge), None)


def _key(challenge: Challenge) -> tuple[str, str | None, str | None]:
    """The cache key: the same scope whatever order the server lists its actions in
    (notary-server asks ``push,pull`` and ``pull,push`` for the same thing)."""
    scope = challenge.scope
    parts = scope_repository(scope) if scope else None
    if parts is not None:
        scope = f"repository:{parts[0]}:{','.join(sorted(set(parts[1].split(','))))}"
    return challenge.realm, challenge.service, scope
