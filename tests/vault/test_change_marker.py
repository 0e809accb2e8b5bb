"""The team change marker (``[vault] change_marker = true``) against a real OpenBao.

With it on, an unchanged backup reads the marker's metadata (one request) and lists
nothing; a keyvault write anywhere moves the marker, so another machine lists at its
next backup; a write made outside keyvault does not, so it is seen at the next full
check (``[vault] full_check_every``, or ``--full-check``), then reported and repaired.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from fixtures.servers import BackendSetup
from fixtures.vault import KV_MOUNT, TRANSIT_MOUNT, BaoServer, unique, vault_env

from keyvault.audit import AuditLog
from keyvault.config import Config, Paths
from keyvault.errors import AccessDeniedError, BackendUnavailableError, KeyvaultError
from keyvault.names import change_marker_name
from keyvault.ops.backup import CREATED, UNCHANGED, UPDATED, BackupOutcome, TeamListing, backup_keys
from keyvault.ops.rewrap import rewrap_keys
from keyvault.ops.selection import Selection
from keyvault.ops.session import Session
from keyvault.trust.sample import notary_key_file
from keyvault.trust.scan import scan_trust_dir
from vault.test_unchanged_cost import (  # the counted requests, the config, keys, trust dir
    GUN,
    N_KEYS,
    TEAM,
    _config,
    _keys,
    _kv_path,
    _name,
    _token_of,
    _trust_dir,
    member_token,
    reconciled,
    requests,
)

__all__ = ["member_token", "requests"]  # fixtures, used by name
MARKER_READ = Counter({"read the metadata of": 1})


def _marked(config: Config, *, on: bool = True) -> Config:
    """``config`` with ``[vault] change_marker`` on (or off)."""
    vault = {**config.settings.get("vault", {}), "change_marker": on}
    return replace(config, settings={**config.settings, "vault": vault})


@pytest.fixture
def config(vault_backend: BackendSetup, tmp_path: Path) -> Config:
    return _marked(_config(vault_backend, tmp_path))


def _elsewhere(config: Config, tmp_path: Path) -> Config:
    """Another machine: the same store and keys, its own state directory."""
    paths = config.paths
    return replace(config, paths=Paths(paths.config_dir, paths.data_dir, tmp_path / "other"))


def _outcomes(config: Config, tmp_path: Path) -> list[BackupOutcome]:
    """A backup of every key of the trust directory, in a session of its own."""
    with Session(config) as session:
        return backup_keys(session, _keys(tmp_path), team=TEAM, concurrency=4)


def _backup(config: Config, tmp_path: Path) -> Counter[str]:
    return Counter(o.action for o in _outcomes(config, tmp_path))


def _changed_by_another_machine(
    config: Config, tmp_path: Path, made: dict[str, ec.EllipticCurvePrivateKey]
) -> str:
    """Machine B (its own trust and state directories) seals a new version of the first
    key, in GUN 0 ('notary key passwd' there); its run writes the marker. Its name."""
    other_trust = tmp_path / "b"
    relpath, key = next(iter(made.items()))
    (other_trust / "private").mkdir(parents=True, mode=0o700)
    moved = other_trust / relpath
    moved.write_bytes(notary_key_file(key, "targets", f"{GUN}-0", "b's passphrase"))
    moved.chmod(0o600)
    with Session(_elsewhere(config, tmp_path)) as b:
        (changed,) = backup_keys(b, scan_trust_dir(other_trust).keys, team=TEAM)
    assert changed.action == UPDATED
    return changed.address.object_name


def _one_request(config: Config, tmp_path: Path, requests: Counter[str]) -> None:
    """The next backup: every key unchanged, the marker's metadata read, nothing else."""
    requests.clear()
    assert _backup(config, tmp_path) == Counter({UNCHANGED: N_KEYS})
    assert requests == MARKER_READ


def test_an_unchanged_backup_costs_one_request_whatever_the_folders(
    config: Config, requests: Counter[str], tmp_path: Path
) -> None:
    """20 keys in 10 GUNs: the first backup creates them and the marker; the next reads
    the marker's metadata only (no LIST, no read), where without it 10 LISTs."""
    _trust_dir(tmp_path, guns=10)
    assert _backup(config, tmp_path) == Counter({CREATED: N_KEYS})
    _one_request(config, tmp_path, requests)
    requests.clear()
    assert _backup(_marked(config, on=False), tmp_path) == Counter({UNCHANGED: N_KEYS})
    assert requests == Counter({"list detailed": 10})  # the marker off: today's listing


