"""Signing machines for the end-to-end suite: the real ``notary`` client and the real keyvault CLI.

A :class:`Machine` is one laptop or CI agent: its own notary trust directory,
its own keyvault HOME (XDG directories and a config file written from a
:class:`~fixtures.servers.BackendSetup`), and nothing else. Losing the machine
is deleting its directory; a new machine starts with neither keys nor a TUF
cache. Both tools run as subprocesses with an argument list (no shell) and an
environment built from scratch: notary gets its passphrases from
``NOTARY_*_PASSPHRASE`` only (stdin is closed, so a missing key or a wrong
passphrase fails instead of prompting), keyvault gets the backend's variables
only, so nothing from the developer's environment leaks in.

A :class:`Lab` makes the machines of one scenario (one team, one pair, the
session's notary-server, GUNs nobody else uses); the helpers at the end are
the steps every scenario shares.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
import shutil
import subprocess
import sys
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fixtures.notary_server import NotaryServer
from fixtures.servers import BackendSetup
from notarykit import Notary, parse_key_list

#: notary's error when the key a role needs is not in the trust directory (notary 0.7's words).
MISSING_KEY = (
    "could not find necessary signing keys, at least one of these keys must be available: {key_id}"
)
#: notary's error when a change to root.json needs a root key that is not there.
MISSING_ROOT = "signing keys not available: need 1 keys from 1 possible keys ({key_id})"
PUBLISHED = "Successfully published changes for repository {gun}"
TIMEOUT = 60


class CommandFailedError(AssertionError):
    pass


@dataclass(frozen=True)
class Target:
    name: str
    digest: str
    size: int
    role: str


def _result(
    args: list[str], proc: subprocess.CompletedProcess[str], check: bool
) -> subprocess.CompletedProcess[str]:
    if check and proc.returncode != 0:
        raise CommandFailedError(
            f"{' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
        )
    return proc


@dataclass
class NotaryClient:
    """The real ``notary`` client with one trust directory, talking to the test server."""

    notary: Notary
    server: NotaryServer
    trust_dir: Path

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = self.notary.run(self.trust_dir, *self.server.client_flags(), *args, check=False)
        return _result(["notary", *args], proc, check)

    def init(self, gun: str) -> str:
        out = self.run("init", gun, "-p").stdout
        assert PUBLISHED.format(gun=gun) in out, out
        return out

    def add(self, gun: str, name: str, content: bytes, *, roles: tuple[str, ...] = ()) -> None:
        payload = self.trust_dir.parent / f"{name}.payload"
        payload.write_bytes(content)
        role_args = [a for role in roles for a in ("--roles", role)]
        self.run("add", gun, name, str(payload), *role_args)

    def publish(self, gun: str) -> None:
        out = self.run("publish", gun).stdout
        assert PUBLISHED.format(gun=gun) in out, out

    def publish_fails(self, gun: str) -> str:
        """Publish, expecting notary to refuse; its ``* fatal:`` line."""
        proc = self.run("publish", gun, check=False)
        assert proc.returncode != 0, f"publish succeeded:\n{proc.stdout}"
        return fatal_line(proc)

    def targets(self, gun: str) -> dict[str, Target]:
        """``notary list`` (read from the server) as {name: Target}."""
        return parse_targets(self.run("list", gun).stdout)

    def keys(self) -> set[tuple[str, str | None, str | None]]:
        """``notary key list`` as (key ID, role, GUN)."""
        return parse_key_list(self.run("key", "list").stdout)

    def key_ids(self, role: str, gun: str | None = None) -> set[str]:
        return {k for k, r, g in self.keys() if r == role and (gun is None or g == gun)}

    def rotate(self, gun: str, role: str, *, server_managed: bool = False) -> None:
        """``notary key rotate`` (targets/snapshot: no confirmation prompt)."""
        out = self.run("key", "rotate", gun, role, *(["-r"] if server_managed else [])).stdout
        assert f"Successfully rotated {role} key for repository {gun}" in out, out

    def rotate_fails(self, gun: str, role: str) -> str:
        proc = self.run("key", "rotate", gun, role, check=False)
        assert proc.returncode != 0, f"rotate succeeded:\n{proc.stdout}"
        return fatal_line(proc)

    def delegation_add(self, gun: str, role: str, cert: Path) -> None:
        self.run("delegation", "add", gun, role, str(cert), "--all-paths", "-p")

    def key_import(self, key: Path, role: str) -> None:
        self.run("key", "import", str(key), "--role", role)

    def root_json(self, gun: str) -> dict[str, Any]:
        """The GUN's root.json as cached in this trust directory."""
        path = self.trust_dir / "tuf" / gun / "metadata" / "root.json"
        doc: dict[str, Any] = json.loads(path.read_text())
        return doc


