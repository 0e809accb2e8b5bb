"""Back up key files: seal each one and write it to the store, idempotently.

A key whose latest envelope already holds the same bytes is not written
again, but only when that is *authenticated*: the latest version is signed by
a trusted sealer and is not older than this machine's high-water mark. A key
whose bytes changed (``notary key passwd``, a re-import) gets a new version
on top of the old one, chained to it; the old version stays in the store. A
latest version that is tampered with, unsigned (format v1) or unverifiable is
reported and a fresh version is sealed on top (the bad one stays, for
forensics).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
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
from keyvault.names import KeyAddress, team_prefix
from keyvault.ops.authentic import describe
from keyvault.ops.parallel import DEFAULT_CONCURRENCY, bounded_map
from keyvault.ops.selection import Selection
from keyvault.ops.session import Session, key_ref
from keyvault.ops.stored import parse_stored
from keyvault.trust.model import KeyFile
from keyvault.trust.scan import read_key_bytes
from keyvault.wrappers import Wrapper

#: From this many keys on, a backup lists the team's prefix once instead of reading each key.
LISTING_THRESHOLD = 16
CREATED, UPDATED, UNCHANGED, FAILED, WOULD_WRITE = (
    "created", "updated", "unchanged", "failed", "would-write")


@dataclass(frozen=True)
class BackupOutcome:
    key: KeyFile
    address: KeyAddress
    action: str
    version: str | None = None
    error: KeyvaultError | None = None
    #: Why an existing latest version was not trusted and a fresh one sealed on top.
    warning: str | None = None


def select_keys(keys: Sequence[KeyFile], selection: Selection, where: str) -> list[KeyFile]:
    chosen = [k for k in keys if selection.matches(k.gun, k.role, k.key_id)]
    selection.check_found([(k.gun, k.role, k.key_id) for k in chosen], where)
    return chosen


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
) -> list[BackupOutcome]:
    """Back up each key, ``concurrency`` at a time; one key's failure does not stop the others.

    Per key: one read of the latest envelope, and for a new or changed key one
    seal (one call per wrapper) and one create-only write. An unchanged key
    costs the read only. For a bulk run the team's prefix is listed once
    first, and a key the listing does not hold skips the read: a new key then
    costs exactly one wrapper call and one write.

    ``keys`` may be released (``scan_trust_dir(..., keep_bytes=False)``): each
    file is then read again from ``trust_dir`` only when its envelope is sealed,
    so memory holds the keys in flight.
    """
    if trust_dir is None and any(k.is_released for k in keys):
        raise ValueError("released key files need the trust directory to be read again")
    session.access().precheck("backup", team)  # policy (teams.md): before any request
    denied = session.access().refusals("backup", _addresses(team, keys))
    store = session.store()  # open the store and the wrappers once, before any thread starts
    wrappers: Sequence[Wrapper] = [] if dry_run else session.wrappers()
    if not dry_run:
        session.sealer()  # and the sealing key: a bad one fails before anything is written
    session.sealers()
    if threshold is not None and not dry_run and not 2 <= threshold <= len(wrappers):
        raise UsageError(f"--threshold {threshold} needs at least {threshold} wrappers; "
                         f"{len(wrappers)} configured", hint="pass --wrapper once per wrapper")
    listed = set(store.list(team_prefix(team))) if len(keys) >= LISTING_THRESHOLD else None

    def one(key: KeyFile) -> BackupOutcome:
        address = KeyAddress(team, key.gun, key.role, key.key_id)
        if address in denied:  # refused by the policy: never read nor written
            return BackupOutcome(key, address, FAILED, error=denied[address])
        try:
            if listed is not None and address.object_name not in listed:
                if dry_run:
                    return BackupOutcome(key, address, WOULD_WRITE)
                try:
                    return _write(session, key, address, wrappers, replaces=None,
                                  threshold=threshold, trust_dir=trust_dir)
                except ChangedOnDiskError:
                    raise
                except ConflictError:
                    pass  # created since the listing: compare with it below
            return _backup_one(session, key, address, wrappers, dry_run, threshold, trust_dir)
        except KeyvaultError as exc:
            return BackupOutcome(key, address, FAILED, error=exc)

    outcomes: list[BackupOutcome] = []
    for outcome in bounded_map(one, keys, concurrency):
        outcomes.append(outcome)
        if on_done:
            on_done(outcome)
    if not dry_run:
        session.highwater().save()
        _audit(session, team, outcomes)
    return outcomes


def _addresses(team: str, keys: Sequence[KeyFile]) -> list[KeyAddress]:
    found = []
    for key in keys:
        with contextlib.suppress(KeyvaultError):  # an invalid one fails in its own turn
            found.append(KeyAddress(team, key.gun, key.role, key.key_id))
    return found


def _audit(session: Session, team: str, outcomes: Sequence[BackupOutcome]) -> None:
    written = [o for o in outcomes if o.action in (CREATED, UPDATED)]
    failed = [o for o in outcomes if o.action == FAILED]
    outcome = "failed" if failed and not written else "partial" if failed else "ok"
    detail = (f"{len(written)} written, {len(outcomes) - len(written) - len(failed)} unchanged, "
              f"{len(failed)} failed")
    if failed and failed[0].error is not None:
        detail += f"; first failure: {failed[0].error.kind}"
    # A backup that wrote nothing (all unchanged) writes no checkpoint either.
    session.record("backup", outcome, team=team, detail=detail, anchor=bool(written),
                   keys=[key_ref(o.address) for o in written + failed])


def _backup_one(session: Session, key: KeyFile, address: KeyAddress,
                wrappers: Sequence[Wrapper], dry_run: bool,
                threshold: int | None, trust_dir: Path | None, *,
                may_retry: bool = True) -> BackupOutcome:
    store = session.store()
    try:
        obj = store.read(address.object_name)
    except NotFoundError:
        obj = None
    try:
        raw = None if obj is None else parse_stored(address, obj)
    except IntegrityError as exc:  # not even an envelope: seal a good one on top of it
        assert obj is not None
        return _rewrite(session, key, address, wrappers, dry_run, threshold, trust_dir,
                        obj.version, Chain(next_number(session, address),
                                           hashlib.sha256(obj.data).hexdigest()), exc)
    if raw is None:
        if dry_run:
            return BackupOutcome(key, address, WOULD_WRITE)
        try:
            return _write(session, key, address, wrappers, replaces=None, threshold=threshold,
                          trust_dir=trust_dir)
        except ChangedOnDiskError:
            raise
        except ConflictError:
            if not may_retry:
                raise
            # Created by another writer since our read: compare with what it wrote, once.
            return _backup_one(session, key, address, wrappers, dry_run, threshold, trust_dir,
                               may_retry=False)
    reader = session.reader()
    try:
        current = reader.authenticate(raw)
        chain = current.envelope.chain
        if chain is None:
            raise IntegrityError("the latest version is unsigned (format v1)")
        reader.highwater.check(address.object_name, chain.sequence, current.digest,
                               describe(address))
    except IntegrityError as exc:  # tampered, unsigned, foreign or rolled back: seal anew
        return _rewrite(session, key, address, wrappers, dry_run, threshold, trust_dir,
                        raw.version, Chain(next_number(session, address), raw.digest), exc)
    reader.highwater.note(address.object_name, chain.sequence, current.digest)
    if hmac.compare_digest(current.envelope.header.sha256, key.sha256):
        return BackupOutcome(key, address, UNCHANGED, current.version)
    if dry_run:
        return BackupOutcome(key, address, WOULD_WRITE)
    return _write(session, key, address, wrappers, replaces=current.version,
                  threshold=threshold, trust_dir=trust_dir,
                  chain=Chain(chain.sequence + 1, current.digest))


def _rewrite(session: Session, key: KeyFile, address: KeyAddress, wrappers: Sequence[Wrapper],
             dry_run: bool, threshold: int | None, trust_dir: Path | None, replaces: str,
             chain: Chain, why: IntegrityError) -> BackupOutcome:
    """A fresh version on top of a latest one that could not be trusted; say why."""
    warning = (f"the latest stored version of {describe(address)} was not trusted "
               f"({why.message}); " + ("a fresh version would be sealed on top" if dry_run
                                       else "sealed a fresh version on top"))
    if dry_run:
        return BackupOutcome(key, address, WOULD_WRITE, warning=warning)
    outcome = _write(session, key, address, wrappers, replaces=replaces, threshold=threshold,
                     trust_dir=trust_dir, chain=chain)
    return replace(outcome, warning=warning)


def next_number(session: Session, address: KeyAddress) -> int:
    """A number above every version this machine saw and every version the store lists."""
    seen = session.highwater().get(address.object_name)
    count = len(session.store().versions(address.object_name))
    return max(seen.sequence if seen else 0, count) + 1


def _write(session: Session, key: KeyFile, address: KeyAddress, wrappers: Sequence[Wrapper],
           *, replaces: str | None, threshold: int | None,
           trust_dir: Path | None, chain: Chain = FIRST) -> BackupOutcome:
    """Seal and write: create-only (``replaces=None``) or a new version on top of one."""
    data = key.data if trust_dir is None else read_key_bytes(trust_dir, key)
    header = new_header(address=address, algorithm=key.algorithm, source_name=key.relpath,
                        source_mode=key.mode, data=data)
    payload = seal(header, data, wrappers, threshold, sealer=session.sealer(),
                   chain=chain).to_bytes()
    version = session.store().write(address.object_name, payload, replaces=replaces)
    session.highwater().note(address.object_name, chain.sequence,
                             hashlib.sha256(payload).hexdigest())
    return BackupOutcome(key, address, CREATED if replaces is None else UPDATED, version)
