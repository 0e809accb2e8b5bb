"""Coverage: every key the trust server relies on, against what the store holds.

The published TUF metadata names the keys: root.json for the root, targets,
snapshot and timestamp roles (root keys as certificates, mapped to the
private key IDs their files carry), targets.json and delegated targets
documents for delegation keys. Each key is then *backed up*, *missing*, or
*held by the server* (timestamp always; snapshot when notary-server manages
it). Keys the store holds for a GUN that no metadata lists are *stale*.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, TypeVar

from keyvault.bounded import json_loads
from keyvault.errors import (
    BackendUnavailableError,
    InvalidInputError,
    KeyvaultError,
    NotFoundError,
)
from keyvault.names import validate_gun
from keyvault.ops.selection import Selection
from keyvault.ops.session import Session
from keyvault.ops.stored import list_addresses
from keyvault.trust.keyid import tuf_key_id
from keyvault.trust.tufmeta import (
    KeyUse,
    parse_root_json,
    parse_targets_json,
    read_trust_metadata,
)

if TYPE_CHECKING:
    from keyvault.trustserver.client import TrustClient

T = TypeVar("T")
BACKED_UP, MISSING, SERVER, STALE = "backed-up", "missing", "server-managed", "stale"
MAX_DOCUMENT = 4 * 1024 * 1024
MAX_DELEGATIONS = 256


class MetadataSource(Protocol):
    """Where published TUF documents come from (a notary server, or a local TUF cache).

    ``unreadable`` is the error for a document that does not parse: a local file's
    (exit 2), or a server's answer (exit 6: the backend misbehaves).
    """

    unreadable: type[KeyvaultError]

    def document(self, gun: str, role: str) -> bytes | None: ...

    def server_key_id(self, gun: str, role: str) -> str | None: ...

    def known_guns(self) -> list[str]:
        """GUNs this source holds metadata for, where it can tell (a local cache can)."""
        ...


@dataclass(frozen=True)
class Covered:
    gun: str
    role: str | None
    key_id: str
    listed_id: str
    status: str


class NotaryServer:
    """Reads ``/v2/<gun>/_trust/tuf/<role>.json`` from a trust server, with registry
    token auth where the server asks for it (keyvault.trustserver)."""

    unreadable: type[KeyvaultError] = BackendUnavailableError

    def __init__(self, client: TrustClient) -> None:
        self.client = client
        self.base = client.base

    def _get(self, gun: str, path: str) -> bytes | None:
        return self.client.get(gun, path)

    def document(self, gun: str, role: str) -> bytes | None:
        return self._get(gun, f"{gun}/_trust/tuf/{role}.json")

    def server_key_id(self, gun: str, role: str) -> str | None:
        """The key the server signs ``role`` with (notary-server: timestamp, snapshot)."""
        data = self._get(gun, f"{gun}/_trust/tuf/{role}.key")
        if data is None:
            return None
        try:
            key = json_loads(data)
            public = base64.b64decode(key["keyval"]["public"], validate=True)
            return tuf_key_id(str(key["keytype"]), public)
        except (ValueError, KeyError, TypeError) as exc:
            raise BackendUnavailableError(
                f"the notary server's {role} key for {gun} is unreadable ({str(exc)[:80]})"
            ) from None

    def known_guns(self) -> list[str]:
        return []  # notary-server has no catalogue of its repositories


class LocalCache:
    """A notary client's TUF cache: ``<trust>/tuf/<gun>/metadata/<role>.json``."""

    unreadable: type[KeyvaultError] = InvalidInputError

    def __init__(self, trust_dir: Path) -> None:
        self.root = trust_dir / "tuf"

    def document(self, gun: str, role: str) -> bytes | None:
        path = self.root / gun / "metadata" / f"{role}.json"
        try:
            if path.is_symlink() or path.stat().st_size > MAX_DOCUMENT:
                raise InvalidInputError(f"{path} is a symlink or too large")
            return path.read_bytes()
        except FileNotFoundError:
            return None

    def server_key_id(self, gun: str, role: str) -> str | None:
        return None  # a cache cannot say which keys the server holds

    def known_guns(self) -> list[str]:
        """Every ``<gun>/metadata/root.json`` under ``tuf/`` (no symlinks followed)."""
        return sorted({use.gun for use in read_trust_metadata(self.root.parent).uses})


def required_keys(source: MetadataSource, gun: str) -> list[KeyUse]:
    """Every key the published metadata of ``gun`` relies on."""
    validate_gun(gun)
    root = source.document(gun, "root")
    if root is None:
        raise NotFoundError(
            f"no published TUF metadata for {gun}", hint="check the GUN and the notary server URL"
        )
    uses = list(_parsed(source, partial(parse_root_json, root, gun)))
    queue: list[str] = ["targets"]
    seen: set[str] = set()
    while queue:
        role = queue.pop(0)
        if role in seen or len(seen) >= MAX_DELEGATIONS:
            continue
        seen.add(role)
        data = source.document(gun, role)
        if data is None:
            continue
        found, delegated = _parsed(source, partial(parse_targets_json, data, gun, role))
        uses += found
        queue += delegated
    return uses


def _parsed(source: MetadataSource, parse: Callable[[], T]) -> T:
    """``parse()``, its InvalidInputError raised as ``source.unreadable``."""
    try:
        return parse()
    except InvalidInputError as exc:
        if source.unreadable is InvalidInputError:
            raise
        raise source.unreadable(f"the notary server's answer: {exc.message}") from None


def coverage(
    session: Session, source: MetadataSource, *, team: str, guns: Sequence[str]
) -> list[Covered]:
    """Each required key's status, then the stale keys the store holds for these GUNs."""
    store = session.store()
    held = list(list_addresses(store, team, Selection(everything=True)))
    held_ids = {a.key_id for a in held}
    rows: list[Covered] = []
    for gun in guns:
        server_held = {role: source.server_key_id(gun, role) for role in ("timestamp", "snapshot")}
        uses = required_keys(source, gun)
        for use in uses:
            if use.key_id in held_ids:
                status = BACKED_UP
            elif use.role == "timestamp" or server_held.get(use.role) == use.key_id:
                status = SERVER
            else:
                status = MISSING
            rows.append(Covered(gun, use.role, use.key_id, use.listed_id, status))
        needed = {u.key_id for u in uses}
        rows += [
            Covered(gun, a.role, a.key_id, a.key_id, STALE)
            for a in held
            if a.gun == gun and a.key_id not in needed
        ]
    return rows
