"""Envelope v1 test vectors: the committed vectors.json is the reference.

Each expected value is recomputed three ways and must be equal: with
keyvault's own primitives (seal with its randomness pinned, commitment,
Header), with plain ``cryptography`` calls written out here, and with the
stand-alone generator make_vectors.py.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import unicodedata
from collections.abc import Mapping
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from keyvault import envelope as ev
from keyvault.canonical import canonical_json
from keyvault.errors import IntegrityError
from keyvault.names import KeyAddress
from keyvault.plugins import BackendOptions
from keyvault.wrappers.base import DEK_SIZE, WrappedKey

from . import make_vectors

VECTORS: dict[str, Any] = json.loads(make_vectors.VECTORS_FILE.read_text(encoding="utf-8"))
CASES = VECTORS["vectors"]
IDS = [v["inputs"]["header"]["role"] for v in CASES]


def test_the_committed_file_is_what_the_generator_writes() -> None:
    assert make_vectors.render(make_vectors.generate()) == make_vectors.VECTORS_FILE.read_text(
        encoding="utf-8")


def test_the_vectors_cover_the_interesting_shapes() -> None:
    headers = [v["inputs"]["header"] for v in CASES]
    assert {h["gun"] is None for h in headers} == {True, False}
    assert any(h["role"] == "root" for h in headers)
    assert any("/" in h["role"] for h in headers)
    assert any(not h["source_name"].isascii() for h in headers)
    for vector in CASES:
        plaintext = bytes.fromhex(vector["inputs"]["plaintext_hex"])
        assert b"PRIVATE KEY" not in plaintext and b"-----BEGIN" not in plaintext
    assert "PRIVATE KEY" not in make_vectors.VECTORS_FILE.read_text(encoding="utf-8")


@pytest.mark.parametrize("vector", CASES, ids=IDS)
def test_with_plain_cryptography(vector: dict[str, Any]) -> None:
    inputs = vector["inputs"]
    dek, nonce = bytes.fromhex(inputs["dek_hex"]), bytes.fromhex(inputs["nonce_hex"])
    plaintext = bytes.fromhex(inputs["plaintext_hex"])
    aad = json.dumps(inputs["header"], sort_keys=True, separators=(",", ":"),
                     ensure_ascii=False).encode("utf-8")
    assert aad.hex() == vector["aad_hex"]
    assert aad == vector["canonical_header"].encode("utf-8")
    assert hmac.new(dek, b"keyvault/v1/commit" + aad, hashlib.sha256).hexdigest() == vector[
        "commitment_hex"]
    ciphertext = AESGCM(dek).encrypt(nonce, plaintext, aad)
    assert ciphertext.hex() == vector["ciphertext_hex"]
    assert ciphertext[-16:].hex() == vector["tag_hex"]
    assert AESGCM(dek).decrypt(nonce, ciphertext, aad) == plaintext
    assert hashlib.sha256(plaintext).hexdigest() == inputs["header"]["sha256"]

    context = vector["context"]
    context_bytes = json.dumps(context, sort_keys=True, separators=(",", ":"),
                               ensure_ascii=False).encode("utf-8")
    assert context_bytes.decode("utf-8") == vector["context_canonical"]
    assert (dek + hashlib.sha256(context_bytes).digest()).hex() == vector["age_plaintext_hex"]

    wrap = vector["passphrase_wrap"]
    secret = unicodedata.normalize("NFC", wrap["passphrase"]).encode("utf-8")
    assert secret.hex() == wrap["passphrase_nfc_utf8_hex"]
    kek = Scrypt(salt=bytes.fromhex(wrap["salt_hex"]), length=32, n=wrap["n"], r=wrap["r"],
                 p=wrap["p"]).derive(secret)
    assert kek.hex() == wrap["kek_hex"]
    check = hmac.new(kek, b"keyvault/v1/passphrase-check", hashlib.sha256).digest()[:16]
    assert check.hex() == wrap["check_hex"]
    wrapped = AESGCM(kek).encrypt(bytes.fromhex(wrap["nonce_hex"]), dek, context_bytes)
    assert wrapped.hex() == wrap["wrapped_hex"]

    envelope = vector["envelope"]
    assert envelope["header"] == inputs["header"]
    assert base64.b64decode(envelope["ciphertext"]).hex() == vector["ciphertext_hex"]
    assert base64.b64decode(envelope["commitment"]).hex() == vector["commitment_hex"]
    assert base64.b64decode(envelope["nonce"]) == nonce
    entry = envelope["wrapped_keys"][0]
    assert base64.b64decode(entry["wrapped"]) == wrapped
    assert base64.b64decode(entry["params"]["check"]) == check
    assert base64.b64decode(entry["params"]["salt"]).hex() == wrap["salt_hex"]
    assert base64.b64decode(entry["params"]["nonce"]).hex() == wrap["nonce_hex"]


@pytest.mark.parametrize("vector", CASES, ids=IDS)
def test_with_keyvault_primitives(vector: dict[str, Any]) -> None:
    inputs = vector["inputs"]
    dek, plaintext = bytes.fromhex(inputs["dek_hex"]), bytes.fromhex(inputs["plaintext_hex"])
    header = ev.Header.from_json(inputs["header"])
    assert header.to_json() == inputs["header"]
    assert header.canonical() == bytes.fromhex(vector["aad_hex"])
    assert ev.commitment(dek, header).hex() == vector["commitment_hex"]
    assert header.context() == vector["context"]
    assert canonical_json(header.context()).decode("utf-8") == vector["context_canonical"]
    assert header.address.object_name == vector["object_name"]
    assert KeyAddress.from_object_name(vector["object_name"]) == header.address

    envelope = ev.Envelope.from_json(vector["envelope"])
    assert envelope.to_json() == vector["envelope"]
    assert ev.Envelope.from_bytes(envelope.to_bytes()) == envelope
    assert ev.decrypt_with_dek(envelope, dek) == plaintext


class FixedWrapper:
    """Returns the vector's wrapped entry, after checking it is asked for the right thing."""

    def __init__(self, entry: dict[str, Any], dek: bytes) -> None:
        self.entry, self.dek = entry, dek
        self.uri = entry["uri"]

    def wrap(self, dek: bytes, context: Mapping[str, str]) -> WrappedKey:
        assert dek == self.dek and dict(context) == self.entry["context"]
        return WrappedKey(uri=self.uri, alg=self.entry["alg"],
                          blob=base64.b64decode(self.entry["wrapped"]),
                          context=dict(context), params=self.entry["params"])

    def unwrap(self, wrapped: WrappedKey, context: Mapping[str, str]) -> bytes:
        raise AssertionError("not used")

    def close(self) -> None:
        pass


