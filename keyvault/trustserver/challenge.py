"""Parse a ``WWW-Authenticate: Bearer realm=…,service=…,scope=…`` challenge (RFC 6750)."""

from __future__ import annotations

import re
from dataclasses import dataclass

#: One ``name=value`` auth-param: a quoted string (with ``\\`` escapes) or a token.
_PARAM = re.compile(r'\s*([A-Za-z][A-Za-z0-9_-]*)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,"]*))\s*,?')


@dataclass(frozen=True)
class Challenge:
    """What the trust server asks for: a token from ``realm`` for ``service`` and ``scope``."""

    realm: str
    service: str | None
    scope: str | None
    error: str | None = None  # e.g. ``insufficient_scope``: the token lacked an action


def parse_bearer(header: str | None) -> Challenge | None:
    """The Bearer challenge in ``header``; None for a missing header, another scheme
    (Basic) or a Bearer challenge without a realm."""
    if not header:
        return None
    scheme, _, rest = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    params: dict[str, str] = {}
    position = 0
    while position < len(rest):
        match = _PARAM.match(rest, position)
        if match is None or match.end() == position:
            break
        name, quoted, bare = match.groups()
        value = re.sub(r"\\(.)", r"\1", quoted) if quoted is not None else bare
        params.setdefault(name.lower(), value)
        position = match.end()
    realm = params.get("realm")
    if not realm:
        return None
    return Challenge(realm, params.get("service"), params.get("scope"), params.get("error"))


def scope_repository(scope: str) -> tuple[str, str] | None:
    """``repository:<name>:<actions>`` as (name, actions); names hold ``host:port``, so
    the actions start after the *last* colon."""
    kind, _, rest = scope.partition(":")
    name, _, actions = rest.rpartition(":")
    if kind != "repository" or not name:
        return None
    return name, actions
