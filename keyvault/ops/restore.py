"""Restore keys from the store into a trust directory, all or nothing.

Every selected envelope is read, checked against its object name, and
opened before anything is moved into place: a single tampered envelope
(exit 5) or an unusable wrapper leaves the trust directory as it was. Opened
keys go straight to fsynced temporary files, so memory holds only the keys
in flight, not all of them; what the report keeps of each key is spooled
(:mod:`keyvault.spool`), so it does not grow with the number of keys either.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Collection, Generator, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from keyvault.breaker import stopped_early
from keyvault.errors import (
    AccessDeniedError,
    BackendUnavailableError,
    IntegrityError,
    NotFoundError,
    UsageError,
)
from keyvault.names import (
    CertAddress,
    KeyAddress,
    PinAddress,
    address_from_record,
    address_record,
    gun_matches,
    key_words,
    pin_prefix,
)
from keyvault.ops.authentic import describe, restore_relpath
from keyvault.ops.certs import OpenedCert, cert_addresses, open_certs
from keyvault.ops.parallel import DEFAULT_CONCURRENCY, bounded_map
from keyvault.ops.selection import Selection
from keyvault.ops.session import Session, key_ref
from keyvault.ops.stored import (
    StoredEnvelope,
    list_addresses,
    listed_where,
    listing_prefixes,
    listing_start,
    read_envelope,
)
from keyvault.redact import redact
from keyvault.spool import Spool
from keyvault.stores.base import VersionListing
from keyvault.trust.certwrite import PlannedCert, apply_certs, plan_certs
from keyvault.trust.pins import root_version
from keyvault.trust.restore import (
    WRITES,
    Action,
    PlannedWrite,
    RestoreItem,
    apply_restore,
    plan_restore,
)

#: Why ``--version`` never names a trust pin or a pinned certificate, and where to look.
PIN_VERSION_HINT = (
    "--version restores one key file; a GUN's trust pin and the notary "
    "config's CA files come back at their latest version only (an older "
    "root would not last: notary moves on to the newer one its server "
    "serves); 'keyvault versions --gun GUN' lists their versions"
)


@dataclass(frozen=True)
class Restored:
    """What a restore keeps of an opened envelope: not its ciphertext (memory stays small)."""

    address: KeyAddress
    version: str
    path: str  # the key file's path under private/ (a trust pin's: tuf/<gun>/metadata/root.json)
    sealer: str = ""  # the verified sealer's fingerprint, or "unsigned" (--allow-unsigned)
    sequence: int | None = None  # the version's number in its signed chain (None: unsigned)


def _encode_restored(r: Restored) -> list[Any]:
    return [address_record(r.address), r.version, r.path, r.sealer, r.sequence]


def _decode_restored(v: list[Any]) -> Restored:
    return Restored(address_from_record(v[0]), v[1], v[2], v[3], v[4])


def restored_spool() -> Spool[Restored]:
    """Where a restore keeps what it opened: names, versions, paths, sealers; no key bytes."""
    return Spool(_encode_restored, _decode_restored)


@dataclass(frozen=True)
class RestoreEntry:
    key: Restored
    action: Action
    reason: str


class RestoreEntries:
    """A restore's entries, read from its spools (as often as needed) in restore order."""

    def __init__(self, stored: Spool[Restored], plan: Spool[PlannedWrite]) -> None:
        self._stored, self._plan = stored, plan

    def __iter__(self) -> Iterator[RestoreEntry]:
        for s, p in zip(self._stored, self._plan, strict=True):
            yield RestoreEntry(s, p.action, p.reason)

    def __len__(self) -> int:
        return len(self._plan)

    def close(self) -> None:
        self._stored.close()
        self._plan.close()


@dataclass(frozen=True)
class RestoreReport:
    trust_dir: Path
    #: Spooled: iterate it as often as needed; ``close`` the report when done.
    entries: RestoreEntries
    kept_aside: tuple[str, ...]
    dry_run: bool
    #: Why trust pins were left out: the backend refused this principal their folder.
    pins_refused: str | None = None
    #: The certificates the notary config pins, with what was done to each.
    certs: tuple[tuple[OpenedCert, PlannedCert], ...] = ()

    def close(self) -> None:
        """Free the spooled entries (their unnamed file goes with the process anyway)."""
        self.entries.close()


def selected_addresses(
    session: Session,
    team: str,
    selection: Selection,
    version: str | None = None,
    *,
    names: set[str] | None = None,
) -> list[KeyAddress]:
    """The addresses the selection picks; every selector must pick something.
    (``names``: see list_addresses.)"""
    ci = session.is_ci(team)
    addresses = sorted(list_addresses(session.store(), team, selection, ci=ci, names=names))
    try:
        selection.check_found(
            [(a.gun, a.role, a.key_id) for a in addresses], listed_where(team, ci=ci)
        )
    except NotFoundError as exc:  # e.g. --gun of a GUN that has only a pin, --version N
        if version is None:
            raise
        raise NotFoundError(exc.message, hint=PIN_VERSION_HINT) from None
    if not addresses:  # --all of nothing: a restore or drill that did nothing is no success
        raise NotFoundError(
            f"the store {redact(session.config.store or '')} holds no keys for team {team!r}",
            hint="check the store and team this machine uses ('keyvault doctor'); a store "
            "on a lost machine's disk is gone with it (docs/guides/restore-laptop.md)",
        )
    if version is not None and len(addresses) != 1:
        raise UsageError(
            "--version needs a selection of exactly one key (use --key-id)", hint=PIN_VERSION_HINT
        )
    return addresses


