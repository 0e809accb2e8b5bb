"""Envelope v1: round trips, strict mode, rewrap, and every bad input class.

Bad inputs name the case of SECURITY.md they cover (B22-B27) and assert the
exact exception class (which is the CLI exit code) plus a fragment of the
message, so a refactor that turns a clean refusal into a traceback, or into
the wrong exit code, fails here.
"""

from __future__ import annotations

import base64
import copy
import dataclasses
import hashlib
import hmac
import json
from typing import Any

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keyvault import envelope as ev
from keyvault.canonical import canonical_json
from keyvault.errors import AccessDeniedError, IntegrityError, KeyvaultError, UsageError
from keyvault.names import KeyAddress
from keyvault.wrappers.base import DEK_SIZE

from ._support import (
    GUN,
    KEY_ID,
    SEALER,
    TRUST,
    AeadWrapper,
    LaxWrapper,
    key_bytes,
    make_header,
)

Doc = dict[str, Any]


def doc_of(envelope: ev.Envelope) -> Doc:
    return copy.deepcopy(envelope.to_json())


def parse(doc: Doc) -> ev.Envelope:
    """Parse an altered document as if a trusted sealer had signed it anyway.

    These tests prove the checks *beneath* the signature (AAD, commitment,
    contexts, strict parsing), which must hold even against a sealer's mistake;
    test_signature.py proves that without a fresh signature every change is
    refused before anything else is looked at.
    """
    envelope = ev.Envelope.from_bytes(json.dumps(doc).encode())
    if envelope.chain is None:
        return envelope
    return ev.sign(envelope, SEALER, envelope.chain)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def unb64(text: str) -> bytes:
    return base64.b64decode(text)


def forge(envelope: ev.Envelope, dek: bytes, header: ev.Header, data: bytes) -> Doc:
    """What an attacker who knows ``dek`` can write: a consistent AAD, commitment, ciphertext."""
    doc = doc_of(envelope)
    doc["header"] = header.to_json()
    doc["commitment"] = b64(ev.commitment(dek, header))
    doc["ciphertext"] = b64(AESGCM(dek).encrypt(unb64(doc["nonce"]), data, header.canonical()))
    return doc


# --------------------------------------------------------------------------- round trips


def test_round_trip_each_wrapper_alone(
    sealed: ev.Envelope, data: bytes, wrapper_a: AeadWrapper, wrapper_b: AeadWrapper
) -> None:
    stored = ev.Envelope.from_bytes(sealed.to_bytes())
    assert stored == sealed
    assert ev.open_envelope(stored, [wrapper_a], sealers=TRUST) == data
    assert ev.open_envelope(stored, [wrapper_b], sealers=TRUST) == data
    assert ev.open_envelope(stored, [wrapper_b, wrapper_a], sealers=TRUST) == data
    assert sealed.wrapper_uris == ("transit://test/a", "transit://test/b")


def test_stored_form_is_stable_json(sealed: ev.Envelope) -> None:
    raw = sealed.to_bytes()
    assert raw.endswith(b"}\n")
    assert raw == (json.dumps(json.loads(raw), indent=2, sort_keys=True) + "\n").encode()
    assert json.loads(raw)["header"] == sealed.header.to_json()


@pytest.mark.parametrize(
    ("gun", "role", "name"),
    [
        (None, "root", "v1/teams/team-a/root/{id}.json"),
        (GUN, "targets", "v1/teams/team-a/guns/" + GUN + "/targets/{id}.json"),
        (GUN, "targets/releases", "v1/teams/team-a/guns/" + GUN + "/targets~releases/{id}.json"),
        (None, "targets/releases", "v1/teams/team-a/delegations/targets~releases/{id}.json"),
    ],
)
def test_round_trip_every_address_kind(
    gun: str | None, role: str, name: str, wrapper_a: AeadWrapper
) -> None:
    data = key_bytes(100, seed=role.encode())
    header = make_header(KeyAddress("team-a", gun, role, KEY_ID), data, algorithm=None)
    envelope = ev.Envelope.from_bytes(ev.seal(header, data, [wrapper_a], sealer=SEALER).to_bytes())
    assert ev.open_envelope(envelope, [wrapper_a], sealers=TRUST) == data
    assert envelope.address.object_name == name.format(id=KEY_ID)
    assert ("keyvault:gun" in header.context()) == (gun is not None)
    assert KeyAddress.from_object_name(envelope.address.object_name) == envelope.address


def test_each_seal_uses_a_fresh_dek_and_nonce(
    header: ev.Header, data: bytes, wrapper_a: AeadWrapper
) -> None:
    one = ev.seal(header, data, [wrapper_a], sealer=SEALER)
    two = ev.seal(header, data, [wrapper_a], sealer=SEALER)
    assert one.nonce != two.nonce
    assert one.commitment != two.commitment
    assert one.ciphertext != two.ciphertext


def test_secrets_do_not_appear_in_repr(sealed: ev.Envelope) -> None:
    text = repr(sealed)
    assert b64(sealed.ciphertext) not in text and sealed.ciphertext.hex() not in text
    for entry in sealed.wrapped_keys:
        assert b64(entry.blob) not in text and entry.blob.hex() not in text


