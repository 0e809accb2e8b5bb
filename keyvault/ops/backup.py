"""Back up key files: seal each one and write it to the store, idempotently.

A key whose latest envelope already holds the same bytes is not written
again, but only when that is *authenticated*: the latest version is signed by
a trusted sealer and is not older than this machine's high-water mark. Where
the store lists entity tags (S3; Vault KV, a folder at a time), a bulk run lists them
once and a key whose
latest version is exactly the one this machine last sealed or verified, with
the same bytes on disk, is unchanged without being read (keyvault.known). A key
whose bytes changed (``notary key passwd``, a re-import) gets a new version
on top of the old one, chained to it; the old version stays in the store. A
latest version that is tampered with, unsigned (format v1) or unverifiable is
reported and a fresh version is sealed on top (the bad one stays, for
forensics).

Dual control sticks to a key: the threshold group (M of N wrappers) of its
latest signed version is a signed fact, and every later backup seals it under
at least that M, the daemon's too. ``--threshold M`` asks for at least M: a
key whose latest version has fewer is sealed again under M, even unchanged.

Several runs may back up the same keys at once (two shells, the daemon and a
person). A run whose write loses reads the latest version again: the same
bytes, authenticated, are ``unchanged``; other bytes get a version on top,
up to :data:`ATTEMPTS` writes, and only then a conflict (exit 7).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import random
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from keyvault.envelope import FIRST, Chain, Envelope, new_header, seal
from keyvault.errors import (
    ChangedOnDiskError,
    ConflictError,
    IntegrityError,
    KeyvaultError,
    NotFoundError,
    UsageError,
)
from keyvault.known import KnownVersions, Seen, wrappers_digest
from keyvault.names import (
    CertAddress,
    KeyAddress,
    PinAddress,
    address_from_record,
    address_record,
    team_prefix,
)
from keyvault.ops.authentic import describe
from keyvault.ops.marker import MarkerSettings, TeamMarker, announce, marker_settings
from keyvault.ops.parallel import DEFAULT_CONCURRENCY, bounded_map
from keyvault.ops.selection import Selection
from keyvault.ops.session import Session, key_ref
from keyvault.ops.stored import StoredEnvelope, listing_start, parse_stored
from keyvault.redact import redact
from keyvault.spool import Spool
from keyvault.stores import Store
from keyvault.stores.base import ChangeMarking, FolderTagListing, LatestDeletedError, TagListing
from keyvault.trust.certpins import CertFile
from keyvault.trust.model import KeyFile
from keyvault.trust.pins import PinFile, scan_pins
from keyvault.trust.scan import read_key_bytes
from keyvault.trust.tufmeta import MetadataProblem
from keyvault.wrappers import Wrapper

if TYPE_CHECKING:
    from keyvault.audit import KeyRef

#: From this many keys on, a backup lists the team's prefix once instead of reading each key.
LISTING_THRESHOLD = 16
#: How many writes of one key a run tries while other writers keep storing it first.
ATTEMPTS = 5
#: Before each try after a lost write, a random pause of up to this times 2**try (jitter).
RETRY_JITTER_S = 0.05
CREATED, UPDATED, UNCHANGED, FAILED, WOULD_WRITE, NOT_ATTEMPTED = (
    "created",
    "updated",
    "unchanged",
    "failed",
    "would-write",
    "not-attempted",
)


@dataclass(frozen=True)
class BackupOutcome:
    key: KeyFile
    address: KeyAddress
    action: str
    version: str | None = None
    error: KeyvaultError | None = None
    #: Why an existing latest version was not trusted and a fresh one sealed on top.
    warning: str | None = None

    @property
    def failed(self) -> bool:
        """Not backed up: failed, or not attempted because a backend was down."""
        return self.action in (FAILED, NOT_ATTEMPTED)

    def reported(self) -> Reported:
        return Reported(self.address, self.action, self.version, self.error, self.warning)


@dataclass(frozen=True)
class Reported:
    """What a backup's report keeps of one key: no key file, no bytes, so it can be spooled."""

    address: KeyAddress
    action: str
    version: str | None = None
    error: KeyvaultError | None = None
    warning: str | None = None


