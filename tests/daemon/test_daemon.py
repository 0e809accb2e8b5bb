"""The daemon end to end: a real process, real file events, a file store on disk."""

from __future__ import annotations

import base64
import os
import re
import shutil
import signal
from pathlib import Path

import pytest
from fixtures.servers import wait_for
from notarykit import Notary, fresh_ec_pem

from daemon.conftest import DaemonEnv, make_key, write_key


def restored_bytes(env: DaemonEnv, key_id: str) -> bytes:
    """Restore one key into a fresh trust dir with the CLI and return its bytes."""
    target = env.root / f"restored-{key_id[:8]}"
    env.keyvault("--trust-dir", str(target), "restore", "--key-id", key_id)
    (path,) = (target / "private").rglob(f"{key_id}.key")
    return path.read_bytes()


def test_key_written_by_notary_is_backed_up(daemon_env: DaemonEnv, notary: Notary) -> None:
    trust = daemon_env.trust  # no private/ yet: notary creates it with the first key
    daemon = daemon_env.start()
    key_id = notary.import_key(trust, fresh_ec_pem(), "targets", "example.com/team/app")
    wait_for(lambda: daemon_env.stored_key_ids().get(key_id) == 1, "the key in the store")
    original = next((trust / "private").rglob(f"{key_id}.key")).read_bytes()
    assert restored_bytes(daemon_env, key_id) == original
    assert daemon.metric("keyvault_daemon_backups_total", action="created") == 1
    health = daemon.health()
    assert health["status"] == "ok" and health["keys_watched"] == 1
    (line,) = daemon.events("backed-up")
    assert line["key_id"] == key_id and line["role"] == "targets"
    assert daemon.terminate() == 0


def test_key_written_slowly_is_backed_up_once_and_complete(daemon_env: DaemonEnv) -> None:
    """A key file written in two parts: the daemon reads the first part (its writes went
    quiet for the debounce) and refuses it as not (yet) a key; the finished file is
    backed up once. The test waits on what the daemon reports, never on a time window."""
    daemon = daemon_env.start()
    key_id, data = make_key()
    path = daemon_env.trust / "private" / f"{key_id}.key"
    path.parent.mkdir(mode=0o700)
    half = len(data) // 2
    with path.open("wb") as fh:
        os.chmod(path, 0o600)
        fh.write(data[:half])
        fh.flush()
        wait_for(lambda: daemon.events("refused"), "the half-written file refused")
        fh.write(data[half:])
        fh.flush()
    wait_for(lambda: daemon.events("backed-up"), "the finished file backed up")
    wait_for(lambda: daemon.health()["keys_pending"] == 0, "nothing left pending")
    assert daemon_env.stored_key_ids() == {key_id: 1}
    assert restored_bytes(daemon_env, key_id) == data
    refused = daemon.events("refused")
    assert refused and all(r["path"] == f"{key_id}.key" for r in refused), refused
    created = [e for e in daemon.events("backed-up") if e["action"] == "created"]
    assert [e["key_id"] for e in created] == [key_id]  # a later look finds it unchanged
    assert daemon.metric("keyvault_daemon_backups_total", action="created") == 1


def test_second_daemon_on_the_same_state_dir_refuses_to_start(daemon_env: DaemonEnv) -> None:
    first = daemon_env.start()
    second = daemon_env.start(wait=False)
    assert second.proc.wait(20) == 7
    assert "already running" in second.log_text()
    assert str(first.proc.pid) in second.log_text()
    assert first.proc.poll() is None and first.health()["status"] == "ok"


def test_sigterm_stops_cleanly_and_a_restart_catches_up(daemon_env: DaemonEnv) -> None:
    daemon = daemon_env.start()
    assert daemon.terminate() == 0
    assert daemon.events("stopped")
    assert not (daemon_env.state_dir / "daemon.json").exists()
    # Keys made while no daemon runs are found by the reconciliation at start.
    ids = []
    for _ in range(3):
        key_id, data = make_key()
        write_key(daemon_env.trust, data, key_id)
        ids.append(key_id)
    daemon_env.start()
    wait_for(
        lambda: all(daemon_env.stored_key_ids().get(k) == 1 for k in ids),
        "the keys made while the daemon was down",
    )


