"""What an unchanged backup costs on Vault KV v2 (OpenBao): a read per key, no shortcut.

KV v2 lists names only, one LIST per folder, and a key's current version is in its
own metadata: there is no request that names the latest version of many keys at
once, so keyvault.known has nothing to compare its records with and each unchanged
key is read and authenticated, as before (docs/performance.md gives the arithmetic).
This pins that cost, so a change that adds a request per key shows here.
"""

from __future__ import annotations

import tomllib
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from fixtures.servers import BackendSetup

from keyvault.config import Config, Paths
from keyvault.names import KeyAddress
from keyvault.ops.backup import UNCHANGED, backup_keys
from keyvault.ops.session import Session
from keyvault.stores.vaultkv import VaultKvStore
from keyvault.trust.keyid import private_key_id
from keyvault.trust.sample import notary_key_file
from keyvault.trust.scan import scan_trust_dir

N_KEYS = 20
TEAM = "vcounts"
_T = TypeVar("_T")


@pytest.fixture
def counted_calls(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """Every request the Vault KV store sends, by what it does ("read", "list", ...)."""
    calls: Counter[str] = Counter()
    original = VaultKvStore._call

    def counting(self: VaultKvStore, what: str, path: str, fn: Callable[[Any], _T]) -> _T:
        calls[what] += 1
        return original(self, what, path, fn)

    monkeypatch.setattr(VaultKvStore, "_call", counting)
    return calls


@pytest.fixture
def session(vault_backend: BackendSetup, tmp_path: Path) -> Iterator[Session]:
    state = tmp_path / "kv"
    config = Config(
        source=None,
        paths=Paths(state / "config", state / "data", state / "state"),
        team=TEAM,
        store=vault_backend.store,
        wrappers=vault_backend.wrappers,
        trust_dir=tmp_path / "trust",
        identity_files=(),
        settings=tomllib.loads(vault_backend.config_toml),
        concurrency=4,
        audit_to_store=False,
        env=dict(vault_backend.env),
    )
    with Session(config) as opened:
        yield opened


def test_an_unchanged_backup_on_vault_reads_each_key_once(
    session: Session, counted_calls: Counter[str], tmp_path: Path
) -> None:
    private = tmp_path / "trust" / "private"
    private.mkdir(parents=True, mode=0o700)
    for i in range(N_KEYS):
        key = ec.generate_private_key(ec.SECP256R1())
        path = private / f"{private_key_id(key)}.key"
        path.write_bytes(
            notary_key_file(
                key,
                ("targets", "snapshot")[i % 2],
                f"registry.example.com/vcounts/app-{i // 2}",
                "",
            )
        )
        path.chmod(0o600)
    keys = scan_trust_dir(tmp_path / "trust").keys
    backup_keys(session, keys, team=TEAM, concurrency=4)
    assert session.known() is not None  # records are kept; Vault gives nothing to match
    counted_calls.clear()
    outcomes = backup_keys(session, keys, team=TEAM, concurrency=4)
    assert [o.action for o in outcomes] == [UNCHANGED] * N_KEYS
    names = [KeyAddress(TEAM, k.gun, k.role, k.key_id).object_name for k in keys]
    # one LIST per folder of the team's (its own, guns/, each GUN's path, each role's, and
    # the three of the audit checkpoint the first backup wrote), and one read per key
    folders = {"/".join(n.split("/")[:i]) for n in names for i in range(3, n.count("/") + 1)}
    assert counted_calls == Counter({"list": len(folders) + 3, "read": N_KEYS})