def fatal_line(proc: subprocess.CompletedProcess[str]) -> str:
    text = proc.stdout + proc.stderr
    lines = [line[len("* fatal: ") :] for line in text.splitlines() if line.startswith("* fatal: ")]
    assert len(lines) == 1, f"expected one '* fatal:' line, got:\n{text}"
    return lines[0]


def parse_targets(output: str) -> dict[str, Target]:
    lines = output.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith("NAME")), None)
    if start is None:
        raise AssertionError(f"no target table in:\n{output}")
    found: dict[str, Target] = {}
    for line in lines[start + 2 :]:
        if not line.strip():
            continue
        name, digest, size, role = re.split(r"\s{2,}", line.strip())
        found[name] = Target(name, digest, int(size), role)
    return found


def _toml_string(value: str) -> str:
    return json.dumps(value)  # a JSON string is a valid TOML basic string


def render_config(backend: BackendSetup, team: str, pins: list[str] | None = None) -> str:
    """A config file for ``backend``: the [keyvault] section, the sealers the team's
    machines noted down ([sealing] trusted), then the backend's sections."""
    wrappers = ", ".join(_toml_string(w) for w in backend.wrappers)
    trusted = ", ".join(_toml_string(p) for p in pins or [])
    return (
        f"[keyvault]\nteam = {_toml_string(team)}\nstore = {_toml_string(backend.store)}\n"
        f"wrappers = [{wrappers}]\n\n[sealing]\ntrusted = [{trusted}]\n\n"
        f"{backend.config_toml}\n"
    )


def keyvault_env(home: Path, extra: Mapping[str, str]) -> dict[str, str]:
    """An environment with nothing but PATH, the given HOME and XDG dirs, and ``extra``."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "XDG_DATA_HOME": str(home / ".local" / "share"),
        "XDG_STATE_HOME": str(home / ".local" / "state"),
        "XDG_CACHE_HOME": str(home / ".cache"),
        "LANG": "C.UTF-8",
        # the keyvault under test (a worktree's, not the one installed in the venv)
        **{k: v for k, v in os.environ.items() if k == "PYTHONPATH"},
        **extra,
    }


def run_keyvault(
    home: Path, env: Mapping[str, str], *args: str | Path
) -> subprocess.CompletedProcess[str]:
    """``python -m keyvault ARGS`` with the interpreter running the tests."""
    return subprocess.run(
        [sys.executable, "-m", "keyvault", *map(str, args)],
        env=keyvault_env(home, env),
        cwd=home,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )


@dataclass
class KeyvaultCli:
    """The real keyvault CLI of one machine, configured from a BackendSetup."""

    home: Path
    backend: BackendSetup
    team: str
    trust_dir: Path
    #: The team's noted sealer fingerprints (shared by the lab's machines): what a user
    #: writes down when 'keyvault init' prints it, and pins on the next machine.
    pins: list[str] = field(default_factory=list)
    config: Path = field(init=False)
    #: What the last backup or restore did with the GUNs' trust pins: {GUN: action}.
    last_pins: dict[str, str] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        self.home.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.config = self.home / "keyvault.toml"
        self.config.write_text(render_config(self.backend, self.team, self.pins))
        self.config.chmod(0o600)

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = run_keyvault(
            self.home,
            self.backend.env,
            "--config",
            self.config,
            "--trust-dir",
            self.trust_dir,
            *args,
        )
        return _result(["keyvault", *args], proc, check)

    def json(self, *args: str) -> Any:
        return json.loads(self.run("--json", *args).stdout)

    def backup(self) -> dict[str, str]:
        """Back up every key of the trust directory: {key ID: action}; the machine's sealer
        fingerprint is noted for the team's next machines."""
        report = self.json("backup")
        fingerprint = self.json("sealer", "show")["sealer"]
        if fingerprint not in self.pins:
            self.pins.append(fingerprint)
        self.last_pins = {k["gun"]: k["action"] for k in report["keys"] if k["kind"] == "pin"}
        return {k["key_id"]: k["action"] for k in report["keys"] if k["kind"] == "key"}

    def restore(self, *selection: str) -> dict[str, str]:
        """Restore the selection (``--all`` when empty): {key ID: action}; what was done
        with the GUNs' trust pins is in ``last_pins`` ({GUN: action})."""
        report = self.json("restore", *(selection or ("--all",)))
        self.last_pins = {k["gun"]: k["action"] for k in report["keys"] if k["kind"] == "pin"}
        return {k["key_id"]: k["action"] for k in report["keys"] if k["kind"] == "key"}


