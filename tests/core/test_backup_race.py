"""Backups racing each other for the same keys: every run succeeds once every key is stored.

A run that loses a write reads the latest version again: the winner's
(authenticated) version of the same bytes is ``unchanged``, other bytes get a
version on top, and only a writer that keeps losing gives up with a conflict.
Against the file store and SeaweedFS (S3), with threads released together.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import pytest
from fixtures.host import race
from fixtures.s3 import ADMIN, WeedServer, s3_settings
from notarykit import armour

from keyvault.config import Config, load_config
from keyvault.errors import ConflictError
from keyvault.names import KeyAddress
from keyvault.ops.backup import ATTEMPTS, CREATED, UNCHANGED, UPDATED, backup_keys
from keyvault.ops.session import Session
from keyvault.plugins import BackendOptions
from keyvault.sealing import Ed25519FileSealer
from keyvault.stores import open_store
from keyvault.stores.file import FileStore
from keyvault.trust.model import KeyFile, Layout
from keyvault.wrappers.age import generate_identity

TEAM = "team-a"
STORES = ["file", "s3"]


@pytest.fixture(params=STORES)
def machine(request: pytest.FixtureRequest, tmp_path: Path) -> Config:
    """One machine's config (one sealer, shared by the racing runs) on a fresh store."""
    return _machine(request, tmp_path, request.param)


@pytest.fixture
def file_machine(request: pytest.FixtureRequest, tmp_path: Path) -> Config:
    return _machine(request, tmp_path, "file")


def _machine(request: pytest.FixtureRequest, tmp_path: Path, kind: str) -> Config:
    recipient = generate_identity(tmp_path / "id.txt")
    env = {
        "HOME": str(tmp_path),
        "KEYVAULT_WRAPPERS": recipient,
        "KEYVAULT_TEAM": TEAM,
        "KEYVAULT_AGE_IDENTITY": str(tmp_path / "id.txt"),
        "KEYVAULT_SEALING_KEY": str(tmp_path / "sealer.key"),
        "XDG_STATE_HOME": str(tmp_path / "state"),
    }
    if kind == "file":
        env["KEYVAULT_STORE"] = f"file://{tmp_path / 'store'}"
        settings: dict[str, dict[str, object]] = {}
    else:
        weed: WeedServer = request.getfixturevalue("weed")
        bucket: str = request.getfixturevalue("bucket")
        env |= {
            "KEYVAULT_STORE": f"s3://{bucket}/race",
            "AWS_ACCESS_KEY_ID": ADMIN[0],
            "AWS_SECRET_ACCESS_KEY": ADMIN[1],
        }
        settings = {"s3": s3_settings(weed, conditional_writes=kind == "s3")}
    config = load_config(None, env)
    config = replace(config, settings={**config.settings, **settings})
    open_store(config.require_store(), config.backend_options(None), create=True).close()
    Ed25519FileSealer.generate(tmp_path / "sealer.key")
    return config


def _actions(config: Config, files: Sequence[KeyFile]) -> list[str]:
    with Session(config) as session:
        return _backup(session, files)


def _backup(session: Session, files: Sequence[KeyFile]) -> list[str]:
    return [
        o.action if o.error is None else f"failed: {o.error}"
        for o in backup_keys(session, files, team=TEAM, concurrency=1)
    ]


def _race(config: Config, runs: Sequence[Sequence[KeyFile]]) -> list[object]:
    """One backup per entry of ``runs``, in threads released together; each one's store,
    wrapper and sealer are opened before, so their reads and writes overlap."""
    sessions = [Session(config) for _ in runs]
    for session in sessions:
        session.store(), session.wrappers(), session.sealer(), session.reader()
    try:
        return race(len(runs), lambda i: _backup(sessions[i], runs[i]))
    finally:
        for session in sessions:
            session.close()


def _versions(config: Config, key: KeyFile) -> int:
    with Session(config) as session:
        address = KeyAddress(TEAM, key.gun, key.role, key.key_id)
        return len(session.store().versions(address.object_name))


@pytest.mark.parametrize("keys", [1, 3])  # below the listing threshold: no prefix listing
def test_a_create_that_loses_the_race_compares_with_the_winner(machine: Config, keys: int) -> None:
    files = [_key(n) for n in range(keys)]
    results = _race(machine, [files] * 6)
    assert all(isinstance(r, list) for r in results), results
    for n in range(keys):
        actions = sorted(r[n] for r in results)  # type: ignore[index]
        assert actions.count(CREATED) == 1 and actions.count(UNCHANGED) == 5, actions