def test_a_fresh_store_without_a_marker_is_listed(
    config: Config, requests: Counter[str], tmp_path: Path
) -> None:
    """Keys another machine backed up with the marker off: no marker yet, so the folders
    are listed (and each unknown key read once); the run after is one request."""
    _trust_dir(tmp_path, guns=2)
    other = _elsewhere(config, tmp_path)
    _backup(_marked(other, on=False), tmp_path)
    requests.clear()
    assert _backup(config, tmp_path) == Counter({UNCHANGED: N_KEYS})
    # the marker read (none yet), the listing, each key once; then the marker is made
    assert requests == Counter(
        {
            "read the metadata of": 2,
            "list detailed": 2,
            "read": N_KEYS,
            "write": 1,
            "inspect mount": 1,
        }
    )
    _one_request(config, tmp_path, requests)


def test_a_key_another_machine_wrote_moves_the_marker_and_is_seen(
    config: Config, requests: Counter[str], tmp_path: Path
) -> None:
    """Machine B seals a new version of a key ('notary key passwd' there); its run writes
    the marker. Machine A's next backup finds the marker moved, lists, reads that key and
    seals its own bytes on top (its file differs); the run after is one request again."""
    made = _trust_dir(tmp_path, guns=2)
    _backup(config, tmp_path)
    _backup(config, tmp_path)  # A's records and marker tag
    _changed_by_another_machine(config, tmp_path, made)
    requests.clear()
    assert _backup(config, tmp_path) == Counter({UNCHANGED: N_KEYS - 1, UPDATED: 1})
    assert (requests["list detailed"], requests["read"]) == (2, 1)
    _one_request(config, tmp_path, requests)


def test_a_backup_of_some_keys_stands_only_for_their_folders(
    config: Config, requests: Counter[str], tmp_path: Path
) -> None:
    """Machine B changes a key of GUN 0; A then backs up one key of GUN 1 only (its folder
    listed, the marker's new tag recorded for it). A's next full backup still lists GUN
    0's folder and sees B's change: the record stands for the folders listed, no more."""
    made = _trust_dir(tmp_path, guns=2)
    _backup(config, tmp_path)
    _one_request(config, tmp_path, requests)
    changed = _changed_by_another_machine(config, tmp_path, made)
    (one,) = [k for k in _keys(tmp_path) if k.gun == f"{GUN}-1"][:1]
    with Session(config) as session:
        (outcome,) = backup_keys(session, [one], team=TEAM)
    assert outcome.action == UNCHANGED
    requests.clear()
    outcomes = {o.address.object_name: o.action for o in _outcomes(config, tmp_path)}
    assert outcomes[changed] == UPDATED and requests["list detailed"] == 1
    _one_request(config, tmp_path, requests)


def test_a_machine_that_keeps_no_records_still_moves_the_marker(
    config: Config, tmp_path: Path, bao: BaoServer
) -> None:
    """An ECDSA sealer (Transit ecdsa-p256) gives no MAC key, so that machine keeps no
    records and reads every key; its writes (here: it does not pin A's sealer, so it
    seals each key anew) still move the marker for the others."""
    _trust_dir(tmp_path, guns=2)
    _backup(config, tmp_path)
    name = unique("team-a-sealer")
    bao.root().secrets.transit.create_key(name, key_type="ecdsa-p256", mount_point=TRANSIT_MOUNT)
    ecdsa = replace(_elsewhere(config, tmp_path), sealing_key=f"transit://{TRANSIT_MOUNT}/{name}")
    with Session(ecdsa) as session:
        assert session.known() is None
        before = session.store().marker_tag(TEAM)  # type: ignore[attr-defined]
        outcomes = backup_keys(session, _keys(tmp_path), team=TEAM, concurrency=4)
        after = session.store().marker_tag(TEAM)  # type: ignore[attr-defined]
    assert Counter(o.action for o in outcomes) == Counter({UPDATED: N_KEYS})
    assert before.startswith("1@") and after.startswith("2@")


