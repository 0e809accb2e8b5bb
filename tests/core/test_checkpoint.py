"""Audit checkpoints (T13): strict parsing, signatures, and where a log parts from them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from keyvault.canonical import canonical_json
from keyvault.checkpoint import Checkpoint, checkpoint_prefix, compare, parse_name
from keyvault.errors import IntegrityError
from keyvault.sealing import Ed25519FileSealer, SealerTrust

pytestmark = pytest.mark.proves("T13")

LOG = "0123456789abcdef" * 2
HEAD = "ab" * 32


@pytest.fixture
def sealer(tmp_path: Path) -> Ed25519FileSealer:
    return Ed25519FileSealer.generate(tmp_path / "k" / "sealer.key")


def made(seq: int = 3, head: str = HEAD) -> Checkpoint:
    return Checkpoint(LOG, "team-a", seq, head, "2030-01-01T00:00:00.000000Z", "alice@host")


def test_a_signed_checkpoint_round_trips_and_authenticates(sealer: Ed25519FileSealer) -> None:
    signed = made().sign(sealer)
    back = Checkpoint.from_bytes(signed.to_bytes())
    assert back == signed and back.name() == (
        f"v1/teams/team-a/audit/checkpoints/{LOG}/0000000003-{HEAD}.json"
    )
    back.authenticate(SealerTrust.of([sealer.key.fingerprint]), "it")
    with pytest.raises(IntegrityError, match="does not trust"):
        back.authenticate(SealerTrust.of([]), "it")
    with pytest.raises(IntegrityError, match="revoked"):
        back.authenticate(SealerTrust.of([sealer.key.fingerprint], [sealer.key.fingerprint]), "it")


@pytest.mark.parametrize(
    "change",
    [
        lambda d: d.update(seq=True),  # a bool is not a number
        lambda d: d.update(seq=0),
        lambda d: d.update(head="AB" * 32),  # not lowercase hex
        lambda d: d.update(log="../../guns"),  # would leave the log's prefix
        lambda d: d.update(team="Team A"),
        lambda d: d.update(version=2),
        lambda d: d.update(extra=1),
        lambda d: d.pop("time"),
        lambda d: d["signature"].update(value="!!"),
    ],
)
def test_malformed_checkpoints_are_refused(sealer: Ed25519FileSealer, change: object) -> None:
    doc = json.loads(made().sign(sealer).to_bytes())
    change(doc)  # type: ignore[operator]
    with pytest.raises(IntegrityError, match="not a checkpoint keyvault writes"):
        Checkpoint.from_bytes(canonical_json(doc), "it")


def test_only_the_canonical_bytes_parse(sealer: Ed25519FileSealer) -> None:
    data = made().sign(sealer).to_bytes()
    for variant in (
        data + b" ",
        json.dumps(json.loads(data), indent=1).encode(),
        data[:-1] + b',"seq":3}',
        data + b"x" * 9000,
    ):
        with pytest.raises(IntegrityError):
            Checkpoint.from_bytes(variant)


def test_an_unsigned_checkpoint_parses_but_never_authenticates() -> None:
    unsigned = Checkpoint.from_bytes(canonical_json(made().unsigned_json()))
    with pytest.raises(IntegrityError, match="is unsigned"):
        unsigned.authenticate(SealerTrust.of([]), "it")


def test_names_claim_exactly_one_record() -> None:
    prefix = checkpoint_prefix("team-a", LOG)
    assert parse_name(f"{prefix}0000000003-{HEAD}.json", prefix) == (3, HEAD)
    for junk in (
        f"{prefix}3-{HEAD}.json",
        f"{prefix}0000000003-{HEAD}",
        f"{prefix}x/y",
        f"v1/teams/b/audit/checkpoints/{LOG}/0000000003-{HEAD}.json",
    ):
        assert parse_name(junk, prefix) is None
    with pytest.raises(ValueError):
        checkpoint_prefix("team-a", "../x")


def test_compare_names_the_earliest_checkpoint_the_log_no_longer_holds() -> None:
    local = {1: "a" * 64, 2: "b" * 64, 3: "c" * 64}
    assert compare(local, [made(1, "a" * 64), made(3, "c" * 64)]) == []
    (rewritten,) = compare(local, [made(1, "a" * 64), made(2, "d" * 64), made(3, "e" * 64)])
    assert rewritten.seq == 2 and "after record 1, which matches" in rewritten.reason
    (cut,) = compare({1: "a" * 64}, [made(1, "a" * 64), made(2, "b" * 64)])
    assert cut.seq == 2 and "truncated" in cut.reason
    assert compare({}, []) == []
