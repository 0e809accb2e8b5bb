"""TransitSealer against OpenBao: a sealing key whose private half stays in Transit.

Each test makes its own Transit key as root (ed25519, the preferred type, and
ecdsa-p256). The envelope and CLI round trips are the ones the KMS sealer's
tests run (tests/aws/test_kms_sealer.py).
"""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

import pytest
from aws.test_kms_sealer import cli_round_trip, seal_round_trip
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from fixtures.servers import BackendSetup, free_port
from fixtures.vault import TRANSIT_MOUNT, BaoServer, unique

from keyvault.errors import BackendUnavailableError, UsageError
from keyvault.plugins import BackendOptions
from keyvault.sealers import open_sealer
from keyvault.sealers.transit import TransitSealer
from keyvault.sealing import ECDSA_P256, ED25519
from keyvault.stores._vault_client import VaultMountNotFoundError, VaultPermissionError
from keyvault.wrappers.transit import TransitKeyNotFoundError

from .conftest import open_transit, vault_options

#: What a sealing machine's token needs, and nothing more (docs/vault.md).
SEALER_POLICY = """
path "transit/keys/{name}" {{ capabilities = ["read"] }}
path "transit/sign/{name}" {{ capabilities = ["update"] }}
"""


def signing_key(bao: BaoServer, key_type: str = "ed25519", **options: object) -> str:
    """A fresh Transit key of ``key_type`` (named team-a-..., as the team policy expects)."""
    name = unique("team-a-sealer")
    bao.root().secrets.transit.create_key(
        name, key_type=key_type, mount_point=TRANSIT_MOUNT, **options
    )
    return name


def uri(name: str) -> str:
    return f"transit://{TRANSIT_MOUNT}/{name}"


def sealer_for(bao: BaoServer, name: str, token: str | None = None) -> TransitSealer:
    options = vault_options(bao) if token is None else vault_options(bao, token)
    sealer = open_sealer(uri(name), options)
    assert isinstance(sealer, TransitSealer)
    return sealer


def public_der(bao: BaoServer, name: str, version: int = 1) -> bytes:
    """The DER SPKI of a key version's public half, from Vault's own answer (as root)."""
    keys = bao.root().secrets.transit.read_key(name, mount_point=TRANSIT_MOUNT)["data"]["keys"]
    text = keys[str(version)]["public_key"]
    if text.startswith("-----BEGIN"):
        key = serialization.load_pem_public_key(text.encode())
    else:
        key = ed25519.Ed25519PublicKey.from_public_bytes(base64.b64decode(text))
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


@pytest.mark.parametrize(("key_type", "alg"), [("ed25519", ED25519), ("ecdsa-p256", ECDSA_P256)])
def test_seal_and_authenticate_with_a_transit_key(bao: BaoServer, key_type: str, alg: str) -> None:
    name = signing_key(bao, key_type)
    sealer = sealer_for(bao, name)
    assert sealer.key.alg == alg
    assert sealer.key.public_key == public_der(bao, name)
    wrapper = open_transit(bao, bao.transit_key())
    stored = seal_round_trip(sealer, wrapper)
    assert stored.signature is not None and stored.signature.sealer == sealer.key
    wrapper.close()
    sealer.close()


def test_one_key_version_per_sealer_across_a_rotation(bao: BaoServer) -> None:
    """A rotation mid-run: the open sealer keeps signing with the version it announced;
    the next run's sealer is the new version, a new fingerprint to pin."""
    name = signing_key(bao)
    before = sealer_for(bao, name)
    first = before.key
    bao.root().secrets.transit.rotate_key(name, mount_point=TRANSIT_MOUNT)
    message = b"an envelope sealed during a rotation"
    assert before.key == first and first.verify(message, before.sign(message))
    after = sealer_for(bao, name)
    assert after.key.public_key == public_der(bao, name, 2) != first.public_key
    assert after.key.fingerprint != first.fingerprint
    signature = after.sign(message)
    assert after.key.verify(message, signature) and not first.verify(message, signature)


def test_the_documented_policy_is_enough(bao: BaoServer) -> None:
    name = signing_key(bao)
    policy = unique("sealer")
    bao.root().sys.create_or_update_policy(policy, SEALER_POLICY.format(name=name))
    sealer = sealer_for(bao, name, bao.token(policy))
    message = b"signed with read + sign only"
    assert sealer.key.verify(message, sealer.sign(message))


def test_a_token_that_may_not_sign_is_denied(bao: BaoServer) -> None:
    """team-a may read its keys' settings but has no sign path: exit 4, naming the path."""
    sealer = sealer_for(bao, signing_key(bao), bao.token("team-a"))
    _ = sealer.key
    with pytest.raises(VaultPermissionError) as info:
        sealer.sign(b"an envelope")
    assert info.value.exit_code == 4 and f"{TRANSIT_MOUNT}/sign/" in str(info.value)


@pytest.mark.parametrize(
    ("key_type", "options", "shown"),
    [
        ("aes256-gcm96", {}, "'aes256-gcm96'"),
        ("rsa-2048", {}, "'rsa-2048'"),
        ("ed25519", {"derived": True}, "derived 'ed25519'"),
    ],
)
def test_a_key_of_another_type_is_refused(
    bao: BaoServer, key_type: str, options: dict[str, object], shown: str
) -> None:
    sealer = sealer_for(bao, signing_key(bao, key_type, **options))
    with pytest.raises(UsageError) as info:
        sealer.sign(b"anything")
    err = info.value
    assert err.exit_code == 2 and shown in err.message
    assert "ed25519" in err.message and "type=ed25519" in str(err.hint)


def test_missing_key_and_missing_mount_are_not_found(bao: BaoServer) -> None:
    with pytest.raises(TransitKeyNotFoundError) as info:
        _ = sealer_for(bao, unique("team-a-none")).key
    assert info.value.exit_code == 3
    sealer = TransitSealer.from_uri(f"transit://nowhere/{unique('k')}", vault_options(bao))
    with pytest.raises(VaultMountNotFoundError):
        _ = sealer.key


def test_unreachable_vault_is_unavailable() -> None:
    options = BackendOptions(
        env={"VAULT_ADDR": f"http://127.0.0.1:{free_port()}", "VAULT_TOKEN": "t"},
        settings={"vault": {"timeout": 1}},
    )
    with pytest.raises(BackendUnavailableError) as info:
        _ = TransitSealer.from_uri("transit://transit/gone", options).key
    assert info.value.exit_code == 6 and "cannot be reached" in str(info.value)


@pytest.mark.proves("T2")
def test_cli_backs_up_with_a_transit_sealer_and_restores_where_it_is_pinned(
    vault_backend: BackendSetup, bao: BaoServer, tmp_path: Path
) -> None:
    name = signing_key(bao)
    fingerprint = "sha256:" + hashlib.sha256(public_der(bao, name)).hexdigest()
    cli_round_trip(vault_backend, uri(name), fingerprint, tmp_path)
