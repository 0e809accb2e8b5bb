"""Trust pins travel with the keys: each GUN's ``tuf/<gun>/metadata/root.json`` is
backed up beside its keys, signed and chained as they are, and restored byte for byte
in the same all-or-nothing transaction, never over a newer pin and never silently over
a different one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cli.conftest import KV
from keyvault.trust.model import KeyFile
from keyvault.trust.sample import write_sample_trust_dir

PASS = "correct horse"
PASSPHRASES = {"root": PASS, "targets": PASS, "snapshot": PASS}
GUNS = ("example.com/team-a/app", "example.com/team-a/web")
APP = GUNS[0]


def root_doc(version: int, marker: str = "a") -> bytes:
    """A root.json as notary caches it (only what keyvault reads of it matters here)."""
    doc = {"signed": {"_type": "Root", "version": version, "expires": "2036-01-01T00:00:00Z",
                      "consistent_snapshot": False, "keys": {}, "roles": {},
                      "marker": marker},
           "signatures": [{"keyid": "0" * 64, "method": "ecdsa", "sig": "c2ln"}]}
    return json.dumps(doc, separators=(",", ":")).encode()


def pin_path(trust: Path, gun: str) -> Path:
    return trust / "tuf" / gun / "metadata" / "root.json"


def write_pin(trust: Path, gun: str, data: bytes) -> Path:
    path = pin_path(trust, gun)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


@pytest.fixture
def trust(home: Path) -> tuple[Path, tuple[KeyFile, ...]]:
    path = home / ".docker" / "trust"
    keys = write_sample_trust_dir(path, PASSPHRASES, GUNS)
    for number, gun in enumerate(GUNS, start=1):
        write_pin(path, gun, root_doc(number, gun))
    return path, keys


def test_backup_stores_each_guns_pin_beside_its_keys(
        kv: KV, trust: tuple[Path, tuple[KeyFile, ...]]) -> None:
    assert kv("init").code == 0
    run = kv("--json", "backup")
    assert run.code == 0, run.err
    pins = [k for k in run.json()["keys"] if k["kind"] == "pin"]
    assert sorted(p["gun"] for p in pins) == sorted(GUNS)
    assert {p["object"] for p in pins} == {f"v1/teams/default/pins/{g}/root.json"
                                           for g in GUNS}
    assert all(p["action"] == "created" for p in pins)
    again = kv("--json", "backup")
    assert again.code == 0, again.err
    assert {k["action"] for k in again.json()["keys"]} == {"unchanged"}
