"""Two machines backing up the same new key at once: both succeed, one version is written."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from fixtures.host import race

from keyvault.config import load_config
from keyvault.ops.backup import CREATED, UNCHANGED, backup_keys
from keyvault.ops.session import Session
from keyvault.plugins import BackendOptions
from keyvault.sealing import Ed25519FileSealer
from keyvault.stores import open_store
from keyvault.trust.model import KeyFile, Layout
from keyvault.wrappers.age import generate_identity

TEAM = "team-a"


@pytest.mark.parametrize("keys", [1, 3])  # below the listing threshold: no prefix listing
def test_a_create_that_loses_the_race_compares_with_the_winner(tmp_path: Path,
                                                               keys: int) -> None:
    recipient = generate_identity(tmp_path / "id.txt")
    env = {"HOME": str(tmp_path), "KEYVAULT_STORE": f"file://{tmp_path / 'store'}",
           "KEYVAULT_WRAPPERS": recipient, "KEYVAULT_TEAM": TEAM,
           "KEYVAULT_AGE_IDENTITY": str(tmp_path / "id.txt"),
           "KEYVAULT_SEALING_KEY": str(tmp_path / "sealer.key"),
           "XDG_STATE_HOME": str(tmp_path / "state")}
    config = load_config(None, env)
    open_store(config.require_store(), BackendOptions(), create=True).close()
    Ed25519FileSealer.generate(tmp_path / "sealer.key")  # one machine's sealer, shared
    files = [_key(n) for n in range(keys)]

    def one(_: int) -> list[str]:
        with Session(config) as session:
            return [o.action if o.error is None else f"failed: {o.error}"
                    for o in backup_keys(session, files, team=TEAM, concurrency=1)]

    results = race(6, one)
    assert all(isinstance(r, list) for r in results), results
    for n in range(keys):
        actions = sorted(r[n] for r in results)  # type: ignore[index]
        assert actions.count(CREATED) == 1 and actions.count(UNCHANGED) == 5, actions


def _key(n: int) -> KeyFile:
    data = b"-----BEGIN EC " b"PRIVATE KEY-----\nrole: targets\n\n" + os.urandom(64) + b"\n"
    key_id = hashlib.sha256(data).hexdigest()
    return KeyFile(key_id=key_id, role="targets", gun=f"registry.example.com/race-{n}",
                   algorithm=None, relpath=f"{key_id}.key", mode=0o600,
                   layout=Layout.CURRENT, encrypted=False, data=data)