def test_an_update_that_loses_the_race_finds_the_same_bytes_on_top(machine: Config) -> None:
    files = [_key(n) for n in range(3)]
    assert _actions(machine, files) == [CREATED] * 3
    changed = [_changed(k) for k in files]  # e.g. 'notary key passwd' on this machine
    results = _race(machine, [changed] * 6)
    assert all(isinstance(r, list) for r in results), results
    for n, key in enumerate(changed):
        actions = sorted(r[n] for r in results)  # type: ignore[index]
        assert actions.count(UPDATED) == 1 and actions.count(UNCHANGED) == 5, actions
        assert _versions(machine, key) == 2


@pytest.mark.parametrize("kind", ["s3-unconditional"])
@pytest.mark.proves("T2")
def test_racing_updates_without_conditional_writes_leave_a_verified_latest(
    request: pytest.FixtureRequest, tmp_path: Path, kind: str
) -> None:
    """Without If-Match, racers may stack versions that break the chain: a retry finds the
    latest unverifiable and seals a fresh one on top, so the latest restores again."""
    config = _machine(request, tmp_path, kind)
    files = [_key(n) for n in range(2)]
    assert _actions(config, files) == [CREATED] * 2
    changed = [_changed(k) for k in files]
    results = _race(config, [changed] * 4)
    assert all(isinstance(r, list) and not any("failed" in a for a in r) for r in results), results
    with Session(config) as session:
        for key in changed:
            latest = session.reader().latest(KeyAddress(TEAM, key.gun, key.role, key.key_id))
            assert latest.envelope.header.sha256 == key.sha256


def test_updates_of_other_bytes_each_land_on_top(machine: Config) -> None:
    files = [_key(n) for n in range(2)]
    assert _actions(machine, files) == [CREATED] * 2
    variants = [[_changed(k) for k in files] for _ in range(4)]  # four machines, four passwds
    results = _race(machine, variants)
    assert results == [[UPDATED] * 2] * 4, results
    for key in files:
        assert _versions(machine, key) == 5


class _Contested(FileStore):
    """A file store where another writer adds a version just before each of ours, ``wins``
    times: a deterministic stand-in for a busy fleet writing the same key."""

    wins = 0
    rival: Callable[[], None] = staticmethod(lambda: None)

    def write(self, name: str, data: bytes, *, replaces: str | None = None) -> str:
        if replaces is not None and self.wins > 0:
            self.wins -= 1
            self.rival()
        return super().write(name, data, replaces=replaces)


def _contested(machine: Config, wins: int) -> tuple[list[str], list[str], list[str], int]:
    key = _key(0)
    assert _actions(machine, [key]) == [CREATED]
    rival = Session(machine)
    store = _Contested.from_uri(machine.require_store(), BackendOptions())
    store.wins = wins

    def rival_backup() -> None:  # a real backup by another run, of other bytes
        assert [o.action for o in backup_keys(rival, [_changed(key)], team=TEAM)] == [UPDATED]

    store.rival = rival_backup
    with rival, Session(machine) as session:
        session._store = store  # this run writes through the contested store
        outcomes = backup_keys(session, [_changed(key)], team=TEAM)
    errors = [o.error for o in outcomes if o.error is not None]
    return (
        [o.action for o in outcomes],
        [str(e) for e in errors],
        [e.kind for e in errors],
        _versions(machine, key),
    )


def test_a_run_that_loses_a_few_times_retries_on_top(file_machine: Config) -> None:
    actions, errors, _, versions = _contested(file_machine, ATTEMPTS - 1)
    assert (actions, errors) == ([UPDATED], [])
    assert versions == 1 + (ATTEMPTS - 1) + 1


def test_a_run_that_keeps_losing_gives_up_with_a_conflict(file_machine: Config) -> None:
    actions, errors, kinds, versions = _contested(file_machine, ATTEMPTS + 3)
    assert actions == ["failed"]
    assert f"written by others {ATTEMPTS} times" in errors[0]
    assert versions == 1 + ATTEMPTS  # the rival's versions; none of this run's
    assert kinds == [ConflictError.kind]  # exit 7


def _key(n: int) -> KeyFile:
    begin, _ = armour("EC PRIVATE KEY")
    data = f"{begin}\nrole: targets\n\n".encode() + os.urandom(64) + b"\n"
    key_id = hashlib.sha256(data).hexdigest()
    return KeyFile(
        key_id=key_id,
        role="targets",
        gun=f"registry.example.com/race-{n}",
        algorithm=None,
        relpath=f"{key_id}.key",
        mode=0o600,
        layout=Layout.CURRENT,
        encrypted=False,
        data=data,
    )


def _changed(key: KeyFile) -> KeyFile:
    """The same key ID with other bytes, as after 'notary key passwd'."""
    return replace(key, data=key.data[:-1] + os.urandom(16).hex().encode() + b"\n")
