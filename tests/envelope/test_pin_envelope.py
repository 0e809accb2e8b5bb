"""A GUN's trust pin in an envelope: its own name and header kind, never a key's."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest

from keyvault import envelope as ev
from keyvault.errors import IntegrityError, UsageError
from keyvault.names import KeyAddress, PinAddress, key_words, pin_relpath

from ._support import CREATED, GUN, KEY_ID, SEALER, TRUST, AeadWrapper

pytestmark = pytest.mark.proves("T16")

ROOT_JSON = b'{"signed":{"_type":"Root","version":3},"signatures":[]}'


def pin_header(**changes: Any) -> ev.Header:
    address = PinAddress.of("team-a", GUN)
    header = ev.new_header(
        address=address,
        algorithm=None,
        source_name=address.relpath,
        source_mode=0o644,
        data=ROOT_JSON,
        created=CREATED,
    )
    return dataclasses.replace(header, **changes) if changes else header


def test_a_pin_has_a_name_of_its_own_that_parses_back() -> None:
    pin = PinAddress.of("team-a", GUN)
    assert pin.object_name == f"v1/teams/team-a/pins/{GUN}/root.json"
    assert PinAddress.from_object_name(pin.object_name) == pin
    assert pin.relpath == pin_relpath(GUN) == f"tuf/{GUN}/metadata/root.json"
    assert key_words(pin.role, pin.gun, pin.key_id) == f"trust pin (root.json) of {GUN}"


@pytest.mark.parametrize(
    "name",
    [
        f"v1/teams/team-a/pins/{GUN}/root.json",  # a pin is not a key
        f"v1/teams/team-a/pins/{GUN}/{KEY_ID}.json",
        "v1/teams/team-a/pins/root.json",
    ],
)
def test_a_pin_name_never_parses_as_a_key(name: str) -> None:
    with pytest.raises(UsageError):
        KeyAddress.from_object_name(name)


@pytest.mark.parametrize(
    "name",
    [
        f"v1/teams/team-a/guns/{GUN}/targets/{KEY_ID}.json",  # a key is not a pin
        f"v1/teams/team-a/root/{KEY_ID}.json",
        "v1/teams/team-a/pins/root.json",  # no GUN
        "v1/teams/team-a/pins/a/../b/root.json",
        f"v1/teams/Team/pins/{GUN}/root.json",
        f"v1/teams/team-a/pins/{GUN}/root.json.bak",
        f"v2/teams/team-a/pins/{GUN}/root.json",
    ],
)
def test_anything_but_a_pin_name_is_refused_as_one(name: str) -> None:
    with pytest.raises(UsageError):
        PinAddress.from_object_name(name)


def test_a_pin_envelope_round_trips_and_says_it_is_a_pin() -> None:
    wrapper = AeadWrapper("transit://test/a")
    sealed = ev.seal(pin_header(), ROOT_JSON, [wrapper], sealer=SEALER)
    envelope = ev.Envelope.from_bytes(sealed.to_bytes())
    assert envelope.address == PinAddress.of("team-a", GUN)
    assert type(envelope.address) is PinAddress
    assert json.loads(sealed.to_bytes())["header"]["kind"] == "pin"
    assert ev.open_envelope(envelope, [wrapper], sealers=TRUST) == ROOT_JSON


def test_a_key_header_is_unchanged_by_pins() -> None:
    """No ``kind`` in a key's header: every key envelope (and test vector) stays valid."""
    key = ev.new_header(
        address=KeyAddress("team-a", GUN, "targets", KEY_ID),
        algorithm=None,
        source_name=f"{KEY_ID}.key",
        source_mode=0o600,
        data=b"k",
        created=CREATED,
    )
    assert "kind" not in key.to_json()


@pytest.mark.parametrize(
    "changes",
    [
        {"kind": "key"},
        {"kind": "PIN"},
        {"source_name": "tuf/other.example/app/metadata/root.json"},
        {"source_name": f"{KEY_ID}.key"},
        {"algorithm": "ecdsa"},
        {"key_id": KEY_ID},
        {"role": "targets"},
        {"gun": None},
        {"version": 1},
    ],
)
def test_a_pin_header_that_is_not_exactly_a_pins_is_refused(changes: dict[str, object]) -> None:
    with pytest.raises(UsageError):
        pin_header(**changes)


def test_a_key_header_relabelled_as_a_pin_is_refused_when_parsed() -> None:
    doc = pin_header().to_json()
    doc["kind"] = "key"
    with pytest.raises(IntegrityError):
        ev.Header.from_json(doc)
    key = ev.new_header(
        address=KeyAddress("team-a", GUN, "targets", KEY_ID),
        algorithm=None,
        source_name=f"{KEY_ID}.key",
        source_mode=0o600,
        data=b"k",
        created=CREATED,
    ).to_json()
    with pytest.raises(IntegrityError):
        ev.Header.from_json({**key, "kind": "pin"})