def test_own_change_costs_its_write_and_the_marker_and_the_next_run_one_request(
    config: Config, requests: Counter[str], tmp_path: Path
) -> None:
    """A changed key: the marker read, its wrapper call, its write, then the marker's
    metadata read and write; nobody else announced in between, so the run after is one
    request (the records stand: the marker moved by this machine's own change only)."""
    made = _trust_dir(tmp_path, guns=2)
    _backup(config, tmp_path)
    relpath, key = next(iter(made.items()))
    (tmp_path / "trust" / relpath).write_bytes(
        notary_key_file(key, "targets", f"{GUN}-0", "a new passphrase")
    )
    requests.clear()
    assert _backup(config, tmp_path) == Counter({UNCHANGED: N_KEYS - 1, UPDATED: 1})
    assert requests == Counter(
        {
            "read the metadata of": 2,
            "encrypt with Transit key": 1,
            "write": 2,
            "checkpoint": 1,
            "inspect mount": 1,  # a new session's first write
            "read Transit key": 1,  # a new session's wrapper
        }
    )
    _one_request(config, tmp_path, requests)


def _junk_on_top(config: Config, bao: BaoServer, tmp_path: Path) -> str:
    """A Vault writer outside keyvault puts junk on top of a key (the marker stays)."""
    name = _name(_keys(tmp_path)[0])
    with Session(config) as session:
        bao.root().secrets.kv.v2.create_or_update_secret(
            _kv_path(session, name), secret={"envelope": "junk"}, mount_point=KV_MOUNT
        )
    return name


@pytest.mark.parametrize("how", ["full_check_every", "--full-check"])
def test_a_write_outside_keyvault_is_seen_at_the_next_full_check_and_repaired(
    config: Config, requests: Counter[str], tmp_path: Path, bao: BaoServer, how: str
) -> None:
    """The trade: junk written on top without the marker is not seen by the next backup
    (one request, every key unchanged); it is at the next full check, when the listing
    is older than full_check_every (the clock moved 25 h on, no sleep) or asked for:
    reported and repaired. A restore is not affected (it authenticates what it reads)."""
    _trust_dir(tmp_path, guns=2)
    _backup(config, tmp_path)
    _backup(config, tmp_path)
    name = _junk_on_top(config, bao, tmp_path)
    _one_request(config, tmp_path, requests)
    later = (
        TeamListing(clock=lambda: time.time() + 25 * 3600)
        if how == "full_check_every"
        else TeamListing(full_check=True)
    )
    with Session(config) as session:
        outcomes = backup_keys(session, _keys(tmp_path), team=TEAM, concurrency=4, listing=later)
    assert Counter(o.action for o in outcomes) == Counter({UNCHANGED: N_KEYS - 1, UPDATED: 1})
    (repaired,) = [o for o in outcomes if o.action == UPDATED]
    assert repaired.address.object_name == name
    assert repaired.warning is not None and "not trusted" in repaired.warning


def test_one_reconciliation_costs_one_request(
    config: Config, requests: Counter[str], tmp_path: Path
) -> None:
    """The daemon's reconciliation (its dry run and its pins, one listing): the marker's
    metadata read, and nothing else: 10,000 daemons every 600 s send 16.7 requests/s."""
    _trust_dir(tmp_path, guns=10)
    _backup(config, tmp_path)
    requests.clear()
    with Session(config) as session:
        reconciled(session, tmp_path)
    assert requests == MARKER_READ


def _refused(
    config: Config, bao: BaoServer, backend: BackendSetup, tmp_path: Path, section: str
) -> KeyvaultError:
    """The error of a backup by a token that may do everything but touch the marker's
    ``section`` (``data``: write it, ``metadata``: read its tag)."""
    prefix = backend.store.removeprefix(f"vault://{KV_MOUNT}/")
    marker = f"{KV_MOUNT}/{section}/{prefix}/{change_marker_name(TEAM)}"
    hcl = (
        'path "*" { capabilities = ["create", "read", "update", "list"] }\n'
        f'path "{marker}" {{ capabilities = ["deny"] }}\n'
    )
    with (
        _token_of(bao, f"no-marker-{section}-{prefix.replace('/', '-')}", hcl) as token,
        Session(replace(config, env=vault_env(bao, token))) as session,
        pytest.raises(KeyvaultError) as raised,
    ):
        backup_keys(session, _keys(tmp_path), team=TEAM, concurrency=4)
    return raised.value


