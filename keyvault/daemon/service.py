"""The daemon's loop: file events -> journal -> backup, with backoff and reconciliation.

One thread does all the work (journal, trust reads, backups); the watcher and
the health server run beside it and only hand it events or read its numbers.

- **Events** become journal rows at once (so a crash right after an event
  loses nothing), due ``debounce`` seconds after the last event for that file.
- **Due rows** are read through the trust reader (``scan_trust_dir``: never
  follows a symlink, refuses what is not a key, so a half-written file is
  not taken for one), checked against T14 (owned by the daemon's user, not
  group- or world-writable), and backed up with ``backup_keys``, which is
  idempotent: an unchanged key costs at most one read and no write.
- **Failures** (store or wrapper down, disk full...) keep the row and retry
  it with exponential backoff and jitter; watching goes on meanwhile.
- **Trust pins**: a GUN's ``tuf/<gun>/metadata/root.json`` written (notary
  rotated the root, or pulled a new GUN) is backed up ``debounce`` seconds
  later through backup's code, as a key batch carries its GUNs' pins. Not
  journaled: a failure is logged and the next reconciliation carries it.
- **Reconciliation**, at start and every ``reconcile_every`` seconds,
  compares the trust directories with the store (a dry run of the same
  backup) and journals whatever is missing: events missed while the daemon
  was down are not lost. It lists the team once (a page per 1,000 objects);
  a key whose listed latest version is the one this daemon sealed or verified
  is not read (keyvault.known; docs/performance.md has the fleet arithmetic).
- **SIGTERM/SIGINT** set a flag: the backup in flight finishes (its row is in
  the journal until it has), then the daemon exits 0.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import random
import signal
import stat
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from keyvault import __version__, fsutil
from keyvault.config import Config
from keyvault.daemon.health import DEFAULT_LISTEN, HealthServer, Metrics, parse_listen
from keyvault.daemon.journal import Entry, Journal, Sighting
from keyvault.daemon.lock import acquire, private_dir
from keyvault.daemon.log import EventLog
from keyvault.daemon.watcher import KeyEvent, PinEvent, TrustEvent, TrustWatcher
from keyvault.errors import BackendUnavailableError, KeyvaultError, LocalIOError
from keyvault.names import kind_of
from keyvault.ops.backup import (
    WOULD_WRITE,
    BackupOutcome,
    TeamListing,
    backup_keys,
    select_certs,
)
from keyvault.ops.selection import Selection
from keyvault.ops.session import Session
from keyvault.timefmt import iso_utc_or_none
from keyvault.trust.certpins import CertFile
from keyvault.trust.layout import place
from keyvault.trust.model import KeyFile
from keyvault.trust.pins import scan_pins
from keyvault.trust.scan import scan_trust_dir

RUNTIME_NAME = "daemon.json"
#: Error kinds that are expected to heal by themselves (logged as warnings, not errors).
TRANSIENT = frozenset({"unavailable", "io", "conflict"})


#: How often the loop looks at the stop flag while idle (a signal cannot wake it safely).
STOP_CHECK_S = 0.5
#: A second reconciliation this long after start covers keys written before the watch was live.
WATCH_SETTLE_S = 1.0


@dataclass(frozen=True)
class DaemonOptions:
    trust_dirs: tuple[Path, ...]
    listen: str = DEFAULT_LISTEN
    reconcile_every: float = 600.0
    debounce: float = 0.25
    retry_base: float = 1.0
    retry_max: float = 300.0
    heartbeat: float = 15.0
    stall_after: float = 120.0  # seconds without a turn of the loop: /healthz says stalled


def backoff(attempts: int, base: float, cap: float, rng: random.Random) -> float:
    """Exponential backoff with jitter: ``min(cap, base * 2**attempts)`` times 0.5-1.0."""
    delay = min(cap, base * (2 ** min(attempts, 30)))
    return float(delay * rng.uniform(0.5, 1.0))


def t14_refusal(trust_dir: Path, key: KeyFile, euid: int) -> tuple[str, str] | None:
    """Why a key file must not be backed up (T14), or None: (reason code, sentence)."""
    if key.mode & 0o022:
        return (
            "writable",
            f"group- or world-writable (mode {key.mode:04o}): someone else "
            "could have planted or changed it; chmod 600 it if it is yours",
        )
    try:
        st = os.lstat(trust_dir / "private" / key.relpath)
    except OSError:
        return ("gone", "removed before it could be checked")
    if stat.S_ISLNK(st.st_mode):
        return ("symlink", "replaced by a symbolic link (never followed)")
    if st.st_uid != euid:
        return (
            "foreign-owner",
            f"owned by uid {st.st_uid}, not by uid {euid} who runs the "
            "daemon: someone else could have planted it",
        )
    if stat.S_IMODE(st.st_mode) & 0o022:
        return ("writable", f"group- or world-writable (mode {stat.S_IMODE(st.st_mode):04o})")
    return None


def key_id_of(relpath: str) -> str | None:
    return place(tuple(relpath.split("/"))).key_id


class Daemon:
    """Runs until SIGTERM/SIGINT (or :meth:`stop`); :meth:`run` returns the exit code."""

    def __init__(
        self,
        config: Config,
        options: DaemonOptions,
        log: EventLog | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        self.options = options
        self.log = log or EventLog()
        self._rng = rng or random.Random()  # noqa: S311 - retry jitter, not a secret
        self._dirs = [str(d.absolute()) for d in options.trust_dirs]
        self._events: queue.Queue[list[TrustEvent] | None] = queue.Queue()
        #: Pins written under tuf/, by trust directory: (due time, GUNs), debounced.
        self._pins_due: dict[str, tuple[float, set[str]]] = {}
        self._stopping = threading.Event()
        self._signal_name: str | None = None
        self._euid = os.geteuid()
        self._watched: dict[str, int] = {}
        #: Per trust directory, the key files the store holds as they are: found so by the
        #: last reconciliation (the start-up check too), or backed up by this daemon since.
        self._in_store: dict[str, set[str]] = {}
        self._refused_once: set[tuple[str, str, str]] = set()
        self._store_uri: str | None = None
        self._last_success: float | None = None
        self._last_error: str | None = None
        self._pending: tuple[int, float | None, int] = (0, None, 0)  # count, oldest, failing
        self._heartbeat = time.monotonic()
        self._started = time.time()
        self.address: str | None = None
        self.metrics: Metrics | None = None
        self._journal: Journal | None = None
        self._watcher: TrustWatcher | None = None
        self._session: Session | None = None

    # -- lifecycle ----------------------------------------------------------------------------

    def stop(self) -> None:
        self._stopping.set()
        self._events.put(None)

    def run(self) -> int:
        host, port = parse_listen(self.options.listen)
        self.config.require_store()
        self.config.require_wrappers()
        state_dir = private_dir(self.config.paths.state_dir)
        lock = acquire(state_dir)
        previous = self._install_signals()
        server: HealthServer | None = None
        try:
            self._journal = Journal.open(state_dir)
            if self._journal.moved_aside is not None:
                self.log.error(
                    "journal-corrupt",
                    moved_to=str(self._journal.moved_aside),
                    detail="started a fresh journal; reconciliation re-finds every key",
                )
            self.metrics = Metrics()
            server = HealthServer(host, port, self.metrics, self.health)
            self.address = server.address
            self._session = Session(self.config)
            self._open_backends()
            server.start()
            self._write_runtime(state_dir)
            self._watcher = TrustWatcher(self._dirs, self._events.put, self.log)
            self._watcher.start()
            self.log.info(
                "started",
                pid=os.getpid(),
                version=__version__,
                trust_dirs=self._dirs,
                watching=list(self._watcher_dirs()),
                store=self._store_uri,
                team=self.config.team,
                listen=self.address,
                debounce_s=self.options.debounce,
                reconcile_every_s=self.options.reconcile_every,
            )
            self._loop()
            if self._signal_name:
                self.log.info("stopping", signal=self._signal_name)
            pending = self._pending[0]
            self.log.info("stopped", pending=pending)
            return 0
        finally:
            if self._watcher is not None:
                self._watcher.stop()
            if server is not None:
                server.stop()
            if self._session is not None:
                self._session.close()
            if self._journal is not None:
                self._journal.close()
            with contextlib.suppress(OSError):
                (state_dir / RUNTIME_NAME).unlink()
            self._restore_signals(previous)
            lock.release()

    def _watcher_dirs(self) -> Sequence[str]:
        return [d for d in self._dirs if Path(d).is_dir()]

    def _open_backends(self) -> None:
        """Fail fast on configuration errors; an unreachable backend is only a warning."""
        assert self._session is not None
        try:
            self._store_uri = self._session.store().uri
            self._session.wrappers()
        except BackendUnavailableError as exc:
            self.log.warning(
                "backend-unavailable",
                kind=exc.kind,
                message=exc.message,
                detail="keeps watching; backups are journaled and retried",
            )
            self._session.close()

    def _install_signals(self) -> dict[int, Any]:
        if threading.current_thread() is not threading.main_thread():
            return {}
        previous: dict[int, Any] = {}

        def on_signal(signum: int, frame: FrameType | None) -> None:
            # Only a flag: a handler runs between two bytecodes of the main thread, which
            # may hold the log's or the event queue's lock; taking either would deadlock.
            self._signal_name = signal.Signals(signum).name
            self._stopping.set()

        for signum in (signal.SIGTERM, signal.SIGINT):
            previous[signum] = signal.signal(signum, on_signal)
        return previous

    @staticmethod
    def _restore_signals(previous: dict[int, Any]) -> None:
        for signum, handler in previous.items():
            signal.signal(signum, handler)

    def _write_runtime(self, state_dir: Path) -> None:
        """Where the health endpoint is, for ``keyvault daemon status`` (0600, atomic)."""
        doc = {
            "pid": os.getpid(),
            "listen": self.address,
            "started": self._started,
            "trust_dirs": self._dirs,
        }
        try:
            fsutil.write_file_atomic(
                state_dir, RUNTIME_NAME, json.dumps(doc).encode(), mode=0o600, exclusive=False
            )
        except KeyvaultError as exc:
            self.log.warning("runtime-file", detail=f"cannot write {RUNTIME_NAME}: {exc.message}")

    # -- the loop -----------------------------------------------------------------------------

    def _loop(self) -> None:
        assert self._journal is not None and self._watcher is not None
        reconcile_at = time.monotonic()
        # The OS watch is set up in the watcher thread a moment after start, with no signal
        # when it is live: a key written in between has no event, so look once more then.
        settle_at: float | None = reconcile_at + WATCH_SETTLE_S
        refresh_at = time.monotonic() + self.options.heartbeat
        self._refresh_pending()
        while not self._stopping.is_set():
            self._take_events(self._timeout(min(reconcile_at, settle_at or reconcile_at)))
            if self._stopping.is_set():
                break
            now = time.monotonic()
            if settle_at is not None and now >= settle_at:
                settle_at, reconcile_at = None, now
            self._heartbeat = now
            if now >= refresh_at:
                refresh_at = now + self.options.heartbeat
                if self._watcher.refresh():
                    self.log.info("watching", trust_dirs=list(self._watcher_dirs()))
                    reconcile_at = now  # keys made before the watch began
            if now >= reconcile_at:
                reconcile_at = now + self.options.reconcile_every
                if not self._guard(self._reconcile):
                    reconcile_at = now + self.options.retry_max
            self._guard(self._process_due)
            self._refresh_pending()

    def _guard(self, step: Any) -> bool:
        """Run one step; a failure is logged and retried later, never ends the daemon."""
        try:
            step()
            return True
        except KeyvaultError as exc:
            self._last_error = exc.kind
            self.log.error(
                "step-failed",
                step=step.__name__.strip("_"),
                kind=exc.kind,
                message=exc.message,
                hint=exc.hint,
            )
        except Exception as exc:  # a bug: name it, show no values (they may be secret)
            self._last_error = "internal"
            self.log.error(
                "internal-error", step=step.__name__.strip("_"), error=type(exc).__name__
            )
        self._stopping.wait(min(self.options.retry_base, 5.0))
        return False

    def _timeout(self, reconcile_at: float) -> float:
        assert self._journal is not None
        # At most STOP_CHECK_S between looks at the stop flag a signal handler sets.
        waits = [self.options.heartbeat, reconcile_at - time.monotonic(), STOP_CHECK_S]
        next_due = self._journal.next_due()
        if next_due is not None:
            waits.append(next_due - time.time())
        waits += [due - time.time() for due, _ in self._pins_due.values()]
        return max(0.0, min(waits))

    def _take_events(self, timeout: float) -> None:
        assert self._journal is not None
        try:
            first = self._events.get(timeout=timeout) if timeout > 0 else self._events.get_nowait()
        except queue.Empty:
            return
        batches = [first]
        with contextlib.suppress(queue.Empty):
            while True:
                batches.append(self._events.get_nowait())
        found = {e: None for batch in batches if batch for e in batch}
        now = time.time()
        ready = now + self.options.debounce
        for pin in (e for e in found if isinstance(e, PinEvent)):
            guns = self._pins_due.get(pin.trust_dir, (ready, set()))[1] | {pin.gun}
            self._pins_due[pin.trust_dir] = (ready, guns)  # debounced: due after the last
            self.log.info("detected", trust_dir=pin.trust_dir, kind="pin", gun=pin.gun)
        events = [e for e in found if isinstance(e, KeyEvent)]
        if not events:
            return
        sightings = [Sighting(e.trust_dir, e.relpath, key_id_of(e.relpath), ready) for e in events]
        try:
            self._journal.note(sightings, now)
        except LocalIOError as exc:  # reconciliation will find these files again
            self._last_error = exc.kind
            self.log.error(
                "journal-failed", kind=exc.kind, message=exc.message, dropped_events=len(sightings)
            )
            return
        for s in sightings:
            self.log.info("detected", trust_dir=s.trust_dir, path=s.relpath, key_id=s.key_id)

    def _refresh_pending(self) -> None:
        assert self._journal is not None and self.metrics is not None
        self._pending = self._journal.stats()
        self.metrics.set_pending(*self._pending)
        self.metrics.keys_watched.set(sum(self._watched.values()))
        self.metrics.keys_backed_up.set(self._backed_up())

    def _backed_up(self) -> int:
        return sum(len(paths) for paths in self._in_store.values())

    # -- backups ------------------------------------------------------------------------------

    def _process_due(self) -> None:
        assert self._journal is not None
        now = time.time()
        for trust_dir, (ready, guns) in list(self._pins_due.items()):
            if ready <= now and not self._stopping.is_set():
                del self._pins_due[trust_dir]  # a failure is logged; reconciliation retries
                self._back_up_pins(Path(trust_dir), sorted(guns))
        due = self._journal.due(now)
        by_dir: dict[str, list[Entry]] = {}
        for entry in due:
            by_dir.setdefault(entry.trust_dir, []).append(entry)
        for trust_dir, entries in by_dir.items():
            if self._stopping.is_set():
                return  # still journaled: done after the restart
            self._back_up_dir(trust_dir, entries)

    def _back_up_dir(self, trust_dir: str, entries: list[Entry]) -> None:
        assert self._journal is not None
        try:  # bytes are not kept: each key due is read again, checked, when it is sealed
            result = scan_trust_dir(Path(trust_dir), keep_bytes=False)
        except KeyvaultError as exc:
            for entry in entries:
                self._retry(entry, exc, None)
            return
        self._watched[trust_dir] = len(result.keys)
        keys = {k.relpath: k for k in result.keys}
        problems = {p.relpath: p for p in result.problems}
        batch: list[tuple[Entry, KeyFile]] = []
        for entry in entries:
            key = keys.get(entry.relpath)
            if key is None:
                problem = problems.get(entry.relpath)
                if problem is not None:
                    self._refuse(trust_dir, entry.relpath, problem.code, problem.reason)
                else:
                    self.log.warning(
                        "gone",
                        trust_dir=trust_dir,
                        path=entry.relpath,
                        key_id=entry.key_id,
                        detail="the file was removed or renamed before it could be backed up",
                    )
                self._journal.done(entry)
                continue
            refusal = t14_refusal(Path(trust_dir), key, self._euid)
            if refusal is not None:
                self._refuse(trust_dir, entry.relpath, *refusal)
                self._journal.done(entry)
                continue
            batch.append((entry, key))
        if batch:
            self._back_up(Path(trust_dir), batch)

    def _back_up(self, trust_dir: Path, batch: list[tuple[Entry, KeyFile]]) -> None:
        assert self._session is not None
        try:
            outcomes = backup_keys(
                self._session,
                [k for _, k in batch],
                team=self.config.team,
                concurrency=self.config.concurrency,
                trust_dir=trust_dir,
            )
        except KeyvaultError as exc:  # the store or a wrapper could not even be opened
            self._session.close()
            for entry, key in batch:
                self._retry(entry, exc, key)
            return
        self._store_uri = self._store_uri or self._session.store().uri
        for (entry, key), outcome in zip(batch, outcomes, strict=True):
            if outcome.failed and outcome.error is not None:  # incl. not attempted
                self._retry(entry, outcome.error, key)
            else:
                self._succeeded(entry, outcome)
        if any(o.failed for o in outcomes):
            self._session.close()  # fresh clients, and a closed breaker, on the next attempt
        if all(o.failed for o in outcomes):
            return
        self._back_up_pins(trust_dir, sorted({k.gun for _, k in batch if k.gun is not None}))

    def _back_up_pins(
        self, trust_dir: Path, guns: list[str] | None, listing: TeamListing | None = None
    ) -> None:
        """The trust pins of these GUNs (all, for None) travel with their keys, through
        backup's own code. Not journaled: the next backup or reconciliation carries a pin
        whose backup failed (an unchanged one costs at most a read)."""
        assert self._session is not None
        pins, problems = scan_pins(trust_dir, guns) if guns != [] else ([], [])
        for problem in problems:
            self._refuse(str(trust_dir), problem.path, "bad-pin", problem.reason, once=True)
        certs: list[CertFile] = []
        if guns is None:  # reconciliation: the CA files the notary config pins travel too
            certs, bad = select_certs(self.config.env, [], Selection())
            for problem in bad:
                self._refuse(str(trust_dir), problem.path, "bad-cert", problem.reason, once=True)
        if not pins and not certs:
            return
        try:
            outcomes = backup_keys(
                self._session,
                [],
                team=self.config.team,
                concurrency=self.config.concurrency,
                trust_dir=trust_dir,
                pins=pins,
                certs=certs,
                listing=listing,
            )
        except KeyvaultError as exc:
            self.log.warning(
                "pin-backup-failed", trust_dir=str(trust_dir), kind=exc.kind, message=exc.message
            )
            return
        for outcome in outcomes:
            if outcome.error is not None:
                self.log.warning(
                    "pin-backup-failed",
                    trust_dir=str(trust_dir),
                    gun=outcome.address.gun,
                    kind=outcome.error.kind,
                    message=outcome.error.message,
                )
            else:
                self.log.info(
                    "backed-up",
                    action=outcome.action,
                    trust_dir=str(trust_dir),
                    path=outcome.key.relpath,
                    kind=kind_of(outcome.address),
                    gun=outcome.address.gun,
                    object=outcome.address.object_name,
                    version=outcome.version,
                )

    def _succeeded(self, entry: Entry, outcome: BackupOutcome) -> None:
        assert self._journal is not None and self.metrics is not None
        now = time.time()
        self._journal.done(entry)
        self._in_store.setdefault(entry.trust_dir, set()).add(entry.relpath)
        self._last_success = now
        self.metrics.last_success.set(now)
        self.metrics.backups.labels(outcome.action).inc()
        self.metrics.latency.observe(max(0.0, now - entry.first_seen))
        self.log.info(
            "backed-up",
            action=outcome.action,
            trust_dir=entry.trust_dir,
            path=entry.relpath,
            key_id=outcome.address.key_id,
            role=outcome.address.role,
            gun=outcome.address.gun,
            object=outcome.address.object_name,
            version=outcome.version,
            attempts=entry.attempts + 1,
            latency_s=round(max(0.0, now - entry.first_seen), 3),
        )
        if outcome.warning:  # the store held a version no trusted sealer wrote: say so
            self.log.warning(
                "untrusted-version-replaced",
                key_id=outcome.address.key_id,
                role=outcome.address.role,
                gun=outcome.address.gun,
                object=outcome.address.object_name,
                message=outcome.warning,
            )

    def _retry(self, entry: Entry, exc: KeyvaultError, key: KeyFile | None) -> None:
        assert self._journal is not None and self.metrics is not None
        delay = backoff(entry.attempts, self.options.retry_base, self.options.retry_max, self._rng)
        self._journal.retry(entry, time.time() + delay, exc.kind)
        self._last_error = exc.kind
        self.metrics.failures.labels(exc.kind).inc()
        level = "warning" if exc.kind in TRANSIENT else "error"
        self.log.write(
            level,
            "backup-failed",
            {
                "trust_dir": entry.trust_dir,
                "path": entry.relpath,
                "key_id": entry.key_id,
                "role": key.role if key else None,
                "gun": key.gun if key else None,
                "kind": exc.kind,
                "message": exc.message,
                "hint": exc.hint,
                "attempt": entry.attempts + 1,
                "retry_in_s": round(delay, 2),
            },
        )

    def _refuse(
        self, trust_dir: str, relpath: str, code: str, reason: str, *, once: bool = False
    ) -> None:
        assert self.metrics is not None
        if once:
            if (trust_dir, relpath, code) in self._refused_once:
                return
            self._refused_once.add((trust_dir, relpath, code))
        self.metrics.refused.labels(code).inc()
        self.log.warning("refused", trust_dir=trust_dir, path=relpath, reason=code, detail=reason)

    # -- reconciliation -----------------------------------------------------------------------

    def _reconcile(self) -> None:
        assert self._journal is not None and self._session is not None
        assert self.metrics is not None
        now = time.time()
        sightings: list[Sighting] = []
        failed = False
        listing = TeamListing()  # one listing of the team for the whole reconciliation
        for trust_dir in self._dirs:
            try:  # a dry run compares digests only: no key bytes kept
                result = scan_trust_dir(Path(trust_dir), keep_bytes=False)
            except KeyvaultError as exc:
                self._watched[trust_dir] = 0
                self._in_store[trust_dir] = set()
                self._refuse(trust_dir, ".", exc.kind, exc.message, once=True)
                continue
            self._watched[trust_dir] = len(result.keys)
            for problem in result.problems:
                self._refuse(trust_dir, problem.relpath, problem.code, problem.reason, once=True)
            keys = []
            for key in result.keys:
                refusal = t14_refusal(Path(trust_dir), key, self._euid)
                if refusal is None:
                    keys.append(key)
                else:
                    self._refuse(trust_dir, key.relpath, *refusal, once=True)
            missing, ok = self._missing(Path(trust_dir), keys, listing)
            failed = failed or not ok
            if ok:  # every pin of the trust directory
                self._back_up_pins(Path(trust_dir), None, listing)
            gone = {k.relpath for k in missing}
            self._in_store[trust_dir] = {k.relpath for k in keys} - gone
            sightings += [Sighting(trust_dir, k.relpath, k.key_id, now) for k in missing]
        self._journal.note(sightings, now)
        outcome = "failed" if failed else "ok"
        self.metrics.reconciliations.labels(outcome).inc()
        self.log.info(
            "reconciled",
            outcome=outcome,
            keys=sum(self._watched.values()),
            backed_up=self._backed_up(),
            to_back_up=len(sightings),
        )

    def _missing(
        self, trust_dir: Path, keys: list[KeyFile], listing: TeamListing
    ) -> tuple[list[KeyFile], bool]:
        """Keys the store lacks (or holds older bytes of): a dry run of the same backup.

        When the store cannot answer, every key counts as missing: the journal
        then retries them all (unchanged ones cost at most a read) once it is back.
        """
        assert self._session is not None
        if not keys:
            return [], True
        try:
            outcomes = backup_keys(
                self._session,
                keys,
                team=self.config.team,
                dry_run=True,
                concurrency=self.config.concurrency,
                trust_dir=trust_dir,
                listing=listing,
            )
        except KeyvaultError as exc:
            self._session.close()
            self._last_error = exc.kind
            self.log.warning("reconcile-failed", kind=exc.kind, message=exc.message)
            return keys, False
        missing = [o.key for o in outcomes if o.action == WOULD_WRITE or o.failed]
        for untrusted in (o for o in outcomes if o.warning):
            self.log.warning(
                "untrusted-version-found",
                key_id=untrusted.address.key_id,
                role=untrusted.address.role,
                gun=untrusted.address.gun,
                object=untrusted.address.object_name,
                message=untrusted.warning,
            )
        failures = [o for o in outcomes if o.failed]
        if failures and failures[0].error is not None:
            error = failures[0].error
            self._last_error = error.kind
            self.log.warning(
                "reconcile-failed",
                kind=error.kind,
                message=error.message,
                keys_unchecked=len(failures),
            )
        return missing, not failures

    # -- health -------------------------------------------------------------------------------

    def health(self) -> tuple[int, dict[str, Any]]:
        """``/healthz``: 200 while the loop turns (status ok or degraded), 503 if it stalled."""
        loop_age = time.monotonic() - self._heartbeat
        stalled = loop_age > self.options.stall_after
        count, oldest, failing = self._pending
        status = "stalled" if stalled else "degraded" if failing else "ok"
        now = time.time()
        doc: dict[str, Any] = {
            "status": status,
            "pid": os.getpid(),
            "version": __version__,
            "uptime_s": round(now - self._started, 1),
            "trust_dirs": self._dirs,
            "watching": list(self._watcher.watching) if self._watcher else [],
            "store": self._store_uri,
            "team": self.config.team,
            "keys_watched": sum(self._watched.values()),
            "keys_backed_up": self._backed_up(),
            "keys_pending": count,
            "keys_failing": failing,
            "oldest_pending_age_s": round(now - oldest, 1) if oldest is not None else None,
            "last_success": iso_utc_or_none(self._last_success),
            "last_error": self._last_error,
            "loop_age_s": round(loop_age, 1),
        }
        return (503 if stalled else 200), doc