def _encode_reported(r: Reported) -> list[Any]:
    e = r.error
    error = None if e is None else [e.kind, e.exit_code, e.message, e.hint, e.wrapper]
    return [address_record(r.address), r.action, r.version, error, r.warning]


def _decode_reported(v: list[Any]) -> Reported:
    error: KeyvaultError | None = None
    if v[3] is not None:
        kind, code, message, hint, wrapper = v[3]
        error = KeyvaultError(message, hint=hint)
        error.kind, error.exit_code, error.wrapper = kind, code, wrapper
    return Reported(address_from_record(v[0]), v[1], v[2], error, v[4])


def reported_spool() -> Spool[Reported]:
    """Where ``keyvault backup`` keeps its report: names, actions, versions, messages."""
    return Spool(_encode_reported, _decode_reported)


class BackupReport:
    """A backup's report: each key's :class:`Reported` spooled, in order, and the counts
    kept exact as outcomes come, so a summary needs no pass over the spool."""

    def __init__(self) -> None:
        self.rows = reported_spool()
        self.actions: Counter[str] = Counter()
        self.exit_codes: set[int] = set()
        self.warnings = 0
        #: How many keys were not attempted (a backend was down), and the first one's error.
        self.skipped = 0
        self.first_skipped: KeyvaultError | None = None

    def note(self, outcome: BackupOutcome) -> None:
        self.rows.append(outcome.reported())
        self.actions[outcome.action] += 1
        if outcome.error is not None:
            self.exit_codes.add(outcome.error.exit_code)
            if outcome.action == NOT_ATTEMPTED:
                self.skipped += 1
                self.first_skipped = self.first_skipped or outcome.error
        self.warnings += outcome.warning is not None

    def close(self) -> None:
        self.rows.close()


def select_keys(keys: Sequence[KeyFile], selection: Selection, where: str) -> list[KeyFile]:
    chosen = [k for k in keys if selection.matches(k.gun, k.role, k.key_id)]
    selection.check_found([(k.gun, k.role, k.key_id) for k in chosen], where)
    return chosen


def select_pins(
    trust_dir: Path, keys: Sequence[KeyFile], selection: Selection
) -> tuple[list[PinFile], list[MetadataProblem]]:
    """The trust pins that travel with the selected keys: their GUNs' pins, and with no
    ``--role``/``--key-id`` every pin ``--gun`` matches (every pin when nothing is
    selected, or ``--all``), so a GUN this machine only pulls keeps its pin too."""
    guns = sorted({k.gun for k in keys if k.gun is not None})
    if not selection.roles and not selection.key_ids:
        if not selection.guns:
            return scan_pins(trust_dir)
        guns += selection.guns
    return scan_pins(trust_dir, guns) if guns else ([], [])


def select_certs(
    env: Mapping[str, str], keys: Sequence[KeyFile], selection: Selection
) -> tuple[list[CertFile], list[MetadataProblem]]:
    """The CA files the notary client config pins that travel with the selected keys:
    every one when nothing narrows the selection (or ``--all``); else the CAs of the GUN
    prefixes the selected GUNs start with, and the trust server's CA."""
    from keyvault.trust.certpins import config_sources, read_cert_files, select_sources
    from keyvault.trustserver.notaryconfig import read_notary_config

    try:
        config = read_notary_config(env)
    except KeyvaultError as exc:
        return [], [MetadataProblem("notary config", exc.message)]
    if config is None:
        return [], []
    sources, problems = config_sources(config)
    narrowed = not selection.everything and bool(
        selection.guns or selection.roles or selection.key_ids
    )
    guns = sorted({k.gun for k in keys if k.gun is not None} | set(selection.guns))
    certs, unread = read_cert_files(select_sources(sources, guns if narrowed else None))
    return certs, problems + unread


