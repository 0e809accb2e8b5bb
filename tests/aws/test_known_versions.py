"""An unchanged backup costs listings, not reads (S3 = SeaweedFS, KMS = moto; keyvault.known).

A backup lists the team once (``ListObjectsV2``, 1,000 objects a page) and takes a
key as unchanged without reading it only when the listed ETag of its latest version
is the one this machine recorded when it sealed or verified it, under a MAC keyed
from the sealing key. Anything else takes the authenticated read of today: a version
someone else wrote, junk or an old copy on top, a record that was edited.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from fixtures.kms import MotoServer, new_kms_key

import keyvault.stores.s3 as s3_module
from aws.test_kms_sealer import signing_key
from aws.test_request_counts import (  # the counted session, its keys and trust dir
    CHECKPOINT,
    N_KEYS,
    TEAM,
    Requests,
    _addresses,
    _first_key_rolled_back,
    _keys,
    counted,
    made_keys,
    trust_dir,
)
from keyvault.checkpoint import checkpoint_prefix
from keyvault.config import Paths
from keyvault.daemon.health import Metrics
from keyvault.daemon.journal import Journal
from keyvault.daemon.service import Daemon, DaemonOptions
from keyvault.names import team_prefix
from keyvault.ops.backup import UNCHANGED, UPDATED, backup_keys
from keyvault.ops.session import Session
from keyvault.trust.model import KeyFile

__all__ = ["counted", "made_keys", "trust_dir"]  # fixtures, used by name


def _known_file(session: Session) -> Path:
    known = session.known()
    assert known is not None  # the default sealer is Ed25519: records are kept
    return known.path


def test_an_unchanged_backup_reads_nothing_and_lists_a_page_per_page_of_keys(
    counted: tuple[Session, Requests], trust_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With pages of 8 (1,000 in use), 20 unchanged keys cost 3 listing requests and
    nothing else: the per-page property that makes 100,000 keys cost 100 requests. The
    audit checkpoints every writing command adds under the team's folder cost no page."""
    session, requests = counted
    keys = _keys(trust_dir)
    first = backup_keys(session, keys, team=TEAM, concurrency=4)
    for seq in range(12):  # a year of other machines' checkpoints, say
        session.store().write(
            f"{checkpoint_prefix(TEAM, 'f' * 32)}{seq:010d}-{'0' * 64}.json", b"{}"
        )
    monkeypatch.setattr(s3_module, "_LIST_PAGE", 8)
    requests.take()
    again = backup_keys(session, keys, team=TEAM, concurrency=4)
    assert [o.action for o in again] == [UNCHANGED] * N_KEYS
    assert [o.version for o in again] == [o.version for o in first]
    assert requests.take() == Counter({"ListObjectsV2": math.ceil(N_KEYS / 8)})
    assert _known_file(session).stat().st_mode & 0o777 == 0o600


def test_a_new_session_on_the_same_machine_reads_nothing_either(
    counted: tuple[Session, Requests], trust_dir: Path
) -> None:
    """The records are the machine's, not the session's: the next run (the next cron
    backup) finds them in the state directory."""
    session, _ = counted
    keys = _keys(trust_dir)
    backup_keys(session, keys, team=TEAM, concurrency=4)
    session.close()
    with Session(session.config) as later:
        fresh = Requests()
        fresh.attach(later.store()._client)  # type: ignore[attr-defined]
        outcomes = backup_keys(later, keys, team=TEAM, concurrency=4)
        assert [o.action for o in outcomes] == [UNCHANGED] * N_KEYS
        assert fresh.take() == Counter({"ListObjectsV2": 1})


def test_versions_another_machine_wrote_are_read_once_then_recorded(
    counted: tuple[Session, Requests], trust_dir: Path, tmp_path: Path
) -> None:
    """Another machine (the same sealing key, its own state directory) backed the keys up:
    this machine has no record of those versions, so it reads and authenticates each
    one, finds its bytes, and the run after reads nothing."""
    session, requests = counted
    keys = _keys(trust_dir)
    paths = session.config.paths
    other = replace(
        session.config, paths=Paths(paths.config_dir, paths.data_dir, tmp_path / "other-state")
    )
    with Session(other) as elsewhere:
        assert elsewhere.sealer().key == session.sealer().key
        backup_keys(elsewhere, keys, team=TEAM, concurrency=4)
    requests.take()
    _read_once_then_listed_only(session, keys, requests)