def test_seal_needs_a_wrapper(header: ev.Header, data: bytes) -> None:
    with pytest.raises(UsageError, match="at least one wrapper"):
        ev.seal(header, data, [], sealer=SEALER)


# --------------------------------------------------------------------------- strict mode


def test_strict_mode_refuses_when_no_given_wrapper_is_listed(sealed: ev.Envelope) -> None:
    stranger = AeadWrapper("transit://test/c")
    with pytest.raises(AccessDeniedError, match="not wrapped by any wrapper you hold") as info:
        ev.open_envelope(sealed, [stranger], sealers=TRUST)
    assert "transit://test/a" in str(info.value) and "--wrapper" in str(info.value.hint)
    assert stranger.calls == 0


@pytest.mark.parametrize("uri", ["nope:x", "test-aead:a", "age1notarecipient:"])
def test_an_entry_no_wrapper_could_have_written_marks_the_envelope_corrupt(
    sealed: ev.Envelope, uri: str
) -> None:
    from keyvault.wrappers import check_wrapper_uri

    doc = doc_of(sealed)
    doc["wrapped_keys"][1]["uri"] = uri
    with pytest.raises(
        IntegrityError, match="names a malformed wrapper URI; the envelope is corrupt"
    ):
        ev.open_envelope(
            parse(doc), [AeadWrapper("transit://test/c")], check_wrapper_uri, sealers=TRUST
        )
    with pytest.raises(AccessDeniedError, match="not wrapped by any wrapper you hold"):
        # no judge: just 4
        ev.open_envelope(parse(doc), [AeadWrapper("transit://test/c")], sealers=TRUST)


def test_strict_mode_never_uses_a_wrapper_the_caller_did_not_pass(
    sealed: ev.Envelope, wrapper_a: AeadWrapper, wrapper_b: AeadWrapper
) -> None:
    doc = doc_of(sealed)
    blob = bytearray(unb64(doc["wrapped_keys"][0]["wrapped"]))
    blob[-1] ^= 1
    doc["wrapped_keys"][0]["wrapped"] = b64(bytes(blob))
    broken_a = parse(doc)
    with pytest.raises(IntegrityError, match="test/a: wrapped key failed authentication"):
        ev.open_envelope(broken_a, [wrapper_a], sealers=TRUST)
    assert wrapper_b.calls == 0
    # The caller trusting both: B's copy is the fallback.
    assert ev.open_envelope(broken_a, [wrapper_a, wrapper_b], sealers=TRUST) == ev.open_envelope(
        sealed, [wrapper_b], sealers=TRUST
    )


def test_strict_mode_same_uri_other_key_does_not_open(sealed: ev.Envelope) -> None:
    impostor = AeadWrapper("transit://test/a")  # the right name, not the right key
    with pytest.raises(IntegrityError, match="failed authentication"):
        ev.open_envelope(sealed, [impostor], sealers=TRUST)


# --------------------------------------------------------------------------- rewrap


def test_rewrap_adds_and_removes_without_touching_the_ciphertext(
    sealed: ev.Envelope, data: bytes, wrapper_a: AeadWrapper, wrapper_b: AeadWrapper
) -> None:
    wrapper_c = AeadWrapper("transit://test/c")
    dek = ev.unwrap_dek(sealed, [wrapper_a], sealers=TRUST)
    moved = ev.rewrap(sealed, dek, add=[wrapper_c], remove=["transit://test/a"])
    assert moved.signature is None  # rewrap's result must be signed again before storing
    with pytest.raises(ValueError, match="unsigned version 2 envelope cannot be stored"):
        moved.to_bytes()
    moved = ev.sign(moved, SEALER, ev.Chain(2, "ab" * 32))
    moved = ev.Envelope.from_bytes(moved.to_bytes())
    assert moved.wrapper_uris == ("transit://test/b", "transit://test/c")
    for name in ("header", "nonce", "ciphertext", "commitment"):
        assert getattr(moved, name) == getattr(sealed, name)
    assert ev.open_envelope(moved, [wrapper_c], sealers=TRUST) == data
    assert ev.open_envelope(moved, [wrapper_b], sealers=TRUST) == data
    with pytest.raises(AccessDeniedError, match="not wrapped by any wrapper you hold"):
        ev.open_envelope(moved, [wrapper_a], sealers=TRUST)


def test_rewrap_keeps_an_existing_entry_and_needs_one_left(
    sealed: ev.Envelope, wrapper_a: AeadWrapper
) -> None:
    dek = ev.unwrap_dek(sealed, [wrapper_a], sealers=TRUST)
    assert ev.rewrap(sealed, dek, add=[wrapper_a]).wrapped_keys == sealed.wrapped_keys
    with pytest.raises(UsageError, match="keep at least one wrapper"):
        ev.rewrap(sealed, dek, add=[], remove=["transit://test/a", "transit://test/b"])