def backup_keys(
    session: Session,
    keys: Sequence[KeyFile],
    *,
    team: str,
    dry_run: bool = False,
    concurrency: int = DEFAULT_CONCURRENCY,
    threshold: int | None = None,
    on_done: Callable[[BackupOutcome], None] | None = None,
    trust_dir: Path | None = None,
    pins: Sequence[PinFile] = (),
    certs: Sequence[CertFile] = (),
    listing: TeamListing | None = None,
    keep: bool = True,
) -> list[BackupOutcome]:
    """Back up each key, ``concurrency`` at a time; one key's failure does not stop the others.

    Per key: one read of the latest envelope, and for a new or changed key one
    seal (one call per wrapper) and one create-only write. An unchanged key
    costs the read only. For a bulk run the team's prefix is listed once
    first, and a key the listing does not hold skips the read: a new key then
    costs exactly one wrapper call and one write. Where the listing gives each
    latest version's tag (S3's ETag; on Vault KV the version and its creation time,
    a folder at a time: only the folders of these keys), a key whose latest version is the one this
    machine recorded (keyvault.known) is not read either: unchanged, it costs
    nothing of its own; changed, its wrapper call and its write.

    ``threshold`` is a minimum M of a threshold group (dual control); a key's
    own, recorded in its latest signed version, is kept if higher.

    ``keys`` may be released (``scan_trust_dir(..., keep_bytes=False)``): each
    file is then read again from ``trust_dir`` only when its envelope is sealed,
    so memory holds the keys in flight.

    ``pins`` (the selected GUNs' trust pins) are backed up after the keys, each
    under its own name (:class:`PinAddress`), exactly as a key is: signed,
    chained, unchanged when the authenticated latest version holds its bytes.
    Their outcomes follow the keys' in the list returned. ``certs`` (the CA files
    the notary config pins, :class:`CertAddress`) follow the pins, held to the
    same rules.

    ``listing``: the team's listing shared by several calls (the daemon's reconciliation:
    its keys' dry run and its pins), made once by the first that needs it, whatever the
    number of keys.

    ``keep=False``: nothing is returned; ``on_done`` is where each outcome goes (the CLI
    spools what it reports), so memory does not grow with the number of keys.
    """
    if trust_dir is None and any(k.is_released for k in keys):
        raise ValueError("released key files need the trust directory to be read again")
    session.access().precheck("backup", team)  # policy (teams.md): before any request
    items = [
        *_items(team, keys),
        *((p.as_key_file(), PinAddress.of(team, p.gun)) for p in pins),
        *((c.as_key_file(), c.source.address(team)) for c in certs),
    ]
    denied = session.access().refusals("backup", [a for _, a in items if a is not None])
    store = session.store()  # open the store and the wrappers once, before any thread starts
    wrappers: Sequence[Wrapper] = [] if dry_run else session.wrappers()
    if dry_run:  # opens no wrapper, but a URI the real run would refuse is refused now
        from keyvault.wrappers import check_wrapper_uri

        for uri in session.config.wrappers:
            check_wrapper_uri(uri)
    else:
        session.sealer()  # and the sealing key: a bad one fails before anything is written
    session.sealers()
    if threshold is not None and not dry_run and not 2 <= threshold <= len(wrappers):
        raise UsageError(
            f"--threshold {threshold} needs at least {threshold} wrappers; "
            f"{len(wrappers)} configured",
            hint="pass --wrapper once per wrapper",
        )
    known = session.known(open_sealer=not dry_run)
    session.highwater()  # made once here: threads that each made one lost each other's marks
    marking = marker_settings(session.config.settings)
    marked = marking.on and isinstance(store, ChangeMarking)  # any run: 1 request if unmoved
    if listing is None and (len(items) >= LISTING_THRESHOLD or marked):
        listing = TeamListing()
    names = [a.object_name for _, a in items if a is not None and a not in denied]
    marker = listing.marker(store, known, team, marking) if listing is not None else None
    listed = (
        listing.of(store, team, names, concurrency, known=known if marker else None)
        if listing is not None
        else None
    )
    folder_tags = store if isinstance(store, FolderTagListing) else None
    run = _Run(session, wrappers, dry_run, threshold, trust_dir, known, folder_tags)
    breaker = session.breaker

    def one(item: tuple[KeyFile, KeyAddress | None]) -> BackupOutcome:
        key, address = item
        if address is None:
            address = KeyAddress(team, key.gun, key.role, key.key_id)  # raises: invalid name
        if address in denied:  # refused by the policy: never read nor written
            return BackupOutcome(key, address, FAILED, error=denied[address])
        if breaker.is_open:  # a backend is down: start no new key (a re-run goes on)
            return BackupOutcome(key, address, NOT_ATTEMPTED, error=breaker.skip())
        try:
            tag = listed.get(address.object_name) if listed is not None else None
            seen = _known_latest(run, address, tag) if tag else None
            if seen is not None and _same_key(run, key, address, seen):
                if _as_asked(run, seen):  # known unchanged: no backend was asked
                    return BackupOutcome(key, address, UNCHANGED, seen.version)
                seen = None  # the same bytes: the read path says what is missing
            outcome = _backup_key(
                run, key, address, absent=listed is not None and tag is None, known=seen
            )
        except KeyvaultError as exc:
            breaker.note(exc)
            return BackupOutcome(key, address, FAILED, error=exc)
        breaker.up()
        return outcome

    outcomes: list[BackupOutcome] = []
    tally = _Tally()
    for outcome in bounded_map(one, items, concurrency):
        tally.note(outcome)
        if keep:
            outcomes.append(outcome)
        if on_done:
            on_done(outcome)
    if not dry_run:
        session.highwater().save()
    try:  # after the high-water marks: a marker not written is exit 6, the rest still kept
        _mark(marker, store, known, team, tally, dry_run=dry_run, marked=marked, listing=listing)
    finally:
        if known is not None:
            known.save()
        if not dry_run:
            tally.audit(session, team)
    return outcomes


