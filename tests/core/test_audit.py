"""The hash-chained audit log detects every kind of tampering (T13)."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest

from keyvault.audit import GENESIS, AuditLog, KeyRef, verify_records
from keyvault.errors import IntegrityError

pytestmark = pytest.mark.proves("T13")

KID = "ab" * 32


@pytest.fixture
def log(tmp_path: Path) -> AuditLog:
    log = AuditLog(tmp_path / "state" / "audit.log", "alice@host")
    for i in range(5):
        log.append(
            "backup",
            "ok",
            team="t",
            keys=[KeyRef(KID, "targets", f"example.com/{i}")],
            backend={"store": "file:///s"},
            detail=f"run {i}",
        )
    return log


def test_an_untouched_log_verifies(log: AuditLog) -> None:
    count, head, problems = log.verify()
    assert (count, problems) == (5, [])
    assert head == list(log.records())[-1]["hash"] != GENESIS
    assert oct(log.path.stat().st_mode & 0o777) == "0o600"
    assert oct(log.path.parent.stat().st_mode & 0o777) == "0o700"


def test_records_chain_and_hold_no_secrets(log: AuditLog) -> None:
    records = list(log.records())
    assert [r["seq"] for r in records] == [1, 2, 3, 4, 5]
    assert records[0]["prev"] == GENESIS
    assert all(b["prev"] == a["hash"] for a, b in itertools.pairwise(records))
    assert set(records[0]) == {
        "seq",
        "time",
        "actor",
        "claimed_as",
        "action",
        "outcome",
        "team",
        "keys",
        "backend",
        "detail",
        "prev",
        "hash",
    }
    assert records[0]["claimed_as"] is None


def test_a_claim_is_recorded_beside_the_actor_and_older_records_still_verify(
    tmp_path: Path,
) -> None:
    """``--as`` never replaces the actor; a log written before ``claimed_as`` existed
    (records without the field) still verifies, and reads it as null."""
    from keyvault.audit import record_hash
    from keyvault.canonical import canonical_json

    path = tmp_path / "audit.log"
    old = {
        "seq": 1,
        "time": "2024-01-01T00:00:00.000000Z",
        "actor": "alice@host",
        "action": "backup",
        "outcome": "ok",
        "team": "t",
        "keys": [],
        "backend": {},
        "detail": "",
        "prev": GENESIS,
    }
    old["hash"] = record_hash(old)
    path.write_bytes(canonical_json(old) + b"\n")
    log = AuditLog(path, "alice@host", claimed_as="local:ci-bot")
    log.append("restore", "refused", team="t")
    assert log.verify()[2] == []
    first, second = log.records()
    assert first["claimed_as"] is None
    assert (second["actor"], second["claimed_as"]) == ("alice@host", "local:ci-bot")


def _lines(log: AuditLog) -> list[bytes]:
    return log.lines()


def test_an_edited_record_is_named(log: AuditLog) -> None:
    lines = _lines(log)
    record = json.loads(lines[2])
    record["outcome"] = "failed"
    lines[2] = json.dumps(record).encode()
    _, _, problems = verify_records(lines)
    assert [(p.seq, p.reason) for p in problems] == [(3, "was edited after it was written")]


def test_a_removed_record_is_named(log: AuditLog) -> None:
    lines = _lines(log)
    del lines[1]
    _, _, problems = verify_records(lines)
    assert problems[0].seq == 3 and "expected record 2" in problems[0].reason


def test_reordered_records_are_named(log: AuditLog) -> None:
    lines = _lines(log)
    lines[1], lines[2] = lines[2], lines[1]
    _, _, problems = verify_records(lines)
    assert problems[0].line == 2 and "reordered" in problems[0].reason


def test_a_rehashed_edit_still_breaks_the_chain(log: AuditLog) -> None:
    """An editor who recomputes the edited record's hash breaks the next record's link."""
    from keyvault.audit import record_hash

    lines = _lines(log)
    record = json.loads(lines[1])
    record["actor"] = "mallory@host"
    record["hash"] = record_hash(record)
    lines[1] = json.dumps(record).encode()
    _, _, problems = verify_records(lines)
    assert problems[0].seq == 3 and "does not follow" in problems[0].reason


def test_garbage_line_is_reported(log: AuditLog) -> None:
    lines = [*_lines(log), b"{not json"]
    _, _, problems = verify_records(lines)
    assert problems[0].seq is None and problems[0].line == 6


def test_append_after_a_corrupt_tail_refuses(log: AuditLog) -> None:
    with log.path.open("ab") as fh:
        fh.write(b"{half a rec")
    with pytest.raises(IntegrityError, match="last record is unreadable"):
        log.append("backup", "ok")


def test_a_run_over_many_keys_stays_small_and_the_log_still_appends(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.log", "ci@host")
    keys = [KeyRef(f"{i:064x}", "targets", f"example.com/{i}") for i in range(1000)]
    record = log.append("backup", "ok", keys=keys, detail="bulk")
    assert len(record["keys"]) == 100 and "1000 keys" in record["detail"]
    assert len(log.path.read_bytes()) < 32 * 1024
    assert log.append("restore", "ok")["seq"] == 2
    assert log.verify()[2] == []


def test_a_record_larger_than_the_read_window_is_still_found(tmp_path: Path) -> None:
    """A huge last line (older versions listed every key) does not break appends."""
    log = AuditLog(tmp_path / "audit.log", "a@h")
    log.append("backup", "ok", detail="x" * 900)
    with log.path.open("rb") as fh:
        first = fh.read()
    import json as _json

    from keyvault.audit import MAX_RECORD_SIZE, record_hash

    big = _json.loads(first)
    big.update(seq=2, prev=big["hash"], detail="y" * (MAX_RECORD_SIZE * 2))
    big["hash"] = record_hash(big)
    with log.path.open("ab") as fh:
        fh.write(_json.dumps(big).encode() + b"\n")
    assert log.append("restore", "ok")["seq"] == 3
    assert log.verify()[2] == []
