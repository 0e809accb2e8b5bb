"""Dual control for root keys: a root envelope under a 2-of-3 group of age identities.

The group a key was sealed under sticks to it: every later backup (plain,
with a lower ``--threshold``, of changed bytes, or over junk on top) seals it
under at least that M, and ``--threshold`` above it re-seals an unchanged key.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from fixtures.s3 import WeedServer, s3_env

from cli.conftest import KV
from keyvault.config import load_config
from keyvault.envelope import Envelope
from keyvault.names import KeyAddress
from keyvault.stores import Store, open_store
from keyvault.trust.keyid import private_key_id
from keyvault.trust.sample import notary_key_file, write_sample_trust_dir
from keyvault.wrappers.age import generate_identity


def test_a_root_key_under_two_of_three_opens_with_two_and_not_one(
    kv: KV, home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys = write_sample_trust_dir(
        home / ".docker" / "trust",
        dict.fromkeys(("root", "targets", "snapshot"), "p"),
        ("example.com/dual/app",),
    )
    root = next(k for k in keys if k.role == "root")
    identities = [tmp_path / f"officer-{i}.txt" for i in range(3)]
    recipients = [generate_identity(p) for p in identities]
    wrappers = [arg for r in recipients for arg in ("--wrapper", r)]
    assert kv("--store", (tmp_path / "store").as_uri(), *wrappers, "init").code == 0
    run = kv(*wrappers, "--json", "backup", "--role", "root", "--threshold", "2")
    assert run.code == 0, run.err

    def restore_with(*officers: int) -> int:
        monkeypatch.setenv("KEYVAULT_AGE_IDENTITY", ",".join(str(identities[i]) for i in officers))
        where = tmp_path / ("restore-" + "-".join(map(str, officers)))
        code = kv(*wrappers, "--trust-dir", where, "restore", "--role", "root").code
        if code == 0:
            assert (where / "private" / root.relpath).read_bytes() == root.data
        else:
            assert not where.exists()
        return code

    assert restore_with(0, 2) == 0
    assert restore_with(1, 2) == 0
    assert restore_with(1) == 4
    too_many = kv(*wrappers, "backup", "--role", "targets", "--threshold", "4")
    assert too_many.code == 2 and "needs at least 4 wrappers" in too_many.err


# -- the group sticks (issue 17, item 4) ------------------------------------------------


class Officers:
    """Three age identities, a trust directory with one root key, and a store."""

    def __init__(self, kv: KV, home: Path, tmp_path: Path, store: str) -> None:
        self.kv, self.trust = kv, home / ".docker" / "trust"
        self.identities = [tmp_path / f"officer-{i}.txt" for i in range(3)]
        self.recipients = [generate_identity(p) for p in self.identities]
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.key_id = private_key_id(self.key)
        self.write_root("first passphrase")
        assert kv("--store", store, *self.wrappers(3), "init").code == 0
        config = load_config(None, os.environ)
        self.store: Store = open_store(store, config.backend_options(None))
        self.name = KeyAddress(config.team, None, "root", self.key_id).object_name

    def wrappers(self, count: int) -> list[str]:
        return [arg for r in self.recipients[:count] for arg in ("--wrapper", r)]

    def write_root(self, passphrase: str) -> None:
        """The root key file; a new passphrase gives new bytes under the same key ID."""
        private = self.trust / "private"
        private.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = private / f"{private_key_id(self.key)}.key"
        path.write_bytes(notary_key_file(self.key, "root", None, passphrase))
        path.chmod(0o600)

    def backup(self, *args: str, wrappers: int = 3) -> tuple[int, str, str]:
        """(exit code, the root key's action, its error or warning)."""
        run = self.kv(*self.wrappers(wrappers), "--json", "backup", "--role", "root", *args)
        (key,) = run.json()["keys"]
        error = key["error"] or {}
        said = " ".join(filter(None, (error.get("message"), error.get("hint"), key["warning"])))
        return run.code, key["action"], said

    def latest_threshold(self) -> int | None:
        return Envelope.from_bytes(self.store.read(self.name).data).threshold

    def versions(self) -> int:
        return len(self.store.versions(self.name))


@pytest.fixture(params=["file", "s3"])
def officers(
    request: pytest.FixtureRequest,
    kv: KV,
    home: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Officers:
    if request.param == "file":
        return Officers(kv, home, tmp_path, (tmp_path / "store").as_uri())
    weed: WeedServer = request.getfixturevalue("weed")
    for name, value in s3_env(weed).items():
        monkeypatch.setenv(name, value)
    return Officers(kv, home, tmp_path, f"s3://{request.getfixturevalue('bucket')}/dual")


def test_threshold_on_an_unchanged_single_wrapped_key_reseals_it(officers: Officers) -> None:
    assert officers.backup()[:2] == (0, "created")
    assert officers.latest_threshold() is None
    assert officers.backup("--threshold", "2", "--dry-run")[:2] == (0, "would-write")
    assert officers.backup("--threshold", "2")[:2] == (0, "updated")
    assert officers.latest_threshold() == 2
    assert officers.backup("--threshold", "2")[:2] == (0, "unchanged")
    assert officers.versions() == 2


def test_a_plain_backup_after_a_change_keeps_the_group(officers: Officers) -> None:
    assert officers.backup("--threshold", "2")[:2] == (0, "created")
    officers.write_root("second passphrase")  # 'notary key passwd'
    assert officers.backup()[:2] == (0, "updated")
    assert officers.latest_threshold() == 2
    officers.write_root("third passphrase")
    assert officers.backup("--threshold", "3")[:2] == (0, "updated")
    officers.write_root("fourth passphrase")
    assert officers.backup("--threshold", "2")[:2] == (0, "updated")  # asks for at least 2
    assert officers.latest_threshold() == 3
    assert officers.backup("--threshold", "2")[:2] == (0, "unchanged")  # 3 meets it


def test_too_few_wrappers_for_the_group_writes_nothing_and_says_why(officers: Officers) -> None:
    assert officers.backup("--threshold", "2")[:2] == (0, "created")
    officers.write_root("second passphrase")
    code, action, said = officers.backup(wrappers=1)
    assert (code, action) == (2, "failed")
    assert "2-of-N dual control" in said and "configure at least 2 wrappers" in said
    assert officers.versions() == 1
    assert officers.backup(wrappers=2)[:2] == (0, "updated")
    assert officers.latest_threshold() == 2


@pytest.mark.proves("T2")
def test_an_old_version_copied_on_top_does_not_lower_the_group(officers: Officers) -> None:
    assert officers.backup()[:2] == (0, "created")
    single = officers.store.read(officers.name)
    assert officers.backup("--threshold", "2")[:2] == (0, "updated")
    group = officers.store.read(officers.name)
    officers.store.write(officers.name, single.data, replaces=group.version)  # a rollback
    code, action, said = officers.backup()
    assert (code, action) == (0, "updated") and "rollback" in said
    assert officers.latest_threshold() == 2
