"""What an unchanged backup costs on Vault KV v2 (OpenBao): a LIST per folder, no read.

KV v2 lists one folder at a time; its ``detailed-metadata`` LIST gives each object's
current version and that version's creation time (1,000 objects a page). A backup
lists each folder that holds one of its keys once, and a key whose listed tag
(``<version>@<created_time>``, both assigned by Vault) is the one this machine
recorded when it sealed or verified it (keyvault.known) is unchanged without a read.
Anything else is read and authenticated, as before. These tests pin the request
counts (docs/performance.md gives the arithmetic for 100,000 keys).
"""

from __future__ import annotations

import contextlib
import math
import re
import tomllib
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from fixtures.servers import BackendSetup
from fixtures.vault import KV_MOUNT, BaoServer, vault_env

import keyvault.stores.vaultkv as vaultkv
from keyvault.config import Config, Paths
from keyvault.daemon.health import Metrics
from keyvault.daemon.journal import Journal
from keyvault.daemon.service import Daemon, DaemonOptions
from keyvault.names import KeyAddress
from keyvault.ops.backup import UNCHANGED, UPDATED, backup_keys
from keyvault.ops.session import Session
from keyvault.ops.stored import parse_stored
from keyvault.stores._vault_client import VaultClient
from keyvault.trust.keyid import private_key_id
from keyvault.trust.model import KeyFile
from keyvault.trust.sample import notary_key_file
from keyvault.trust.scan import scan_trust_dir

N_KEYS = 20
TEAM = "vcounts"
GUN = "registry.example.com/vcounts/app"
_T = TypeVar("_T")


