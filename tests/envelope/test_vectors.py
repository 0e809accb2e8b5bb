"""Envelope test vectors, format v1 and v2: the committed vectors.json is the reference.

Each expected value is recomputed three ways and must be equal: with
keyvault's own primitives (seal with its randomness pinned, commitment,
Header, sign), with plain ``cryptography`` calls written out here, and with
the stand-alone generator make_vectors.py. Format v1 is read-only now: its
vectors are parsed and opened (on an explicit allow-unsigned), never sealed.
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
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from keyvault import envelope as ev
from keyvault import sealing
from keyvault.canonical import canonical_json
from keyvault.errors import IntegrityError
from keyvault.names import KeyAddress
from keyvault.plugins import BackendOptions
from keyvault.sealing import SealerKey, SealerTrust
from keyvault.wrappers.base import DEK_SIZE, WrappedKey

from . import make_vectors

VECTORS: dict[str, Any] = json.loads(make_vectors.VECTORS_FILE.read_text(encoding="utf-8"))
V1, V2 = VECTORS["vectors"], VECTORS["vectors_v2"]
ALL = V1 + V2


def _id(vector: dict[str, Any]) -> str:
    chain = vector["inputs"].get("chain")
    return f"v{vector['inputs']['header']['version']}-{vector['inputs']['header']['role']}" + (
        f"-{chain['sequence']}" if chain else ""
    )


def private_key(vector: dict[str, Any]) -> ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey:
    """The vector's test sealer, rebuilt from its private bytes with plain cryptography."""
    raw = bytes.fromhex(vector["sealer"]["private_key_hex"])
    if vector["sealer"]["alg"] == "ed25519":
        return ed25519.Ed25519PrivateKey.from_private_bytes(raw)
    return ec.derive_private_key(int.from_bytes(raw, "big"), ec.SECP256R1())


class VectorSealer:
    """The vector's sealer behind keyvault's Sealer protocol (ECDSA signs as RFC 6979)."""

    def __init__(self, vector: dict[str, Any]) -> None:
        self.alg, self.private = vector["sealer"]["alg"], private_key(vector)

    @property
    def key(self) -> SealerKey:
        return SealerKey(
            self.alg,
            self.private.public_key().public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            ),
        )

    def sign(self, message: bytes) -> bytes:
        if isinstance(self.private, ed25519.Ed25519PrivateKey):
            return self.private.sign(message)
        return self.private.sign(message, ec.ECDSA(hashes.SHA256(), deterministic_signing=True))


def trust(vector: dict[str, Any]) -> SealerTrust:
    return SealerTrust.of([vector["sealer"]["fingerprint"]])


def test_the_committed_file_is_what_the_generator_writes() -> None:
    assert make_vectors.render(make_vectors.generate()) == make_vectors.VECTORS_FILE.read_text(
        encoding="utf-8"
    )


def test_the_vectors_cover_the_interesting_shapes() -> None:
    for vectors, version in ((V1, 1), (V2, 2)):
        headers = [v["inputs"]["header"] for v in vectors]
        assert {h["version"] for h in headers} == {version}
        assert {h["gun"] is None for h in headers} == {True, False}
        assert any(h["role"] == "root" for h in headers)
        assert any("/" in h["role"] for h in headers)
        assert any(not h["source_name"].isascii() for h in headers)
    assert {v["sealer"]["alg"] for v in V2} == set(sealing.ALGORITHMS)
    assert {v["inputs"]["chain"]["previous"] is None for v in V2} == {True, False}
    for vector in ALL:
        plaintext = bytes.fromhex(vector["inputs"]["plaintext_hex"])
        assert b"PRIVATE KEY" not in plaintext and b"-----BEGIN" not in plaintext
    assert "PRIVATE KEY" not in make_vectors.VECTORS_FILE.read_text(encoding="utf-8")


