"""A hash-chained, append-only audit log: who touched which key, when, with what outcome.

Each record is one line of canonical JSON carrying its sequence number and
the hash of the record before it; its own hash is SHA-256 over everything
else in it. Editing, removing or reordering a record breaks the chain at a
place :func:`verify_records` names. Removing records from the *end* leaves
a valid shorter chain, and whoever can write the file can rewrite it whole,
recomputing every hash: so the chain's head is anchored in the store by
signed checkpoints (:mod:`keyvault.checkpoint`), and each record can also be
copied there (``audit_to_store``, create-only, under the team's prefix).

``actor`` is who ran keyvault, from the real uid; ``claimed_as`` is what
``--as`` claimed for the policy check, never taken for the actor.

Records never hold key material, passphrases or tokens: key IDs, roles,
GUNs, backend URIs, outcomes and error kinds only.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from keyvault.bounded import json_loads
from keyvault.canonical import canonical_json
from keyvault.errors import AccessDeniedError, IntegrityError, LocalIOError
from keyvault.fsutil import make_private_dirs

GENESIS = "0" * 64
MAX_RECORD_SIZE = 64 * 1024
#: A record names at most this many keys; a bigger run records the count and a digest
#: of every key ID, so records stay small and the log stays quick to append to.
MAX_KEYS_PER_RECORD = 100
#: The fields of a record written before ``claimed_as`` existed (still valid as they are).
_FIELDS_V1 = frozenset(
    {
        "seq",
        "time",
        "actor",
        "action",
        "outcome",
        "team",
        "keys",
        "backend",
        "detail",
        "prev",
        "hash",
    }
)
#: ``actor`` is who ran keyvault (the real uid); ``claimed_as`` what ``--as`` claimed, or null.
_FIELDS = _FIELDS_V1 | {"claimed_as"}
MAX_CLAIM = 200


@dataclass(frozen=True)
class KeyRef:
    key_id: str
    role: str | None
    gun: str | None

    def to_json(self) -> dict[str, Any]:
        return {"key_id": self.key_id, "role": self.role, "gun": self.gun}


def audit_object_name(team: str, record: Mapping[str, Any]) -> str:
    """Where a record's copy lives in the store: create-only, ordered by sequence number."""
    from keyvault.names import team_prefix

    return f"{team_prefix(team)}audit/{int(record['seq']):010d}-{str(record['hash'])[:16]}.json"


def compare_with_store(
    local: Sequence[Mapping[str, Any]], stored_names: Iterable[str]
) -> list[Problem]:
    """Records the store holds that the local log lacks: a truncated or replaced local log."""
    local_names = {f"{int(r['seq']):010d}-{str(r['hash'])[:16]}" for r in local}
    problems = []
    for name in sorted(stored_names):
        if "/audit/checkpoints/" in name:  # signed checkpoints: keyvault.checkpoint checks them
            continue
        stem = name.rsplit("/", 1)[-1].removesuffix(".json")
        if stem not in local_names:
            seq = int(stem.split("-", 1)[0]) if stem.split("-", 1)[0].isdigit() else None
            problems.append(
                Problem(
                    seq,
                    0,
                    "is in the store but not in the local log "
                    "(the local log was truncated or rewritten)",
                )
            )
    return problems


def record_hash(record: Mapping[str, Any]) -> str:
    body = {k: v for k, v in record.items() if k != "hash"}
    return hashlib.sha256(canonical_json(body)).hexdigest()


@dataclass(frozen=True)
class Problem:
    seq: int | None  # the record where the chain breaks (None: the file itself)
    line: int
    reason: str


def verify_records(lines: Iterable[bytes]) -> tuple[int, str, list[Problem]]:
    """Check a log's chain: (records read, head hash, problems). Empty problems = intact."""
    problems: list[Problem] = []
    prev, expected_seq, count = GENESIS, 1, 0
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            record = json_loads(raw)
            if not isinstance(record, dict) or set(record) not in (_FIELDS, _FIELDS_V1):
                raise ValueError("fields")
            seq = int(record["seq"])
        except (ValueError, TypeError):
            problems.append(Problem(None, number, "not an audit record (corrupt or truncated)"))
            break
        count += 1
        if seq != expected_seq:
            what = "missing or reordered" if seq > expected_seq else "repeated or reordered"
            problems.append(
                Problem(
                    seq, number, f"expected record {expected_seq} here, found {seq}: records {what}"
                )
            )
        if record["prev"] != prev:
            problems.append(
                Problem(
                    seq,
                    number,
                    "does not follow the record before it "
                    "(a record before it was removed or edited)",
                )
            )
        if record_hash(record) != record["hash"]:
            problems.append(Problem(seq, number, "was edited after it was written"))
        if problems:
            break
        prev, expected_seq = record["hash"], seq + 1
    return count, prev, problems


