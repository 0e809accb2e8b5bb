"""Fixtures of the end-to-end suite: store + wrapper pairs, and a lab of signing machines.

Every scenario runs once per pair named in :data:`BACKENDS`. A pair is a
fixture returning a :class:`~fixtures.servers.BackendSetup`; adding a pair is
adding its fixture name to the list. Pair fixtures may be session-scoped and
shared: each scenario uses its own keyvault team (so its own prefix in any
store) and its own GUNs (so its own repositories on the shared notary-server).
What the suite proves and how to run one pair: docs/e2e.md.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fixtures.notary_server import NotaryServer
from fixtures.servers import BackendSetup
from fixtures.softhsm import SoftHsm
from notarykit import Notary

from e2e.machines import Lab, run_keyvault

#: Store + wrapper pairs every scenario runs against: BackendSetup fixture names
#: (the pair's credentials must allow any team: each scenario uses its own).
BACKENDS = [
    "file_age_backend",
    "file_passphrase_backend",
    "s3_kms_backend",
    "file_pkcs11_backend",
    "vault_backend",
]

#: The passphrase wrapper's test passphrase, and a cost low enough for tests (2**14, the minimum).
KEYVAULT_PASSPHRASE = "e2e keyvault passphrase, not a notary one"
PASSPHRASE_CONFIG = "[passphrase]\nscrypt_n = 16384\n"


def _init(home: Path, env: dict[str, str], *args: str) -> dict[str, object]:
    proc = run_keyvault(home, env, *args, "--json", "init")
    assert proc.returncode == 0, proc.stderr
    result: dict[str, object] = json.loads(proc.stdout)
    return result


@pytest.fixture(scope="session")
def file_age_backend(tmp_path_factory: pytest.TempPathFactory) -> BackendSetup:
    """The embedded default, made by a real ``keyvault init``: file store + age recovery key.

    The identity file stays in the fixture's directory, standing for the copy
    kept offline: a new machine's config points at it to restore.
    """
    home = tmp_path_factory.mktemp("kv-file-age")
    result = _init(home, {})
    assert result["identity_created"] is True
    wrappers = result["wrappers"]
    assert isinstance(wrappers, list) and len(wrappers) == 1
    assert wrappers[0].startswith("age1")
    identity = json.dumps(str(result["identity_file"]))
    return BackendSetup(
        name="file+age",
        store=str(result["store"]),
        wrappers=tuple(wrappers),
        config_toml=f"[recovery]\nidentity_file = {identity}\n",
    )


@pytest.fixture(scope="session")
def file_passphrase_backend(tmp_path_factory: pytest.TempPathFactory) -> BackendSetup:
    """A file store and the ``passphrase:`` wrapper (KEYVAULT_PASSPHRASE, low scrypt cost)."""
    home = tmp_path_factory.mktemp("kv-file-passphrase")
    store = (home / "store").as_uri()
    result = _init(home, {}, "--store", store, "--wrapper", "passphrase:")
    assert result["store"] == store and result["wrappers"] == ["passphrase:"]
    return BackendSetup(
        name="file+passphrase",
        store=store,
        wrappers=("passphrase:",),
        env={"KEYVAULT_PASSPHRASE": KEYVAULT_PASSPHRASE},
        config_toml=PASSPHRASE_CONFIG,
    )


@pytest.fixture(scope="session")
def file_pkcs11_backend(tmp_path_factory: pytest.TempPathFactory, softhsm: SoftHsm) -> BackendSetup:
    """A file store and a non-extractable AES-256 key in a SoftHSM2 token (AES-GCM)."""
    home = tmp_path_factory.mktemp("kv-file-pkcs11")
    store = (home / "store").as_uri()
    env = {**softhsm.env(), "SOFTHSM2_CONF": str(softhsm.conf)}
    uri = softhsm.key_uri("aes-kek")
    result = _init(home, env, "--store", store, "--wrapper", uri)
    assert result["wrappers"] == [uri]
    return BackendSetup(name="file+pkcs11", store=store, wrappers=(uri,), env=env)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> BackendSetup:
    """Each store + wrapper pair in turn."""
    setup = request.getfixturevalue(request.param)
    assert isinstance(setup, BackendSetup), f"{request.param} returned {setup!r}"
    return setup


@pytest.fixture
def lab(tmp_path: Path, backend: BackendSetup, notary: Notary, notary_server: NotaryServer) -> Lab:
    return Lab(tmp_path, backend, notary, notary_server)
