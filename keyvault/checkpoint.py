"""Signed checkpoints of the audit log's head, kept in the store: the chain's anchor.

The hash chain (:mod:`keyvault.audit`) shows a record edited, removed or
reordered, but whoever can write the log file can rewrite all of it and
recompute every hash. So after a command appends a record, keyvault writes one
small object to the store naming the chain's head (its sequence number and
hash), signed by this machine's sealer (:mod:`keyvault.sealing`). Store names
are create-only and old versions stay, so ``audit verify`` can check that the
local log still holds every anchored head: a log rewritten or cut behind a
checkpoint no longer does, and the record where it parts is named.

An object's name carries its claim, ``<seq>-<head>.json`` under
``teams/<team>/audit/checkpoints/<log>/`` (``<log>``: one machine, user and log
file), and the signed object must say the same. A checkpoint that is unsigned,
altered, or signed by a sealer this machine does not trust is refused (exit 5):
a planted one can raise an alarm, never hide a rewrite, since every genuine
checkpoint is still compared.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from keyvault.audit import Problem
from keyvault.canonical import canonical_json
from keyvault.envelope import Signature
from keyvault.errors import IntegrityError, KeyvaultError
from keyvault.names import audit_prefix
from keyvault.sealing import Sealer, SealerTrust

FORMAT = "keyvault-audit-checkpoint"
VERSION = 1
SIGN_LABEL = b"keyvault/v1/audit-checkpoint\n"
#: A checkpoint is a few hundred bytes; anything much larger is not one of ours.
MAX_CHECKPOINT_SIZE = 8 * 1024
_FIELDS = frozenset(
    {"format", "version", "log", "team", "seq", "head", "time", "actor", "signature"}
)
_LOG_ID = re.compile(r"[0-9a-f]{32}")
_HEAD = re.compile(r"[0-9a-f]{64}")
_NAME = re.compile(r"(\d{10})-([0-9a-f]{64})\.json")


def checkpoint_prefix(team: str, log: str) -> str:
    """Where one audit log's checkpoints live, under the team's prefix."""
    if not _LOG_ID.fullmatch(log):
        raise ValueError("an audit log ID is 32 lowercase hex digits")
    return f"{audit_prefix(team)}checkpoints/{log}/"


@dataclass(frozen=True)
class Checkpoint:
    """One audit log's head at one moment: record ``seq`` had hash ``head``."""

    log: str
    team: str
    seq: int
    head: str
    time: str
    actor: str
    signature: Signature | None = field(default=None, compare=False)

    def name(self) -> str:
        if not _HEAD.fullmatch(self.head):
            raise ValueError("a head is a SHA-256 in lowercase hex")
        return f"{checkpoint_prefix(self.team, self.log)}{self.seq:010d}-{self.head}.json"

    def unsigned_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": VERSION,
            "log": self.log,
            "team": self.team,
            "seq": self.seq,
            "head": self.head,
            "time": self.time,
            "actor": self.actor,
        }

    def signed_message(self) -> bytes:
        """The bytes a sealer signs: a label (never an envelope's), then the document."""
        return SIGN_LABEL + canonical_json(self.unsigned_json())

    def sign(self, sealer: Sealer) -> Checkpoint:
        return replace(self, signature=Signature(sealer.key, sealer.sign(self.signed_message())))

    def to_bytes(self) -> bytes:
        if self.signature is None:
            raise ValueError("an unsigned checkpoint cannot be stored")
        return canonical_json({**self.unsigned_json(), "signature": self.signature.to_json()})

    @classmethod
    def from_bytes(cls, data: bytes, what: str = "checkpoint") -> Checkpoint:
        """Strict: the canonical form of exactly these fields (no duplicate keys, no junk)."""
        if len(data) > MAX_CHECKPOINT_SIZE:
            raise IntegrityError(f"{what} is larger than any checkpoint keyvault writes")
        try:
            doc = json.loads(data)
            if (
                not isinstance(doc, dict)
                or set(doc) | {"signature"} != _FIELDS
                or canonical_json(doc) != data
                or (doc["format"], doc["version"]) != (FORMAT, VERSION)
            ):
                raise ValueError("fields")
            made = cls(
                _text(doc, "log"),
                _text(doc, "team"),
                _number(doc, "seq"),
                _text(doc, "head"),
                _text(doc, "time"),
                _text(doc, "actor"),
            )
            made.name()  # a valid log ID, team and head, or UsageError/ValueError
            if "signature" not in doc:  # stripped, or never signed: authenticate() says so
                return made
            return replace(made, signature=Signature.from_json(doc["signature"]))
        except (ValueError, TypeError, RecursionError, KeyvaultError):
            raise IntegrityError(
                f"{what} is not a checkpoint keyvault writes (malformed)"
            ) from None

    def authenticate(self, trust: SealerTrust, what: str) -> None:
        """IntegrityError unless signed, by a sealer ``trust`` accepts, over these very facts."""
        if self.signature is None:
            raise IntegrityError(f"{what} is unsigned; refused")
        trust.check(self.signature.sealer, what)
        if not self.signature.sealer.verify(self.signed_message(), self.signature.value):
            raise IntegrityError(
                f"{what}: the signature does not verify (altered after "
                f"signing by {self.signature.sealer.fingerprint}); refused"
            )


def _text(doc: Mapping[str, Any], name: str) -> str:
    value = doc[name]
    if not isinstance(value, str):
        raise TypeError(name)
    return value


def _number(doc: Mapping[str, Any], name: str) -> int:
    value = doc[name]
    if not isinstance(value, int) or isinstance(value, bool) or not 0 < value < 10**10:
        raise TypeError(name)
    return value


def parse_name(name: str, prefix: str) -> tuple[int, str] | None:
    """(seq, head) that a checkpoint's object name claims; None for any other name."""
    match = _NAME.fullmatch(name.removeprefix(prefix)) if name.startswith(prefix) else None
    return (int(match.group(1)), match.group(2)) if match else None


def compare(local: Mapping[int, str], anchored: Iterable[Checkpoint]) -> list[Problem]:
    """Where the local log (each record's hash by sequence number) parts from the
    authenticated checkpoints: the earliest checkpoint it no longer holds is named."""
    count, held = max(local, default=0), 0
    for checkpoint in sorted(anchored, key=lambda c: c.seq):
        after = f" (after record {held}, which matches)" if held else ""
        if checkpoint.seq > count:
            return [
                Problem(
                    checkpoint.seq,
                    0,
                    "is anchored by a signed checkpoint in the "
                    "store but missing from the local log (the "
                    f"local log was truncated{after})",
                )
            ]
        if local.get(checkpoint.seq) != checkpoint.head:
            return [
                Problem(
                    checkpoint.seq,
                    0,
                    "differs from the signed checkpoint in the store "
                    "(the local log was rewritten at or before this "
                    f"record{after})",
                )
            ]
        held = checkpoint.seq
    return []