def recorded_hashes(lines: Iterable[bytes]) -> dict[int, str]:
    """Each readable record's stored hash by sequence number (unreadable lines skipped:
    :func:`verify_records` reports those)."""
    found: dict[int, str] = {}
    for raw in lines:
        try:
            record = json_loads(raw)
            found[int(record["seq"])] = str(record["hash"])
        except (ValueError, TypeError, KeyError):
            continue
    return found


class AuditLog:
    """The local log file: appends are serialized with a lock and fsynced."""

    def __init__(self, path: Path, actor: str, claimed_as: str | None = None) -> None:
        self.path = path
        self.actor = actor
        self.claimed_as = claimed_as

    def append(
        self,
        action: str,
        outcome: str,
        *,
        team: str | None = None,
        keys: Sequence[KeyRef] = (),
        backend: Mapping[str, str] | None = None,
        detail: str = "",
    ) -> dict[str, Any]:
        """Add one record; returns it (with its hash) so callers may copy it to a store."""
        make_private_dirs(self.path.parent)
        try:
            fd = os.open(
                self.path,
                os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC,
                0o600,
            )
        except PermissionError:
            raise AccessDeniedError(f"cannot write the audit log {self.path}") from None
        except OSError as exc:
            raise LocalIOError(
                f"cannot open the audit log {self.path}: {os.strerror(exc.errno or 0)}"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            seq, prev = _tail(fd)
            if len(keys) > MAX_KEYS_PER_RECORD:
                digest = hashlib.sha256("\n".join(sorted(k.key_id for k in keys)).encode())
                detail = (
                    f"{detail}; {len(keys)} keys, the first {MAX_KEYS_PER_RECORD} "
                    f"listed; sha256 of all key IDs {digest.hexdigest()}"
                )
                keys = keys[:MAX_KEYS_PER_RECORD]
            record: dict[str, Any] = {
                "seq": seq + 1,
                "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                "actor": self.actor,
                "claimed_as": None if self.claimed_as is None else self.claimed_as[:MAX_CLAIM],
                "action": action,
                "outcome": outcome,
                "team": team,
                "keys": [k.to_json() for k in keys],
                "backend": dict(backend or {}),
                "detail": detail[:1000],
                "prev": prev,
            }
            record["hash"] = record_hash(record)
            os.write(fd, canonical_json(record) + b"\n")
            os.fsync(fd)
            return record
        except OSError as exc:
            raise LocalIOError(
                f"cannot append to the audit log {self.path}: {os.strerror(exc.errno or 0)}"
            ) from None
        finally:
            os.close(fd)

    def records(self) -> Iterator[dict[str, Any]]:
        """Every record; one written before ``claimed_as`` existed shows it as null."""
        for raw in self.lines():
            if raw.strip():
                record = json_loads(raw)
                record.setdefault("claimed_as", None)
                yield record

    def lines(self) -> list[bytes]:
        try:
            with self.path.open("rb") as fh:
                return [line for line in fh.read().split(b"\n") if line]
        except FileNotFoundError:
            return []
        except PermissionError:
            raise AccessDeniedError(f"cannot read the audit log {self.path}") from None

    def verify(self) -> tuple[int, str, list[Problem]]:
        return verify_records(self.lines())


def _tail(fd: int) -> tuple[int, str]:
    """The last record's sequence number and hash (0 and the genesis hash when empty).

    Reads backwards from the end until the line before the last one, so a record
    of any size (one written by an older version, say) is found whole.
    """
    size = os.fstat(fd).st_size
    if size == 0:
        return 0, GENESIS
    end, chunk = size, b""
    while True:
        start = max(0, end - MAX_RECORD_SIZE)
        chunk = os.pread(fd, end - start, start) + chunk
        end = start
        body = chunk.rstrip(b"\n")
        if b"\n" in body or start == 0:
            break
    last = body.rsplit(b"\n", 1)[-1]
    try:
        record = json_loads(last)
        return int(record["seq"]), str(record["hash"])
    except (ValueError, KeyError, TypeError):
        raise IntegrityError(
            "the audit log's last record is unreadable; run 'keyvault audit "
            "verify' and keep the file for investigation"
        ) from None
