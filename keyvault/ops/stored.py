"""Reading envelopes out of a store, with the checks every reader needs.

An object's name and the header inside it must agree (B25: an envelope
copied under another GUN's or team's name is refused before any wrapper is
asked), and listing only ever yields names that parse.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from keyvault.errors import IntegrityError, KeyvaultError
from keyvault.names import KeyAddress, gun_prefix, team_prefix
from keyvault.ops.selection import Selection
from keyvault.stores import Store
from keyvault.stores.base import StoredObject

if TYPE_CHECKING:  # listing names must not pay for importing cryptography
    from keyvault.envelope import Envelope


@dataclass(frozen=True)
class StoredEnvelope:
    address: KeyAddress
    version: str
    envelope: Envelope
    #: SHA-256 (hex) of the object's stored bytes: what the next version's chain names.
    digest: str = ""
    #: Fingerprint of the sealer whose signature was verified; None: not (yet) verified.
    sealer: str | None = None


def read_envelope(store: Store, address: KeyAddress, version: str | None = None
                  ) -> StoredEnvelope:
    return parse_stored(address, store.read(address.object_name, version))


def parse_stored(address: KeyAddress, obj: StoredObject) -> StoredEnvelope:
    """The envelope in an object already read, checked against the name it was read under."""
    import hashlib

    from keyvault.envelope import Envelope

    try:
        envelope = Envelope.from_bytes(obj.data)
    except KeyvaultError as exc:
        raise IntegrityError(f"{address.object_name} (version {obj.version}): {exc.message}",
                             hint=exc.hint) from None
    if envelope.address != address:
        raise IntegrityError(
            f"{address.object_name} holds the envelope of another key "
            f"({envelope.address.object_name}); it was moved or swapped",
            hint="restore an older version or investigate who wrote it")
    return StoredEnvelope(address, obj.version, envelope, hashlib.sha256(obj.data).hexdigest())


def list_addresses(store: Store, team: str, selection: Selection) -> Iterator[KeyAddress]:
    """Addresses under the team's prefix that the selection picks.

    A selection of exact GUNs lists only their prefixes, so fetching one
    GUN's keys does not grow with the number of other keys in the store.
    """
    exact = [g for g in selection.guns if not any(c in g for c in "*?[")]
    if selection.guns and len(exact) == len(selection.guns):
        prefixes = [gun_prefix(team, g) for g in exact]
    else:
        prefixes = [team_prefix(team)]
    seen: set[str] = set()
    for prefix in prefixes:
        for name in store.list(prefix):
            if name in seen:
                continue
            seen.add(name)
            try:
                address = KeyAddress.from_object_name(name)
            except KeyvaultError:
                continue  # foreign objects in a shared bucket are not ours to judge
            if address.team != team:
                continue
            if selection.matches(address.gun, address.role, address.key_id):
                yield address
