"""The one client keyvault uses for a trust server: GET, answer a Bearer challenge with
a token for the scope asked, retry, reuse the token, and refresh it once when the
server refuses it mid-run (it expired, or the server restarted)."""

from __future__ import annotations

from collections.abc import Mapping

from keyvault.errors import AccessDeniedError, BackendUnavailableError
from keyvault.trustserver.challenge import Challenge, parse_bearer
from keyvault.trustserver.credentials import (
    Credentials,
    docker_credentials,
    login_keys,
    notary_auth,
    registry_shown,
)
from keyvault.trustserver.endpoint import Endpoint
from keyvault.trustserver.tokens import Tokens
from keyvault.trustserver.transport import Transport, checked_url

MAX_DOCUMENT = 4 * 1024 * 1024


class TrustClient:
    """GETs under ``<url>/v2/`` with registry token auth; logins looked up once per
    registry."""

    def __init__(
        self, endpoint: Endpoint, env: Mapping[str, str], transport: Transport | None = None
    ) -> None:
        self.base = checked_url(endpoint.url, "trust server").rstrip("/")
        self.endpoint = endpoint
        self.env = env
        self.transport = transport or Transport(endpoint.ca_file)
        self.tokens = Tokens(self.transport)
        #: Logins by the names they are filed under: a helper runs once per registry.
        self._logins: dict[tuple[str, ...], Credentials | None] = {}
        #: The challenge last met per (GUN, kind of path): its token is sent up front.
        self._scopes: dict[tuple[str, str], Challenge] = {}

    def __repr__(self) -> str:
        return f"TrustClient({self.base!r})"

    def get(self, gun: str, path: str) -> bytes | None:
        """The body of ``<base>/v2/<path>`` (None for 404) on behalf of ``gun``."""
        url = f"{self.base}/v2/{path}"
        kind = (gun, path.rpartition(".")[2])
        challenge = self._scopes.get(kind)
        token = self.tokens.cached(challenge) if challenge else None
        fresh = refreshed = False
        # anonymous or a reused token, then a new token, then (once) another if the server
        # calls it invalid: it expired, or the server restarted

        for _ in range(4):
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            status, answer_headers, body = self.transport.get(url, headers, limit=MAX_DOCUMENT)
            if status != 401:
                return self._answer(gun, url, status, body)
            asked = parse_bearer(answer_headers.get("WWW-Authenticate"))
            if asked is None:
                raise self._denied(
                    gun, "it asks for an authentication docker's token protocol does not give"
                )
            self._scopes[kind] = asked
            if token:
                self.tokens.forget(asked)
                if fresh and (asked.error != "invalid_token" or refreshed):
                    raise self._denied(gun, self._refusal(gun, asked))
                refreshed = refreshed or fresh
                token, fresh = self._token(gun, asked), True
                continue
            token, fresh = self.tokens.cached(asked), False
            if token is None:
                token, fresh = self._token(gun, asked), True
        raise self._denied(gun, "it kept refusing the token")

    def _token(self, gun: str, challenge: Challenge) -> str:
        login = self.login(gun)
        try:
            return self.tokens.fetch(challenge, login)
        except AccessDeniedError as exc:
            raise self._denied(gun, exc.message) from None

    def login(self, gun: str) -> Credentials | None:
        """NOTARY_AUTH, else docker's login for the GUN's registry (looked up once)."""
        keys = tuple(login_keys(gun, self.base))
        if keys not in self._logins:
            self._logins[keys] = notary_auth(self.env) or docker_credentials(keys, self.env)
        return self._logins[keys]

    def _refusal(self, gun: str, asked: Challenge) -> str:
        login = self._logins.get(tuple(login_keys(gun, self.base)))
        who = f"the login {login}" if login else "an anonymous token"
        what = f" ({asked.scope})" if asked.scope else ""
        reason = "lacks the access asked" if asked.error == "insufficient_scope" else "was refused"
        return f"{who} {reason}{what}"

    def _denied(self, gun: str, why: str) -> AccessDeniedError:
        registry = registry_shown(login_keys(gun, self.base))
        login = f"docker login {registry}".rstrip()
        return AccessDeniedError(
            f"the trust server {self.base} refused access to {gun}: {why}",
            hint=f"log in with '{login}' (or set NOTARY_AUTH), then run the command again",
        )

    def _answer(self, gun: str, url: str, status: int, body: bytes) -> bytes | None:
        if status == 404:
            return None
        if status == 403:
            raise self._denied(gun, f"it answered 403 for {url}")
        if status != 200:
            raise BackendUnavailableError(f"the trust server answered {status} for {url}")
        if len(body) > MAX_DOCUMENT:
            raise BackendUnavailableError(f"{url} is larger than {MAX_DOCUMENT} bytes")
        return body
