"""AwsKmsSealer against moto's KMS server: a sealing key whose private half stays in KMS.

Each test makes its own ``ECC_NIST_P256`` / ``SIGN_VERIFY`` key with moto's
admin client. Errors moto cannot produce (denied, disabled, an answer for
another key) come from the scripted responder, as in test_kms_errors.py.

:func:`seal_round_trip` and :func:`cli_round_trip` are shared with the
Transit sealer's tests (tests/vault/test_transit_sealer.py).
"""

from __future__ import annotations

import base64
import hashlib
import json
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from e2e.machines import render_config, run_keyvault
from fixtures.kms import KMS_CREDS, KmsKey, MotoServer
from fixtures.kms_responder import ARN, Responder, error
from fixtures.s3 import REGION
from fixtures.servers import BackendSetup, free_port

from keyvault import envelope as ev
from keyvault.errors import (
    AccessDeniedError,
    BackendUnavailableError,
    IntegrityError,
    UsageError,
)
from keyvault.names import KeyAddress
from keyvault.plugins import BackendOptions
from keyvault.sealers import open_sealer
from keyvault.sealers.awskms import MAX_RAW_MESSAGE, AwsKmsSealer
from keyvault.sealing import ECDSA_P256, Sealer, SealerTrust
from keyvault.trust.keyid import private_key_id
from keyvault.trust.sample import notary_key_file, write_sample_trust_dir
from keyvault.wrappers import Wrapper
from keyvault.wrappers.awskms import KmsKeyNotFoundError

from .conftest import kms_options, open_kms

TEAM = "team-a"
GUN = "example.com/team-a/app"
PASS = "correct horse"
SECRET = "responder-secret-key-xyz"
STRANGER = "sha256:" + "ab" * 32


# -- shared with the Transit sealer's tests ---------------------------------------------