def fetch_envelopes(
    session: Session,
    team: str,
    selection: Selection,
    version: str | None = None,
    concurrency: int = DEFAULT_CONCURRENCY,
    *,
    action: str = "restore",
) -> list[StoredEnvelope]:
    """Read the selected envelopes (latest, or ``version`` of a single key), unproven:
    the caller authenticates each one (``session.reader()``) before using it."""
    session.access().precheck(action, team, selection)  # policy: before any request
    store = session.store()
    addresses = selected_addresses(session, team, selection, version)
    session.access().require(action, addresses)  # policy: before reading any envelope
    return list(bounded_map(lambda a: read_envelope(store, a, version), addresses, concurrency))


def restore_keys(
    session: Session,
    *,
    team: str,
    selection: Selection,
    trust_dir: Path,
    force: bool = False,
    dry_run: bool = False,
    version: str | None = None,
    concurrency: int = DEFAULT_CONCURRENCY,
    on_total: Callable[[int], None] | None = None,
    on_opened: Callable[[Restored], None] | None = None,
    pins: bool = True,
    env: Mapping[str, str] | None = None,
) -> RestoreReport:
    """Restore the selected keys and (``pins``) their GUNs' trust pins, all or nothing.

    A pin is read and proven as a key is (sealer, chain, high-water mark), then
    written in the same transaction; a newer pin on disk stays (``kept``), a
    different one is a conflict unless ``force``. Not for CI, whose throw-away
    trust directories start from the server, nor for ``version`` (one key).

    With ``pins`` and ``env`` (whose HOME locates the notary client config), the
    certificates that config pins come back too: proven like pins, planned before
    anything is written (a different file there is a conflict unless ``force``),
    written after the keys and pins to the paths the local config names.
    """
    selection.require_explicit("restore")
    session.access().precheck("restore", team, selection)  # policy: before any request
    session.wrappers()  # fail on a bad wrapper URI before reading anything
    store = session.store()  # open the store before any thread starts
    reader = session.reader()
    # Where the store can, what each key's chain is checked against is listed in one go,
    # beside the listing of the names (not after it, nor a request per key); the names
    # of the pins and CA files come with the keys' (no listing of their own).
    ahead = version is None and isinstance(store, VersionListing)
    if ahead:
        prefixes = listing_prefixes(team, selection, ci=session.is_ci(team))
        reader.list_ahead([(p, listing_start(team, p)) for p in prefixes])
    try:
        travelling: set[str] | None = set() if ahead else None
        addresses = selected_addresses(session, team, selection, version, names=travelling)
        session.access().require("restore", addresses)  # policy: before reading any envelope
        if version is not None:  # one key (selected_addresses checked): a NUMBER or a store ID
            from keyvault.ops.listing import resolve_version

            version = resolve_version(session, addresses[0], version)
        if on_total:
            on_total(len(addresses))

        refused: list[str] = []
        wanted: list[PinAddress] = []
        certs_wanted: list[CertAddress] = []
        try:
            if pins and version is None and not session.is_ci(team):
                wanted = pin_addresses(session, team, selection, addresses, travelling)
                if env is not None:
                    certs_wanted = cert_addresses(
                        session,
                        team,
                        selection,
                        {a.gun for a in addresses if a.gun is not None},
                        travelling,
                    )
        except AccessDeniedError as exc:  # a CI token the teams policy does not name as CI
            wanted, certs_wanted, refused = [], [], [exc.message]
        session.access().require("restore", [*wanted, *certs_wanted])  # before reading any

        started: list[KeyAddress] = []

        def read_and_open(address: KeyAddress) -> tuple[Restored, RestoreItem]:
            """One pass per key: read, check the name, prove the sealer and the chain, derive
            the path, unwrap, decrypt (nothing written yet)."""
            session.breaker.check()  # a backend is down: start no new key
            started.append(address)
            entry = reader.read(address, version)
            header = entry.envelope.header
            relpath = restore_relpath(header)
            label = key_words(header.role, header.gun, header.key_id[:12])
            return (
                Restored(
                    address,
                    entry.version,
                    relpath,
                    entry.sealer or "",
                    entry.envelope.chain.sequence if entry.envelope.chain else None,
                ),
                RestoreItem(relpath, session.open(entry.envelope), label, header.key_id),
            )

        def read_pin(address: PinAddress) -> tuple[Restored, RestoreItem] | None:
            """A pin, proven like a key; None if the GUN has none (an exact --gun's)."""
            try:
                entry = reader.latest(address)
            except NotFoundError:
                return None
            except AccessDeniedError as exc:  # the backend grants pins to members only
                refused.append(exc.message)
                return None
            data = session.open(entry.envelope)
            try:
                pin_version = root_version(data)
            except UsageError as exc:  # signed by a trusted sealer, yet not a root.json
                raise IntegrityError(f"{describe(address)}: {exc.message}; refused") from None
            return (
                Restored(
                    address,
                    entry.version,
                    address.relpath,
                    entry.sealer or "",
                    entry.envelope.chain.sequence if entry.envelope.chain else None,
                ),
                RestoreItem(address.relpath, data, describe(address), None, pin_version),
            )

        stored = restored_spool()
        marks = ThreadPoolExecutor(max_workers=1, thread_name_prefix="keyvault-marks")
        saving: list[Future[None]] = []

        def opened() -> Generator[RestoreItem, None, None]:
            """Each key as it is opened: the writer stages it at once, so only keys in flight
            are held in memory. The pins (one small file per GUN) follow the keys."""
            for restored, item in bounded_map(read_and_open, addresses, concurrency):
                stored.append(restored)
                if on_opened:
                    on_opened(restored)
                yield item
            for found in bounded_map(read_pin, wanted, concurrency):
                if found is not None:
                    stored.append(found[0])
                    yield found[1]
            # Every envelope is proven: the marks are final. They are saved while the keys
            # are committed, as both wait on fsyncs (one per shard, one per file).
            saving.append(marks.submit(reader.highwater.save))

        try:
            certs = open_certs(session, reader, certs_wanted, env or {}, refused)
            cert_plan = plan_certs([c.write for c in certs], force=force)  # conflict: none written
            with contextlib.closing(opened()) as items:
                if dry_run:
                    plan = plan_restore(trust_dir, items, force=force)
                    kept: tuple[str, ...] = ()
                else:
                    result = apply_restore(trust_dir, items, force=force)
                    plan, kept = result.planned, result.kept_aside
                    kept += tuple(apply_certs(cert_plan))
            entries = RestoreEntries(stored, plan)
        except BaseException as exc:
            stored.close()
            if isinstance(exc, BackendUnavailableError):
                raise stopped_early(exc, len(addresses) - len(started), len(addresses)) from None
            raise
        finally:
            marks.shutdown(wait=True)  # a save started goes to its end, whatever else failed
        if saving:
            saving[0].result()  # its error (a full disk) before the restore is recorded ok
        else:  # the writer took fewer items than were read (never so far): save what was proven
            reader.highwater.save()
        if not dry_run:
            written = [key_ref(e.key.address) for e in entries if e.action in WRITES]
            written += [
                key_ref(c.address)
                for c, p in zip(certs, cert_plan, strict=True)
                if p.action in WRITES
            ]
            session.record(
                "restore",
                "ok",
                team=team,
                keys=written,
                detail=f"into {trust_dir}: {len(written)} written, "
                f"{len(plan) + len(cert_plan) - len(written)} unchanged, "
                f"{len(kept)} kept aside",
            )
        return RestoreReport(
            trust_dir,
            entries,
            kept,
            dry_run,
            refused[0] if refused else None,
            tuple(zip(certs, cert_plan, strict=True)),
        )
    finally:
        reader.stop_listing()  # ended or not, nothing reads it any more