@pytest.mark.parametrize("vector", ALL, ids=_id)
def test_with_plain_cryptography(vector: dict[str, Any]) -> None:
    inputs = vector["inputs"]
    dek, nonce = bytes.fromhex(inputs["dek_hex"]), bytes.fromhex(inputs["nonce_hex"])
    plaintext = bytes.fromhex(inputs["plaintext_hex"])
    aad = json.dumps(
        inputs["header"], sort_keys=True, separators=(",", ":"), ensure_ascii=False
    ).encode("utf-8")
    assert aad.hex() == vector["aad_hex"]
    assert aad == vector["canonical_header"].encode("utf-8")
    assert (
        hmac.new(dek, b"keyvault/v1/commit" + aad, hashlib.sha256).hexdigest()
        == vector["commitment_hex"]
    )
    ciphertext = AESGCM(dek).encrypt(nonce, plaintext, aad)
    assert ciphertext.hex() == vector["ciphertext_hex"]
    assert ciphertext[-16:].hex() == vector["tag_hex"]
    assert AESGCM(dek).decrypt(nonce, ciphertext, aad) == plaintext
    assert hashlib.sha256(plaintext).hexdigest() == inputs["header"]["sha256"]

    context = vector["context"]
    context_bytes = json.dumps(
        context, sort_keys=True, separators=(",", ":"), ensure_ascii=False
    ).encode("utf-8")
    assert context_bytes.decode("utf-8") == vector["context_canonical"]
    assert (dek + hashlib.sha256(context_bytes).digest()).hex() == vector["age_plaintext_hex"]

    wrap = vector["passphrase_wrap"]
    secret = unicodedata.normalize("NFC", wrap["passphrase"]).encode("utf-8")
    assert secret.hex() == wrap["passphrase_nfc_utf8_hex"]
    kek = Scrypt(
        salt=bytes.fromhex(wrap["salt_hex"]), length=32, n=wrap["n"], r=wrap["r"], p=wrap["p"]
    ).derive(secret)
    assert kek.hex() == wrap["kek_hex"]
    check = hmac.new(kek, b"keyvault/v1/passphrase-check", hashlib.sha256).digest()[:16]
    assert check.hex() == wrap["check_hex"]
    wrapped = AESGCM(kek).encrypt(bytes.fromhex(wrap["nonce_hex"]), dek, context_bytes)
    assert wrapped.hex() == wrap["wrapped_hex"]

    envelope = vector["envelope"]
    assert envelope["version"] == inputs["header"]["version"]
    assert envelope["header"] == inputs["header"]
    assert base64.b64decode(envelope["ciphertext"]).hex() == vector["ciphertext_hex"]
    assert base64.b64decode(envelope["commitment"]).hex() == vector["commitment_hex"]
    assert base64.b64decode(envelope["nonce"]) == nonce
    entry = envelope["wrapped_keys"][0]
    assert base64.b64decode(entry["wrapped"]) == wrapped
    assert base64.b64decode(entry["params"]["check"]) == check
    assert base64.b64decode(entry["params"]["salt"]).hex() == wrap["salt_hex"]
    assert base64.b64decode(entry["params"]["nonce"]).hex() == wrap["nonce_hex"]


@pytest.mark.parametrize("vector", V2, ids=_id)
def test_the_signature_with_plain_cryptography(vector: dict[str, Any]) -> None:
    envelope, sealer = vector["envelope"], vector["sealer"]
    private = private_key(vector)
    public = private.public_key()
    der = public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert der.hex() == sealer["public_key_der_hex"]
    assert "sha256:" + hashlib.sha256(der).hexdigest() == sealer["fingerprint"]

    assert envelope["chain"] == vector["inputs"]["chain"]
    unsigned = {name: value for name, value in envelope.items() if name != "signature"}
    assert set(unsigned) == {
        "format",
        "version",
        "header",
        "cipher",
        "nonce",
        "ciphertext",
        "commitment",
        "wrapped_keys",
        "chain",
    }
    message = b"keyvault/v2/envelope\n" + json.dumps(
        unsigned, sort_keys=True, separators=(",", ":"), ensure_ascii=False
    ).encode("utf-8")
    assert message.hex() == vector["signed_message_hex"]
    signature = bytes.fromhex(vector["signature_hex"])
    if isinstance(private, ed25519.Ed25519PrivateKey):
        assert isinstance(public, ed25519.Ed25519PublicKey)
        assert private.sign(message) == signature  # Ed25519 is deterministic
        public.verify(signature, message)
    else:
        assert isinstance(public, ec.EllipticCurvePublicKey)
        assert (
            private.sign(message, ec.ECDSA(hashes.SHA256(), deterministic_signing=True))
            == signature
        )  # RFC 6979
        public.verify(signature, message, ec.ECDSA(hashes.SHA256()))
    assert envelope["signature"] == {
        "alg": sealer["alg"],
        "public_key": base64.b64encode(der).decode(),
        "value": base64.b64encode(signature).decode(),
    }
    with pytest.raises(InvalidSignature):  # the check can fail: one more byte signed
        if isinstance(public, ed25519.Ed25519PublicKey):
            public.verify(signature, message + b" ")
        else:
            public.verify(signature, message + b" ", ec.ECDSA(hashes.SHA256()))

    stored = (json.dumps(envelope, indent=2, sort_keys=True) + "\n").encode("utf-8")
    assert hashlib.sha256(stored).hexdigest() == vector["stored_sha256"]


