"""Bulk operations through the ops layer: one logged-in session for 200 keys; rewrap."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from envelope._support import SEALER, TRUST
from fixtures.softhsm import SoftHsm
from notarykit import armour

from keyvault.config import load_config
from keyvault.envelope import (
    Chain,
    Envelope,
    new_header,
    open_envelope,
    rewrap,
    seal,
    sign,
    unwrap_dek,
)
from keyvault.names import KeyAddress
from keyvault.ops.backup import CREATED, backup_keys
from keyvault.ops.session import Session
from keyvault.ops.stored import read_envelope
from keyvault.plugins import BackendOptions
from keyvault.stores import open_store
from keyvault.trust.model import KeyFile, Layout
from keyvault.wrappers.age import AgeWrapper, generate_identity
from keyvault.wrappers.pkcs11 import Pkcs11Wrapper, session_counts

TEAM = "team-a"


def fake_keys(count: int) -> list[KeyFile]:
    keys = []
    for n in range(count):
        begin, _ = armour("EC PRIVATE KEY")
        data = f"{begin}\nrole: targets\n\n".encode() + os.urandom(64) + b"\n"
        key_id = hashlib.sha256(data).hexdigest()
        keys.append(
            KeyFile(
                key_id=key_id,
                role="targets",
                gun=f"registry.example.com/app-{n}",
                algorithm=None,
                relpath=f"{key_id}.key",
                mode=0o600,
                layout=Layout.CURRENT,
                encrypted=False,
                data=data,
            )
        )
    return keys


def test_bulk_backup_of_200_keys_opens_one_session(softhsm: SoftHsm, tmp_path: Path) -> None:
    env = {
        "HOME": str(tmp_path),
        "KEYVAULT_STORE": f"file://{tmp_path / 'store'}",
        "KEYVAULT_WRAPPERS": softhsm.uri("aes-kek"),
        "KEYVAULT_TEAM": TEAM,
        "KEYVAULT_PKCS11_PIN": softhsm.pin,
    }
    config = load_config(None, env)
    open_store(config.require_store(), BackendOptions(), create=True).close()
    keys = fake_keys(200)
    before = session_counts()
    with Session(config) as session:
        outcomes = backup_keys(session, keys, team=TEAM, concurrency=8)
        assert [o.action for o in outcomes] == [CREATED] * 200
        store = session.store()
        for key in keys[::20]:  # and opening them again reuses the same login
            address = KeyAddress(TEAM, key.gun, key.role, key.key_id)
            assert session.open(read_envelope(store, address).envelope) == key.data
        during = session_counts()
    after = session_counts()
    assert during["sessions_opened"] - before["sessions_opened"] == 1
    assert during["logins"] - before["logins"] == 1
    assert after["sessions_closed"] - before["sessions_closed"] == 1


def _sealed(wrappers: list[Pkcs11Wrapper | AgeWrapper]) -> tuple[Envelope, bytes]:
    data = b"opaque key file bytes"
    header = new_header(
        address=KeyAddress(TEAM, "registry.example.com/app", "targets", "cd" * 32),
        algorithm=None,
        source_name="k.key",
        source_mode=0o600,
        data=data,
    )
    return seal(header, data, wrappers, sealer=SEALER), data


def test_envelope_rewrap_between_pkcs11_and_age(softhsm: SoftHsm, tmp_path: Path) -> None:
    identity = tmp_path / "id.txt"
    recipient = generate_identity(identity)
    age = AgeWrapper(recipient, (identity,))
    hsm = Pkcs11Wrapper(softhsm.uri("rsa-kek"), softhsm.options())
    try:
        envelope, data = _sealed([hsm])
        dek = unwrap_dek(envelope, [hsm], sealers=TRUST)
        both = rewrap(envelope, dek, [age])
        age_only = sign(rewrap(both, dek, [], remove=[hsm.uri]), SEALER, Chain(2, "ab" * 32))
        assert age_only.wrapper_uris == (recipient,)
        assert open_envelope(age_only, [age], sealers=TRUST) == data
        back = sign(
            rewrap(age_only, unwrap_dek(age_only, [age], sealers=TRUST), [hsm], remove=[recipient]),
            SEALER,
            Chain(3, "cd" * 32),
        )
        assert back.wrapper_uris == (softhsm.key_uri("rsa-kek"),)
        assert open_envelope(back, [hsm], sealers=TRUST) == data
        assert back.ciphertext == envelope.ciphertext
    finally:
        hsm.close()
        age.close()


def test_envelope_survives_serialization(softhsm: SoftHsm) -> None:
    hsm = Pkcs11Wrapper(softhsm.uri("aes-kek"), softhsm.options(), mechanism="aes-kwp")
    try:
        envelope, data = _sealed([hsm])
        again = Envelope.from_bytes(envelope.to_bytes())
        assert open_envelope(again, [hsm], sealers=TRUST) == data
    finally:
        hsm.close()


def test_open_uses_only_the_wrapper_named(softhsm: SoftHsm) -> None:
    """Strict mode: another token's key is never tried, even with the same label."""
    from keyvault.errors import AccessDeniedError

    mine = Pkcs11Wrapper(softhsm.uri("aes-kek"), softhsm.options())
    other = Pkcs11Wrapper(softhsm.uri("aes-kek", token=softhsm.other_token), softhsm.options())
    try:
        envelope, _ = _sealed([mine])
        try:
            open_envelope(envelope, [other], sealers=TRUST)
        except AccessDeniedError as exc:
            assert softhsm.key_uri("aes-kek") in str(exc)
        else:
            raise AssertionError("opened with another token's key")
    finally:
        mine.close()
        other.close()


@pytest.mark.proves("T5")
def test_recovery_wrapper_opens_when_the_module_is_missing(
    softhsm: SoftHsm, tmp_path: Path
) -> None:
    """A machine without the HSM still restores through the age entry (T5)."""
    identity = tmp_path / "id.txt"
    age = AgeWrapper(generate_identity(identity), (identity,))
    hsm = Pkcs11Wrapper(softhsm.uri("aes-kek"), softhsm.options())
    try:
        envelope, data = _sealed([hsm, age])
    finally:
        hsm.close()
    absent = Pkcs11Wrapper(softhsm.key_uri("aes-kek"), BackendOptions())
    assert open_envelope(envelope, [absent, age], sealers=TRUST) == data