@pytest.mark.proves("F08")
def test_sigkill_during_backups_loses_and_duplicates_nothing(daemon_env: DaemonEnv) -> None:
    daemon = daemon_env.start(env={"KEYVAULT_CONCURRENCY": "1"})
    keys = dict(make_key() for _ in range(150))
    for key_id, data in keys.items():
        write_key(daemon_env.trust, data, key_id)
    wait_for(lambda: len(daemon_env.stored_versions()) >= 3, "the first backups", every=0.002)
    daemon.proc.send_signal(signal.SIGKILL)
    daemon.proc.wait(10)
    at_kill = len(daemon_env.stored_versions())
    assert 0 < at_kill < len(keys), f"killed after {at_kill} of {len(keys)}: not mid-batch"
    _assert_no_key_bytes(daemon_env.state_dir, keys.values())

    daemon_env.start()
    wait_for(
        lambda: daemon_env.stored_key_ids() == dict.fromkeys(keys, 1),
        "every key stored exactly once",
        timeout=60,
    )
    wait_for(lambda: _pending(daemon_env) == 0, "an empty journal")


def _pending(env: DaemonEnv) -> int:
    return int(env.procs[-1].health()["keys_pending"])


def _assert_no_key_bytes(state_dir: Path, keys: object) -> None:
    """The journal (and everything else in the state dir) holds no key material."""
    blobs = b"".join(p.read_bytes() for p in state_dir.iterdir() if p.is_file())
    assert blobs, "the state directory is empty"
    for data in keys:  # type: ignore[attr-defined]
        assert data not in blobs
        body = re.sub(rb"-----[^-]+-----|[A-Za-z-]+: [^\n]*", b"", data)
        der = base64.b64decode(b"".join(body.split()))
        for chunk in (der[i : i + 16] for i in range(0, len(der) - 16, 16)):
            assert chunk not in blobs
        for line in body.split():
            if len(line) >= 16:
                assert line not in blobs


def test_state_files_are_private(daemon_env: DaemonEnv) -> None:
    daemon_env.start()
    assert daemon_env.state_dir.stat().st_mode & 0o777 == 0o700
    for name in ("journal.db", "daemon.lock", "daemon.json"):
        assert (daemon_env.state_dir / name).stat().st_mode & 0o777 == 0o600, name


# --- T14: files the daemon must refuse ------------------------------------------------------


def _refusals(daemon: object, relpath: str) -> list[str]:
    return [
        r["reason"]
        for r in daemon.events("refused")  # type: ignore[attr-defined]
        if r["path"] == relpath
    ]


@pytest.mark.proves("T14")
def test_t14_group_writable_symlink_and_non_key_files_are_refused(
    daemon_env: DaemonEnv, tmp_path: Path
) -> None:
    daemon = daemon_env.start()
    writable_id, writable = make_key()
    write_key(daemon_env.trust, writable, writable_id, mode=0o660)
    outside_id, outside = make_key()
    elsewhere = tmp_path / "elsewhere.key"
    elsewhere.write_bytes(outside)
    elsewhere.chmod(0o600)
    (daemon_env.trust / "private" / f"{outside_id}.key").symlink_to(elsewhere)
    garbage_id = "ab" * 32
    write_key(daemon_env.trust, b"not a key at all\n", garbage_id)
    good_id, good = make_key()
    write_key(daemon_env.trust, good, good_id)
    wait_for(lambda: daemon_env.stored_key_ids().get(good_id), "the good key in the store")
    wait_for(
        lambda: _refusals(daemon, f"{writable_id}.key") == ["writable"],
        "the group-writable file refused",
    )
    wait_for(lambda: _refusals(daemon, f"{outside_id}.key") == ["symlink"], "the symlink refused")
    # The file may be seen between its creation and its write (empty), as notary's own
    # files can be: then "empty" comes first, and "not-pem" once its bytes are in.
    wait_for(
        lambda: _refusals(daemon, f"{garbage_id}.key")[-1:] == ["not-pem"], "the non-key refused"
    )
    assert set(_refusals(daemon, f"{garbage_id}.key")) <= {"empty", "not-pem"}
    assert set(daemon_env.stored_key_ids()) == {good_id}
    assert daemon.metric("keyvault_daemon_refused_total") >= 3
    # At the next start the reconciliation refuses them again (and logs each once).
    assert daemon.terminate() == 0
    again = daemon_env.start()
    assert sorted(r["reason"] for r in again.events("refused")) == [
        "not-pem",
        "symlink",
        "writable",
    ]
    assert set(daemon_env.stored_key_ids()) == {good_id}


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to chown a file to another user")
@pytest.mark.proves("T14")
def test_t14_file_owned_by_another_user_is_refused(daemon_env: DaemonEnv) -> None:
    daemon = daemon_env.start()
    key_id, data = make_key()
    private = daemon_env.trust / "private"
    private.mkdir(mode=0o700)
    staged = daemon_env.root / "staged.key"
    staged.write_bytes(data)
    staged.chmod(0o600)
    os.chown(staged, 65534, 65534)
    shutil.move(staged, private / f"{key_id}.key")  # a rename: one event, already foreign
    wait_for(
        lambda: _refusals(daemon, f"{key_id}.key") == ["foreign-owner"], "the foreign file refused"
    )
    assert daemon_env.stored_key_ids() == {}
    line = next(r for r in daemon.events("refused") if r["path"] == f"{key_id}.key")
    assert "uid 65534" in line["detail"]


