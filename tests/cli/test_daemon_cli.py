"""``keyvault daemon`` and ``keyvault daemon status`` from the command line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from cli.conftest import KV


def test_status_without_a_daemon_exits_6(kv: KV) -> None:
    run = kv("daemon", "status")
    assert run.code == 6
    assert "daemon is not running" in run.err and "keyvault daemon" in run.err
    run = kv("--json", "daemon", "status", "--listen", "127.0.0.1:1")
    assert run.code == 6 and run.json()["error"] == "unavailable"


def test_daemon_refuses_a_non_loopback_listen_address(kv: KV) -> None:
    run = kv("daemon", "--listen", "0.0.0.0:9498")
    assert run.code == 2 and "loopback" in run.err
    assert kv("daemon", "status", "--listen", "nonsense").code == 2


def test_daemon_without_a_store_says_what_to_do(kv: KV, home: Path) -> None:
    run = kv("daemon", "--listen", "127.0.0.1:0", "--trust-dir", str(home / "trust"))
    assert run.code == 3 and "keyvault init" in run.err


def test_status_reads_the_running_daemon(kv: KV, home: Path) -> None:
    assert kv("init").code == 0
    trust = home / "trust"
    (trust / "private").mkdir(parents=True, mode=0o700)
    log = home / "daemon.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "keyvault",
                "daemon",
                "--trust-dir",
                str(trust),
                "--listen",
                "127.0.0.1:0",
            ],
            env=dict(os.environ),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        deadline = time.monotonic() + 20
        while b'"reconciled"' not in log.read_bytes():
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.02)
        run = kv("daemon", "status", "--json")
        assert run.code == 0, run.err
        doc = run.json()
        assert doc["health"]["status"] == "ok" and doc["health"]["pid"] == proc.pid
        assert doc["health"]["trust_dirs"] == [str(trust)]
        assert doc["metrics"]["keyvault_daemon_keys_pending"] == 0
        text = kv("daemon", "status")
        assert text.code == 0 and "keys watched: 0" in text.out and str(trust) in text.out
        second = kv("daemon", "--trust-dir", str(trust), "--listen", "127.0.0.1:0")
        assert second.code == 7 and f"pid {proc.pid}" in second.err
    finally:
        proc.terminate()
        assert proc.wait(20) == 0
    assert json.loads(log.read_text().splitlines()[-1])["event"] == "stopped"
    assert kv("daemon", "status").code == 6


def test_status_of_a_stalled_daemon_exits_1_and_recovers(kv: KV, home: Path) -> None:
    """The loop blocks in its first backup (the audit log is locked by another writer):
    after --stall-after without a turn, 'daemon status' says stalled and exits 1; once
    the lock goes, the key is backed up and the status is ok again (exit 0)."""
    import fcntl

    from daemon.conftest import make_key, write_key
    from fixtures.servers import wait_for

    assert kv("init").code == 0
    trust = home / "trust"
    (trust / "private").mkdir(parents=True, mode=0o700)
    log = home / "daemon.log"
    audit = home / ".local" / "state" / "keyvault" / "audit.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "keyvault",
                "daemon",
                "--trust-dir",
                str(trust),
                "--listen",
                "127.0.0.1:0",
                "--stall-after",
                "1",
                "--debounce",
                "0",
            ],
            env=dict(os.environ),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        wait_for(
            lambda: proc.poll() is None and b'"reconciled"' in log.read_bytes(),
            "the daemon to start",
        )
        lock = os.open(audit, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            key_id, data = make_key()
            write_key(trust, data, key_id)
            stalled = wait_for(
                lambda: (r := kv("daemon", "status")).code == 1 and r,
                "daemon status to report the stall",
            )
            assert "keyvault daemon: stalled" in stalled.out
            as_json = kv("--json", "daemon", "status")
            assert as_json.code == 1 and as_json.json()["health"]["status"] == "stalled"
        finally:
            os.close(lock)
        wait_for(lambda: b'"backed-up"' in log.read_bytes(), "the backup to finish")
        wait_for(lambda: kv("daemon", "status").code == 0, "the loop to turn again")
        assert "keyvault daemon: ok" in kv("daemon", "status").out
    finally:
        proc.terminate()
        assert proc.wait(60) == 0, log.read_text()


def test_help_loads_neither_watchfiles_nor_prometheus() -> None:
    code = (
        "import sys, json\nfrom keyvault.cli.app import main\n"
        "rc = [main(['--help']), main(['daemon', '--help'])]\n"
        "print(json.dumps([rc, sorted(sys.modules)]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    rcs, modules = json.loads(out.splitlines()[-1])
    assert rcs == [0, 0]
    assert not {m.split(".")[0] for m in modules} & {
        "watchfiles",
        "prometheus_client",
        "sqlite3",
        "cryptography",
    }