def test_rewrap_refuses_a_dek_that_is_not_the_committed_one(sealed: ev.Envelope) -> None:
    with pytest.raises(IntegrityError, match="does not match the envelope's commitment"):
        ev.rewrap(sealed, bytes(DEK_SIZE), add=[AeadWrapper("transit://test/c")])


# --------------------------------------------------------------------------- B22-B27


@pytest.mark.proves("B22")
def test_b22_truncated_json_is_refused(sealed: ev.Envelope) -> None:
    raw = sealed.to_bytes()
    for cut in [0, 1, 2, *range(3, len(raw) - 2, 37), len(raw) - 3]:
        with pytest.raises(IntegrityError, match=r"not valid JSON \(truncated or corrupt\)"):
            ev.Envelope.from_bytes(raw[:cut])


@pytest.mark.proves("B23")
def test_b23_every_flipped_ciphertext_byte_is_refused(
    sealed: ev.Envelope, wrapper_a: AeadWrapper
) -> None:
    doc = doc_of(sealed)
    ciphertext = unb64(doc["ciphertext"])
    for position in range(len(ciphertext)):  # every data byte and every tag byte
        for bit in (0x01, 0x80):
            flipped = bytearray(ciphertext)
            flipped[position] ^= bit
            doc["ciphertext"] = b64(bytes(flipped))
            with pytest.raises(IntegrityError, match="failed authentication; it was altered"):
                ev.open_envelope(parse(doc), [wrapper_a], sealers=TRUST)


@pytest.mark.parametrize("name", ["nonce", "commitment"])
@pytest.mark.proves("B23")
def test_b23_every_flipped_nonce_or_commitment_byte_is_refused(
    sealed: ev.Envelope, wrapper_a: AeadWrapper, name: str
) -> None:
    doc = doc_of(sealed)
    value = unb64(doc[name])
    fragment = "failed authentication" if name == "nonce" else "does not match the envelope's"
    for position in range(len(value)):
        flipped = bytearray(value)
        flipped[position] ^= 0x04
        doc[name] = b64(bytes(flipped))
        with pytest.raises(IntegrityError, match=fragment):
            ev.open_envelope(parse(doc), [wrapper_a], sealers=TRUST)


HEADER_CHANGES = [
    # field, new value, what refuses it
    ("gun", "registry.example.com/team-b/app", "bound to another key's context"),
    ("team", "team-b", "bound to another key's context"),
    ("role", "snapshot", "bound to another key's context"),
    # A fact dropped (a key without a GUN or a role is valid, #18): still another key.
    ("gun", None, "bound to another key's context"),
    ("role", None, "bound to another key's context"),
    ("key_id", "0" * 64, "bound to another key's context"),
    ("algorithm", "rsa", "does not match the envelope's commitment"),
    ("algorithm", None, "does not match the envelope's commitment"),
    ("created", "2030-01-01T00:00:00Z", "does not match the envelope's commitment"),
    ("source_name", "tuf_keys/other.key", "does not match the envelope's commitment"),
    ("source_mode", 0o644, "does not match the envelope's commitment"),
    ("sha256", "0" * 64, "does not match the envelope's commitment"),
    ("size", 228, "ciphertext length does not match its header"),
]


@pytest.mark.parametrize(("name", "value", "fragment"), HEADER_CHANGES)
@pytest.mark.proves("B24")
def test_b24_any_changed_header_field_is_refused(
    sealed: ev.Envelope, wrapper_a: AeadWrapper, name: str, value: Any, fragment: str
) -> None:
    doc = doc_of(sealed)
    assert doc["header"][name] != value
    doc["header"][name] = value
    with pytest.raises(IntegrityError, match=fragment):
        ev.open_envelope(parse(doc), [wrapper_a], sealers=TRUST)


def _moved_to_gun_b(sealed: ev.Envelope) -> tuple[Doc, ev.Header]:
    """The envelope rewritten to look like team-a's key of another GUN, context and all."""
    moved = dataclasses.replace(sealed.header, gun="registry.example.com/team-a/other")
    doc = doc_of(sealed)
    doc["header"] = moved.to_json()
    for entry in doc["wrapped_keys"]:
        entry["context"] = moved.context()
    return doc, moved


@pytest.mark.proves("B25")
def test_b25_moved_envelope_no_longer_matches_its_object_name(sealed: ev.Envelope) -> None:
    other_name = KeyAddress(
        "team-a", "registry.example.com/team-a/other", "targets", KEY_ID
    ).object_name
    assert sealed.address != KeyAddress.from_object_name(other_name)


@pytest.mark.proves("B25")
def test_b25_moved_envelope_is_refused_by_a_context_binding_wrapper(
    sealed: ev.Envelope, wrapper_a: AeadWrapper
) -> None:
    doc, _ = _moved_to_gun_b(sealed)
    with pytest.raises(IntegrityError, match="wrapped key failed authentication"):
        ev.open_envelope(parse(doc), [wrapper_a], sealers=TRUST)


