"""Format v2 authenticity: the sealer's signature is checked before anything else is used.

Every change to a signed envelope that is not signed again is refused, with
the key named, before any wrapper is asked to unwrap; an unpinned or revoked
sealer is refused even when its signature is valid; v1 (unsigned) opens only
on an explicit choice.
"""

from __future__ import annotations

import base64
import copy
import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from keyvault import envelope as ev
from keyvault.errors import IntegrityError
from keyvault.sealing import Ed25519FileSealer, SealerTrust

from ._support import KEY_ID, SEALER, TRUST, AeadWrapper, as_v1

pytestmark = pytest.mark.proves("T2")


def _doc(envelope: ev.Envelope) -> dict[str, Any]:
    return copy.deepcopy(envelope.to_json())


def _parse(doc: dict[str, Any]) -> ev.Envelope:
    return ev.Envelope.from_bytes(json.dumps(doc).encode())


def _other_sealer() -> Ed25519FileSealer:
    return Ed25519FileSealer(Path("/nonexistent/other.key"), ed25519.Ed25519PrivateKey.generate())


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every leaf of the document outside the signature."""
    if isinstance(value, dict):
        return [
            p
            for k, v in value.items()
            if prefix or k != "signature"
            for p in _paths(v, (*prefix, k))
        ]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in _paths(v, (*prefix, i))]
    return [prefix]


def _changed(value: Any) -> Any:
    """Another value of the same kind (a string keeps its length: a flipped last character)."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if value is None:
        return "ab" * 32
    text = str(value)
    return text[:-1] + ("A" if text[-1:] != "A" else "B") if text else "x"


def test_a_sealed_envelope_names_its_sealer_and_verifies(sealed: ev.Envelope) -> None:
    assert sealed.signed and sealed.version == 2 and sealed.chain == ev.FIRST
    assert sealed.signature is not None
    assert sealed.signature.sealer.fingerprint == SEALER.key.fingerprint
    assert ev.authenticate(sealed, TRUST) == SEALER.key
    assert ev.authenticate(_parse(_doc(sealed)), TRUST) == SEALER.key


def test_every_unsigned_change_is_refused_before_any_unwrap(
    sealed: ev.Envelope, wrapper_a: AeadWrapper
) -> None:
    doc = _doc(sealed)
    paths = _paths(doc)
    assert len(paths) > 20
    refused = 0
    for path in paths:
        changed = copy.deepcopy(doc)
        node = changed
        for part in path[:-1]:
            node = node[part]
        node[path[-1]] = _changed(node[path[-1]])
        try:
            envelope = _parse(changed)
        except IntegrityError:
            refused += 1  # refused by the strict parser already
            continue
        with pytest.raises(IntegrityError, match=r"signature does not verify|names another"):
            ev.open_envelope(envelope, [wrapper_a], sealers=TRUST)
        refused += 1
    assert refused == len(paths)
    assert wrapper_a.calls == 0  # no wrapper was ever asked


def test_a_stripped_signature_is_refused(sealed: ev.Envelope) -> None:
    doc = _doc(sealed)
    del doc["signature"]
    with pytest.raises(IntegrityError, match=r"carries no signature \(stripped\?\)"):
        _parse(doc)
    doc = _doc(sealed)
    del doc["signature"], doc["chain"]  # made to look like v1, but the header says v2
    with pytest.raises(IntegrityError):
        _parse(doc)


def test_a_signature_from_the_wrong_key_is_refused(sealed: ev.Envelope) -> None:
    doc = _doc(sealed)
    other = _other_sealer()
    doc["signature"]["value"] = base64.b64encode(other.sign(sealed.signed_message())).decode()
    with pytest.raises(IntegrityError, match=f"targets key {KEY_ID}.*signature does not verify"):
        ev.authenticate(_parse(doc), TRUST)