def _mark(
    marker: TeamMarker | None,
    store: Store,
    known: KnownVersions | None,
    team: str,
    tally: _Tally,
    *,
    dry_run: bool,
    marked: bool,
    listing: TeamListing | None,
) -> None:
    """The team's change marker after a backup: moved if it wrote, its tag recorded."""
    wrote = bool(tally.written)
    if marker is not None:
        ok = tally.in_doubt == 0
        listed = listing.listed if listing is not None else frozenset()
        marker.finish(ok=ok, wrote=wrote, dry_run=dry_run, listed=listed)
    elif wrote and marked and not dry_run and isinstance(store, ChangeMarking):
        announce(store, known, team, time.time())  # no records (an ECDSA sealer): announce


class TeamListing:
    """The listing of a team's objects, made on first use and reused by later backups.

    A listing that is stale by the time a key is written only costs a read: a tag
    that no longer matches, or a create that loses to an object made since, takes the
    authenticated read path.
    """

    def __init__(self, *, full_check: bool = False, clock: Callable[[], float] = time.time) -> None:
        self._listed: dict[str, str] | None = None
        self._folders: dict[str, dict[str, str]] = {}
        self._full_check, self._clock = full_check, clock
        self._marker: TeamMarker | None = None

    @property
    def listed(self) -> frozenset[str]:
        """The folders listed so far (Vault KV), each of them after the marker was read."""
        return frozenset(self._folders)

    def marker(
        self, store: Store, known: KnownVersions | None, team: str, marking: MarkerSettings
    ) -> TeamMarker | None:
        """The team's change marker, where it is on (``[vault] change_marker``), the store
        keeps one and this machine keeps MAC'd records; one for the life of this listing."""
        if not marking.on or known is None or not isinstance(store, ChangeMarking):
            return None
        if self._marker is None:
            self._marker = TeamMarker(
                store, known, team, marking.every, full_check=self._full_check, clock=self._clock
            )
        return self._marker

    def of(
        self,
        store: Store,
        team: str,
        names: Sequence[str],
        concurrency: int,
        *,
        known: KnownVersions | None = None,
    ) -> dict[str, str]:
        """Each object with the tag of its latest version ("" where the store lists none):
        the whole team, or, where the store lists a folder at a time, at least the folders
        of ``names`` (each listed once for the life of this listing). With the team's
        change marker unmoved (:meth:`marker`), the tags ``known`` records stand for the
        folders this machine listed last, which are not listed again: a name there with
        no record is taken as absent (a create that finds it takes the read path)."""
        covered = self._marker.covered() if known is not None and self._marker else frozenset()
        if known is not None and covered and isinstance(store, FolderTagListing):
            rest = [name for name in names if _folder(name) not in covered]
            found = self._by_folder(store, rest, concurrency) if rest else {}
            for name in names:
                if _folder(name) in covered and (tag := known.recorded_tag(name)):
                    found[name] = tag
            return found
        if isinstance(store, FolderTagListing):
            return self._by_folder(store, names, concurrency)
        if self._listed is None:
            self._listed = _listing(store, team)
        return self._listed

    def _by_folder(
        self, store: FolderTagListing, names: Sequence[str], concurrency: int
    ) -> dict[str, str]:
        """The folders that hold ``names``, each listed once: on Vault KV a LIST per folder
        (and per 1,000 objects in it). Walking the team would list every folder these
        are in and more: each segment of each GUN path, ``guns/`` and the team itself,
        and the audit checkpoints' folders (37 LISTs against 20 for 20 keys in 10 GUNs;
        at least 4,003 against 3,001 for 1,000 GUNs of 3 roles each): so only these."""
        wanted = sorted({_folder(name) for name in names})
        todo = [folder for folder in wanted if folder not in self._folders]
        for folder, tags in zip(todo, bounded_map(store.tags_in, todo, concurrency), strict=True):
            self._folders[folder] = tags
        found: dict[str, str] = {}
        for folder in wanted:
            found.update(self._folders[folder])
        return found