@pytest.mark.proves("B25")
def test_b25_moved_envelope_is_refused_even_if_the_wrapper_ignores_context(
    header: ev.Header, data: bytes
) -> None:
    lax = LaxWrapper("transit://test/lax")
    doc, _ = _moved_to_gun_b(ev.seal(header, data, [lax], sealer=SEALER))
    with pytest.raises(IntegrityError, match="does not match the envelope's commitment"):
        ev.open_envelope(parse(doc), [lax], sealers=TRUST)


@pytest.mark.proves("B25")
def test_b25_moved_envelope_is_refused_by_gcm_even_with_a_recomputed_commitment(
    sealed: ev.Envelope, wrapper_a: AeadWrapper
) -> None:
    """The AAD binds the header on its own: the commitment is not the only guard."""
    dek = ev.unwrap_dek(sealed, [wrapper_a], sealers=TRUST)
    doc, moved = _moved_to_gun_b(sealed)
    doc["commitment"] = b64(ev.commitment(dek, moved))
    with pytest.raises(IntegrityError, match="failed authentication; it was altered"):
        ev.decrypt_with_dek(parse(doc), dek)


@pytest.mark.parametrize("version", [0, 3, -1, "2", "v2", None, True, [2], {"v": 2}, 10**30])
@pytest.mark.proves("B26")
def test_b26_unknown_version_is_refused(sealed: ev.Envelope, version: Any) -> None:
    doc = doc_of(sealed)
    doc["version"] = version
    with pytest.raises(IntegrityError, match="unsupported envelope version") as info:
        parse(doc)
    assert info.value.hint is not None and "upgrade keyvault" in info.value.hint


@pytest.mark.parametrize("version", [1, 3, 0, "2", True, 2.0, None])
@pytest.mark.proves("B26")
def test_b26_header_naming_another_version_is_refused(sealed: ev.Envelope, version: Any) -> None:
    doc = doc_of(sealed)
    doc["header"]["version"] = version
    with pytest.raises(
        IntegrityError,
        match=r"names another format version|names another "
        "format or version",
    ):
        parse(doc)


@pytest.mark.proves("B26")
def test_b26_float_version_is_refused(sealed: ev.Envelope) -> None:
    """2.0 == 2 in Python: the check must be on the type, as for booleans."""
    doc = doc_of(sealed)
    doc["version"] = 2.0
    with pytest.raises(IntegrityError, match="unsupported envelope version"):
        parse(doc)


@pytest.mark.parametrize("length", [0, 16, 31, 33, 64])
@pytest.mark.proves("B27")
def test_b27_wrapped_dek_of_wrong_length_is_refused(
    sealed: ev.Envelope, wrapper_a: AeadWrapper, length: int
) -> None:
    doc = doc_of(sealed)
    doc["wrapped_keys"][0] = wrapper_a.wrap(bytes(range(length)), sealed.header.context()).to_json()
    with pytest.raises(IntegrityError, match="returned a DEK of wrong length"):
        ev.open_envelope(parse(doc), [wrapper_a], sealers=TRUST)


# --------------------------------------------------------------------------- the multi-key attack


def test_multi_key_ciphertext_is_refused(
    sealed: ev.Envelope, data: bytes, wrapper_a: AeadWrapper, wrapper_b: AeadWrapper
) -> None:
    """Two wrapped entries holding different DEKs: each holder must not see a different file.

    The attacker controls the store and B's entry: B's copy is replaced with
    another DEK under which the same nonce and ciphertext would decrypt to
    something else. The commitment binds the one DEK; B's holder is refused.
    """
    other_dek = bytes(range(32))
    doc = doc_of(sealed)
    doc["wrapped_keys"][1] = wrapper_b.wrap(other_dek, sealed.header.context()).to_json()
    mixed = parse(doc)
    assert ev.open_envelope(mixed, [wrapper_a], sealers=TRUST) == data
    with pytest.raises(IntegrityError, match="DEK from transit://test/b does not match") as info:
        ev.open_envelope(mixed, [wrapper_b], sealers=TRUST)
    assert other_dek.hex() not in str(info.value)
    with pytest.raises(IntegrityError, match="DEK does not match the commitment"):
        ev.decrypt_with_dek(mixed, other_dek)


def test_multi_key_ciphertext_consistent_for_the_attacker_refuses_the_other_holder(
    sealed: ev.Envelope, wrapper_a: AeadWrapper, wrapper_b: AeadWrapper
) -> None:
    """The same attack with the commitment and ciphertext made for the attacker's DEK."""
    evil_dek, evil_data = bytes(range(32)), key_bytes(seed=b"evil")
    doc = forge(sealed, evil_dek, sealed.header, evil_data)
    doc["wrapped_keys"][1] = wrapper_b.wrap(evil_dek, sealed.header.context()).to_json()
    mixed = parse(doc)
    with pytest.raises(IntegrityError, match="DEK from transit://test/a does not match"):
        ev.open_envelope(mixed, [wrapper_a], sealers=TRUST)
    # B's holder gets no file either: the header's digest names the real bytes.
    with pytest.raises(IntegrityError, match="decrypted bytes do not match the digest"):
        ev.open_envelope(mixed, [wrapper_b], sealers=TRUST)


