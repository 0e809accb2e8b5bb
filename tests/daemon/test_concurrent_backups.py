"""Backups of one trust directory at the same time: two ``keyvault backup`` processes, and
the daemon racing a person. Every run exits 0 once every key is stored (issue 17, item 12).

Each run is a real ``keyvault`` process that has imported what it needs and waits on
stdin; the test releases them together, so their reads and writes of the same keys
overlap instead of being spread out by interpreter start-up.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from fixtures.servers import wait_for

from daemon.conftest import DaemonEnv
from keyvault.config import DEFAULT_TEAM
from keyvault.envelope import Envelope
from keyvault.names import KeyAddress
from keyvault.trust.keyid import private_key_id
from keyvault.trust.sample import notary_key_file

KEYS = 120
GUN = "example.com/race/app"
_ARMED = (
    "import sys\n"
    "import keyvault.cli.app, keyvault.ops.backup, keyvault.envelope, keyvault.stores.file\n"
    "import keyvault.wrappers.age, keyvault.trust.scan, keyvault.sealing\n"
    "print('armed', flush=True)\n"
    "sys.stdin.readline()\n"
    "sys.exit(keyvault.cli.app.main(sys.argv[1:]))\n"
)


class Keys:
    """Notary targets keys in the trust directory, rewritten as by 'notary key passwd'."""

    def __init__(self, env: DaemonEnv, count: int) -> None:
        env.env["KEYVAULT_TRUST_DIR"] = str(env.trust)  # for 'keyvault backup'
        self.private = env.trust / "private"
        self.private.mkdir(mode=0o700, exist_ok=True)
        self.keys = sorted(
            (
                (private_key_id(k), k)
                for k in (ec.generate_private_key(ec.SECP256R1()) for _ in range(count))
            ),
            key=lambda pair: pair[0],
        )  # scan order: both runs go alike
        self.data: dict[str, bytes] = {}

    def write(self, passphrase: str) -> None:
        for key_id, key in self.keys:
            data = notary_key_file(key, "targets", GUN, passphrase)
            path = self.private / f"{key_id}.key"
            path.write_bytes(data)
            path.chmod(0o600)
            self.data[key_id] = data

    def stored(self, env: DaemonEnv) -> dict[str, bytes | None]:
        """Key ID -> the SHA-256 in the header of its latest stored version."""
        found: dict[str, bytes | None] = {}
        objects = env.store_dir / "objects"
        for key_id in self.data:
            name = KeyAddress(DEFAULT_TEAM, GUN, "targets", key_id).object_name
            versions = sorted((objects / name).iterdir()) if (objects / name).is_dir() else []
            latest = Envelope.from_bytes(versions[-1].read_bytes()) if versions else None
            found[key_id] = latest.header.sha256.encode() if latest else None
        return found

    def all_stored(self, env: DaemonEnv) -> bool:
        import hashlib

        return self.stored(env) == {
            k: hashlib.sha256(d).hexdigest().encode() for k, d in self.data.items()
        }


def armed(env: DaemonEnv, *args: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", _ARMED, *args],
        env=env.env,
        text=True,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stdout.readline() == "armed\n"
    return proc


def fire(*procs: subprocess.Popen[str]) -> list[tuple[int, str, str]]:
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write("\n")
        proc.stdin.flush()
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        results.append((proc.returncode, out, err))
    return results


def actions(out: str) -> list[str]:
    return [k["action"] for k in json.loads(out)["keys"]]


@pytest.mark.proves("T2")
def test_two_backups_of_changed_keys_at_once_both_exit_0(daemon_env: DaemonEnv) -> None:
    keys = Keys(daemon_env, KEYS)
    keys.write("")
    daemon_env.keyvault("backup")
    keys.write("a new passphrase")
    first, second = fire(*(armed(daemon_env, "--json", "backup") for _ in range(2)))
    assert (first[0], second[0]) == (0, 0), (first[2][-2000:], second[2][-2000:])
    both = list(zip(actions(first[1]), actions(second[1]), strict=True))
    assert all(
        sorted(pair) in (["unchanged", "updated"], ["updated", "updated"]) for pair in both
    ), both
    assert keys.all_stored(daemon_env)


def test_the_daemon_racing_a_manual_backup_both_succeed(daemon_env: DaemonEnv) -> None:
    keys = Keys(daemon_env, KEYS)
    keys.write("")
    daemon_env.keyvault("backup")
    daemon = daemon_env.start("--debounce", "0")
    manual = armed(daemon_env, "--json", "backup")
    keys.write("a new passphrase")  # the daemon starts on these at once
    ((code, out, err),) = fire(manual)
    assert code == 0, err[-2000:]
    wait_for(lambda: keys.all_stored(daemon_env), "every key's new bytes in the store")
    wait_for(lambda: not daemon.health()["keys_pending"], "the daemon to finish")
    assert daemon.events("backup-failed") == []
    backed_up = daemon.events("backed-up")
    assert {e["action"] for e in backed_up} <= {"updated", "unchanged"}
    assert set(actions(out)) <= {"updated", "unchanged"}