def test_a_marker_write_refused_is_exit_6_and_the_next_run_announces_first(
    config: Config,
    requests: Counter[str],
    tmp_path: Path,
    bao: BaoServer,
    vault_backend: BackendSetup,
) -> None:
    """A token that may write keys but not the marker: the keys are written, then exit 6
    says the change is not announced; that machine's next run (allowed again) lists and
    writes the marker first, though it has nothing to write."""
    _trust_dir(tmp_path, guns=2)
    error = _refused(config, bao, vault_backend, tmp_path, "data")
    assert isinstance(error, BackendUnavailableError) and error.exit_code == 6
    assert "not announced" in error.message
    log = AuditLog(config.paths.state_dir / "audit.log", "test")
    (record,) = [r for r in log.records() if r["action"] == "backup"]
    assert record["detail"].startswith(f"{N_KEYS} written")  # the run is still on record
    with Session(config) as session:
        assert session.store().marker_tag(TEAM) == ""  # type: ignore[attr-defined]
    requests.clear()
    assert _backup(config, tmp_path) == Counter({UNCHANGED: N_KEYS})
    assert requests["list detailed"] == 2 and requests["write"] == 1  # the marker, at last
    with Session(config) as session:
        assert session.store().marker_tag(TEAM).startswith("1@")  # type: ignore[attr-defined]


def test_a_marker_the_token_cannot_read_is_a_clear_access_error(
    config: Config, tmp_path: Path, bao: BaoServer, vault_backend: BackendSetup
) -> None:
    """No read on the marker's metadata: exit 4 naming the marker, nothing written."""
    _trust_dir(tmp_path, guns=1)
    error = _refused(config, bao, vault_backend, tmp_path, "metadata")
    assert isinstance(error, AccessDeniedError) and error.exit_code == 4
    assert change_marker_name(TEAM) in error.message
    with Session(config) as session:
        assert list(session.store().list(f"v1/teams/{TEAM}/")) == []


def test_the_rendered_member_policy_writes_the_marker(
    config: Config, requests: Counter[str], tmp_path: Path, bao: BaoServer, member_token: str
) -> None:
    """Members need write on the marker: the rendered policy's team grant covers it."""
    _trust_dir(tmp_path, guns=2)
    member = replace(config, env=vault_env(bao, member_token))
    assert _backup(member, tmp_path) == Counter({CREATED: N_KEYS})
    _one_request(member, tmp_path, requests)


def test_a_rewrap_moves_the_marker_so_other_machines_list(
    config: Config, requests: Counter[str], tmp_path: Path
) -> None:
    """A rewrap seals new versions of the team's keys: it writes the marker too, so this
    machine's next backup (whose records name the versions before) lists again."""
    _trust_dir(tmp_path, guns=2)
    _backup(config, tmp_path)
    with Session(config) as session:
        before = session.store().marker_tag(TEAM)  # type: ignore[attr-defined]
        done = rewrap_keys(session, team=TEAM, selection=Selection(everything=True), reseal=True)
        after = session.store().marker_tag(TEAM)  # type: ignore[attr-defined]
    assert len(done) == N_KEYS and before.startswith("1@") and after.startswith("2@")
    requests.clear()
    assert _backup(config, tmp_path) == Counter({UNCHANGED: N_KEYS})
    assert requests["list detailed"] == 2 and requests["read"] == N_KEYS
    _one_request(config, tmp_path, requests)


def test_the_marker_is_no_key(config: Config, tmp_path: Path) -> None:
    """The marker sits where no key, pin or cert name can: listing the team's keys skips it."""
    from keyvault.names import KeyAddress, parsed_names

    _trust_dir(tmp_path, guns=1)
    _backup(config, tmp_path)
    with Session(config) as session:
        names = list(session.store().list(f"v1/teams/{TEAM}/"))
    assert change_marker_name(TEAM) in names
    assert len(list(parsed_names(names, KeyAddress, TEAM))) == N_KEYS