def _folder(name: str) -> str:
    """The folder an object name is in ("a/b/" for "a/b/c")."""
    return name.rpartition("/")[0] + "/"


def _listing(store: Store, team: str) -> dict[str, str]:
    """The team's objects, each with the entity tag of its latest version ("" where the
    store lists none): one paged listing, whatever the number of keys.

    It starts after the team's audit checkpoints (:func:`listing_start`)."""
    prefix = team_prefix(team)
    if isinstance(store, TagListing):
        return store.tags_under(prefix, after=listing_start(team, prefix))
    return dict.fromkeys(store.list(prefix, after=listing_start(team, prefix)), "")


def _written_tag(run: _Run, name: str, version: str, payload: bytes) -> str:
    """The tag a later listing will show for the version just written."""
    if run.folder_tags is not None:  # Vault: the version and its creation time
        return run.folder_tags.written_tag(name, version)
    # S3's ETag of a single-part write is the MD5 of its bytes (not with SSE-KMS: that key
    # is then read once, and its real tag recorded). Matching it needs an MD5 second
    # preimage of bytes this machine chose, so MD5 is enough to name them here.
    return hashlib.md5(payload).hexdigest()  # noqa: S324


def _known_latest(run: _Run, address: KeyAddress, tag: str) -> Seen | None:
    """The record that stands for a read of the latest version, if every check holds: its
    MAC verifies and the listed latest version is the recorded one; this machine's
    high-water mark is still that version; its sealer is still trusted."""
    name = address.object_name
    seen = run.known.match(name, tag) if run.known is not None else None
    if seen is None:
        return None
    mark = run.session.highwater().get(name)
    trust = run.session.sealers()
    if (
        mark is None
        or mark.sequence != seen.sequence
        or not hmac.compare_digest(mark.digest, seen.digest)
        or seen.sealer not in trust.trusted
        or seen.sealer in trust.revoked
    ):
        return None
    return seen


def _same_key(run: _Run, key: KeyFile, address: KeyAddress, seen: Seen) -> bool:
    """The recorded latest version holds this very key file."""
    return run.known is not None and run.known.holds(seen, address.object_name, key.sha256)


def _as_asked(run: _Run, seen: Seen) -> bool:
    """The recorded version meets ``--threshold`` and is wrapped for exactly the wrappers
    asked for; otherwise the read path warns of a missing wrapper, or seals under M."""
    return (run.threshold is None or seen.threshold >= run.threshold) and (
        not run.wrappers or seen.wrappers == wrappers_digest([w.uri for w in run.wrappers])
    )


