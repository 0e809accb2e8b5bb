"""Registry credentials found exactly where the docker CLI finds them, and ``NOTARY_AUTH``.

docker keeps logins in ``$DOCKER_CONFIG/config.json`` (else
``~/.docker/config.json``): ``credHelpers[host]`` names a credential helper
for one registry, else ``credsStore`` one for all, else ``auths`` holds them
(base64 ``auth`` of ``user:password``, or ``username``/``password``), keyed
by host, ``host:port`` or URL. A helper is ``docker-credential-<name> get``
with the server on stdin and ``{"ServerURL","Username","Secret"}`` on stdout.
Nothing here puts a password, a token or a helper's output in a message.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from keyvault.config import default_trust_dir
from keyvault.errors import AccessDeniedError, InvalidInputError

#: Docker Hub's login key in ``auths`` and for helpers (docker's IndexServer).
DOCKER_HUB = "https://index.docker.io/v1/"
_HUB_HOSTS = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})
_HELPER_NAME = re.compile(r"[A-Za-z0-9._-]+")
HELPER_TIMEOUT = 30.0
#: The user name a credential helper gives for an identity (refresh) token.
IDENTITY_TOKEN_USER = "<token>"  # noqa: S105 - a marker docker uses, not a secret
MAX_CONFIG = 1024 * 1024


@dataclass(frozen=True)
class Credentials:
    """A registry login; ``repr`` and ``str`` never show the secret."""

    username: str
    secret: str = field(repr=False)
    origin: str  # where it came from, for messages: "auths", "helper 'pass'", "NOTARY_AUTH"
    #: ``secret`` is an OAuth2 refresh token ("identity token"), not a password: docker
    #: stores one as ``identitytoken`` in ``auths`` or as a helper's ``<token>`` user.
    identity_token: bool = False

    def __str__(self) -> str:
        return f"{self.username} (from {self.origin})"


def docker_config_file(env: Mapping[str, str]) -> Path:
    """docker's rule: ``$DOCKER_CONFIG/config.json``, else ``~/.docker/config.json`` (the
    directory that holds docker's trust directory)."""
    return default_trust_dir(env).parent / "config.json"


def login_keys(gun: str | None, server_url: str) -> list[str]:
    """The names a login for this GUN may be filed under, best first: the GUN's registry
    (a trust server may sit on another port of the registry's host, as IBM's ``:4443``),
    then the trust server's own ``host:port`` and host."""
    keys: list[str] = []
    first = gun.split("/", 1)[0] if gun and "/" in gun else ""
    if first and ("." in first or ":" in first or first == "localhost"):
        keys.append(DOCKER_HUB if first in _HUB_HOSTS else first)
    parts = urlsplit(server_url)
    for name in (parts.netloc.rpartition("@")[2], parts.hostname or ""):
        if name and name not in keys:
            keys.append(name)
    return keys


def registry_shown(keys: Sequence[str]) -> str:
    """The registry a user logs in to, as ``docker login`` takes it."""
    if not keys:
        return "<registry>"
    return "" if keys[0] == DOCKER_HUB else keys[0]


def notary_auth(env: Mapping[str, str]) -> Credentials | None:
    """``NOTARY_AUTH``: base64 of ``user:password``, as the notary CLI reads it."""
    value = env.get("NOTARY_AUTH")
    if not value:
        return None
    try:
        user, sep, password = base64.b64decode(value, validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        raise InvalidInputError("NOTARY_AUTH is not base64 of user:password") from None
    if not sep or not user:
        raise InvalidInputError("NOTARY_AUTH is not base64 of user:password")
    return Credentials(user, password, "NOTARY_AUTH")


def docker_credentials(keys: Sequence[str], env: Mapping[str, str]) -> Credentials | None:
    """The first login docker holds under one of ``keys``; None when it has none."""
    config = _read_config(docker_config_file(env))
    helpers = config.get("credHelpers")
    store = config.get("credsStore")
    for key in keys:
        host = _hostname(key)
        helper = helpers.get(host) if isinstance(helpers, dict) else None
        if helper is None and isinstance(store, str) and store:
            helper = store
        if isinstance(helper, str) and helper:
            found = run_helper(helper, key, env)
        else:
            found = _from_auths(config.get("auths"), key)
        if found is not None:
            return found
    return None


def _read_config(path: Path) -> dict[str, object]:
    try:
        if path.stat().st_size > MAX_CONFIG:
            raise InvalidInputError(f"{path} is larger than {MAX_CONFIG} bytes")
        data = json.loads(path.read_bytes())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise InvalidInputError(
            f"docker's config {path} is unreadable ({type(exc).__name__})"
        ) from None
    if not isinstance(data, dict):
        raise InvalidInputError(f"docker's config {path} is not a JSON object")
    return data


def _hostname(key: str) -> str:
    """docker's ConvertToHostname: a URL's ``host[:port]``, without scheme or path."""
    if "://" in key:
        key = key.split("://", 1)[1]
    return key.split("/", 1)[0]


def _from_auths(auths: object, key: str) -> Credentials | None:
    if not isinstance(auths, dict):
        return None
    entry = auths.get(key)
    if entry is None:  # keyed by another spelling of the same registry (URL or host)
        want = _hostname(key)
        entry = next((v for k, v in auths.items() if _hostname(str(k)) == want), None)
    if not isinstance(entry, dict):
        return None
    identity = entry.get("identitytoken")
    if isinstance(identity, str) and identity:
        return Credentials(
            str(entry.get("username") or "<token>"), identity, "auths", identity_token=True
        )
    user, password = entry.get("username"), entry.get("password")
    encoded = entry.get("auth")
    if isinstance(encoded, str) and encoded:
        try:
            user, _, password = base64.b64decode(encoded, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            raise InvalidInputError(
                f"docker's login for {key} ('auths') is not base64 of user:password"
            ) from None
    if isinstance(user, str) and user and isinstance(password, str):
        return Credentials(user, password, "auths")
    return None


def run_helper(name: str, server: str, env: Mapping[str, str]) -> Credentials | None:
    """``docker-credential-<name> get`` for ``server``; None when it has no login there.
    Its output is never shown: it may be a password even when it is malformed."""
    if not _HELPER_NAME.fullmatch(name):
        raise InvalidInputError(f"docker's config names an invalid credential helper {name[:40]!r}")
    program = f"docker-credential-{name}"
    path = shutil.which(program, path=env.get("PATH"))
    if path is None:
        raise AccessDeniedError(
            f"docker's credential helper {program} is not on PATH",
            hint="install it, or log in again with 'docker login'",
        )
    try:
        proc = subprocess.run(
            [path, "get"],
            input=server.encode(),
            capture_output=True,
            timeout=HELPER_TIMEOUT,
            env=dict(env),
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise AccessDeniedError(f"{program} did not answer within {HELPER_TIMEOUT:.0f} s") from None
    except OSError as exc:
        raise AccessDeniedError(f"{program} could not run ({type(exc).__name__})") from None
    if proc.returncode != 0:
        return None  # "credentials not found": docker treats it as no login
    try:
        answer = json.loads(proc.stdout)
        user, secret = answer["Username"], answer["Secret"]
        if not isinstance(user, str) or not isinstance(secret, str):
            raise TypeError
    except (ValueError, KeyError, TypeError):
        raise AccessDeniedError(
            f"{program} answered something that is not a login "
            "(its output is not shown: it may hold a secret)"
        ) from None
    if not user and not secret:
        return None
    return Credentials(
        user, secret, f"credential helper {name!r}", identity_token=user == IDENTITY_TOKEN_USER
    )
