"""The durable queue of pending backups: SQLite in the user's state directory.

One row per key file that still has to be backed up: the trust directory,
the path under ``private/``, the key ID its name gives, when it was first
seen, how many attempts failed and when to try next. Never key bytes, never a
digest of them: the row says *which* file to back up, the file itself is read
again when its turn comes.

Durability: WAL mode with ``synchronous=FULL``, one transaction per change,
so a row is on disk before the daemon acts on it and a SIGKILL at any
instant leaves either the old or the new state. A database that SQLite
cannot open is moved aside (``journal.db.corrupt-<time>``) and a fresh one
started: reconciliation finds everything it held again.

``generation`` counts the events seen for a row. A backup removes the row
only if no newer event arrived while it ran; otherwise the file changed
under it and is backed up once more.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import stat
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from keyvault.errors import LocalIOError
from keyvault.fsutil import translate_os_error

JOURNAL_NAME = "journal.db"
SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS pending (
    trust_dir  TEXT    NOT NULL,
    relpath    TEXT    NOT NULL,
    key_id     TEXT,
    first_seen REAL    NOT NULL,
    generation INTEGER NOT NULL DEFAULT 1,
    attempts   INTEGER NOT NULL DEFAULT 0,
    next_try   REAL    NOT NULL,
    last_error TEXT,
    PRIMARY KEY (trust_dir, relpath)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS pending_next_try ON pending (next_try);
"""


@dataclass(frozen=True)
class Entry:
    """One pending backup, as read from the journal."""

    trust_dir: str
    relpath: str
    key_id: str | None
    first_seen: float
    generation: int
    attempts: int
    next_try: float
    last_error: str | None


@dataclass(frozen=True)
class Sighting:
    """A key file that needs a backup: from a file event or from reconciliation."""

    trust_dir: str
    relpath: str
    key_id: str | None
    ready_at: float  # not before: now + debounce for events, now for reconciliation


class Journal:
    """The pending-backup queue. Used from one thread (the daemon's loop)."""

    def __init__(self, path: Path, conn: sqlite3.Connection) -> None:
        self.path = path
        self._conn = conn
        #: Where a corrupt database was moved when this one was started afresh.
        self.moved_aside: Path | None = None

    @classmethod
    def open(cls, state_dir: Path) -> Journal:
        """Open (creating 0600 if needed) ``<state_dir>/journal.db``."""
        path = state_dir / JOURNAL_NAME
        _prepare_file(path)
        try:
            return cls(path, _connect(path))
        except sqlite3.DatabaseError:
            aside = path.with_name(f"{JOURNAL_NAME}.corrupt-{int(time.time())}")
            for suffix in ("", "-wal", "-shm"):
                with contextlib.suppress(FileNotFoundError):
                    Path(f"{path}{suffix}").replace(f"{aside}{suffix}")
            _prepare_file(path)
            try:
                journal = cls(path, _connect(path))
            except sqlite3.DatabaseError as exc:
                raise LocalIOError(
                    f"cannot open the daemon journal {path}: {type(exc).__name__}"
                ) from None
            journal.moved_aside = aside
            return journal

    def close(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self._conn.close()

    # -- changes: one transaction each ------------------------------------------------------

    def note(self, sightings: Iterable[Sighting], now: float) -> int:
        """Record key files to back up; a row already there gets a new generation.

        A new sighting never brings a retry forward: if the store is down the
        row keeps its backoff, only the debounce can push it later.
        """
        rows = [(s.trust_dir, s.relpath, s.key_id, now, s.ready_at) for s in sightings]
        if not rows:
            return 0
        with self._tx() as conn:
            conn.executemany(
                "INSERT INTO pending (trust_dir, relpath, key_id, first_seen, next_try) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (trust_dir, relpath) DO UPDATE SET "
                "generation = generation + 1, key_id = excluded.key_id, "
                "next_try = max(next_try, excluded.next_try)",
                rows,
            )
        return len(rows)

    def done(self, entry: Entry) -> bool:
        """Remove the row unless a newer event arrived meanwhile; True if removed."""
        with self._tx() as conn:
            cur = conn.execute(
                "DELETE FROM pending WHERE trust_dir = ? AND relpath = ? AND generation = ?",
                (entry.trust_dir, entry.relpath, entry.generation),
            )
            return cur.rowcount == 1

    def retry(self, entry: Entry, next_try: float, error_kind: str) -> None:
        """Count a failed attempt and schedule the next one."""
        with self._tx() as conn:
            conn.execute(
                "UPDATE pending SET attempts = attempts + 1, next_try = ?, last_error = ? "
                "WHERE trust_dir = ? AND relpath = ?",
                (next_try, error_kind[:40], entry.trust_dir, entry.relpath),
            )

    # -- queries ----------------------------------------------------------------------------

    def due(self, now: float, limit: int = 256) -> list[Entry]:
        rows = self._conn.execute(
            "SELECT trust_dir, relpath, key_id, first_seen, generation, attempts, next_try, "
            "last_error FROM pending WHERE next_try <= ? ORDER BY next_try LIMIT ?",
            (now, limit),
        ).fetchall()
        return [Entry(*row) for row in rows]

    def entries(self) -> list[Entry]:
        rows = self._conn.execute(
            "SELECT trust_dir, relpath, key_id, first_seen, generation, attempts, next_try, "
            "last_error FROM pending ORDER BY trust_dir, relpath"
        ).fetchall()
        return [Entry(*row) for row in rows]

    def next_due(self) -> float | None:
        (value,) = self._conn.execute("SELECT min(next_try) FROM pending").fetchone()
        return float(value) if value is not None else None

    def stats(self) -> tuple[int, float | None, int]:
        """(pending rows, oldest first_seen, rows that failed at least once)."""
        count, oldest, failing = self._conn.execute(
            "SELECT count(*), min(first_seen), count(CASE WHEN attempts > 0 THEN 1 END) "
            "FROM pending"
        ).fetchone()
        return int(count), (float(oldest) if oldest is not None else None), int(failing)

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        try:
            with self._conn:
                yield self._conn
        except sqlite3.OperationalError as exc:  # disk full, read-only, locked
            raise LocalIOError(
                f"cannot write the daemon journal {self.path}: {exc}",
                hint="check free space and permissions of the state directory",
            ) from None


def _prepare_file(path: Path) -> None:
    """Create the database file 0600 (never through a symlink) before SQLite opens it."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise translate_os_error(exc, path, "open the daemon journal") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise LocalIOError(f"daemon journal {path} is not a regular file")
        if stat.S_IMODE(st.st_mode) != 0o600:
            os.fchmod(fd, 0o600)
    finally:
        os.close(fd)


def _connect(path: Path) -> sqlite3.Connection:
    old = os.umask(0o077)  # the -wal and -shm files SQLite creates stay private too
    try:
        conn = sqlite3.connect(path, timeout=5.0, isolation_level="DEFERRED")
        try:
            conn.execute("PRAGMA journal_mode=WAL").fetchone()
            conn.execute("PRAGMA synchronous=FULL")
            (check,) = conn.execute("PRAGMA quick_check").fetchone()
            if check != "ok":
                raise sqlite3.DatabaseError("quick_check failed")
            (version,) = conn.execute("PRAGMA user_version").fetchone()
            if version not in (0, SCHEMA_VERSION):
                raise sqlite3.DatabaseError(f"unknown journal schema {version}")
            conn.executescript(_SCHEMA)
            conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            conn.commit()
        except sqlite3.DatabaseError:
            conn.close()
            raise
        return conn
    finally:
        os.umask(old)