def _on_top_of_known(run: _Run, key: KeyFile, address: KeyAddress, seen: Seen) -> BackupOutcome:
    """A changed key whose recorded version is the store's latest: sealed on top of it, no
    read (a writer in between makes the write lose, and the read path takes over)."""
    if run.dry_run:
        return BackupOutcome(key, address, WOULD_WRITE)
    recorded = seen.threshold if seen.threshold > 1 else None
    return _write(
        run,
        key,
        address,
        replaces=seen.version,
        threshold=_at_least(run.threshold, recorded),
        chain=Chain(seen.sequence + 1, seen.digest),
    )


def _remember(
    run: _Run,
    address: KeyAddress,
    envelope: Envelope,
    *,
    tag: str,
    version: str,
    digest: str,
    sealer: str,
    key_sha256: str,
) -> None:
    """Record the latest version of ``address`` as this machine sealed or verified it."""
    chain = envelope.chain
    if run.known is None or chain is None or not tag:
        return
    name = address.object_name
    run.known.note(
        name,
        Seen(
            tag,
            version,
            chain.sequence,
            digest,
            sealer,
            envelope.threshold or 1,
            wrappers_digest(envelope.wrapper_uris),
            run.known.key_digest(name, key_sha256),
        ),
    )


@dataclass(frozen=True)
class _Run:
    """What every key of one backup run shares."""

    session: Session
    wrappers: Sequence[Wrapper]
    dry_run: bool
    #: ``--threshold``: at least this M.
    threshold: int | None
    trust_dir: Path | None
    #: What this machine sealed or verified (None: not kept, every key is read).
    known: KnownVersions | None = None
    #: The store, where its listing tags a folder's versions (Vault KV). Checked once:
    #: ``isinstance`` against a protocol walks its members each time.
    folder_tags: FolderTagListing | None = None


def _items(team: str, keys: Sequence[KeyFile]) -> list[tuple[KeyFile, KeyAddress | None]]:
    """Each key with its address; None where a name is invalid (it fails in its own turn)."""
    found: list[tuple[KeyFile, KeyAddress | None]] = []
    for key in keys:
        address: KeyAddress | None = None
        with contextlib.suppress(KeyvaultError):
            address = KeyAddress(team, key.gun, key.role, key.key_id)
        found.append((key, address))
    return found


@dataclass
class _Tally:
    """What the audit record of a backup says: counts, and the keys written or failed."""

    total: int = 0
    written: list[KeyRef] = field(default_factory=list)
    failed: list[KeyRef] = field(default_factory=list)
    first_failure: str | None = None
    #: Keys neither unchanged nor written (failed, not attempted, a dry run's plan).
    in_doubt: int = 0

    def note(self, outcome: BackupOutcome) -> None:
        self.total += 1
        self.in_doubt += outcome.action not in (UNCHANGED, CREATED, UPDATED)
        if outcome.action in (CREATED, UPDATED):
            self.written.append(key_ref(outcome.address))
        elif outcome.failed:
            self.failed.append(key_ref(outcome.address))
            if len(self.failed) == 1 and outcome.error is not None:
                self.first_failure = outcome.error.kind

    def audit(self, session: Session, team: str) -> None:
        written, failed = self.written, self.failed
        outcome = "failed" if failed and not written else "partial" if failed else "ok"
        detail = (
            f"{len(written)} written, {self.total - len(written) - len(failed)} unchanged, "
            f"{len(failed)} failed"
        )
        if self.first_failure is not None:
            detail += f"; first failure: {self.first_failure}"
        # A backup that wrote nothing (all unchanged) writes no checkpoint either.
        session.record(
            "backup", outcome, team=team, detail=detail, anchor=bool(written), keys=written + failed
        )


def _backup_key(
    run: _Run, key: KeyFile, address: KeyAddress, *, absent: bool, known: Seen | None = None
) -> BackupOutcome:
    """One key; when another writer stores it first, read it again and go on from there.

    ``absent``: a listing just now held no such object, so it is created without a read.
    ``known``: a listing just now showed the latest version this machine recorded, so
    the changed key goes on top of it without a read.
    """
    lost: ConflictError | None = None
    for attempt in range(ATTEMPTS):
        if attempt:  # racers that keep colliding (stores without If-Match) spread out
            time.sleep(random.uniform(0, RETRY_JITTER_S * 2**attempt))  # noqa: S311
        try:
            if absent and attempt == 0:
                return _create(run, key, address)
            if known is not None and attempt == 0:
                return _on_top_of_known(run, key, address, known)
            return _backup_one(run, key, address, recheck=attempt > 0)
        except ChangedOnDiskError:
            raise  # the key file changed under us: not a store race, not retried
        except ConflictError as exc:
            lost = exc
    assert lost is not None
    raise ConflictError(
        f"{describe(address)} was written by others {ATTEMPTS} times while "
        f"this backup tried to store it; gave up (last: {lost.message})",
        hint="run the backup again; 'keyvault versions' shows who wrote it",
    )