def test_context_mismatch_in_a_wrapped_entry_is_refused(
    sealed: ev.Envelope, wrapper_a: AeadWrapper
) -> None:
    doc = doc_of(sealed)
    doc["wrapped_keys"][0]["context"]["keyvault:key_id"] = "1" * 64
    with pytest.raises(IntegrityError, match="bound to another key's context"):
        ev.open_envelope(parse(doc), [wrapper_a], sealers=TRUST)
    doc["wrapped_keys"][0]["context"] = {}
    with pytest.raises(IntegrityError, match="bound to another key's context"):
        ev.open_envelope(parse(doc), [wrapper_a], sealers=TRUST)


@pytest.mark.proves("T6")
def test_entry_replayed_from_another_key_is_refused(
    sealed: ev.Envelope, data: bytes, wrapper_a: AeadWrapper
) -> None:
    """T6: team A's wrapped DEK pasted into another key's envelope, context rewritten."""
    other = make_header(KeyAddress("team-a", GUN, "snapshot", "2" * 64), data)
    victim = doc_of(ev.seal(other, data, [wrapper_a], sealer=SEALER))
    entry = doc_of(sealed)["wrapped_keys"][0]
    entry["context"] = other.context()
    victim["wrapped_keys"] = [entry]
    with pytest.raises(IntegrityError, match="wrapped key failed authentication"):
        ev.open_envelope(parse(victim), [wrapper_a], sealers=TRUST)


def test_decrypted_bytes_are_checked_against_the_digest(
    sealed: ev.Envelope, wrapper_a: AeadWrapper
) -> None:
    dek = ev.unwrap_dek(sealed, [wrapper_a], sealers=TRUST)
    doc = forge(sealed, dek, sealed.header, key_bytes(seed=b"same length, other bytes"))
    with pytest.raises(IntegrityError, match="decrypted bytes do not match the digest"):
        ev.open_envelope(parse(doc), [wrapper_a], sealers=TRUST)


# --------------------------------------------------------------------------- strict parsing


def test_oversized_document_is_refused_before_parsing(
    sealed: ev.Envelope, wrapper_a: AeadWrapper
) -> None:
    raw = sealed.to_bytes()
    padded = raw + b" " * (ev.MAX_ENVELOPE_SIZE - len(raw))
    # at the limit: read
    assert ev.open_envelope(ev.Envelope.from_bytes(padded), [wrapper_a], sealers=TRUST)
    with pytest.raises(IntegrityError, match=f"larger than {ev.MAX_ENVELOPE_SIZE} bytes"):
        ev.Envelope.from_bytes(padded + b" ")
    with pytest.raises(IntegrityError, match="larger than"):
        ev.Envelope.from_bytes(b"[" * (ev.MAX_ENVELOPE_SIZE + 1))


@pytest.mark.parametrize("where", ["top", "header", "wrapped", "context"])
def test_duplicate_json_keys_are_refused(sealed: ev.Envelope, where: str) -> None:
    raw = json.dumps(doc_of(sealed)).encode()
    needle = {
        "top": b'"cipher": ',
        "header": b'"gun": ',
        "wrapped": b'"alg": ',
        "context": b'"keyvault:team": ',
    }[where]
    assert raw.count(needle) >= 1
    value = {
        "top": b'"AES-256-GCM", ',
        "header": b'"registry.example.com/team-a/app", ',
        "wrapped": b'"test-aes-256-gcm", ',
        "context": b'"team-a", ',
    }[where]
    duplicated = raw.replace(needle, needle + value + needle, 1)
    with pytest.raises(IntegrityError, match="not valid JSON"):
        ev.Envelope.from_bytes(duplicated)


@pytest.mark.parametrize("constant", [b"NaN", b"Infinity", b"-Infinity"])
def test_nan_and_infinity_are_refused(sealed: ev.Envelope, constant: bytes) -> None:
    raw = (
        json.dumps(doc_of(sealed))
        .encode()
        .replace(b'"source_mode": 384', b'"source_mode": ' + constant)
    )
    assert constant in raw
    with pytest.raises(IntegrityError, match="not valid JSON"):
        ev.Envelope.from_bytes(raw)


def test_deep_nesting_is_refused_cleanly(sealed: ev.Envelope) -> None:
    for opener, closer in ((b"[", b"]"), (b'{"a":', b"}")):
        deep = b'{"format":' + opener * 200_000 + closer * 200_000 + b"}"
        with pytest.raises(IntegrityError, match="nested more than 32 levels deep"):
            ev.Envelope.from_bytes(deep)
    doc = doc_of(sealed)
    nested: Any = "x"
    for _ in range(500):
        nested = [nested]
    doc["wrapped_keys"][0]["params"] = {"n": nested}
    with pytest.raises(IntegrityError, match="nested more than 32 levels deep"):
        parse(doc)  # refused before parsing, not after