def pin_addresses(
    session: Session,
    team: str,
    selection: Selection,
    addresses: list[KeyAddress],
    listed: Collection[str] | None = None,
) -> list[PinAddress]:
    """The trust pins that travel with the selected keys: their GUNs' pins, and with no
    ``--role``/``--key-id`` every pin ``--gun`` matches (all of them for ``--all``).

    Exact GUNs are read by name (one GUN's restore does not list the others); a pattern
    or ``--all`` lists the team's ``pins/`` folder once, unless the listing that found
    the keys (``listed``: the names it found beside the keys', when no ``--gun`` narrowed
    it to the GUNs' folders) already named the pins.
    """
    guns = {a.gun for a in addresses if a.gun is not None}
    every = not selection.roles and not selection.key_ids
    if selection.guns and not any(c in g for g in selection.guns for c in "*?["):
        named = guns | (set(selection.guns) if every else set())
        return [PinAddress.of(team, g) for g in sorted(named)]
    found: list[PinAddress] = []
    prefix = pin_prefix(team)
    names = (
        [n for n in listed if n.startswith(prefix)]
        if listed is not None and not selection.guns
        else session.store().list(prefix)
    )
    for name in names:
        try:
            pin = PinAddress.from_object_name(name)
        except UsageError:
            continue  # foreign objects in a shared bucket are not ours to judge
        if pin.team == team and (
            pin.gun in guns
            or (
                every
                and (
                    selection.everything
                    or not selection.guns
                    or any(gun_matches(pin.gun, g) for g in selection.guns)
                )
            )
        ):
            found.append(pin)
    return sorted(found)