def seal_round_trip(sealer: Sealer, wrapper: Wrapper) -> ev.Envelope:
    """Seal a Notary key with ``sealer``; the stored bytes authenticate against a pin of
    ``sealer.key.fingerprint`` alone and open, and against no other pin."""
    key = ec.generate_private_key(ec.SECP256R1())
    data = notary_key_file(key, "targets", GUN, PASS)
    key_id = private_key_id(key)
    header = ev.new_header(
        address=KeyAddress(TEAM, GUN, "targets", key_id),
        algorithm="ecdsa",
        source_name=f"{key_id}.key",
        source_mode=0o600,
        data=data,
    )
    stored = ev.Envelope.from_bytes(ev.seal(header, data, [wrapper], sealer=sealer).to_bytes())
    pinned = SealerTrust.of([sealer.key.fingerprint])
    assert ev.authenticate(stored, pinned) == sealer.key
    assert ev.open_envelope(stored, [wrapper], sealers=pinned) == data
    with pytest.raises(IntegrityError, match="does not trust"):
        ev.authenticate(stored, SealerTrust.of([STRANGER]))
    assert stored.signature is not None
    value = bytearray(stored.signature.value)
    value[len(value) // 2] ^= 1
    altered = replace(stored, signature=replace(stored.signature, value=bytes(value)))
    with pytest.raises(IntegrityError, match="does not verify"):
        ev.authenticate(altered, pinned)
    return stored


def cli_round_trip(setup: BackendSetup, sealer_uri: str, fingerprint: str, tmp_path: Path) -> None:
    """With ``[sealing] key = sealer_uri``: backup, ``sealer show``, then restores on new
    machines (fresh HOME, no key file): with the fingerprint pinned, and without (exit 5)."""
    owner = tmp_path / "owner"
    keys = write_sample_trust_dir(
        owner / "trust", {"root": PASS, "targets": PASS, "snapshot": PASS}, (GUN,)
    )
    config = owner / "keyvault.toml"
    config.write_text(
        render_config(setup, TEAM).replace(
            "[sealing]\n", f"[sealing]\nkey = {json.dumps(sealer_uri)}\n", 1
        )
    )
    backup = run_keyvault(
        owner, setup.env, "--config", config, "--trust-dir", owner / "trust", "--json", "backup"
    )
    assert backup.returncode == 0, backup.stderr
    assert {k["action"] for k in json.loads(backup.stdout)["keys"]} == {"created"}
    show = run_keyvault(owner, setup.env, "--config", config, "--json", "sealer", "show")
    assert show.returncode == 0, show.stderr
    shown = json.loads(show.stdout)
    assert (shown["sealer"], shown["sealer_uri"], shown["sealer_file"]) == (
        fingerprint,
        sealer_uri,
        None,
    )
    assert not (owner / ".config" / "keyvault" / "sealer.key").exists()

    laptop = tmp_path / "laptop"
    laptop.mkdir()
    (laptop / "keyvault.toml").write_text(render_config(setup, TEAM, [fingerprint]))
    restore = run_keyvault(
        laptop,
        setup.env,
        "--config",
        laptop / "keyvault.toml",
        "--trust-dir",
        laptop / "trust",
        "--json",
        "restore",
        "--all",
    )
    assert restore.returncode == 0, restore.stderr
    for key in keys:
        assert (laptop / "trust" / "private" / key.relpath).read_bytes() == key.data

    stranger = tmp_path / "stranger"
    stranger.mkdir()
    (stranger / "keyvault.toml").write_text(render_config(setup, TEAM))
    refused = run_keyvault(
        stranger,
        setup.env,
        "--config",
        stranger / "keyvault.toml",
        "--trust-dir",
        stranger / "trust",
        "restore",
        "--all",
    )
    assert refused.returncode == 5, refused.stderr
    assert fingerprint in refused.stderr and "does not trust" in refused.stderr
    assert not (stranger / "trust" / "private").exists() or not any(
        (stranger / "trust" / "private").rglob("*.key")
    )


# -- KMS keys and options -----------------------------------------------------------------


def signing_key(
    moto: MotoServer, spec: str = "ECC_NIST_P256", usage: str = "SIGN_VERIFY"
) -> KmsKey:
    """A fresh asymmetric key of ``spec`` / ``usage`` with its own alias."""
    admin = moto.client()
    meta = admin.create_key(KeySpec=spec, KeyUsage=usage, Description="keyvault sealer test")[
        "KeyMetadata"
    ]
    alias = f"alias/kv-sealer-{uuid.uuid4().hex[:12]}"
    admin.create_alias(AliasName=alias, TargetKeyId=meta["KeyId"])
    return KmsKey(meta["KeyId"], meta["Arn"], alias)


def public_der(moto: MotoServer, key: KmsKey) -> bytes:
    """The key's public half, as moto's admin client reads it."""
    return bytes(moto.client().get_public_key(KeyId=key.arn)["PublicKey"])


def sealer_for(moto: MotoServer, uri: str) -> AwsKmsSealer:
    sealer = open_sealer(uri, kms_options(moto))
    assert isinstance(sealer, AwsKmsSealer)
    return sealer


def requests_of(sealer: AwsKmsSealer) -> list[tuple[str, dict[str, Any]]]:
    """Every KMS request the sealer's client builds: (operation, parameters)."""
    seen: list[tuple[str, dict[str, Any]]] = []
    sealer._client.meta.events.register(
        "provide-client-params.kms",
        lambda params, model, **_: seen.append((model.name, dict(params))),
    )
    return seen


def responder_sealer(responder: Responder) -> AwsKmsSealer:
    options = BackendOptions(
        env={
            "AWS_ACCESS_KEY_ID": "AKIDRESPONDER",
            "AWS_SECRET_ACCESS_KEY": SECRET,
            "AWS_DEFAULT_REGION": REGION,
        },
        settings={"awskms": {"connect_timeout": 1, "read_timeout": 5, "max_attempts": 1}},
    )
    return AwsKmsSealer.from_uri(f"awskms://127.0.0.1:{responder.port}/{ARN}", options)


def public_key_answer(key_id: str = ARN) -> dict[str, object]:
    """What real KMS answers to GetPublicKey for an ECC_NIST_P256 SIGN_VERIFY key."""
    der = (
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return {
        "KeyId": key_id,
        "PublicKey": base64.b64encode(der).decode(),
        "KeySpec": "ECC_NIST_P256",
        "CustomerMasterKeySpec": "ECC_NIST_P256",
        "KeyUsage": "SIGN_VERIFY",
        "SigningAlgorithms": ["ECDSA_SHA_256"],
    }


# -- the sealer ---------------------------------------------------------------------------


def test_seal_and_authenticate_with_a_kms_key(moto_kms: MotoServer, kms_key: KmsKey) -> None:
    key = signing_key(moto_kms)
    sealer = sealer_for(moto_kms, key.alias_uri)
    assert sealer.key.alg == ECDSA_P256
    assert sealer.key.public_key == public_der(moto_kms, key)
    stored = seal_round_trip(sealer, open_kms(moto_kms, kms_key.alias_uri))
    assert stored.signature is not None and stored.signature.sealer == sealer.key
    assert (
        sealer.key.fingerprint == "sha256:" + hashlib.sha256(public_der(moto_kms, key)).hexdigest()
    )
    sealer.close()


def test_arn_and_endpoint_in_the_uri(moto_kms: MotoServer) -> None:
    """``awskms://host:port/arn:...``: no [awskms] endpoint_url needed; same key as the alias."""
    key = signing_key(moto_kms)
    options = BackendOptions(
        env={"AWS_ACCESS_KEY_ID": KMS_CREDS[0], "AWS_SECRET_ACCESS_KEY": KMS_CREDS[1]},
        settings={"awskms": {"connect_timeout": 1, "max_attempts": 1}},
    )
    sealer = AwsKmsSealer.from_uri(f"awskms://{moto_kms.host_port}/{key.arn}", options)
    message = b"keyvault sealer test"
    assert sealer.key.verify(message, sealer.sign(message))
    assert sealer.key == sealer_for(moto_kms, key.alias_uri).key


def test_public_key_is_fetched_once_and_messages_are_raw(moto_kms: MotoServer) -> None:
    sealer = sealer_for(moto_kms, signing_key(moto_kms).alias_uri)
    seen = requests_of(sealer)
    for size in (1, 2000, MAX_RAW_MESSAGE):
        message = bytes(range(256)) * (size // 256) + b"m" * (size % 256)
        assert sealer.key.verify(message, sealer.sign(message))
    assert [op for op, _ in seen] == ["GetPublicKey", "Sign", "Sign", "Sign"]
    assert all(
        p["MessageType"] == "RAW" and p["SigningAlgorithm"] == "ECDSA_SHA_256"
        for op, p in seen
        if op == "Sign"
    )


def test_longer_messages_are_signed_as_their_digest(moto_kms: MotoServer) -> None:
    """KMS takes at most 4096 bytes RAW: a longer message goes as its SHA-256 (DIGEST)."""
    sealer = sealer_for(moto_kms, signing_key(moto_kms).alias_uri)
    seen = requests_of(sealer)
    message = b"e" * (MAX_RAW_MESSAGE + 1)
    signature = sealer.sign(message)
    digest = hashlib.sha256(message).digest()
    assert [(p["MessageType"], p["Message"]) for op, p in seen if op == "Sign"] == [
        ("DIGEST", digest)
    ]
    # Real KMS signs a DIGEST as given, so this verifies over the message; moto 5.2 hashes
    # it once more (getmoto/moto#10202), giving a signature over SHA-256(digest).
    assert sealer.key.verify(message, signature) or sealer.key.verify(digest, signature)


@pytest.mark.parametrize(
    ("spec", "usage"),
    [
        ("RSA_2048", "SIGN_VERIFY"),
        ("ECC_NIST_P384", "SIGN_VERIFY"),
        ("SYMMETRIC_DEFAULT", "ENCRYPT_DECRYPT"),
    ],
)
def test_a_key_of_another_spec_is_refused(moto_kms: MotoServer, spec: str, usage: str) -> None:
    sealer = sealer_for(moto_kms, signing_key(moto_kms, spec, usage).alias_uri)
    with pytest.raises(UsageError) as info:
        sealer.sign(b"anything")
    err = info.value
    assert err.exit_code == 2
    assert spec in err.message and "ECC_NIST_P256" in err.message
    assert "SIGN_VERIFY" in err.message and "create-key" in str(err.hint)


def test_missing_alias_is_not_found(moto_kms: MotoServer) -> None:
    sealer = sealer_for(moto_kms, f"awskms:///alias/kv-none-{uuid.uuid4().hex[:8]}")
    with pytest.raises(KmsKeyNotFoundError) as info:
        _ = sealer.key
    assert info.value.exit_code == 3 and "no such KMS key" in str(info.value)


@pytest.mark.proves("F03")
def test_unreachable_kms_is_unavailable() -> None:
    options = BackendOptions(
        env={"AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "y"},
        settings={"awskms": {"connect_timeout": 1, "max_attempts": 1}},
    )
    sealer = AwsKmsSealer.from_uri(f"awskms://127.0.0.1:{free_port()}/alias/gone", options)
    with pytest.raises(BackendUnavailableError) as info:
        _ = sealer.key
    assert info.value.exit_code == 6 and "cannot reach" in str(info.value)


# -- what real KMS answers and moto does not (scripted responder) -------------------------


@pytest.mark.parametrize(
    ("step", "kind", "code", "text"),
    [
        ("GetPublicKey", "AccessDeniedException", 4, "kms:Sign"),
        ("Sign", "AccessDeniedException", 4, "kms:Sign"),
        ("Sign", "DisabledException", 4, "disabled"),
        ("Sign", "KMSInvalidStateException", 4, "pending deletion"),
        ("GetPublicKey", "UnsupportedOperationException", 2, "cannot sign"),
    ],
)
def test_refusals_are_typed_and_name_the_key(
    responder: Responder, step: str, kind: str, code: int, text: str
) -> None:
    message = f"User: arn:aws:iam::111122223333:user/ci is not authorized ({SECRET})"
    refusal = (400, error(kind, message))
    responder.script = (
        [refusal] if step == "GetPublicKey" else [(200, public_key_answer()), refusal]
    )
    sealer = responder_sealer(responder)
    with pytest.raises(AccessDeniedError if code == 4 else UsageError) as info:
        sealer.sign(b"an envelope")
    err = info.value
    assert err.exit_code == code and text in str(err) and kind in str(err)
    assert ARN in str(err) and SECRET not in str(err) and message not in str(err)
    assert [op for op, _ in responder.requests][-1] == step


@pytest.mark.proves("T2")
def test_a_signature_by_another_key_is_refused(responder: Responder) -> None:
    """The alias moved between GetPublicKey and Sign: refused, not signed with."""
    other = ARN.replace("1234abcd", "99999999")
    responder.script = [
        (200, public_key_answer()),
        (
            200,
            {
                "KeyId": other,
                "Signature": base64.b64encode(b"0" * 70).decode(),
                "SigningAlgorithm": "ECDSA_SHA_256",
            },
        ),
    ]
    with pytest.raises(IntegrityError, match="another key"):
        responder_sealer(responder).sign(b"an envelope")


# -- the CLI -----------------------------------------------------------------------------


@pytest.mark.proves("T2")
def test_cli_backs_up_with_a_kms_sealer_and_restores_where_it_is_pinned(
    s3_kms_backend: BackendSetup, moto_kms: MotoServer, tmp_path: Path
) -> None:
    key = signing_key(moto_kms)
    fingerprint = "sha256:" + hashlib.sha256(public_der(moto_kms, key)).hexdigest()
    cli_round_trip(s3_kms_backend, key.alias_uri, fingerprint, tmp_path)
