"""The journal on its own: durable across reopen, private, generation-safe, self-healing."""

from __future__ import annotations

import random
import sqlite3
import stat
from pathlib import Path

import pytest

from keyvault.daemon.journal import JOURNAL_NAME, Journal, Sighting
from keyvault.daemon.lock import acquire, holder
from keyvault.daemon.service import backoff
from keyvault.errors import ConflictError

TRUST = "/home/u/.docker/trust"
KEY = "a" * 64


def sighting(relpath: str = f"{KEY}.key", ready_at: float = 100.0) -> Sighting:
    return Sighting(TRUST, relpath, KEY, ready_at)


def test_rows_survive_a_restart_and_become_due_after_the_debounce(tmp_path: Path) -> None:
    journal = Journal.open(tmp_path)
    journal.note([sighting(ready_at=100.0)], now=99.0)
    assert journal.due(99.5) == []
    journal.close()  # as after a crash: nothing but the file remains
    reopened = Journal.open(tmp_path)
    (entry,) = reopened.due(100.0)
    assert (entry.trust_dir, entry.relpath, entry.key_id, entry.first_seen) == (
        TRUST,
        f"{KEY}.key",
        KEY,
        99.0,
    )
    assert reopened.done(entry)
    assert reopened.stats() == (0, None, 0)


def test_an_event_during_a_backup_keeps_the_row(tmp_path: Path) -> None:
    journal = Journal.open(tmp_path)
    journal.note([sighting(ready_at=1.0)], now=1.0)
    (entry,) = journal.due(2.0)
    journal.note([sighting(ready_at=3.0)], now=2.5)  # the file changed while it was read
    assert not journal.done(entry)
    (again,) = journal.due(3.0)
    assert again.generation == entry.generation + 1 and again.first_seen == 1.0
    assert journal.done(again)


def test_failures_back_off_and_a_new_event_does_not_bring_the_retry_forward(tmp_path: Path) -> None:
    journal = Journal.open(tmp_path)
    journal.note([sighting(ready_at=1.0)], now=1.0)
    (entry,) = journal.due(1.0)
    journal.retry(entry, 60.0, "unavailable")
    assert journal.stats() == (1, 1.0, 1)
    journal.note([sighting(ready_at=5.0)], now=4.0)
    assert journal.due(59.0) == []
    (entry,) = journal.due(60.0)
    assert (entry.attempts, entry.last_error) == (1, "unavailable")
    assert journal.next_due() == 60.0


@pytest.mark.proves("T7")
def test_files_are_private(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o755)
    acquire(state).release()  # the lock makes the state dir private
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    journal = Journal.open(state)
    journal.note([sighting()], now=1.0)
    for path in state.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path.name


def test_a_corrupt_journal_is_moved_aside_and_replaced(tmp_path: Path) -> None:
    (tmp_path / JOURNAL_NAME).write_bytes(b"this is not a database" * 100)
    journal = Journal.open(tmp_path)
    assert journal.moved_aside is not None and journal.moved_aside.exists()
    journal.note([sighting()], now=1.0)
    assert journal.stats()[0] == 1


@pytest.mark.proves("T7")
def test_the_journal_holds_ids_and_paths_only(tmp_path: Path) -> None:
    Journal.open(tmp_path).close()
    conn = sqlite3.connect(tmp_path / JOURNAL_NAME)
    columns = {row[1] for row in conn.execute("PRAGMA table_info(pending)")}
    assert columns == {
        "trust_dir",
        "relpath",
        "key_id",
        "first_seen",
        "generation",
        "attempts",
        "next_try",
        "last_error",
    }


def test_one_lock_per_state_dir(tmp_path: Path) -> None:
    lock = acquire(tmp_path)
    assert holder(tmp_path) is not None
    with pytest.raises(ConflictError, match="already running"):
        acquire(tmp_path)
    lock.release()
    assert holder(tmp_path) is None
    acquire(tmp_path).release()


def test_backoff_grows_is_capped_and_jittered() -> None:
    rng = random.Random(7)
    delays = [backoff(n, 1.0, 60.0, rng) for n in range(12)]
    assert all(0.5 * min(60.0, 2**n) <= d <= min(60.0, 2**n) for n, d in enumerate(delays))
    assert max(delays) <= 60.0 and len({round(d, 6) for d in delays[-4:]}) > 1
