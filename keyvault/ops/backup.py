"""Back up key files: seal each one and write it to the store, idempotently.

A key whose latest envelope already holds the same bytes is not written
again, but only when that is *authenticated*: the latest version is signed by
a trusted sealer and is not older than this machine's high-water mark. A key
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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from keyvault.envelope import FIRST, Chain, new_header, seal
from keyvault.errors import (
    ChangedOnDiskError,
    ConflictError,
    IntegrityError,
    KeyvaultError,
    NotFoundError,
    UsageError,
)
from keyvault.names import KeyAddress, PinAddress, team_prefix
from keyvault.ops.authentic import describe
from keyvault.ops.parallel import DEFAULT_CONCURRENCY, bounded_map
from keyvault.ops.selection import Selection
from keyvault.ops.session import Session, key_ref
from keyvault.ops.stored import StoredEnvelope, parse_stored
from keyvault.redact import redact
from keyvault.trust.model import KeyFile
from keyvault.trust.pins import PinFile, scan_pins
from keyvault.trust.scan import read_key_bytes
from keyvault.trust.tufmeta import MetadataProblem
from keyvault.wrappers import Wrapper

#: From this many keys on, a backup lists the team's prefix once instead of reading each key.
LISTING_THRESHOLD = 16
#: How many writes of one key a run tries while other writers keep storing it first.
ATTEMPTS = 5
#: Before each try after a lost write, a random pause of up to this times 2**try (jitter).
RETRY_JITTER_S = 0.05
CREATED, UPDATED, UNCHANGED, FAILED, WOULD_WRITE, NOT_ATTEMPTED = (
    "created", "updated", "unchanged", "failed", "would-write", "not-attempted")


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


def select_keys(keys: Sequence[KeyFile], selection: Selection, where: str) -> list[KeyFile]:
    chosen = [k for k in keys if selection.matches(k.gun, k.role, k.key_id)]
    selection.check_found([(k.gun, k.role, k.key_id) for k in chosen], where)
    return chosen


def select_pins(trust_dir: Path, keys: Sequence[KeyFile], selection: Selection
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
) -> list[BackupOutcome]:
    """Back up each key, ``concurrency`` at a time; one key's failure does not stop the others.

    Per key: one read of the latest envelope, and for a new or changed key one
    seal (one call per wrapper) and one create-only write. An unchanged key
    costs the read only. For a bulk run the team's prefix is listed once
    first, and a key the listing does not hold skips the read: a new key then
    costs exactly one wrapper call and one write.

    ``threshold`` is a minimum M of a threshold group (dual control); a key's
    own, recorded in its latest signed version, is kept if higher.

    ``keys`` may be released (``scan_trust_dir(..., keep_bytes=False)``): each
    file is then read again from ``trust_dir`` only when its envelope is sealed,
    so memory holds the keys in flight.

    ``pins`` (the selected GUNs' trust pins) are backed up after the keys, each
    under its own name (:class:`PinAddress`), exactly as a key is: signed,
    chained, unchanged when the authenticated latest version holds its bytes.
    Their outcomes follow the keys' in the list returned.
    """
    if trust_dir is None and any(k.is_released for k in keys):
        raise ValueError("released key files need the trust directory to be read again")
    session.access().precheck("backup", team)  # policy (teams.md): before any request
    items = [*_items(team, keys), *((p.as_key_file(), PinAddress.of(team, p.gun))
                                    for p in pins)]
    denied = session.access().refusals("backup", [a for _, a in items if a is not None])
    store = session.store()  # open the store and the wrappers once, before any thread starts
    wrappers: Sequence[Wrapper] = [] if dry_run else session.wrappers()
    if not dry_run:
        session.sealer()  # and the sealing key: a bad one fails before anything is written
    session.sealers()
    if threshold is not None and not dry_run and not 2 <= threshold <= len(wrappers):
        raise UsageError(f"--threshold {threshold} needs at least {threshold} wrappers; "
                         f"{len(wrappers)} configured", hint="pass --wrapper once per wrapper")
    listed = set(store.list(team_prefix(team))) if len(items) >= LISTING_THRESHOLD else None
    run = _Run(session, wrappers, dry_run, threshold, trust_dir)
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
            outcome = _backup_key(run, key, address, absent=listed is not None
                                  and address.object_name not in listed)
        except KeyvaultError as exc:
            breaker.note(exc)
            return BackupOutcome(key, address, FAILED, error=exc)
        breaker.up()
        return outcome

    outcomes: list[BackupOutcome] = []
    for outcome in bounded_map(one, items, concurrency):
        outcomes.append(outcome)
        if on_done:
            on_done(outcome)
    if not dry_run:
        session.highwater().save()
        _audit(session, team, outcomes)
    return outcomes


@dataclass(frozen=True)
class _Run:
    """What every key of one backup run shares."""

    session: Session
    wrappers: Sequence[Wrapper]
    dry_run: bool
    #: ``--threshold``: at least this M.
    threshold: int | None
    trust_dir: Path | None


def _items(team: str, keys: Sequence[KeyFile]) -> list[tuple[KeyFile, KeyAddress | None]]:
    """Each key with its address; None where a name is invalid (it fails in its own turn)."""
    found: list[tuple[KeyFile, KeyAddress | None]] = []
    for key in keys:
        address: KeyAddress | None = None
        with contextlib.suppress(KeyvaultError):
            address = KeyAddress(team, key.gun, key.role, key.key_id)
        found.append((key, address))
    return found


def _audit(session: Session, team: str, outcomes: Sequence[BackupOutcome]) -> None:
    written = [o for o in outcomes if o.action in (CREATED, UPDATED)]
    failed = [o for o in outcomes if o.failed]
    outcome = "failed" if failed and not written else "partial" if failed else "ok"
    detail = (f"{len(written)} written, {len(outcomes) - len(written) - len(failed)} unchanged, "
              f"{len(failed)} failed")
    if failed and failed[0].error is not None:
        detail += f"; first failure: {failed[0].error.kind}"
    # A backup that wrote nothing (all unchanged) writes no checkpoint either.
    session.record("backup", outcome, team=team, detail=detail, anchor=bool(written),
                   keys=[key_ref(o.address) for o in written + failed])


def _backup_key(run: _Run, key: KeyFile, address: KeyAddress, *, absent: bool
                ) -> BackupOutcome:
    """One key; when another writer stores it first, read it again and go on from there.

    ``absent``: a listing just now held no such object, so it is created without a read.
    """
    lost: ConflictError | None = None
    for attempt in range(ATTEMPTS):
        if attempt:  # racers that keep colliding (stores without If-Match) spread out
            time.sleep(random.uniform(0, RETRY_JITTER_S * 2 ** attempt))  # noqa: S311
        try:
            if absent and attempt == 0:
                return _create(run, key, address)
            return _backup_one(run, key, address, recheck=attempt > 0)
        except ChangedOnDiskError:
            raise  # the key file changed under us: not a store race, not retried
        except ConflictError as exc:
            lost = exc
    assert lost is not None
    raise ConflictError(f"{describe(address)} was written by others {ATTEMPTS} times while "
                        f"this backup tried to store it; gave up (last: {lost.message})",
                        hint="run the backup again; 'keyvault versions' shows who wrote it")


def _backup_one(run: _Run, key: KeyFile, address: KeyAddress, *, recheck: bool
                ) -> BackupOutcome:
    """One attempt: read the latest, then nothing, a create or a version on top of it.

    ``recheck``: another writer just stored this key, so its version's chain is
    checked too, as a restore would: it must sit on the version beneath it.
    """
    try:
        obj = run.session.store().read(address.object_name)
    except NotFoundError:
        return _create(run, key, address)
    try:
        raw = parse_stored(address, obj)
    except IntegrityError as exc:  # not even an envelope: seal a good one on top of it
        return _rewrite(run, key, address, obj.version, hashlib.sha256(obj.data).hexdigest(),
                        exc)
    try:
        current = _trusted_latest(run.session, raw, recheck=recheck)
    except IntegrityError as exc:  # tampered, unsigned, foreign or rolled back: seal anew
        return _rewrite(run, key, address, raw.version, raw.digest, exc)
    chain = current.envelope.chain
    assert chain is not None
    recorded = current.envelope.threshold
    if hmac.compare_digest(current.envelope.header.sha256, key.sha256) and (
            run.threshold is None or (recorded or 1) >= run.threshold):
        return BackupOutcome(key, address, UNCHANGED, current.version,
                             warning=_not_wrapped_for(run, current, address))
    if run.dry_run:
        return BackupOutcome(key, address, WOULD_WRITE)
    return _write(run, key, address, replaces=current.version,
                  threshold=_at_least(run.threshold, recorded),
                  chain=Chain(chain.sequence + 1, current.digest))


def _not_wrapped_for(run: _Run, current: StoredEnvelope, address: KeyAddress) -> str | None:
    """Unchanged bytes are not rewritten; but a wrapper asked for that the stored version is
    not wrapped for cannot restore it, and the user must not believe it can."""
    missing = [w.uri for w in run.wrappers if w.uri not in current.envelope.wrapper_uris]
    if not missing:
        return None
    shown = ", ".join(redact(uri) for uri in missing)
    return (f"{describe(address)} is unchanged, but its backup is not wrapped for {shown}, "
            f"which cannot restore it; add it with 'keyvault rewrap --all --add "
            f"{redact(missing[0])}'")


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


def _rewrite(run: _Run, key: KeyFile, address: KeyAddress, replaces: str, previous: str,
             why: IntegrityError) -> BackupOutcome:
    """A fresh version on top of a latest one that could not be trusted; say why.

    Its dual control is that of the newest version a trusted sealer did sign:
    junk or an old copy on top must not lower it.
    """
    warning = (f"the latest stored version of {describe(address)} was not trusted "
               f"({why.message}); " + ("a fresh version would be sealed on top" if run.dry_run
                                       else "sealed a fresh version on top"))
    if run.dry_run:
        return BackupOutcome(key, address, WOULD_WRITE, warning=warning)
    versions = [v.version for v in run.session.store().versions(address.object_name)]
    recorded = _signed_threshold(run.session, address, [v for v in versions if v != replaces])
    outcome = _write(run, key, address, replaces=replaces,
                     threshold=_at_least(run.threshold, recorded),
                     chain=Chain(next_number(run.session, address, len(versions)), previous))
    return replace(outcome, warning=warning)


def _signed_threshold(session: Session, address: KeyAddress, versions: Sequence[str]
                      ) -> int | None:
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


def _write(run: _Run, key: KeyFile, address: KeyAddress, *, replaces: str | None,
           threshold: int | None, chain: Chain = FIRST) -> BackupOutcome:
    """Seal and write: create-only (``replaces=None``) or a new version on top of one."""
    if threshold is not None and threshold > len(run.wrappers):
        raise UsageError(
            f"{describe(address)} is under {threshold}-of-N dual control (its latest signed "
            f"version says so), but {len(run.wrappers)} wrapper(s) are configured; a backup "
            "never lowers it, so nothing was written",
            hint=f"configure at least {threshold} wrappers (--wrapper, or wrappers in the "
                 "config), as when it was backed up with --threshold")
    pin = isinstance(address, PinAddress)  # a pin is read once, by scan_pins, and kept
    data = key.data if run.trust_dir is None or pin else read_key_bytes(run.trust_dir, key)
    header = new_header(address=address, algorithm=key.algorithm, source_name=key.relpath,
                        source_mode=key.mode, data=data)
    session = run.session
    payload = seal(header, data, run.wrappers, threshold, sealer=session.sealer(),
                   chain=chain).to_bytes()
    version = session.store().write(address.object_name, payload, replaces=replaces)
    session.highwater().note(address.object_name, chain.sequence,
                             hashlib.sha256(payload).hexdigest())
    return BackupOutcome(key, address, CREATED if replaces is None else UPDATED, version)