def test_the_daemon_keeps_a_keys_dual_control(daemon_env: DaemonEnv) -> None:
    """A root key backed up under 2-of-2 by hand stays under it when the daemon backs up
    its changed bytes (issue 17, item 4): the group is read from its latest signed version."""
    from cryptography.hazmat.primitives.asymmetric import ec

    from keyvault.config import DEFAULT_TEAM
    from keyvault.envelope import Envelope
    from keyvault.names import KeyAddress
    from keyvault.trust.keyid import private_key_id
    from keyvault.trust.sample import notary_key_file
    from keyvault.wrappers.age import generate_identity

    config = daemon_env.root / "home" / ".config" / "keyvault" / "config.toml"
    officer = generate_identity(daemon_env.root / "officer.txt")
    text = config.read_text()
    config.write_text(text.replace('wrappers = ["', f'wrappers = ["{officer}", "', 1))
    key = ec.generate_private_key(ec.SECP256R1())
    key_id = private_key_id(key)
    path = write_key(daemon_env.trust, notary_key_file(key, "root", None, ""), key_id)
    daemon_env.keyvault("--trust-dir", str(daemon_env.trust), "backup", "--threshold", "2")
    versions = (
        daemon_env.store_dir
        / "objects"
        / KeyAddress(DEFAULT_TEAM, None, "root", key_id).object_name
    )

    def latest() -> Envelope:
        return Envelope.from_bytes(max(versions.iterdir()).read_bytes())

    assert latest().threshold == 2
    daemon = daemon_env.start()
    path.write_bytes(notary_key_file(key, "root", None, "a new passphrase"))
    wait_for(
        lambda: any(e["action"] == "updated" for e in daemon.events("backed-up")),
        "the daemon's backup of the changed root key",
    )
    assert len(list(versions.iterdir())) == 2
    assert latest().threshold == 2 and len(latest().wrapped_keys) == 2


def test_status_counts_the_keys_the_start_up_check_found_backed_up(daemon_env: DaemonEnv) -> None:
    """Keys backed up before the daemon started are in the store: status says so (before:
    '0 written, 0 already there', as if nothing were backed up)."""
    ids = []
    for _ in range(3):
        key_id, data = make_key()
        write_key(daemon_env.trust, data, key_id)
        ids.append(key_id)
    daemon_env.keyvault("--trust-dir", str(daemon_env.trust), "backup")
    key_id, data = make_key()  # one more, made after the backup: the daemon writes it
    write_key(daemon_env.trust, data, key_id)
    daemon = daemon_env.start()
    wait_for(lambda: daemon.health()["keys_backed_up"] == 4, "the new key backed up")
    health = daemon.health()
    assert health["keys_watched"] == 4 and health["keys_pending"] == 0
    (reconciled,) = daemon.events("reconciled")
    assert reconciled["backed_up"] == 3 and reconciled["to_back_up"] == 1
    assert daemon.metric("keyvault_daemon_keys_backed_up") == 4
    assert daemon.metric("keyvault_daemon_backups_total", action="created") == 1
    status = daemon_env.keyvault("daemon", "status")
    assert "backed up:    4 of 4 keys in the store (1 written since start" in status.stdout
    assert daemon.terminate() == 0


