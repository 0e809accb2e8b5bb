"""Threshold groups: a DEK split over N wrappers so that any M of them, and no fewer, open it."""

from __future__ import annotations

import itertools
import json
import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keyvault import envelope as ev
from keyvault import shamir
from keyvault.errors import AccessDeniedError, IntegrityError, UsageError
from keyvault.names import KeyAddress

from ._support import SEALER, TRUST, AeadWrapper

KID = "ab" * 32


def sealed(threshold: int, count: int) -> tuple[ev.Envelope, list[AeadWrapper], bytes]:
    data = os.urandom(300)
    header = ev.new_header(
        address=KeyAddress("t", None, "root", KID),
        algorithm="ecdsa",
        source_name=f"{KID}.key",
        source_mode=0o600,
        data=data,
    )
    wrappers = [AeadWrapper(f"transit://test/w{i}") for i in range(count)]
    return ev.seal(header, data, wrappers, threshold, sealer=SEALER), wrappers, data


def test_two_of_three_opens_with_any_two_and_never_with_one() -> None:
    envelope, wrappers, data = sealed(2, 3)
    assert [w.share for w in envelope.wrapped_keys] == [1, 2, 3]
    for pair in itertools.combinations(wrappers, 2):
        assert ev.open_envelope(envelope, list(pair), sealers=TRUST) == data
    for single in wrappers:
        with pytest.raises(AccessDeniedError, match="needs 2 of its 3 wrappers"):
            ev.open_envelope(envelope, [single], sealers=TRUST)


def test_the_group_survives_serialisation_and_a_tampered_index_is_caught() -> None:
    envelope, wrappers, data = sealed(2, 3)
    parsed = ev.Envelope.from_bytes(envelope.to_bytes())
    assert ev.open_envelope(parsed, wrappers[:2], sealers=TRUST) == data
    doc = json.loads(envelope.to_bytes())
    doc["wrapped_keys"][0]["share"]["index"] = 3  # now two entries claim share 3
    with pytest.raises(IntegrityError):
        ev.open_envelope(
            ev.Envelope.from_bytes(json.dumps(doc).encode()), wrappers[:2], sealers=TRUST
        )
    doc = json.loads(envelope.to_bytes())
    doc["wrapped_keys"][0]["share"]["index"] = 7  # a consistent lie: wrong share value
    with pytest.raises(IntegrityError, match="signature does not verify"):
        ev.open_envelope(
            ev.Envelope.from_bytes(json.dumps(doc).encode()), wrappers[:2], sealers=TRUST
        )
    lie = ev.Envelope.from_bytes(json.dumps(doc).encode())  # even if a sealer signed the lie
    assert lie.chain is not None
    with pytest.raises(IntegrityError, match="commitment"):
        ev.open_envelope(ev.sign(lie, SEALER, lie.chain), wrappers[:2], sealers=TRUST)


def test_rewrap_cannot_weaken_a_group() -> None:
    envelope, wrappers, _ = sealed(2, 3)
    dek = ev.unwrap_dek(envelope, wrappers[:2], sealers=TRUST)
    with pytest.raises(UsageError, match="would open it alone"):
        ev.rewrap(envelope, dek, [AeadWrapper("transit://test/extra")])
    smaller = ev.rewrap(envelope, dek, [], remove=[wrappers[2].uri])
    assert len(smaller.wrapped_keys) == 2
    with pytest.raises(UsageError, match="unopenable"):
        ev.rewrap(smaller, dek, [], remove=[wrappers[1].uri])


def test_bad_thresholds_are_refused() -> None:
    with pytest.raises(UsageError):
        sealed(3, 2)
    with pytest.raises(UsageError):
        sealed(1, 3)


@given(st.binary(min_size=1, max_size=64), st.integers(2, 6), st.integers(0, 4), st.randoms())
def test_any_m_shares_rebuild_the_secret(secret: bytes, m: int, extra: int, rnd: object) -> None:
    n = m + extra
    shares = shamir.split(secret, m, n)
    chosen = rnd.sample(sorted(shares), m)  # type: ignore[attr-defined]
    assert shamir.combine({x: shares[x] for x in chosen}) == secret