@pytest.mark.parametrize(
    "raw",
    [b"", b"null", b"[]", b'"envelope"', b"1", b"\xff\xfe{}", b"\xef\xbb\xbf{}", b"{}garbage"],
)
def test_not_an_envelope_at_all(raw: bytes) -> None:
    with pytest.raises(IntegrityError, match=r"not valid JSON|must be a JSON object|fields"):
        ev.Envelope.from_bytes(raw)


@pytest.mark.parametrize("name", ["nonce", "ciphertext", "commitment"])
@pytest.mark.parametrize("junk", ["@@@@", "AAA", "AA==\n", " AAAA", "AA-_", "=AAA", "é==="])
def test_wrong_base64_is_refused(sealed: ev.Envelope, name: str, junk: str) -> None:
    doc = doc_of(sealed)
    doc[name] = junk
    with pytest.raises(IntegrityError, match=f"field '{name}' is not valid base64"):
        parse(doc)


def test_wrong_base64_in_a_wrapped_entry_is_refused(sealed: ev.Envelope) -> None:
    doc = doc_of(sealed)
    doc["wrapped_keys"][0]["wrapped"] = doc["wrapped_keys"][0]["wrapped"][:-1] + "*"
    with pytest.raises(IntegrityError, match="field 'wrapped' is not valid base64"):
        parse(doc)


@pytest.mark.parametrize("variant", ["pad-bits", "excess-padding"])
def test_non_canonical_base64_is_refused(sealed: ev.Envelope, variant: str) -> None:
    doc = doc_of(sealed)
    text = doc["commitment"]  # 32 bytes: the last symbol before '=' carries 2 unused bits
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    if variant == "pad-bits":
        doc["commitment"] = text[:-2] + alphabet[alphabet.index(text[-2]) ^ 1] + "="
    else:  # 12 bytes: 16 symbols, no padding needed, and yet '=' is accepted after them
        doc["nonce"] = doc["nonce"] + "=="
    with pytest.raises(IntegrityError, match="is not canonical base64"):
        parse(doc)


WRONG_TYPES: list[tuple[str, Any, str]] = [
    ("header.source_mode", True, "field 'source_mode' has the wrong type"),
    ("header.size", False, "field 'size' has the wrong type"),
    ("header.size", 229.0, "field 'size' has the wrong type"),
    ("header.source_mode", "384", "field 'source_mode' has the wrong type"),
    ("header.team", 7, "field 'team' has the wrong type"),
    ("header.team", None, "field 'team' has the wrong type"),
    ("header.gun", ["a"], "field 'gun' has the wrong type"),
    ("header.algorithm", 1, "field 'algorithm' has the wrong type"),
    ("header.sha256", None, "field 'sha256' has the wrong type"),
    ("header", [], "header must be a JSON object"),
    ("nonce", 12, "field 'nonce' has the wrong type"),
    ("ciphertext", None, "field 'ciphertext' has the wrong type"),
    ("wrapped_keys", {}, "wrapped_keys must list 1 to 16 entries"),
    ("wrapped_keys", [], "wrapped_keys must list 1 to 16 entries"),
    ("wrapped_keys.0", "entry", "wrapped key must be a JSON object"),
    ("wrapped_keys.0.uri", 5, "field 'uri' has the wrong type"),
    ("wrapped_keys.0.uri", "", "invalid uri or alg"),
    ("wrapped_keys.0.uri", "transit://test/a\u001b[2J", "invalid uri or alg"),
    ("wrapped_keys.0.alg", "", "invalid uri or alg"),
    ("wrapped_keys.0.wrapped", "", "blob has an invalid length"),
    ("wrapped_keys.0.context", [], "context must map strings to strings"),
    ("wrapped_keys.0.context", {"keyvault:team": 1}, "context must map strings to strings"),
    ("wrapped_keys.0.params", {"n": True}, "params must map strings to strings or integers"),
    ("wrapped_keys.0.params", {"n": 1.5}, "params must map strings to strings or integers"),
    ("wrapped_keys.0.params", {"n": None}, "params must map strings to strings or integers"),
    ("wrapped_keys.0.params", {str(i): i for i in range(33)}, "params must map strings"),
]


def _set(doc: Doc, path: str, value: Any) -> None:
    *parents, last = path.split(".")
    target: Any = doc
    for part in parents:
        target = target[int(part)] if isinstance(target, list) else target[part]
    if isinstance(target, list):
        target[int(last)] = value
    else:
        target[last] = value


@pytest.mark.parametrize(("path", "value", "fragment"), WRONG_TYPES)
def test_wrong_field_types_are_refused(
    sealed: ev.Envelope, path: str, value: Any, fragment: str
) -> None:
    doc = doc_of(sealed)
    _set(doc, path, value)
    with pytest.raises(IntegrityError, match=fragment.replace("[", r"\[")):
        parse(doc)


def test_too_many_wrapped_entries_are_refused(sealed: ev.Envelope) -> None:
    doc = doc_of(sealed)
    doc["wrapped_keys"] = doc["wrapped_keys"] * 9
    with pytest.raises(IntegrityError, match="1 to 16 entries"):
        parse(doc)