def test_the_second_version_chains_to_the_stored_bytes_of_the_first() -> None:
    [second] = [v for v in V2 if v["inputs"]["chain"]["sequence"] == 2]
    [first] = [
        v
        for v in V2
        if v["object_name"] == second["object_name"] and v["inputs"]["chain"]["sequence"] == 1
    ]
    assert second["inputs"]["chain"]["previous"] == first["stored_sha256"]
    assert {k: v for k, v in second["envelope"].items() if k not in ("chain", "signature")} == {
        k: v for k, v in first["envelope"].items() if k not in ("chain", "signature")
    }
    assert second["signature_hex"] != first["signature_hex"]


@pytest.mark.parametrize("vector", ALL, ids=_id)
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
    assert envelope.version == header.version
    assert envelope.to_json() == vector["envelope"]
    assert ev.Envelope.from_bytes(envelope.to_bytes()) == envelope
    assert ev.decrypt_with_dek(envelope, dek) == plaintext


@pytest.mark.parametrize("vector", V2, ids=_id)
def test_the_signature_with_keyvault_primitives(vector: dict[str, Any]) -> None:
    envelope = ev.Envelope.from_json(vector["envelope"])
    assert envelope.signed_message().hex() == vector["signed_message_hex"]
    assert hashlib.sha256(envelope.to_bytes()).hexdigest() == vector["stored_sha256"]
    assert envelope.chain == ev.Chain(**vector["inputs"]["chain"])
    key = SealerKey(vector["sealer"]["alg"], bytes.fromhex(vector["sealer"]["public_key_der_hex"]))
    assert key.fingerprint == vector["sealer"]["fingerprint"]
    assert ev.authenticate(envelope, trust(vector)) == key
    resigned = ev.sign(envelope, VectorSealer(vector), envelope.chain)
    assert resigned.to_json() == vector["envelope"]
    assert resigned.to_bytes() == envelope.to_bytes()


class FixedWrapper:
    """Returns the vector's wrapped entry, after checking it is asked for the right thing."""

    def __init__(self, entry: dict[str, Any], dek: bytes) -> None:
        self.entry, self.dek = entry, dek
        self.uri = entry["uri"]

    def wrap(self, dek: bytes, context: Mapping[str, str]) -> WrappedKey:
        assert dek == self.dek and dict(context) == self.entry["context"]
        return WrappedKey(
            uri=self.uri,
            alg=self.entry["alg"],
            blob=base64.b64decode(self.entry["wrapped"]),
            context=dict(context),
            params=self.entry["params"],
        )

    def unwrap(self, wrapped: WrappedKey, context: Mapping[str, str]) -> bytes:
        raise AssertionError("not used")

    def close(self) -> None:
        pass