def _backup_one(run: _Run, key: KeyFile, address: KeyAddress, *, recheck: bool) -> BackupOutcome:
    """One attempt: read the latest, then nothing, a create or a version on top of it.

    ``recheck``: another writer just stored this key, so its version's chain is
    checked too, as a restore would: it must sit on the version beneath it.
    """
    try:
        obj = run.session.store().read(address.object_name)
    except LatestDeletedError as exc:  # deleted outside keyvault: its history stays below
        mark = run.session.highwater().get(address.object_name)
        why = IntegrityError(exc.message)
        return _rewrite(run, key, address, exc.latest, mark.digest if mark else "", why)
    except NotFoundError:
        return _create(run, key, address)
    try:
        raw = parse_stored(address, obj)
    except IntegrityError as exc:  # not even an envelope: seal a good one on top of it
        return _rewrite(run, key, address, obj.version, hashlib.sha256(obj.data).hexdigest(), exc)
    try:
        current = _trusted_latest(run.session, raw, recheck=recheck)
    except IntegrityError as exc:  # tampered, unsigned, foreign or rolled back: seal anew
        return _rewrite(run, key, address, raw.version, raw.digest, exc)
    chain = current.envelope.chain
    assert chain is not None
    recorded = current.envelope.threshold
    if hmac.compare_digest(current.envelope.header.sha256, key.sha256) and (
        run.threshold is None or (recorded or 1) >= run.threshold
    ):
        _remember(
            run,
            address,
            current.envelope,
            tag=obj.etag,
            version=current.version,
            digest=current.digest,
            sealer=current.sealer or "",
            key_sha256=key.sha256,
        )
        return BackupOutcome(
            key,
            address,
            UNCHANGED,
            current.version,
            warning=_not_wrapped_for(run, current, address),
        )
    if run.dry_run:
        return BackupOutcome(key, address, WOULD_WRITE)
    return _write(
        run,
        key,
        address,
        replaces=current.version,
        threshold=_at_least(run.threshold, recorded),
        chain=Chain(chain.sequence + 1, current.digest),
    )


def _not_wrapped_for(run: _Run, current: StoredEnvelope, address: KeyAddress) -> str | None:
    """Unchanged bytes are not rewritten; but a wrapper asked for that the stored version is
    not wrapped for cannot restore it, and the user must not believe it can."""
    missing = [w.uri for w in run.wrappers if w.uri not in current.envelope.wrapper_uris]
    if not missing:
        return None
    shown = ", ".join(redact(uri) for uri in missing)
    return (
        f"{describe(address)} is unchanged, but its backup is not wrapped for {shown}, "
        f"which cannot restore it; add it with 'keyvault rewrap --all --add "
        f"{redact(missing[0])}'"
    )


def _trusted_latest(session: Session, raw: StoredEnvelope, *, recheck: bool) -> StoredEnvelope:
    """``raw`` as the latest version, signed by a trusted sealer and not rolled back."""
    reader = session.reader()
    current = reader.authenticate(raw)
    chain = current.envelope.chain
    if chain is None:
        raise IntegrityError("the latest version is unsigned (format v1)")
    if recheck:
        reader.check_chain(current)
    name = raw.address.object_name
    reader.highwater.check(name, chain.sequence, current.digest, describe(raw.address))
    reader.highwater.note(name, chain.sequence, current.digest)
    return current


def _create(run: _Run, key: KeyFile, address: KeyAddress) -> BackupOutcome:
    if run.dry_run:
        return BackupOutcome(key, address, WOULD_WRITE)
    return _write(run, key, address, replaces=None, threshold=run.threshold)


