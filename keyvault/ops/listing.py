"""List what the store holds for a team, optionally with each envelope's header."""

from __future__ import annotations

from dataclasses import dataclass

from keyvault.errors import KeyvaultError
from keyvault.names import KeyAddress
from keyvault.ops.selection import Selection
from keyvault.ops.session import Session
from keyvault.ops.stored import list_addresses, read_envelope
from keyvault.stores import ObjectVersion


@dataclass(frozen=True)
class Listed:
    address: KeyAddress
    version: str | None = None
    created: str | None = None
    source_name: str | None = None
    wrappers: tuple[str, ...] = ()
    error: str | None = None


def list_keys(session: Session, *, team: str, selection: Selection, long: bool = False
              ) -> list[Listed]:
    """Names only by default (one LIST per prefix); ``long`` reads each envelope too."""
    session.check("list", team, selection)  # teams policy, before any request
    store = session.store()
    addresses = sorted(list_addresses(store, team, selection))
    session.check("list", team, addresses=addresses)
    if not selection.is_empty:
        selection.check_found([(a.gun, a.role, a.key_id) for a in addresses],
                              f"the store for team {team!r}")
    if not long:
        return [Listed(a) for a in addresses]
    out: list[Listed] = []
    for address in addresses:
        try:
            stored = read_envelope(store, address)
        except KeyvaultError as exc:
            out.append(Listed(address, error=exc.message))
            continue
        header = stored.envelope.header
        out.append(Listed(address, stored.version, header.created, header.source_name,
                          stored.envelope.wrapper_uris))
    return out


def list_versions(session: Session, *, team: str, selection: Selection
                  ) -> list[tuple[KeyAddress, list[ObjectVersion]]]:
    """Every stored version of each selected key, newest first (for --version restores)."""
    selection.require_explicit("show versions of")
    session.check("list", team, selection)
    store = session.store()
    addresses = sorted(list_addresses(store, team, selection))
    session.check("list", team, addresses=addresses)
    selection.check_found([(a.gun, a.role, a.key_id) for a in addresses],
                          f"the store for team {team!r}")
    return [(a, store.versions(a.object_name)) for a in addresses]
