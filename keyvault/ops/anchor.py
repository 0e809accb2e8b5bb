"""The audit log's anchor in the store: a signed checkpoint after each record, and the
comparison ``audit verify`` makes against all of them (:mod:`keyvault.checkpoint`)."""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from keyvault.audit import Problem, recorded_hashes
from keyvault.checkpoint import Checkpoint, checkpoint_prefix, compare, parse_name
from keyvault.errors import ConflictError, IntegrityError, KeyvaultError, NotFoundError
from keyvault.ops.identity import audit_log_id

if TYPE_CHECKING:
    from keyvault.ops.session import Session


class CheckpointNotWrittenWarning(UserWarning):
    """The store did not take a checkpoint: the record stands, anchored by the next one."""


@dataclass(frozen=True)
class AnchorReport:
    """What the store's checkpoints say about the local log."""

    store: str
    log: str
    checkpoints: int
    #: The highest record a valid checkpoint anchors (0: none yet).
    anchored: int
    problems: list[Problem]

    def to_json(self, records: int) -> dict[str, Any]:
        return {
            "store": self.store,
            "log": self.log,
            "checkpoints": self.checkpoints,
            "anchored_up_to": self.anchored,
            "unanchored": max(0, records - self.anchored),
        }


def write_checkpoint(session: Session, record: Mapping[str, Any]) -> None:
    """Anchor the head ``record`` just made: one signed object in the store.

    Never fails the command (the record is already in the local log and the
    operation is done): a failure warns, and the next checkpoint anchors this
    record too, since a head's hash covers every record before it.
    """
    config = session.config
    try:
        checkpoint = Checkpoint(
            audit_log_id(session.audit().path),
            config.team,
            int(record["seq"]),
            str(record["hash"]),
            str(record["time"]),
            str(record["actor"]),
        ).sign(session.sealer())
        session.store().write(checkpoint.name(), checkpoint.to_bytes())
    except ConflictError:
        return  # another process anchored this very head already
    except KeyvaultError as exc:
        warnings.warn(
            CheckpointNotWrittenWarning(
                f"the audit log's checkpoint of record {record['seq']} was not written to the "
                f"store ({exc.kind}: {exc.message}); the next command's checkpoint anchors it"
            ),
            stacklevel=2,
        )


def check_checkpoints(session: Session, lines: Sequence[bytes]) -> AnchorReport:
    """Every checkpoint of this log in the store, authenticated, against the local lines."""
    store = session.store()
    log = audit_log_id(session.audit().path)
    prefix = checkpoint_prefix(session.config.team, log)
    names = sorted(store.list(prefix))
    trust = session.sealers()

    def load(name: str) -> Checkpoint | Problem | None:
        what = f"checkpoint {name.removeprefix(prefix)} in the store"
        if parse_name(name, prefix) is None:
            return Problem(None, 0, f"{what} is not named as keyvault names one")
        try:
            checkpoint = Checkpoint.from_bytes(store.read(name).data, what)
            if checkpoint.name() != name:
                raise IntegrityError(
                    f"{what} says record {checkpoint.seq} of another log or team than its name does"
                )
            checkpoint.authenticate(trust, what)
        except NotFoundError:
            return None
        except IntegrityError as exc:
            return Problem(None, 0, exc.message)
        return checkpoint

    from keyvault.ops.parallel import bounded_map

    problems: list[Problem] = []
    valid: list[Checkpoint] = []
    for item in bounded_map(load, names, session.config.concurrency):
        if isinstance(item, Checkpoint):
            valid.append(item)
        elif item is not None:
            problems.append(item)
    problems += compare(recorded_hashes(lines), valid)
    return AnchorReport(
        store.uri, log, len(names), max((c.seq for c in valid), default=0), problems
    )