def _rewrite(
    run: _Run, key: KeyFile, address: KeyAddress, replaces: str, previous: str, why: IntegrityError
) -> BackupOutcome:
    """A fresh version on top of a latest one that could not be trusted; say why.

    Its dual control is that of the newest version a trusted sealer did sign:
    junk or an old copy on top must not lower it.
    """
    warning = (
        f"the latest stored version of {describe(address)} was not trusted "
        f"({why.message}); "
        + (
            "a fresh version would be sealed on top"
            if run.dry_run
            else "sealed a fresh version on top"
        )
    )
    if run.dry_run:
        return BackupOutcome(key, address, WOULD_WRITE, warning=warning)
    try:
        versions = [v.version for v in run.session.store().versions(address.object_name)]
    except NotFoundError:  # every version deleted: the new one starts above the mark
        versions = []
    recorded = _signed_threshold(run.session, address, [v for v in versions if v != replaces])
    outcome = _write(
        run,
        key,
        address,
        replaces=replaces,
        threshold=_at_least(run.threshold, recorded),
        chain=Chain(next_number(run.session, address, len(versions)), previous),
    )
    return replace(outcome, warning=warning)


def _signed_threshold(session: Session, address: KeyAddress, versions: Sequence[str]) -> int | None:
    """The threshold of the highest-numbered version among ``versions`` that a trusted
    sealer signed (None: no group, or no such version). Reads each one: a repair only."""
    reader = session.reader()
    best: tuple[int, int | None] = (0, None)
    for version in versions:
        try:
            chain = (entry := reader.version(address, version)).envelope.chain
        except (IntegrityError, NotFoundError):
            continue  # junk, foreign or gone: says nothing about the key's dual control
        if chain is not None and chain.sequence > best[0]:
            best = (chain.sequence, entry.envelope.threshold)
    return best[1]


def _at_least(requested: int | None, recorded: int | None) -> int | None:
    """The threshold to seal under: never below the key's recorded one."""
    return max(requested or 0, recorded or 0) or None


def next_number(session: Session, address: KeyAddress, count: int | None = None) -> int:
    """A number above every version this machine saw and every version the store lists
    (``count`` of them, when the caller has just listed them)."""
    seen = session.highwater().get(address.object_name)
    if count is None:
        count = len(session.store().versions(address.object_name))
    return max(seen.sequence if seen else 0, count) + 1


def _write(
    run: _Run,
    key: KeyFile,
    address: KeyAddress,
    *,
    replaces: str | None,
    threshold: int | None,
    chain: Chain = FIRST,
) -> BackupOutcome:
    """Seal and write: create-only (``replaces=None``) or a new version on top of one."""
    if threshold is not None and threshold > len(run.wrappers):
        raise UsageError(
            f"{describe(address)} is under {threshold}-of-N dual control (its latest signed "
            f"version says so), but {len(run.wrappers)} wrapper(s) are configured; a backup "
            "never lowers it, so nothing was written",
            hint=f"configure at least {threshold} wrappers (--wrapper, or wrappers in the "
            "config), as when it was backed up with --threshold",
        )
    pin = isinstance(address, PinAddress | CertAddress)  # read once by their scan, kept
    data = key.data if run.trust_dir is None or pin else read_key_bytes(run.trust_dir, key)
    header = new_header(
        address=address,
        algorithm=key.algorithm,
        source_name=key.relpath,
        source_mode=key.mode,
        data=data,
    )
    session = run.session
    envelope = seal(header, data, run.wrappers, threshold, sealer=session.sealer(), chain=chain)
    payload = envelope.to_bytes()
    store = session.store()
    version = store.write(address.object_name, payload, replaces=replaces)
    digest = hashlib.sha256(payload).hexdigest()
    session.highwater().note(address.object_name, chain.sequence, digest)
    _remember(
        run,
        address,
        envelope,
        tag=_written_tag(run, address.object_name, version, payload),
        version=version,
        digest=digest,
        sealer=session.sealer().key.fingerprint,
        key_sha256=hashlib.sha256(data).hexdigest(),
    )
    return BackupOutcome(key, address, CREATED if replaces is None else UPDATED, version)