@pytest.mark.parametrize("where", ["", "header", "wrapped_keys.0"])
def test_extra_and_missing_fields_are_refused(sealed: ev.Envelope, where: str) -> None:
    doc = doc_of(sealed)
    target: Any = doc
    for part in filter(None, where.split(".")):
        target = target[int(part)] if isinstance(target, list) else target[part]
    removed = sorted(target)[0]
    target["comment"] = "hello"
    with pytest.raises(IntegrityError, match=r"unexpected fields \(missing: -; unknown: 'comment'"):
        parse(doc)
    del target["comment"], target[removed]
    with pytest.raises(IntegrityError, match=f"missing: {removed}; unknown: -"):
        parse(doc)


def test_unknown_field_names_are_escaped_in_messages(sealed: ev.Envelope) -> None:
    doc = doc_of(sealed)
    doc["\u001b[2J"] = 1
    with pytest.raises(IntegrityError) as info:
        parse(doc)
    assert "\u001b" not in str(info.value) and "\\x1b[2J" in str(info.value)


@pytest.mark.parametrize(
    ("name", "value", "fragment"),
    [
        ("format", "keyvault-envelope2", "not a keyvault envelope"),
        ("format", None, "not a keyvault envelope"),
        ("cipher", "AES-128-GCM", "unsupported envelope cipher"),
        ("cipher", "aes-256-gcm", "unsupported envelope cipher"),
    ],
)
def test_format_and_cipher_allow_lists(
    sealed: ev.Envelope, name: str, value: Any, fragment: str
) -> None:
    doc = doc_of(sealed)
    doc[name] = value
    with pytest.raises(IntegrityError, match=fragment):
        parse(doc)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("gun", "../../etc"),
        ("gun", "/registry/app"),
        ("gun", "a//b"),
        ("team", "Team/A"),
        ("team", "a/../b"),
        ("key_id", "A" * 64),
        ("key_id", "a" * 63),
        ("role", "../root"),
        ("role", "admin/x"),
        ("algorithm", "dsa"),
        ("source_name", "../x.key"),
        ("source_name", "/etc/shadow.key"),
        ("source_name", "x\n.key"),
        ("source_name", "x.pem"),
        ("source_mode", 0o10000),
        ("source_mode", -1),
        ("size", 0),
        ("size", 1024 * 1024 + 1),
        ("sha256", "A" * 64),
        ("created", "yesterday"),
        ("created", "2024-05-06T07:08:09+00:00"),
    ],
)
def test_header_grammar_violations_are_integrity_errors(
    sealed: ev.Envelope, name: str, value: Any
) -> None:
    doc = doc_of(sealed)
    doc["header"][name] = value
    with pytest.raises(IntegrityError, match="envelope header is invalid"):
        parse(doc)


@pytest.mark.parametrize(("gun", "role"), [(GUN, "root"), (None, "Targets"), (GUN, "")])
def test_header_address_rules_are_integrity_errors(
    sealed: ev.Envelope, gun: str | None, role: str
) -> None:
    doc = doc_of(sealed)
    doc["header"].update(gun=gun, role=role)
    with pytest.raises(IntegrityError, match="envelope header is invalid"):
        parse(doc)


@pytest.mark.parametrize(("name", "size"), [("nonce", 11), ("nonce", 16), ("commitment", 31)])
def test_wrong_nonce_or_commitment_length_is_refused(
    sealed: ev.Envelope, name: str, size: int
) -> None:
    doc = doc_of(sealed)
    doc[name] = b64(bytes(size))
    with pytest.raises(IntegrityError, match="nonce or commitment has the wrong length"):
        parse(doc)


@pytest.mark.parametrize("delta", [-1, 1, -16])
def test_ciphertext_length_must_match_the_header(sealed: ev.Envelope, delta: int) -> None:
    doc = doc_of(sealed)
    ciphertext = unb64(doc["ciphertext"])
    doc["ciphertext"] = b64(ciphertext[:delta] if delta < 0 else ciphertext + bytes(delta))
    with pytest.raises(IntegrityError, match="ciphertext length does not match its header"):
        parse(doc)


# --------------------------------------------------------------------------- DEK length


def test_decrypt_with_dek_refuses_a_dek_of_wrong_length(
    sealed: ev.Envelope, wrapper_a: AeadWrapper
) -> None:
    """HMAC pads short keys with zeros: DEK || 0x00 has the same commitment as the DEK."""
    dek = ev.unwrap_dek(sealed, [wrapper_a], sealers=TRUST)
    key = dek + b"\0"
    assert hmac.compare_digest(ev.commitment(key, sealed.header), sealed.commitment)
    with pytest.raises(IntegrityError, match="DEK does not match the commitment"):
        ev.decrypt_with_dek(sealed, key)


def test_rewrap_refuses_a_dek_of_wrong_length(sealed: ev.Envelope, wrapper_a: AeadWrapper) -> None:
    """Else a 33-byte "DEK" would be wrapped for a new wrapper that can never open it."""
    dek = ev.unwrap_dek(sealed, [wrapper_a], sealers=TRUST)
    with pytest.raises(IntegrityError, match="DEK does not match the envelope's commitment"):
        ev.rewrap(sealed, dek + b"\0", add=[AeadWrapper("transit://test/c")])


