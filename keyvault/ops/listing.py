"""List what the store holds for a team, optionally with each envelope's header."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import islice

from keyvault.errors import AccessDeniedError, KeyvaultError, NotFoundError
from keyvault.names import KeyAddress, PinAddress, gun_matches
from keyvault.ops.parallel import bounded_map
from keyvault.ops.selection import Selection
from keyvault.ops.session import Session
from keyvault.ops.stored import list_addresses, listed_where, parse_stored, read_envelope
from keyvault.redact import shown_uri
from keyvault.stores import ObjectVersion


@dataclass(frozen=True)
class Listed:
    address: KeyAddress
    version: str | None = None
    created: str | None = None
    source_name: str | None = None
    wrappers: tuple[str, ...] = ()
    error: str | None = None
    #: The verified sealer's fingerprint, "unsigned" (format v1), or "" when not verified.
    sealer: str = ""
    sequence: int | None = None  # the version's number in its signed chain


def list_keys(
    session: Session, *, team: str, selection: Selection, long: bool = False
) -> list[Listed]:
    """:func:`iter_listed`, all of it (for callers that want a list)."""
    return list(iter_listed(session, team=team, selection=selection, long=long))


#: Addresses handed to the teams policy (and read ahead with --long) at a time.
CHUNK = 1000


def iter_listed(
    session: Session, *, team: str, selection: Selection, long: bool = False
) -> Iterator[Listed]:
    """What the store holds for ``team``, as the store lists it: one item at a time.

    Names only by default (one LIST per page of a prefix); ``long`` reads each
    envelope too, a few at a time. Nothing here holds the whole listing, so a
    caller can print the first key while the store is still listing, in memory
    that does not grow with the number of keys. Items come in the store's
    order (object names), then the trust pins that travel with the selected
    keys (what ``restore`` would bring back with them), as :class:`PinAddress`
    entries; CI never sees one.

    A selector that matches nothing still fails before the first item: items
    are held back until every ``--gun``/``--key-id`` has matched one. With a
    teams policy, keys named on purpose (``--role``/``--key-id``) are all
    checked before the first is shown, so a refusal says so.
    """
    session.check("list", team, selection)  # teams policy, before any request
    store = session.store()
    ci = session.is_ci(team)
    names: set[str] = set()  # what is not a key: the pins' and CA files' names
    found: Iterator[KeyAddress] = list_addresses(store, team, selection, ci=ci, names=names)
    named = bool(selection.roles or selection.key_ids)
    policed = session.config.policy is not None or session.acting_as is not None
    if named and policed:
        held = list(found)  # keys named on purpose: a refusal says so, before any output
        session.check("list", team, addresses=held)
        found = iter(held)
    elif not named and policed:  # everything, or GUNs: what this principal may see
        found = _visible(session, found)
    # A GUN that has a pin and no key is found: its pin shows.
    addresses = _once_all_found(
        selection,
        listed_where(team, ci=ci),
        _keys_then_pins(session, team, selection, ci, found, names),
    )
    if not long:
        yield from (Listed(a) for a in addresses)
        return
    reader = session.reader()
    reader.allow_unsigned = True  # listing installs nothing: show v1 envelopes, flagged

    def read(address: KeyAddress) -> Listed:
        try:
            stored = reader.authenticate(read_envelope(store, address))
        except KeyvaultError as exc:
            return Listed(address, error=exc.message)
        header, chain = stored.envelope.header, stored.envelope.chain
        return Listed(
            address,
            stored.version,
            header.created,
            header.source_name,
            stored.envelope.wrapper_uris,
            sealer=stored.sealer or "",
            sequence=chain.sequence if chain else None,
        )

    yield from bounded_map(read, addresses, session.config.concurrency)


def _visible(session: Session, addresses: Iterator[KeyAddress]) -> Iterator[KeyAddress]:
    """``session.visible`` a chunk (about a store's page) at a time."""
    while chunk := list(islice(addresses, CHUNK)):
        yield from session.visible("list", chunk)


def _once_all_found(
    selection: Selection, where: str, addresses: Iterator[KeyAddress]
) -> Iterator[KeyAddress]:
    """``addresses``, held back until every selector has matched one (then passed on as
    they come); if the listing ends first, ``selection.check_found`` says which did not."""
    guns, ids = set(selection.guns), set(selection.key_ids)
    need_one = not selection.is_empty and not selection.everything
    held: list[KeyAddress] | None = [] if (guns or ids or need_one) else None
    for address in addresses:
        if held is None:
            yield address
            continue
        held.append(address)
        guns = {g for g in guns if not gun_matches(address.gun, g)}
        ids = {k for k in ids if not address.key_id.startswith(k)}
        if not guns and not ids:
            yield from held
            held = None
    if held is not None:
        selection.check_found([(a.gun, a.role, a.key_id) for a in held], where)
        yield from held


def _keys_then_pins(
    session: Session,
    team: str,
    selection: Selection,
    ci: bool,
    keys: Iterator[KeyAddress],
    names: set[str],
) -> Iterator[KeyAddress]:
    """The keys, then the pins and CA files that travel with them (``names``: the ones
    the keys' listing named, filled by the time the keys end). Kept while the keys pass:
    their GUNs, and one key per GUN for ``--role``/``--key-id`` selections, whose pins
    are those of the keys' GUNs."""
    per_gun: dict[str, KeyAddress] = {}
    guns: set[str] = set()
    every = not selection.roles and not selection.key_ids
    for address in keys:
        if address.gun is not None:
            guns.add(address.gun)
            if not every:
                per_gun.setdefault(address.gun, address)
        yield address
    if not ci:
        yield from session.visible(
            "list", stored_pins(session, team, selection, list(per_gun.values()), names)
        )
        yield from stored_certs(session, team, selection, guns, names)


def stored_pins(
    session: Session,
    team: str,
    selection: Selection,
    keys: list[KeyAddress],
    names: set[str] | None = None,
) -> list[PinAddress]:
    """The pins in the store that travel with ``keys`` (as ``restore`` picks them); none
    when the backend grants this principal no pins (a listing need not say so).
    ``names``: what the keys' listing already named (the team's folder: ``pins/`` too)."""
    return pins_in_store(session, team, selection, keys, names)[0]


def stored_certs(
    session: Session, team: str, selection: Selection, guns: set[str], names: set[str] | None = None
) -> list[KeyAddress]:
    """The CA files the notary config pins that travel with the keys of ``guns`` (as
    ``restore`` picks them); none when the backend grants this principal none."""
    from keyvault.ops.certs import cert_addresses

    try:
        certs = cert_addresses(
            session, team, selection, guns, dict.fromkeys(names, ()) if names else None
        )
    except AccessDeniedError:
        return []
    return session.visible("list", list(certs))


def pins_in_store(
    session: Session,
    team: str,
    selection: Selection,
    keys: list[KeyAddress],
    names: set[str] | None = None,
) -> tuple[list[PinAddress], AccessDeniedError | None]:
    """:func:`stored_pins`, and the backend's refusal when it would not list them (a
    command that changes the pins, as rewrap does, must say they were left out)."""
    from keyvault.ops.restore import pin_addresses

    store = session.store()
    try:
        pins = pin_addresses(
            session, team, selection, keys, dict.fromkeys(names, ()) if names else None
        )
        if selection.guns and not any(c in g for g in selection.guns for c in "*?["):
            # exact GUNs are named, not listed: keep the pins the GUN's folder holds
            pins = [
                p
                for p in pins
                if p.object_name in set(store.list(p.object_name.rsplit("/", 1)[0] + "/"))
            ]
    except AccessDeniedError as exc:
        return [], exc
    return pins, None


@dataclass(frozen=True)
class ChainLink:
    """One stored version as its signed chain sees it."""

    version: ObjectVersion
    sequence: int | None = None
    sealer: str = ""  # verified fingerprint, "unsigned", or "" (not verified: see status)
    #: "first", "linked" (sealed on top of the version beneath), "broken", "unsigned",
    #: or why it could not be verified.
    status: str = ""


def chain_of(
    session: Session, address: KeyAddress, versions: list[ObjectVersion]
) -> list[ChainLink]:
    """Each version (newest first) with its number, sealer, and link to the one beneath."""
    import hashlib

    reader = session.reader()
    reader.allow_unsigned = True  # shown, flagged: nothing is installed from here
    store = session.store()
    read: list[tuple[str | None, str | None, ChainLink]] = []  # (digest, previous, link)
    for v in versions:
        try:
            obj = store.read(address.object_name, v.version)
        except KeyvaultError as exc:
            read.append((None, None, ChainLink(v, status=f"unreadable: {exc.message}")))
            continue
        digest = hashlib.sha256(obj.data).hexdigest()
        try:
            entry = reader.authenticate(parse_stored(address, obj))
        except KeyvaultError as exc:
            read.append((digest, None, ChainLink(v, status=f"not verified: {exc.message}")))
            continue
        chain = entry.envelope.chain
        if chain is None:
            read.append((digest, None, ChainLink(v, None, entry.sealer or "", "unsigned")))
        else:
            read.append((digest, chain.previous, ChainLink(v, chain.sequence, entry.sealer or "")))
    links: list[ChainLink] = []
    for i, (_, previous, link) in enumerate(read):
        if not link.status:
            beneath = read[i + 1][0] if i + 1 < len(read) else None
            if i + 1 == len(read):
                status = "first" if previous is None else "linked (older versions pruned)"
            else:
                status = "linked" if previous is not None and previous == beneath else "broken"
            link = ChainLink(link.version, link.sequence, link.sealer, status)
        links.append(link)
    return links


def list_versions(
    session: Session, *, team: str, selection: Selection
) -> list[tuple[KeyAddress, list[ObjectVersion]]]:
    """Every stored version of each selected key, newest first (for --version restores),
    then those of the trust pins that travel with the keys (not for CI)."""
    selection.require_explicit("show versions of")
    session.check("list", team, selection)
    store = session.store()
    ci = session.is_ci(team)
    names: set[str] = set()
    addresses = sorted(list_addresses(store, team, selection, ci=ci, names=names))
    session.check("list", team, addresses=addresses)
    if not ci:
        guns = {a.gun for a in addresses if a.gun is not None}
        addresses += session.visible(
            "list", stored_pins(session, team, selection, addresses, names)
        )
        addresses += stored_certs(session, team, selection, guns, names)
    selection.check_found(
        [(a.gun, a.role, a.key_id) for a in addresses], listed_where(team, ci=ci)
    )  # a GUN with only a pin: its pin
    return [(a, store.versions(a.object_name)) for a in addresses]


#: A version NUMBER as a person types it: ``3``, or the file store's ``0000000003``.
_NUMBER = re.compile(r"[0-9]{1,20}")


def resolve_version(session: Session, address: KeyAddress, wanted: str) -> str:
    """The store's version ID that ``restore --version`` names.

    A plain number is the key's version NUMBER, its place in the signed chain
    (1 for its first backup; what ``keyvault versions`` shows), so ``3`` means
    the same on every store; anything else is the store's own version ID (the
    VERSION column: S3's opaque IDs). A number no version carries is tried as
    an ID too, for unsigned (v1) versions, which have no NUMBER.
    """
    found = session.store().versions(address.object_name)
    links = chain_of(session, address, found)
    if _NUMBER.fullmatch(wanted):
        for link in links:
            if link.sequence == int(wanted):
                return link.version.version
    if any(v.version == wanted for v in found):
        return wanted
    numbers = sorted(link.sequence for link in links if link.sequence is not None)
    raise NotFoundError(
        f"the {address.role} key {address.key_id[:12]} has no version {shown_uri(wanted)}"
        + (f" (its version numbers: {', '.join(map(str, numbers))})" if numbers else ""),
        hint=f"'keyvault versions --key-id {address.key_id[:12]}' lists them: pass the "
        "NUMBER column (or the store's ID from the VERSION column) to --version",
    )