def test_an_unpinned_sealer_is_refused_even_with_a_valid_signature(
    sealed: ev.Envelope, wrapper_a: AeadWrapper, data: bytes
) -> None:
    assert sealed.chain is not None
    forged = ev.sign(sealed, _other_sealer(), sealed.chain)
    with pytest.raises(IntegrityError, match="which this machine does not trust"):
        ev.open_envelope(forged, [wrapper_a], sealers=TRUST)
    assert wrapper_a.calls == 0
    both = TRUST.with_trusted([forged.signature.sealer.fingerprint], "test")  # type: ignore[union-attr]
    assert ev.open_envelope(forged, [wrapper_a], sealers=both) == data


def test_a_revoked_sealer_is_refused_even_where_pinned(sealed: ev.Envelope) -> None:
    revoked = SealerTrust.of([SEALER.key.fingerprint], [SEALER.key.fingerprint])
    with pytest.raises(IntegrityError, match="revoked sealer"):
        ev.authenticate(sealed, revoked)


def test_no_pins_trust_nobody(sealed: ev.Envelope) -> None:
    with pytest.raises(IntegrityError, match=r"trusted sealers: none"):
        ev.authenticate(sealed, SealerTrust())


def test_v1_opens_only_when_unsigned_envelopes_are_allowed(
    sealed: ev.Envelope, wrapper_a: AeadWrapper, data: bytes
) -> None:
    v1 = as_v1(sealed, wrapper_a, data)
    with pytest.raises(IntegrityError, match=r"unsigned .format v1.*--allow-unsigned"):
        ev.open_envelope(v1, [wrapper_a], sealers=TRUST)
    assert wrapper_a.calls == 0
    assert ev.authenticate(v1, TRUST, allow_unsigned=True) is None
    assert ev.open_envelope(v1, [wrapper_a], sealers=TRUST, allow_unsigned=True) == data


def test_allow_unsigned_never_excuses_a_bad_signature(sealed: ev.Envelope) -> None:
    doc = _doc(sealed)
    doc["signature"]["value"] = base64.b64encode(b"\x00" * 64).decode()
    with pytest.raises(IntegrityError, match="signature does not verify"):
        ev.authenticate(_parse(doc), TRUST, allow_unsigned=True)


def test_the_chain_is_signed(sealed: ev.Envelope) -> None:
    later = ev.sign(sealed, SEALER, ev.Chain(7, "ab" * 32))
    parsed = _parse(_doc(later))
    assert parsed.chain == ev.Chain(7, "ab" * 32)
    assert ev.authenticate(parsed, TRUST) == SEALER.key
    doc = _doc(later)
    doc["chain"]["sequence"] = 8  # a replayed version renumbered by the store's writer
    with pytest.raises(IntegrityError, match="signature does not verify"):
        ev.authenticate(_parse(doc), TRUST)


@pytest.mark.parametrize(
    "chain",
    [
        {"sequence": 0, "previous": None},
        {"sequence": True, "previous": None},
        {"sequence": 1, "previous": "AB" * 32},
        {"sequence": 1, "previous": "ab"},
        {"sequence": 1},
        {"sequence": 1, "previous": None, "extra": 1},
    ],
)
def test_bad_chains_are_refused(sealed: ev.Envelope, chain: dict[str, Any]) -> None:
    doc = _doc(sealed)
    doc["chain"] = chain
    with pytest.raises(IntegrityError):
        _parse(doc)


def test_a_verified_object_is_checked_again_under_other_pins_and_when_copied(
    sealed: ev.Envelope,
) -> None:
    """The reader and the unwrap both authenticate; the second may reuse the first's
    result only for the very same object and the very same pins."""
    assert ev.authenticate(sealed, TRUST) == SEALER.key
    revoked = SealerTrust.of([SEALER.key.fingerprint], [SEALER.key.fingerprint])
    with pytest.raises(IntegrityError, match="revoked sealer"):
        ev.authenticate(sealed, revoked)
    assert sealed.signature is not None
    altered = dataclasses.replace(
        sealed, signature=ev.Signature(sealed.signature.sealer, b"\x00" * 64)
    )
    with pytest.raises(IntegrityError, match="signature does not verify"):
        ev.authenticate(altered, TRUST)