@pytest.mark.parametrize("vector", CASES, ids=IDS)
def test_seal_with_pinned_randomness_reproduces_the_envelope(
        vector: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    inputs = vector["inputs"]
    dek, nonce = bytes.fromhex(inputs["dek_hex"]), bytes.fromhex(inputs["nonce_hex"])

    def token_bytes(size: int) -> bytes:
        assert size == DEK_SIZE
        return dek

    def urandom(size: int) -> bytes:
        assert size == ev.NONCE_SIZE
        return nonce

    # Only envelope.py's view of the two modules is replaced.
    monkeypatch.setattr(ev, "secrets", SimpleNamespace(token_bytes=token_bytes))
    monkeypatch.setattr(ev, "os", SimpleNamespace(urandom=urandom))
    header = ev.Header.from_json(inputs["header"])
    wrapper = FixedWrapper(vector["envelope"]["wrapped_keys"][0], dek)
    sealed = ev.seal(header, bytes.fromhex(inputs["plaintext_hex"]), [wrapper], sealer=SEALER)
    assert sealed.ciphertext.hex() == vector["ciphertext_hex"]
    assert sealed.commitment.hex() == vector["commitment_hex"]
    assert sealed.to_json() == vector["envelope"]


@pytest.mark.parametrize("vector", CASES, ids=IDS)
def test_a_changed_vector_does_not_open(vector: dict[str, Any]) -> None:
    """The vectors can fail: one changed header byte and the commitment no longer holds."""
    doc = json.loads(json.dumps(vector["envelope"]))
    doc["header"]["created"] = "2000-01-01T00:00:00Z"
    with pytest.raises(IntegrityError, match="DEK does not match the commitment"):
        ev.decrypt_with_dek(ev.Envelope.from_json(doc), bytes.fromhex(vector["inputs"]["dek_hex"]))


@pytest.mark.parametrize("vector", CASES, ids=IDS)
def test_keyvaults_passphrase_wrapper_opens_the_vectors(vector: dict[str, Any]) -> None:
    from keyvault.wrappers.passphrase import PassphraseWrapper

    passphrase = vector["passphrase_wrap"]["passphrase"]  # as typed: NFD in one vector
    wrapper = PassphraseWrapper.from_uri(
        "passphrase:", BackendOptions(env={"KEYVAULT_PASSPHRASE": passphrase}))
    envelope = ev.Envelope.from_json(vector["envelope"])
    try:
        assert ev.unwrap_dek(envelope, [wrapper], sealers=TRUST).hex() == vector["inputs"]["dek_hex"]
        assert ev.open_envelope(envelope, [wrapper], sealers=TRUST).hex() == vector["inputs"]["plaintext_hex"]
    finally:
        wrapper.close()


def test_the_specification_shows_the_first_vector_and_the_real_names() -> None:
    """docs/envelope.md must not drift from the vectors or from the wrappers it specifies."""
    from keyvault.wrappers import age, passphrase

    spec = (Path(__file__).resolve().parents[2] / "docs" / "envelope.md").read_text("utf-8")
    example = spec.split("```json\n", 1)[1].split("```", 1)[0]
    assert json.loads(example) == CASES[0]["envelope"]
    assert CASES[0]["canonical_header"] in spec
    for name in (age.ALG, passphrase.ALG, passphrase._CHECK_LABEL.decode(),
                 ev.COMMIT_LABEL.decode(), ev.CIPHER, ev.FORMAT):
        assert f"`{name}`" in spec or f'"{name}"' in spec, name
    low, high = passphrase.MIN_N.bit_length() - 1, passphrase.MAX_N.bit_length() - 1
    assert f"2**{low} … 2**{high}" in spec
    assert f"`n = 2**{passphrase.DEFAULT_N.bit_length() - 1}`" in spec
