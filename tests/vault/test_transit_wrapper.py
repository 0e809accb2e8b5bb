"""TransitWrapper beyond the contract: rotation, min_decryption_version, key checks."""

from __future__ import annotations

import os
from dataclasses import replace

import pytest
from contracts.wrapper_contract import CONTEXT
from fixtures.vault import TRANSIT_MOUNT, BaoServer, unique

from keyvault.errors import IntegrityError, UsageError
from keyvault.stores._vault_client import VaultMountNotFoundError, VaultPermissionError
from keyvault.wrappers import WRAPPER_FOR_SCHEME, check_wrapper_uri
from keyvault.wrappers.base import DEK_SIZE, Rotatable
from keyvault.wrappers.transit import (
    ALG,
    TransitKeyNotFoundError,
    TransitKeyVersionTooOldError,
    TransitWrapper,
    parse_transit_uri,
)

from .conftest import open_transit, vault_options


@pytest.mark.proves("T6")
def test_context_is_the_derivation_context(bao: BaoServer) -> None:
    """The blob decrypts in Vault itself with base64(canonical JSON of the context)."""
    import base64
    import json

    key = bao.transit_key()
    wrapper = open_transit(bao, key)
    dek = os.urandom(DEK_SIZE)
    wrapped = wrapper.wrap(dek, CONTEXT)
    assert wrapped.alg == ALG and wrapped.params == {"key_version": 1}
    assert wrapped.blob.startswith(b"vault:v1:")
    ctx = base64.b64encode(json.dumps(CONTEXT, sort_keys=True, separators=(",", ":")).encode())
    plain = bao.root().secrets.transit.decrypt_data(
        key, ciphertext=wrapped.blob.decode(), context=ctx.decode(), mount_point=TRANSIT_MOUNT
    )["data"]["plaintext"]
    assert base64.b64decode(plain) == dek
    wrapper.close()


def test_rotation_then_rewrap_moves_to_the_newest_version(bao: BaoServer) -> None:
    key = bao.transit_key()
    wrapper = open_transit(bao, key)
    assert isinstance(wrapper, Rotatable)
    dek = os.urandom(DEK_SIZE)
    wrapped = wrapper.wrap(dek, CONTEXT)
    assert wrapper.rewrap(wrapped, CONTEXT) is wrapped  # already on the newest version
    root = bao.root()
    root.secrets.transit.rotate_key(key, mount_point=TRANSIT_MOUNT)
    moved = wrapper.rewrap(wrapped, CONTEXT)
    assert moved.params == {"key_version": 2} and moved.blob.startswith(b"vault:v2:")
    root.secrets.transit.update_key_configuration(
        key, min_decryption_version=2, mount_point=TRANSIT_MOUNT
    )
    with pytest.raises(TransitKeyVersionTooOldError, match="min_decryption_version") as info:
        wrapper.unwrap(wrapped, CONTEXT)
    assert info.value.exit_code == 4
    assert wrapper.unwrap(moved, CONTEXT) == dek
    with pytest.raises(TransitKeyVersionTooOldError):
        wrapper.rewrap(wrapped, CONTEXT)
    with pytest.raises(IntegrityError):
        wrapper.rewrap(moved, dict(CONTEXT, **{"keyvault:team": "team-b"}))
    wrapper.close()


def test_recorded_version_must_match_the_ciphertext(bao: BaoServer) -> None:
    wrapper = open_transit(bao, bao.transit_key())
    wrapped = wrapper.wrap(os.urandom(DEK_SIZE), CONTEXT)
    with pytest.raises(IntegrityError, match="recorded key version"):
        wrapper.unwrap(replace(wrapped, params={"key_version": 2}), CONTEXT)
    with pytest.raises(IntegrityError):
        wrapper.unwrap(replace(wrapped, params={}), CONTEXT)
    wrapper.close()


def test_missing_key_is_not_created_on_the_fly(bao: BaoServer) -> None:
    key = unique("team-a")
    wrapper = open_transit(bao, key)
    with pytest.raises(TransitKeyNotFoundError, match=key):
        wrapper.wrap(os.urandom(DEK_SIZE), CONTEXT)
    keys = bao.root().secrets.transit.list_keys(mount_point=TRANSIT_MOUNT)["data"]["keys"]
    assert key not in keys
    wrapper.close()


def test_non_derived_key_refused(bao: BaoServer) -> None:
    wrapper = open_transit(bao, bao.transit_key(derived=False))
    with pytest.raises(UsageError, match="derived"):
        wrapper.wrap(os.urandom(DEK_SIZE), CONTEXT)
    wrapper.close()


def test_missing_mount_is_named(bao: BaoServer) -> None:
    wrapper = TransitWrapper.from_uri("transit://no-transit/k", vault_options(bao))
    with pytest.raises(VaultMountNotFoundError, match="no-transit/"):
        wrapper.wrap(os.urandom(DEK_SIZE), CONTEXT)
    wrapper.close()


@pytest.mark.proves("T3")
def test_team_b_cannot_use_team_a_key(bao: BaoServer) -> None:
    key = bao.transit_key(team="team-a")
    admin = open_transit(bao, key)
    wrapped = admin.wrap(os.urandom(DEK_SIZE), CONTEXT)
    other = open_transit(bao, key, token=bao.token("team-b"))
    with pytest.raises(VaultPermissionError, match=f"{TRANSIT_MOUNT}/decrypt/{key}"):
        other.unwrap(wrapped, CONTEXT)
    with pytest.raises(VaultPermissionError):
        other.wrap(os.urandom(DEK_SIZE), CONTEXT)
    admin.close()
    other.close()


def test_team_token_without_key_read_still_wraps(bao: BaoServer) -> None:
    """A policy that may encrypt but not read the key's settings: the check is skipped."""
    bao.root().sys.create_or_update_policy(
        "enc-only",
        'path "transit/encrypt/*" { capabilities = ["update"] }\n'
        'path "transit/decrypt/*" { capabilities = ["update"] }\n',
    )
    wrapper = open_transit(bao, bao.transit_key(), token=bao.token("enc-only"))
    dek = os.urandom(DEK_SIZE)
    assert wrapper.unwrap(wrapper.wrap(dek, CONTEXT), CONTEXT) == dek
    wrapper.close()


@pytest.mark.parametrize(
    "uri",
    [
        "transit://",
        "transit://m",
        "transit://m/",
        "transit:///k",
        "transit://m/k/x",
        "transit://m/k?x",
        "transit://u@m/k",
        "transit:m/k",
        "awskms://m/k",
    ],
)
def test_bad_uris_refused(uri: str) -> None:
    with pytest.raises(UsageError):
        parse_transit_uri(uri)


def test_check_uri_needs_no_network() -> None:
    assert WRAPPER_FOR_SCHEME["transit"] == "keyvault.wrappers.transit:TransitWrapper"
    check_wrapper_uri("transit://transit/team-a-key")
    with pytest.raises(UsageError):
        check_wrapper_uri("transit://transit/team a")