def _read_once_then_listed_only(
    session: Session, keys: tuple[KeyFile, ...], requests: Requests
) -> None:
    """Keys this machine holds no record of: each is read once (and authenticated), then
    recorded, so the next backup lists only."""
    for cost in ({"ListObjectsV2": 1, "GetObject": N_KEYS}, {"ListObjectsV2": 1}):
        outcomes = backup_keys(session, keys, team=TEAM, concurrency=4)
        assert [o.action for o in outcomes] == [UNCHANGED] * N_KEYS
        assert requests.take() == Counter(cost)


def _junk_on_top(session: Session, name: str) -> None:
    """A store writer (not a sealer) replaces the latest version of ``name``."""
    store = session.store()
    store.write(name, b"not an envelope", replaces=store.read(name).version)


def test_junk_a_store_writer_put_on_top_is_read_and_repaired(
    counted: tuple[Session, Requests], trust_dir: Path
) -> None:
    session, requests = counted
    keys = _keys(trust_dir)
    backup_keys(session, keys, team=TEAM, concurrency=4)
    victim = _addresses(keys)[0]
    _junk_on_top(session, victim.object_name)
    requests.take()
    outcomes = backup_keys(session, keys, team=TEAM, concurrency=4)
    assert Counter(o.action for o in outcomes) == Counter({UNCHANGED: N_KEYS - 1, UPDATED: 1})
    (repaired,) = [o for o in outcomes if o.action == UPDATED]
    assert repaired.address == victim and repaired.warning is not None
    assert "not trusted" in repaired.warning
    counts = requests.take()
    assert counts["GetObject"] >= 1 and counts["Encrypt"] == 1  # only the victim is read
    # the repaired version is this machine's again: the next run reads nothing
    assert [o.action for o in backup_keys(session, keys, team=TEAM, concurrency=4)] == [
        UNCHANGED
    ] * N_KEYS
    assert requests.take() == Counter({"ListObjectsV2": 1})


def test_an_old_version_copied_on_top_is_read_and_refused_as_a_rollback(
    counted: tuple[Session, Requests],
    trust_dir: Path,
    made_keys: dict[str, ec.EllipticCurvePrivateKey],
) -> None:
    """Same bytes as a version this machine once recorded, so an ETag it once knew: but
    not the latest it recorded, so it is read, and the high-water mark refuses it."""
    session, requests = counted
    _, victim = _first_key_rolled_back(session, trust_dir, made_keys)
    requests.take()
    outcomes = backup_keys(session, _keys(trust_dir), team=TEAM, concurrency=4)
    (repaired,) = [o for o in outcomes if o.address == victim]
    assert repaired.action == UPDATED and repaired.warning is not None
    assert "rollback" in repaired.warning
    assert requests.take()["GetObject"] >= 1


def test_an_edited_record_is_not_trusted(
    counted: tuple[Session, Requests], trust_dir: Path
) -> None:
    """Junk on top, and the local record edited to name the junk's ETag: its MAC (keyed
    from the sealing key) no longer verifies, so the key is read and repaired."""
    session, _ = counted
    keys = _keys(trust_dir)
    backup_keys(session, keys, team=TEAM, concurrency=4)
    session.close()  # saves the records
    victim = _addresses(keys)[0]
    with Session(session.config) as later:
        _junk_on_top(later, victim.object_name)
        junk_tag = later.store().tags_under(  # type: ignore[attr-defined]
            team_prefix(TEAM)
        )[victim.object_name]
        path = _known_file(later)
        doc = json.loads(path.read_bytes())
        doc["keys"][victim.object_name][0] = junk_tag
        path.write_text(json.dumps(doc))
        outcomes = backup_keys(later, keys, team=TEAM, concurrency=4)
    (repaired,) = [o for o in outcomes if o.address == victim]
    assert repaired.action == UPDATED and "not trusted" in (repaired.warning or "")