@dataclass
class Machine:
    """One signing machine: a notary trust directory and a keyvault home, under ``root``."""

    root: Path
    notary: NotaryClient
    keyvault: KeyvaultCli

    @property
    def trust_dir(self) -> Path:
        return self.notary.trust_dir

    def key_files(self) -> dict[str, bytes]:
        """private/<id>.key name -> bytes."""
        private = self.trust_dir / "private"
        if not private.is_dir():
            return {}
        return {p.stem: p.read_bytes() for p in private.glob("*.key")}

    def lose(self) -> None:
        """The machine is gone: its private keys, TUF cache and keyvault home with it."""
        shutil.rmtree(self.root)
        assert not self.root.exists()


# --- one scenario's machines ---------------------------------------------------

_SEQUENCE = itertools.count(1)
MAX_LISTED_GUN = 25


class Lab:
    """Machines of one team, one backend, one notary server; GUNs nobody else uses."""

    def __init__(
        self, root: Path, backend: BackendSetup, notary: Notary, server: NotaryServer
    ) -> None:
        self.root = root
        self.backend = backend
        self.notary = notary
        self.server = server
        self.run_id = uuid.uuid4().hex[:8]
        self.team = f"e2e-{next(_SEQUENCE)}-{self.run_id}"
        self.pins: list[str] = []  # sealer fingerprints noted down, pinned by new machines

    def gun(self, name: str) -> str:
        """A GUN unique to this test (the server is shared by the whole session).

        At most 25 characters: ``notary key list`` shortens longer GUNs to
        ``...<last 22>``, and the scenarios read key IDs per GUN from it.
        """
        gun = f"kv/{self.run_id}/{name}"
        assert len(gun) <= MAX_LISTED_GUN, f"GUN {gun!r} is too long for 'notary key list'"
        return gun

    def machine(self, name: str) -> Machine:
        """A brand-new machine: empty trust directory, no TUF cache, fresh keyvault home."""
        root = self.root / name
        assert not root.exists(), f"machine {name} already exists"
        root.mkdir(parents=True)
        trust = root / "trust"
        return Machine(
            root,
            NotaryClient(self.notary, self.server, trust),
            KeyvaultCli(root / "home", self.backend, self.team, trust, self.pins),
        )


# --- shared scenario steps ------------------------------------------------------


def release(name: str) -> bytes:
    """The content signed as target ``name``."""
    return f"release {name}\n".encode()


def expected(name: str, role: str = "targets") -> Target:
    """How ``notary list`` must show target ``name`` signed by ``role``."""
    content = release(name)
    return Target(name, hashlib.sha256(content).hexdigest(), len(content), role)


def sign(machine: Machine, gun: str, name: str, roles: tuple[str, ...] = ()) -> None:
    """Stage target ``name`` and publish it (asserting notary's success message)."""
    machine.notary.add(gun, name, release(name), roles=roles)
    machine.notary.publish(gun)


def new_repository(machine: Machine, gun: str) -> dict[str, str]:
    """``notary init`` + a first published target; the GUN's key IDs by role."""
    machine.notary.init(gun)
    sign(machine, gun, "v1")
    (root,) = machine.notary.key_ids("root")
    (targets,) = machine.notary.key_ids("targets", gun)
    (snapshot,) = machine.notary.key_ids("snapshot", gun)
    assert set(machine.key_files()) == {root, targets, snapshot}
    return {"root": root, "targets": targets, "snapshot": snapshot}
