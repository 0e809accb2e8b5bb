"""Run ``python -m keyvault daemon`` in a subprocess with an isolated HOME and a file store.

Every test gets its own HOME/XDG directories, its own ``keyvault init``
(age recipient, file store), its own trust directory and a daemon on a free
loopback port. Waiting is always polling with a deadline.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from fixtures.servers import wait_for

from keyvault.trust.keyid import private_key_id
from keyvault.trust.sample import notary_key_file

DEADLINE = 20.0


def make_key(
    role: str = "targets", gun: str | None = "example.com/daemon/app"
) -> tuple[str, bytes]:
    """(key ID, file bytes) of a fresh unencrypted notary-format ECDSA key."""
    key = ec.generate_private_key(ec.SECP256R1())
    return private_key_id(key), notary_key_file(key, role, gun, "")


def write_key(trust: Path, data: bytes, key_id: str, mode: int = 0o600) -> Path:
    """Write a key file the way notary does (create, write, close), then set its mode."""
    private = trust / "private"
    private.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = private / f"{key_id}.key"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    if mode != 0o600:
        path.chmod(mode)
    return path


@dataclass
class DaemonProc:
    proc: subprocess.Popen[bytes]
    log: Path
    state_dir: Path

    def lines(self) -> list[dict[str, Any]]:
        out = []
        for line in self.log.read_text(errors="replace").splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                out.append({"event": "raw", "text": line})
        return out

    def events(self, name: str) -> list[dict[str, Any]]:
        return [line for line in self.lines() if line.get("event") == name]

    def address(self) -> str:
        def recorded() -> str | None:
            if self.proc.poll() is not None:
                raise AssertionError(f"daemon exited {self.proc.returncode}:\n{self.log_text()}")
            try:
                return str(json.loads((self.state_dir / "daemon.json").read_text())["listen"])
            except (OSError, ValueError, KeyError):
                return None

        return str(wait_for(recorded, "the daemon to record its address"))

    def get(self, path: str) -> bytes:
        with urllib.request.urlopen(f"http://{self.address()}{path}", timeout=5) as resp:
            return bytes(resp.read())

    def health(self) -> dict[str, Any]:
        return dict(json.loads(self.get("/healthz")))

    def metric(self, name: str, **labels: str) -> float:
        from prometheus_client.parser import text_string_to_metric_families

        total = 0.0
        for family in text_string_to_metric_families(self.get("/metrics").decode()):
            for sample in family.samples:
                if sample.name == name and all(
                    sample.labels.get(k) == v for k, v in labels.items()
                ):
                    total += sample.value
        return total

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    def terminate(self, timeout: float = 15.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)


@dataclass
class DaemonEnv:
    """An isolated user: HOME, XDG dirs, a keyvault config, a trust dir, a file store."""

    root: Path
    trust: Path
    env: dict[str, str]
    procs: list[DaemonProc] = field(default_factory=list)

    @property
    def state_dir(self) -> Path:
        return self.root / "home" / ".local" / "state" / "keyvault"

    @property
    def store_dir(self) -> Path:
        return self.root / "home" / ".local" / "share" / "keyvault" / "store"

    def keyvault(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [sys.executable, "-m", "keyvault", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"keyvault {' '.join(args)}: {result.returncode}\n{result.stdout}{result.stderr}"
            )
        return result

    def start(
        self,
        *args: str,
        global_args: tuple[str, ...] = (),
        env: dict[str, str] | None = None,
        trust: bool = True,
        wait: bool = True,
    ) -> DaemonProc:
        log = self.root / f"daemon-{len(self.procs)}.log"
        cmd = [
            sys.executable,
            "-m",
            "keyvault",
            *global_args,
            "daemon",
            *(["--trust-dir", str(self.trust)] if trust else []),
            "--listen",
            "127.0.0.1:0",
            "--debounce",
            "200",
            *args,
        ]
        with log.open("wb") as out:
            proc = subprocess.Popen(
                cmd,
                env={**self.env, **(env or {})},
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        daemon = DaemonProc(proc, log, self.state_dir)
        self.procs.append(daemon)
        if wait:
            wait_for(
                lambda: daemon.events("reconciled") or daemon.proc.poll() is not None,
                "the daemon's first reconciliation",
            )
            assert daemon.proc.poll() is None, daemon.log_text()
        return daemon

    def stored_versions(self) -> dict[str, int]:
        """Object name -> number of versions of each key in the file store (the audit
        log's checkpoints left out)."""
        objects = self.store_dir / "objects"
        found: dict[str, int] = {}
        if not objects.is_dir():
            return found
        for path in objects.rglob("*.json"):
            if path.is_dir() and "audit" not in path.relative_to(objects).parts:
                name = str(path.relative_to(objects))
                found[name] = sum(1 for v in path.iterdir() if not v.name.startswith("."))
        return found

    def stored_key_ids(self) -> dict[str, int]:
        """Key ID -> number of stored versions."""
        return {Path(name).stem: n for name, n in self.stored_versions().items()}


@pytest.fixture
def daemon_env(tmp_path: Path) -> Iterator[DaemonEnv]:
    home = tmp_path / "home"
    home.mkdir()
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "XDG_DATA_HOME": str(home / ".local" / "share"),
        "XDG_STATE_HOME": str(home / ".local" / "state"),
    }
    trust = tmp_path / "trust"
    trust.mkdir(mode=0o700)
    denv = DaemonEnv(tmp_path, trust, env)
    denv.keyvault("init")
    yield denv
    for proc in denv.procs:
        proc.kill()