@pytest.fixture
def requests(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """Every request sent to Vault (store and Transit), by what it does: a plain LIST is
    "list", a detailed-metadata LIST "list detailed", a write of an audit checkpoint (one
    per run that wrote) "checkpoint"."""
    calls: Counter[str] = Counter()
    original = VaultClient.call

    def counting(self: VaultClient, what: str, fn: Callable[[Any], _T], **kw: Any) -> _T:
        path = str(kw.get("path", ""))
        detailed = "/detailed-metadata/" in path
        checkpoint = what == "write" and "/audit/" in path
        calls["checkpoint" if checkpoint else f"{what} detailed" if detailed else what] += 1
        return original(self, what, fn, **kw)

    monkeypatch.setattr(VaultClient, "call", counting)
    return calls


def _config(backend: BackendSetup, tmp_path: Path, env: dict[str, str] | None = None) -> Config:
    state = tmp_path / "kv"
    return Config(
        source=None,
        paths=Paths(state / "config", state / "data", state / "state"),
        team=TEAM,
        store=backend.store,
        wrappers=backend.wrappers,
        trust_dir=tmp_path / "trust",
        identity_files=(),
        settings=tomllib.loads(backend.config_toml),
        concurrency=4,
        audit_to_store=False,
        env=dict(env or backend.env),
    )


@pytest.fixture
def session(vault_backend: BackendSetup, tmp_path: Path) -> Iterator[Session]:
    with Session(_config(vault_backend, tmp_path)) as opened:
        yield opened


def _trust_dir(tmp_path: Path, guns: int) -> dict[str, ec.EllipticCurvePrivateKey]:
    """N_KEYS targets keys spread over ``guns`` GUNs (one folder each), by relpath."""
    private = tmp_path / "trust" / "private"
    private.mkdir(parents=True, mode=0o700)
    made = {}
    for i in range(N_KEYS):
        key = ec.generate_private_key(ec.SECP256R1())
        path = private / f"{private_key_id(key)}.key"
        path.write_bytes(notary_key_file(key, "targets", f"{GUN}-{i % guns}", ""))
        path.chmod(0o600)
        made[f"private/{path.name}"] = key
    return made


def _keys(tmp_path: Path) -> tuple[KeyFile, ...]:
    return scan_trust_dir(tmp_path / "trust").keys


def _name(key: KeyFile) -> str:
    return KeyAddress(TEAM, key.gun, key.role, key.key_id).object_name


def _lists_only(session: Session, tmp_path: Path, requests: Counter[str], folders: int) -> None:
    """The next backup: every key unchanged, a LIST per folder, nothing else."""
    requests.clear()
    outcomes = backup_keys(session, _keys(tmp_path), team=TEAM, concurrency=4)
    assert [o.action for o in outcomes] == [UNCHANGED] * N_KEYS
    assert requests == Counter({"list detailed": folders})


def _backed_up(session: Session, tmp_path: Path, requests: Counter[str]) -> None:
    """Every key created: from then on this machine holds a record of each (from the
    tag in Vault's answer to the write) and its high-water mark."""
    keys = _keys(tmp_path)
    backup_keys(session, keys, team=TEAM, concurrency=4)
    assert session.known() is not None  # Ed25519 sealer: records are kept
    assert all(session.highwater().get(_name(k)) for k in keys)  # each thread's mark kept
    requests.clear()


def test_an_unchanged_backup_of_one_folder_costs_a_list_per_page_and_no_read(
    session: Session,
    requests: Counter[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """20 keys in one folder, pages of 8 (1,000 in use): ceil(20/8) = 3 LISTs, no read,
    no wrapper call; the per-page property that makes 100,000 keys in a folder cost 100."""
    _trust_dir(tmp_path, guns=1)
    _backed_up(session, tmp_path, requests)
    monkeypatch.setattr(vaultkv, "LIST_PAGE", 8)
    outcomes = backup_keys(session, _keys(tmp_path), team=TEAM, concurrency=4)
    assert [o.action for o in outcomes] == [UNCHANGED] * N_KEYS
    assert requests == Counter({"list detailed": math.ceil(N_KEYS / 8)})


def test_keys_over_several_folders_cost_one_list_per_folder(
    session: Session, requests: Counter[str], tmp_path: Path
) -> None:
    """20 keys in 10 GUNs: 10 LISTs, one per folder that holds a key, and nothing else.
    Walking the team instead (as S3 lists it, whole) costs 27: each GUN's own folder and
    the folders of its path, guns/, the team's, and the audit checkpoints' three."""
    _trust_dir(tmp_path, guns=10)
    _backed_up(session, tmp_path, requests)
    keys = _keys(tmp_path)
    outcomes = backup_keys(session, keys, team=TEAM, concurrency=4)
    assert [o.action for o in outcomes] == [UNCHANGED] * N_KEYS
    assert requests == Counter({"list detailed": 10})
    requests.clear()
    assert len(list(session.store().list(f"v1/teams/{TEAM}/"))) == N_KEYS + 1  # + checkpoint
    assert requests == Counter({"list": 10 + 10 + 4 + 3})


def test_a_new_session_reads_nothing_either(
    vault_backend: BackendSetup, requests: Counter[str], tmp_path: Path
) -> None:
    """The records are the machine's: the next run (the next cron backup) lists only.
    Records made by a write (the tag from Vault's answer) match the listing later."""
    _trust_dir(tmp_path, guns=2)
    config = _config(vault_backend, tmp_path)
    with Session(config) as first:
        backup_keys(first, _keys(tmp_path), team=TEAM, concurrency=4)
    with Session(config) as later:
        _lists_only(later, tmp_path, requests, folders=2)


def test_versions_another_machine_wrote_are_read_once_then_listed_only(
    vault_backend: BackendSetup, requests: Counter[str], tmp_path: Path
) -> None:
    """No record of another machine's versions: each is read once, and the record made
    from that read (the read's version and creation time) matches the next listing."""
    _trust_dir(tmp_path, guns=2)
    config = _config(vault_backend, tmp_path)
    paths = config.paths
    other = replace(config, paths=Paths(paths.config_dir, paths.data_dir, tmp_path / "other"))
    with Session(other) as elsewhere:
        backup_keys(elsewhere, _keys(tmp_path), team=TEAM, concurrency=4)
    requests.clear()
    with Session(config) as here:
        for cost in ({"list detailed": 2, "read": N_KEYS}, {"list detailed": 2}):
            outcomes = backup_keys(here, _keys(tmp_path), team=TEAM, concurrency=4)
            assert [o.action for o in outcomes] == [UNCHANGED] * N_KEYS
            assert requests == Counter(cost)
            requests.clear()


def test_one_changed_key_costs_the_listing_one_wrapper_call_and_one_write(
    session: Session, requests: Counter[str], tmp_path: Path
) -> None:
    made = _trust_dir(tmp_path, guns=2)
    _backed_up(session, tmp_path, requests)
    relpath, key = next(iter(made.items()))
    changed = tmp_path / "trust" / relpath  # 'notary key passwd': same key, new bytes
    changed.write_bytes(notary_key_file(key, "targets", f"{GUN}-0", "a new passphrase"))
    outcomes = backup_keys(session, _keys(tmp_path), team=TEAM, concurrency=4)
    assert Counter(o.action for o in outcomes) == Counter({UNCHANGED: N_KEYS - 1, UPDATED: 1})
    assert requests == Counter(
        {"list detailed": 2, "encrypt with Transit key": 1, "write": 1, "checkpoint": 1}
    )


def _victim(session: Session, tmp_path: Path, requests: Counter[str]) -> str:
    _trust_dir(tmp_path, guns=2)
    _backed_up(session, tmp_path, requests)
    return _name(_keys(tmp_path)[0])


def _kv_path(session: Session, name: str) -> str:
    return f"{session.config.store.removeprefix(f'vault://{KV_MOUNT}/')}/{name}"  # type: ignore[union-attr]


def _repaired(session: Session, tmp_path: Path, name: str, why: str) -> None:
    outcomes = backup_keys(session, _keys(tmp_path), team=TEAM, concurrency=4)
    assert Counter(o.action for o in outcomes) == Counter({UNCHANGED: N_KEYS - 1, UPDATED: 1})
    (repaired,) = [o for o in outcomes if o.action == UPDATED]
    assert repaired.address.object_name == name
    assert repaired.warning is not None and why in repaired.warning


def test_a_version_someone_wrote_on_top_is_seen_by_the_listing_and_repaired(
    session: Session, requests: Counter[str], tmp_path: Path, bao: BaoServer
) -> None:
    """A Vault writer (no sealer) puts junk on top: a new version with a new time, so
    the listed tag is not the recorded one; the key is read, reported, and a fresh
    version sealed on top. The run after lists only."""
    name = _victim(session, tmp_path, requests)
    store = session.store()
    junk = {"envelope": "not an envelope"}
    bao.root().secrets.kv.v2.create_or_update_secret(
        _kv_path(session, name), secret=junk, mount_point=KV_MOUNT
    )
    _repaired(session, tmp_path, name, "not trusted")
    assert requests["read"] >= 1 and requests["encrypt with Transit key"] == 1
    _lists_only(session, tmp_path, requests, folders=2)
    assert store.read(name).version == "3"


def test_the_same_bytes_copied_on_top_are_not_taken_as_unchanged(
    session: Session, requests: Counter[str], tmp_path: Path, bao: BaoServer
) -> None:
    """A replay: the latest envelope's own bytes written on top by someone else. Vault
    gives it a new version and time, so the listing does not vouch for it: it is read
    (and authenticated: the signed chain still says the same key, so it is unchanged)."""
    name = _victim(session, tmp_path, requests)
    text = session.store().read(name).data.decode()
    bao.root().secrets.kv.v2.create_or_update_secret(
        _kv_path(session, name), secret={"envelope": text}, mount_point=KV_MOUNT
    )
    requests.clear()
    outcomes = backup_keys(session, _keys(tmp_path), team=TEAM, concurrency=4)
    (victim,) = [o for o in outcomes if o.address.object_name == name]
    assert (victim.action, victim.version, victim.warning) == (UNCHANGED, "2", None), requests
    assert requests["read"] == 1  # the listing named a version this machine never saw


@pytest.mark.parametrize("how", ["deleted", "destroyed"])
def test_a_deleted_or_destroyed_latest_version_is_reported_and_a_fresh_one_goes_on_top(
    session: Session, requests: Counter[str], tmp_path: Path, bao: BaoServer, how: str
) -> None:
    """'bao kv delete' or 'bao kv destroy' of the latest version: the listing names it
    deleted, so no record vouches for it; the key is read, the deletion reported, and a
    fresh version sealed on top of the deleted one (its history stays). The run after
    lists only."""
    name = _victim(session, tmp_path, requests)
    kv = bao.root().secrets.kv.v2
    if how == "deleted":
        kv.delete_latest_version_of_secret(_kv_path(session, name), mount_point=KV_MOUNT)
    else:
        kv.destroy_secret_versions(_kv_path(session, name), versions=[1], mount_point=KV_MOUNT)
    listed = session.store().tags_in(name.rpartition("/")[0] + "/")  # type: ignore[attr-defined]
    assert listed[name] == "1@deleted"
    _repaired(session, tmp_path, name, f"was {how}")
    assert requests["encrypt with Transit key"] == 1 and requests["write"] == 1
    fresh = session.store().read(name)
    address = KeyAddress.from_object_name(name)
    checked = session.reader().check_latest(parse_stored(address, fresh))  # as a restore does
    assert (fresh.version, checked.envelope.chain.sequence) == ("2", 2)  # type: ignore[union-attr]
    _lists_only(session, tmp_path, requests, folders=2)


def test_one_reconciliation_costs_a_list_per_folder_and_no_read(
    session: Session, requests: Counter[str], tmp_path: Path
) -> None:
    """The daemon's reconciliation, in process on the session: its dry run and its pins
    share one listing, so a trust directory of keys already backed up costs a LIST per
    folder that holds them, and nothing else."""
    _trust_dir(tmp_path, guns=2)
    _backed_up(session, tmp_path, requests)
    reconciled(session, tmp_path)
    assert requests == Counter({"list detailed": 2})


def reconciled(session: Session, tmp_path: Path) -> None:
    """One reconciliation of the daemon, in process on ``session``, of the trust directory:
    every key of it is found in the store."""
    trust_dir = tmp_path / "trust"
    daemon = Daemon(session.config, DaemonOptions(trust_dirs=(trust_dir,)))
    state = tmp_path / "daemon-state"
    state.mkdir(mode=0o700)
    daemon._session, daemon.metrics = session, Metrics()
    daemon._journal = Journal.open(state)
    try:
        daemon._reconcile()
    finally:
        daemon._journal.close()
    assert daemon._in_store[str(trust_dir.absolute())] == {k.relpath for k in _keys(tmp_path)}


def _member_policy(backend: BackendSetup, tmp_path: Path) -> str:
    """The member policy 'keyvault policy render' writes for this team and store."""
    from keyvault.policy import load_policy, render_vault

    policy_file = tmp_path / "policy.toml"
    policy_file.write_text(
        f'version = 1\n\n[teams.{TEAM}]\nguns = ["{GUN}-*"]\nmembers = ["vault:name:m"]\n'
        f'store = "{backend.store}"\nwrappers = ["{backend.wrappers[0]}"]\n'
    )
    return render_vault(load_policy(policy_file))[f"keyvault-{TEAM}-member"]


@contextlib.contextmanager
def _token_of(bao: BaoServer, name: str, hcl: str) -> Iterator[str]:
    """A token of the policy ``hcl``, installed as ``name`` and deleted at the end."""
    root = bao.root()
    root.sys.create_or_update_policy(name, hcl)
    try:
        yield bao.token(name)
    finally:
        root.sys.delete_policy(name)


@pytest.fixture
def member_token(bao: BaoServer, vault_backend: BackendSetup, tmp_path: Path) -> Iterator[str]:
    prefix = vault_backend.store.removeprefix(f"vault://{KV_MOUNT}/")
    with _token_of(bao, f"member-{prefix}", _member_policy(vault_backend, tmp_path)) as token:
        yield token


@pytest.fixture
def no_detailed_token(bao: BaoServer, vault_backend: BackendSetup, tmp_path: Path) -> Iterator[str]:
    """A member token of the policy as rendered before: no list on detailed-metadata."""
    prefix = vault_backend.store.removeprefix(f"vault://{KV_MOUNT}/")
    hcl = _member_policy(vault_backend, tmp_path)
    older = re.sub(r"(?s)# each folder's latest versions.*?\n}\n", "", hcl)
    assert "detailed-metadata" not in older and "metadata" in older
    with _token_of(bao, f"member-older-{prefix}", older) as token:
        yield token


def test_a_token_without_detailed_metadata_falls_back_to_reads_with_one_warning(
    vault_backend: BackendSetup,
    bao: BaoServer,
    no_detailed_token: str,
    requests: Counter[str],
    tmp_path: Path,
) -> None:
    """Never a failure: Vault refuses the first detailed LIST, one warning says so and
    what to grant, and the backup lists names (plain LIST, a folder at a time) and reads
    each key, as before. (One key at a time here, so exactly one LIST is refused.)"""
    _trust_dir(tmp_path, guns=2)
    config = _config(vault_backend, tmp_path, vault_env(bao, no_detailed_token))
    with Session(config) as member, pytest.warns(vaultkv.VaultListingWarning):
        backup_keys(member, _keys(tmp_path), team=TEAM, concurrency=4)
    requests.clear()
    with Session(config) as member, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        outcomes = backup_keys(member, _keys(tmp_path), team=TEAM, concurrency=1)
    assert [o.action for o in outcomes] == [UNCHANGED] * N_KEYS
    assert requests == Counter({"list detailed": 1, "list": 2, "read": N_KEYS})
    (warned,) = [w for w in caught if issubclass(w.category, vaultkv.VaultListingWarning)]
    text = str(warned.message)
    assert "permission denied" in text and f"{KV_MOUNT}/detailed-metadata/" in text
    assert no_detailed_token not in text


def test_the_rendered_member_policy_grants_the_listing(
    vault_backend: BackendSetup,
    bao: BaoServer,
    member_token: str,
    requests: Counter[str],
    tmp_path: Path,
) -> None:
    """A member token of the rendered policy: no warning, a LIST per folder, no read."""
    _trust_dir(tmp_path, guns=2)
    config = _config(vault_backend, tmp_path, vault_env(bao, member_token))
    with warnings.catch_warnings():
        warnings.simplefilter("error", vaultkv.VaultListingWarning)
        with Session(config) as member:
            backup_keys(member, _keys(tmp_path), team=TEAM, concurrency=4)
            _lists_only(member, tmp_path, requests, folders=2)