def test_a_corrupt_state_file_costs_reads_not_trust(
    counted: tuple[Session, Requests], trust_dir: Path
) -> None:
    """The records are only a shortcut: a file that does not parse is no records, each
    key is read and authenticated, and the file is written anew."""
    session, _ = counted
    keys = _keys(trust_dir)
    backup_keys(session, keys, team=TEAM, concurrency=4)
    session.close()
    with Session(session.config) as later:
        _known_file(later).write_bytes(b"{not json")
    with Session(session.config) as later:
        fresh = Requests()
        fresh.attach(later.store()._client)  # type: ignore[attr-defined]
        _read_once_then_listed_only(later, keys, fresh)


def test_one_reconciliation_costs_one_listing_and_no_read(
    counted: tuple[Session, Requests], trust_dir: Path, tmp_path: Path
) -> None:
    """The daemon's reconciliation, in process on the counted session: a trust directory
    of N keys already backed up costs one ``ListObjectsV2`` (a page per 1,000 objects)."""
    session, requests = counted
    keys = _keys(trust_dir)
    backup_keys(session, keys, team=TEAM, concurrency=4)
    daemon = Daemon(session.config, DaemonOptions(trust_dirs=(trust_dir,)))
    state = tmp_path / "daemon-state"
    state.mkdir(mode=0o700)
    daemon._session, daemon.metrics = session, Metrics()
    daemon._journal = Journal.open(state)
    requests.take()
    try:
        daemon._reconcile()
    finally:
        daemon._journal.close()
    assert requests.take() == Counter({"ListObjectsV2": 1})
    assert daemon._in_store[str(trust_dir.absolute())] == {k.relpath for k in keys}
    assert CHECKPOINT == 1  # a dry run writes no checkpoint: none above


def test_unchanged_bytes_not_wrapped_for_a_wrapper_asked_for_are_still_only_a_warning(
    counted: tuple[Session, Requests], trust_dir: Path, moto_kms: MotoServer
) -> None:
    """A record says the bytes are the same, but a wrapper now configured is not among
    the version's: as before, the key is read, reported unchanged with a warning that
    the wrapper cannot restore it, and nothing is written (rewrap adds it)."""
    session, _ = counted
    keys = _keys(trust_dir)
    backup_keys(session, keys, team=TEAM, concurrency=4)
    added = new_kms_key(moto_kms).alias_uri
    with Session(replace(session.config, wrappers=(*session.config.wrappers, added))) as more:
        fresh = Requests()
        fresh.attach(more.store()._client)  # type: ignore[attr-defined]
        outcomes = backup_keys(more, keys, team=TEAM, concurrency=4)
    assert [o.action for o in outcomes] == [UNCHANGED] * N_KEYS
    assert all(o.warning and "rewrap" in o.warning for o in outcomes)
    counts = fresh.take()
    assert counts["GetObject"] == N_KEYS and counts["PutObject"] == 0


def test_an_ecdsa_sealer_keeps_no_records_so_each_unchanged_key_is_read(
    counted: tuple[Session, Requests], trust_dir: Path, moto_kms: MotoServer
) -> None:
    """A KMS sealer signs with fresh randomness: no stable MAC key, no records; every
    unchanged key is read and authenticated, as before (docs/envelope.md 11.2)."""
    session, _ = counted
    uri = f"awskms:///{signing_key(moto_kms).alias}"
    with Session(replace(session.config, sealing_key=uri)) as probe:
        fingerprint = probe.sealer().key.fingerprint
    config = replace(session.config, sealing_key=uri, trusted_sealers=(fingerprint,))
    keys = _keys(trust_dir)
    with Session(config) as kms_sealed:
        assert kms_sealed.known() is None
        backup_keys(kms_sealed, keys, team=TEAM, concurrency=4)
        fresh = Requests()
        fresh.attach(kms_sealed.store()._client)  # type: ignore[attr-defined]
        outcomes = backup_keys(kms_sealed, keys, team=TEAM, concurrency=4)
    assert [o.action for o in outcomes] == [UNCHANGED] * N_KEYS
    assert fresh.take() == Counter({"ListObjectsV2": 1, "GetObject": N_KEYS})
    assert not (session.config.paths.state_dir / "known").exists()
