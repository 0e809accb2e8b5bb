"""A CI lab on real servers: OpenBao (KV v2 + Transit + JWT auth) and notary-server.

A key owner of team b creates a repository with the real ``notary`` (root,
targets, snapshot keys and a ``targets/releases`` delegation), and backs every
key up as a team member (a team-b Vault token). A CI job then runs the real
keyvault CLI as a subprocess with nothing but a CI ID token (a JWT the test
signs with the key OpenBao's JWT mount trusts), the notary passphrases it
needs, and its own HOME and KEYVAULT_TMPDIR, so a test can check that nothing
is left anywhere it could have written.
"""

from __future__ import annotations

import datetime
import os
import subprocess
import sys
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from e2e.machines import NotaryClient, keyvault_env, release
from fixtures.notary_server import NotaryServer
from fixtures.vault import KV_MOUNT, TRANSIT_MOUNT, BaoServer, unique
from notarykit import PASSPHRASES, Notary

from keyvault.sealing import Ed25519FileSealer

TEAM = "team-b"
JOB_PASSPHRASES = {
    "NOTARY_TARGETS_PASSPHRASE": PASSPHRASES["targets"],
    "NOTARY_SNAPSHOT_PASSPHRASE": PASSPHRASES["snapshot"],
    "NOTARY_DELEGATION_PASSPHRASE": PASSPHRASES["delegation"],
}


def write_delegation(directory: Path) -> tuple[Path, Path]:
    """An EC key and a self-signed certificate for a delegation (``notary delegation add``)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "releases")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    key_path, cert_path = directory / "deleg.key", directory / "deleg.crt"
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key_path, cert_path


@dataclass
class CiLab:
    root: Path
    bao: BaoServer
    server: NotaryServer
    notary: Notary
    gun: str
    other_gun: str  # team a's
    store: str
    wrapper: str
    key_ids: dict[str, str]  # role -> key ID of the owner's keys
    #: team -> fingerprint of the sealer of the owner's machine (what CI configs pin)
    sealers: dict[str, str]

    def config(self, name: str, *, team: str = TEAM, jwt_role: str = "ci-team-b") -> Path:
        path = self.root / f"{name}.toml"
        pins = ", ".join(f'"{p}"' for p in [self.sealers.get(team)] if p)
        path.write_text(
            f'[keyvault]\nteam = "{team}"\nstore = "{self.store}"\n'
            f'wrappers = ["{self.wrapper}"]\n\n'
            f"[sealing]\ntrusted = [{pins}]\n\n"
            f'[vault]\ntimeout = 5\nauth = "jwt"\n'
            f'jwt_role = "{jwt_role}"\njwt_env = "CI_JOB_JWT"\n'
        )
        return path

    def job(self, name: str) -> Job:
        home = self.root / name
        home.mkdir()
        return Job(self, home, home / "runtime")


@dataclass
class Job:
    """One CI job: its HOME, its KEYVAULT_TMPDIR, its ID token."""

    lab: CiLab
    home: Path
    base: Path

    def env(self, jwt: str, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        return keyvault_env(
            self.home,
            {
                "VAULT_ADDR": self.lab.bao.address,
                "CI_JOB_JWT": jwt,
                "KEYVAULT_TMPDIR": str(self.base),
                **JOB_PASSPHRASES,
                **(extra or {}),
            },
        )

    def argv(self, config: Path, *args: str | Path) -> list[str]:
        return [sys.executable, "-m", "keyvault", "--config", str(config), *map(str, args)]

    def run(
        self, config: Path, jwt: str, *args: str | Path, extra: Mapping[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.argv(config, *args),
            env=self.env(jwt, extra),
            cwd=self.home,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    def start(self, config: Path, jwt: str, *args: str | Path) -> subprocess.Popen[str]:
        return subprocess.Popen(
            self.argv(config, *args),
            env=self.env(jwt),
            cwd=self.home,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )

    def key_files(self) -> list[Path]:
        """Every file under this job's HOME (runtime base included) that looks like a key."""
        return [
            p
            for p in self.home.rglob("*")
            if p.is_file() and (p.suffix == ".key" or b"PRIVATE KEY" in p.read_bytes()[:4096])
        ]


def _backup(
    lab_root: Path, bao: BaoServer, store: str, wrapper: str, team: str, trust: Path
) -> str:
    """Back ``trust`` up as the team's owner; the fingerprint of the owner's sealer."""
    home = lab_root / f"owner-home-{team}"
    home.mkdir(exist_ok=True)
    config = home / "owner.toml"
    config.write_text(
        f'[keyvault]\nteam = "{team}"\nstore = "{store}"\n'
        f'wrappers = ["{wrapper}"]\n\n[vault]\ntimeout = 5\n'
    )
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "keyvault",
            "--config",
            str(config),
            "--trust-dir",
            str(trust),
            "backup",
        ],
        env=keyvault_env(home, {"VAULT_ADDR": bao.address, "VAULT_TOKEN": bao.token(team)}),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, proc.stderr
    sealer = Ed25519FileSealer.load(home / ".config" / "keyvault" / "sealer.key")
    return sealer.key.fingerprint


@pytest.fixture(scope="module")
def ci_lab(
    tmp_path_factory: pytest.TempPathFactory,
    bao: BaoServer,
    notary_server: NotaryServer,
    notary: Notary,
) -> CiLab:
    root = tmp_path_factory.mktemp("ci-lab")
    run_id = uuid.uuid4().hex[:8]
    gun, other = f"kv/{run_id}/app", f"kv/{run_id}/a-app"
    store = f"vault://{KV_MOUNT}/{unique('ci')}"
    owner = NotaryClient(notary, notary_server, root / "owner-trust")
    owner.init(gun)
    owner.add(gun, "v1", release("v1"))
    owner.publish(gun)
    key_path, cert_path = write_delegation(root)
    owner.delegation_add(gun, "targets/releases", cert_path)
    owner.key_import(key_path, "targets/releases")
    key_path.unlink()
    ids = {
        role: next(iter(owner.key_ids(role, gun if role in ("targets", "snapshot") else None)))
        for role in ("root", "targets", "snapshot", "targets/releases")
    }
    wrapper = f"transit://{TRANSIT_MOUNT}/{bao.transit_key(team=TEAM)}"
    sealers = {TEAM: _backup(root, bao, store, wrapper, TEAM, owner.trust_dir)}
    # team a's repository, in the same store, under team a's prefix
    owner_a = NotaryClient(notary, notary_server, root / "owner-a-trust")
    owner_a.init(other)
    wrapper_a = f"transit://{TRANSIT_MOUNT}/{bao.transit_key(team='team-a')}"
    sealers["team-a"] = _backup(root, bao, store, wrapper_a, "team-a", owner_a.trust_dir)
    return CiLab(root, bao, notary_server, notary, gun, other, store, wrapper, ids, sealers)


def job_script(lab: CiLab, directory: Path) -> Path:
    """The job's signing step: stage a target and publish, with notary -d $KEYVAULT_TRUST_DIR."""
    script = directory / "sign.sh"
    flags = f'-d "$KEYVAULT_TRUST_DIR" -s {lab.server.url} --tlscacert {lab.server.ca_cert}'
    script.write_text(
        f'#!/bin/sh\nset -e\nnotary {flags} add "$1" "$2" "$3" $4\nnotary {flags} publish "$1"\n'
    )
    script.chmod(0o755)
    return script


def no_leftovers(job: Job) -> None:
    assert not job.base.exists() or list(job.base.iterdir()) == [], list(job.base.iterdir())
    assert job.key_files() == []
    assert os.path.isdir(job.home)