@pytest.mark.parametrize("vector", V2, ids=_id)
def test_seal_with_pinned_randomness_reproduces_the_envelope(
    vector: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
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
    sealed = ev.seal(
        header,
        bytes.fromhex(inputs["plaintext_hex"]),
        [wrapper],
        sealer=VectorSealer(vector),
        chain=ev.Chain(**inputs["chain"]),
    )
    assert sealed.ciphertext.hex() == vector["ciphertext_hex"]
    assert sealed.commitment.hex() == vector["commitment_hex"]
    assert sealed.to_json() == vector["envelope"]


@pytest.mark.parametrize("vector", V1, ids=_id)
def test_v1_is_read_only(vector: dict[str, Any]) -> None:
    """keyvault no longer seals v1, and opens it only on an explicit allow-unsigned."""
    header = ev.Header.from_json(vector["inputs"]["header"])
    with pytest.raises(ValueError, match="only the current envelope version"):
        ev.seal(
            header, bytes.fromhex(vector["inputs"]["plaintext_hex"]), [], sealer=VectorSealer(V2[0])
        )
    envelope = ev.Envelope.from_json(vector["envelope"])
    assert not envelope.signed and envelope.chain is None
    with pytest.raises(IntegrityError, match="the envelope is unsigned"):
        ev.authenticate(envelope, SealerTrust.of([v["sealer"]["fingerprint"] for v in V2]))
    assert ev.authenticate(envelope, SealerTrust(), allow_unsigned=True) is None


@pytest.mark.parametrize("vector", ALL, ids=_id)
def test_a_changed_vector_does_not_open(vector: dict[str, Any]) -> None:
    """The vectors can fail: one changed header byte and the commitment no longer holds."""
    doc = json.loads(json.dumps(vector["envelope"]))
    doc["header"]["created"] = "2000-01-01T00:00:00Z"
    with pytest.raises(IntegrityError, match="DEK does not match the commitment"):
        ev.decrypt_with_dek(ev.Envelope.from_json(doc), bytes.fromhex(vector["inputs"]["dek_hex"]))


@pytest.mark.parametrize("vector", V2, ids=_id)
def test_a_changed_v2_vector_fails_its_signature(vector: dict[str, Any]) -> None:
    doc = json.loads(json.dumps(vector["envelope"]))
    doc["chain"]["sequence"] += 1
    with pytest.raises(IntegrityError, match="signature does not verify"):
        ev.authenticate(ev.Envelope.from_json(doc), trust(vector))


@pytest.mark.parametrize("vector", ALL, ids=_id)
def test_keyvaults_passphrase_wrapper_opens_the_vectors(vector: dict[str, Any]) -> None:
    from keyvault.wrappers.passphrase import PassphraseWrapper

    passphrase = vector["passphrase_wrap"]["passphrase"]  # as typed: NFD in one vector
    wrapper = PassphraseWrapper.from_uri(
        "passphrase:", BackendOptions(env={"KEYVAULT_PASSPHRASE": passphrase})
    )
    envelope = ev.Envelope.from_json(vector["envelope"])
    sealers = trust(vector) if envelope.signed else SealerTrust()
    unsigned = not envelope.signed  # v1: only because this test says so
    try:
        assert (
            ev.unwrap_dek(envelope, [wrapper], sealers=sealers, allow_unsigned=unsigned).hex()
            == vector["inputs"]["dek_hex"]
        )
        assert (
            ev.open_envelope(envelope, [wrapper], sealers=sealers, allow_unsigned=unsigned).hex()
            == vector["inputs"]["plaintext_hex"]
        )
    finally:
        wrapper.close()


def test_the_specification_shows_the_first_vector_and_the_real_names() -> None:
    """docs/envelope.md must not drift from the vectors or from the names it specifies."""
    from keyvault.wrappers import age, passphrase

    spec = (Path(__file__).resolve().parents[2] / "docs" / "envelope.md").read_text("utf-8")
    example = spec.split("```json\n", 1)[1].split("```", 1)[0]
    assert json.loads(example) == V2[0]["envelope"]
    assert V2[0]["canonical_header"] in spec
    assert V2[0]["sealer"]["fingerprint"] in spec
    for name in (
        age.ALG,
        passphrase.ALG,
        passphrase._CHECK_LABEL.decode(),
        ev.COMMIT_LABEL.decode(),
        ev.CIPHER,
        ev.FORMAT,
        sealing.ED25519,
        sealing.ECDSA_P256,
        sealing.PIN_LINE.strip(),
    ):
        assert f"`{name}`" in spec or f'"{name}"' in spec, name
    assert r"`keyvault/v2/envelope\n`" in spec and ev.SIGN_LABEL == b"keyvault/v2/envelope\n"
    low, high = passphrase.MIN_N.bit_length() - 1, passphrase.MAX_N.bit_length() - 1
    assert f"from `2**{low}` to `2**{high}`" in spec
    assert f"above `2**{passphrase.UNWRAP_MAX_N.bit_length() - 1}`" in spec
    assert f"`n = 2**{passphrase.DEFAULT_N.bit_length() - 1}`" in spec
