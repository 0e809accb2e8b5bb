"""Reading envelopes out of a store, with the checks every reader needs.

An object's name and the header inside it must agree (B25: an envelope
copied under another GUN's or team's name is refused before any wrapper is
asked), and listing only ever yields names that parse.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from keyvault.errors import AccessDeniedError, IntegrityError, KeyvaultError
from keyvault.names import (
    KeyAddress,
    audit_prefix,
    cert_prefix,
    gun_prefix,
    pin_prefix,
    team_prefix,
)
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


def read_envelope(store: Store, address: KeyAddress, version: str | None = None) -> StoredEnvelope:
    return parse_stored(address, store.read(address.object_name, version))


def parse_stored(address: KeyAddress, obj: StoredObject) -> StoredEnvelope:
    """The envelope in an object already read, checked against the name it was read under."""
    import hashlib

    from keyvault.envelope import Envelope

    try:
        envelope = Envelope.from_bytes(obj.data)
    except KeyvaultError as exc:
        raise IntegrityError(
            f"{address.object_name} (version {obj.version}): {exc.message}", hint=exc.hint
        ) from None
    if envelope.address != address:
        raise IntegrityError(
            f"{address.object_name} holds the envelope of another key "
            f"({envelope.address.object_name}); it was moved or swapped",
            hint="restore an older version or investigate who wrote it",
        )
    return StoredEnvelope(address, obj.version, envelope, hashlib.sha256(obj.data).hexdigest())


def list_addresses(
    store: Store,
    team: str,
    selection: Selection,
    *,
    ci: bool = False,
    names: set[str] | None = None,
) -> Iterator[KeyAddress]:
    """Addresses under the team's prefix that the selection picks.

    Only the folders the selection can pick from are listed: an exact GUN's
    own prefix (so fetching one GUN's keys does not grow with the number of
    other keys in the store); for GUN patterns, ``guns/`` below the patterns'
    literal start; otherwise the team's folder, in one listing. ``ci``: the
    principal is the team's CI (by the teams policy), which never gets a root
    key or a key without a GUN or role, and whose backend policies let it list
    nothing of the team's folder above ``guns/`` and ``delegations/`` (a 403 on
    Vault and S3): those two are listed, and ``root/`` only for ``--all``,
    which is refused as a whole. ``names`` collects the names listed that are not
    keys' (the trust pins' and CA files', when the team's folder was listed), so no
    caller lists them again; it grows with the GUNs, not with the keys.
    """
    travels = (pin_prefix(team), cert_prefix(team))
    for prefix in listing_prefixes(team, selection, ci=ci):
        try:
            # One name at a time, page by page (S3): nothing here holds the whole listing.
            for name in store.list(prefix, after=listing_start(team, prefix)):
                try:
                    address = KeyAddress.from_object_name(name)
                except KeyvaultError:
                    if names is not None and name.startswith(travels):
                        names.add(name)  # a pin's or a CA file's: one per GUN at most
                    continue  # foreign objects in a shared bucket are not ours to judge
                if address.team != team:
                    continue
                if selection.matches(address.gun, address.role, address.key_id):
                    yield address
        except AccessDeniedError as exc:
            raise _listing_refused(exc, team, selection, prefix) from None


def listing_start(team: str, prefix: str) -> str:
    """Where a listing of ``prefix`` starts: past the team's audit checkpoints (``audit/``,
    the first section in byte order, growing with every command that writes) when it is
    the team's whole folder, whose keys, pins and CA files all sort after "audit0"."""
    return audit_prefix(team)[:-1] + "0" if prefix == team_prefix(team) else ""


def listing_prefixes(team: str, selection: Selection, *, ci: bool = False) -> list[str]:
    """The prefixes list_addresses lists for ``selection``, none inside another (so each
    name is listed once): what a bulk reader lists the versions under, ahead."""
    unique = list(dict.fromkeys(_prefixes(team, selection, ci=ci)))
    return [p for p in unique if not any(p != q and p.startswith(q) for q in unique)]


def listed_where(team: str, *, ci: bool = False) -> str:
    """Where a selection was looked for, for a "matches no key in ..." message."""
    if ci:
        return (
            f"the store for team {team!r} as far as its CI may read it (root keys and "
            "keys without a GUN or role are never listed for CI)"
        )
    return f"the store for team {team!r}"


def _prefixes(team: str, selection: Selection, *, ci: bool) -> list[str]:
    exact = [g for g in selection.guns if not _is_glob(g)]
    if selection.guns and len(exact) == len(selection.guns):
        return [gun_prefix(team, g) for g in exact]
    base = team_prefix(team)
    only_root = bool(selection.roles) and set(selection.roles) <= {"root"}
    if selection.guns:  # GUN patterns: guns/ below their literal starts (never a GUN-less key)
        return (
            []
            if only_root
            else [
                f"{base}guns/{start}"
                for start in sorted({_literal_start(g) for g in selection.guns})
            ]
        )
    if not ci:
        return [base]  # one listing of the team's folder, which a member may list
    # CI never gets a root key nor a key without a GUN or role: it lists guns/ and
    # delegations/, and root/ only for --all, which asks for the root keys too and is
    # refused for them (teams policy, backend).
    prefixes = [] if only_root else [f"{base}guns/", f"{base}delegations/"]
    if selection.everything and (not selection.roles or "root" in selection.roles):
        prefixes.append(f"{base}root/")
    return prefixes


def _is_glob(pattern: str) -> bool:
    return any(c in pattern for c in "*?[")


def _literal_start(pattern: str) -> str:
    """What every GUN the pattern matches starts with (up to the first wildcard)."""
    cut = min((i for i, c in enumerate(pattern) if c in "*?["), default=len(pattern))
    return pattern[:cut]


def _listing_refused(
    exc: AccessDeniedError, team: str, selection: Selection, prefix: str
) -> AccessDeniedError:
    """A backend that would not list a folder of the team's: say which selection works."""
    if all(not _is_glob(g) for g in selection.guns) and selection.guns:
        return exc  # an exact GUN's own folder: nothing narrower to suggest
    pattern = next((g for g in selection.guns if _is_glob(g)), "")
    example = (
        f"{_literal_start(pattern).rsplit('/', 1)[0]}/<repository>"
        if "/" in _literal_start(pattern)
        else "<registry>/<team>/<repository>"
    )
    where = prefix[len(team_prefix(team)) :] or "the team's folder"
    error = AccessDeniedError(
        f"{exc.message} (the store does not let this principal list {where} of team "
        f"{team}; a CI principal may list only its GUNs' folders, and this selection "
        "needs more)",
        hint=f"select exact GUNs: --gun {example} (one exact GUN per --gun, no wildcard), "
        "or name this principal in the team's 'ci' list of the teams policy "
        "(keyvault policy) so keyvault lists only what CI may read",
    )
    error.audited = exc.audited
    return error