def test_the_daemon_carries_the_trust_pins_of_the_guns_it_backs_up(daemon_env: DaemonEnv) -> None:
    """The start-up reconciliation backs up every pin; a key backed up later brings its
    GUN's pin along, a new version when the pin changed (notary rotated the root)."""
    gun = "example.com/daemon/app"
    pin = daemon_env.trust / "tuf" / gun / "metadata" / "root.json"
    pin.parent.mkdir(parents=True, mode=0o700)
    pin.write_bytes(b'{"signed":{"_type":"Root","version":1},"signatures":[]}')
    name = f"v1/teams/default/pins/{gun}/root.json"
    daemon = daemon_env.start()
    wait_for(lambda: daemon_env.stored_versions().get(name) == 1, "the pin in the store")
    pin.write_bytes(b'{"signed":{"_type":"Root","version":2},"signatures":[]}')
    key_id, data = make_key(gun=gun)
    write_key(daemon_env.trust, data, key_id)
    wait_for(lambda: daemon_env.stored_versions().get(name) == 2, "the changed pin stored")
    target = daemon_env.root / "restored"
    daemon_env.keyvault("--trust-dir", str(target), "restore", "--gun", gun)
    assert (target / "tuf" / gun / "metadata" / "root.json").read_bytes() == pin.read_bytes()
    pins = [e for e in daemon.events("backed-up") if e.get("kind") == "pin"]
    assert {e["gun"] for e in pins} == {gun}
    assert [e["action"] for e in pins if e["action"] != "unchanged"] == ["created", "updated"]
    assert daemon.terminate() == 0


def test_the_daemon_watches_tuf_so_a_pin_written_alone_is_backed_up(daemon_env: DaemonEnv) -> None:
    """No key file changes: notary rotating a GUN's root (root.json rewritten) and pulling
    a new GUN (tuf/<gun>/metadata/ made, root.json written) are seen under tuf/, and the
    pins backed up then, not at the next reconciliation (none runs meanwhile)."""
    gun, pulled = "example.com/daemon/app", "example.com/daemon/pulled"
    pin = daemon_env.trust / "tuf" / gun / "metadata" / "root.json"
    pin.parent.mkdir(parents=True, mode=0o700)
    pin.write_bytes(b'{"signed":{"_type":"Root","version":1},"signatures":[]}')
    key_id, data = make_key(gun=gun)
    write_key(daemon_env.trust, data, key_id)
    notary = daemon_env.root / "home" / ".notary"  # the notary config pins a server's CA
    notary.mkdir()
    (notary / "config.json").write_text(
        '{"remote_server": {"url": "https://notary.example.com", "root_ca": "ca.pem"}}'
    )
    (notary / "ca.pem").write_bytes(fresh_ca_pem())
    name = f"v1/teams/default/pins/{gun}/root.json"
    daemon = daemon_env.start()
    wait_for(lambda: daemon_env.stored_versions().get(name) == 1, "the pin in the store")
    wait_for(lambda: len(daemon.events("reconciled")) == 2, "the settling reconciliation")
    ca = (
        daemon_env.store_dir
        / "objects"
        / "v1"
        / "teams"
        / "default"
        / "certs"
        / "server"
        / "notary.example.com"
        / "root_ca.pem"
    )  # reconciliation carries the pinned CA too
    assert len([v for v in ca.iterdir() if not v.name.startswith(".")]) == 1
    pin.write_bytes(b'{"signed":{"_type":"Root","version":2},"signatures":[]}')
    wait_for(lambda: daemon_env.stored_versions().get(name) == 2, "the rotated pin stored")
    new = daemon_env.trust / "tuf" / pulled / "metadata" / "root.json"
    new.parent.mkdir(parents=True, mode=0o700)
    new.write_bytes(b'{"signed":{"_type":"Root","version":1},"signatures":[]}')
    pulled_name = f"v1/teams/default/pins/{pulled}/root.json"
    wait_for(lambda: daemon_env.stored_versions().get(pulled_name) == 1, "the new GUN's pin")
    assert len(daemon.events("reconciled")) == 2  # the watch did it, not a reconciliation
    assert {e["gun"] for e in daemon.events("detected") if e.get("kind") == "pin"} == {gun, pulled}
    assert (
        daemon_env.stored_versions().get(f"v1/teams/default/guns/{gun}/targets/{key_id}.json") == 1
    )  # the key: not again
    target = daemon_env.root / "restored"
    daemon_env.keyvault("--trust-dir", str(target), "restore", "--gun", gun)
    assert (target / "tuf" / gun / "metadata" / "root.json").read_bytes() == pin.read_bytes()
    assert daemon.terminate() == 0


def fresh_ca_pem() -> bytes:
    """A real self-signed CA certificate (PEM)."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "daemon test CA")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)