# --------------------------------------------------------------------------- fuzzing

_ENVELOPE_DATA = key_bytes(48, seed=b"fuzz")
_FUZZ_WRAPPER = AeadWrapper("transit://test/fuzz", kek=hashlib.sha256(b"fuzz").digest())
_FUZZ_RAW = ev.seal(
    make_header(data=_ENVELOPE_DATA), _ENVELOPE_DATA, [_FUZZ_WRAPPER], sealer=SEALER
).to_bytes()


def _open_or_refuse(raw: bytes) -> None:
    """The property: a clean KeyvaultError, or exactly the original bytes."""
    try:
        opened = ev.open_envelope(ev.Envelope.from_bytes(raw), [_FUZZ_WRAPPER], sealers=TRUST)
    except KeyvaultError:
        return
    assert opened == _ENVELOPE_DATA


_edits = st.lists(
    st.tuples(
        st.sampled_from(["flip", "delete", "insert", "replace"]),
        st.integers(0, len(_FUZZ_RAW) - 1),
        st.integers(1, 8),
        st.binary(min_size=1, max_size=8),
    ),
    min_size=1,
    max_size=4,
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_edits)
def test_fuzz_byte_mutations_open_cleanly_or_refuse(
    edits: list[tuple[str, int, int, bytes]],
) -> None:
    raw = bytearray(_FUZZ_RAW)
    for op, at, length, blob in edits:
        at %= max(len(raw), 1)
        if op == "flip" and raw:
            raw[at] ^= 1 << (length % 8)
        elif op == "delete":
            del raw[at : at + length]
        elif op == "insert":
            raw[at:at] = blob
        elif raw:
            raw[at : at + len(blob)] = blob
    _open_or_refuse(bytes(raw))


_json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
    | st.sampled_from(["", "AAAA", "team-a", "targets", "keyvault-envelope", "AES-256-GCM"]),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(value, dict):
        for key, child in value.items():
            found += _paths(child, (*prefix, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            found += _paths(child, (*prefix, index))
    return found


_FUZZ_DOC = json.loads(_FUZZ_RAW)
_FUZZ_PATHS = _paths(_FUZZ_DOC)[1:]


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(_FUZZ_PATHS), _json_values, st.booleans())
def test_fuzz_structural_mutations_open_cleanly_or_refuse(
    path: tuple[Any, ...], value: Any, delete: bool
) -> None:
    doc = copy.deepcopy(_FUZZ_DOC)
    parent: Any = doc
    for part in path[:-1]:
        parent = parent[part]
    if delete:
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    _open_or_refuse(json.dumps(doc).encode())


def test_canonical_header_is_what_the_aad_and_commitment_cover(
    sealed: ev.Envelope, wrapper_a: AeadWrapper, data: bytes
) -> None:
    """Cross-check with plain primitives, independent of keyvault's helpers."""
    dek = ev.unwrap_dek(sealed, [wrapper_a], sealers=TRUST)
    aad = json.dumps(
        sealed.header.to_json(), sort_keys=True, separators=(",", ":"), ensure_ascii=False
    ).encode()
    assert aad == canonical_json(sealed.header.to_json()) == sealed.header.canonical()
    expected = hmac.new(dek, b"keyvault/v1/commit" + aad, hashlib.sha256).digest()
    assert sealed.commitment == expected
    assert AESGCM(dek).decrypt(sealed.nonce, sealed.ciphertext, aad) == data


def test_a_changed_copy_of_a_header_has_its_own_aad_and_address(sealed: ev.Envelope) -> None:
    """A header keeps its canonical form and its address once made (opening needs them
    often); a copy with another GUN must not carry them over, or it would open as the
    original's."""
    header = sealed.header
    aad, address = header.canonical(), header.address
    moved = dataclasses.replace(header, gun="registry.example.com/team-a/other")
    assert moved.canonical() == canonical_json(moved.to_json()) != aad
    assert moved.address.gun == "registry.example.com/team-a/other" != address.gun
    assert header.canonical() == aad == canonical_json(header.to_json())
    assert address == KeyAddress(header.team, header.gun, header.role, header.key_id)


def test_open_needs_no_more_than_the_callers_wrappers(sealed: ev.Envelope) -> None:
    """An empty wrapper list is refused, never a guess from the envelope."""
    with pytest.raises(AccessDeniedError, match="not wrapped by any wrapper you hold"):
        ev.open_envelope(sealed, [], sealers=TRUST)


ERRORS_ARE_CLASSES: list[tuple[type[KeyvaultError], int]] = [
    (IntegrityError, 5),
    (AccessDeniedError, 4),
    (UsageError, 2),
]


@pytest.mark.parametrize(("cls", "code"), ERRORS_ARE_CLASSES)
def test_exit_codes_of_the_classes_asserted_here(cls: type[KeyvaultError], code: int) -> None:
    assert cls.exit_code == code
