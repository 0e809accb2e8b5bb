"""Coverage and drills against a real notary-server and keys made by the real notary.

Coverage reads what the server publishes (root.json, targets.json, the
delegation) and tells which keys are backed up, held by the server, missing
or stale. A drill restores each key through its wrapper and proves it signs
for the public key the server publishes (the root key through its
certificate).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from fixtures.servers import BackendSetup
from notarykit import Notary, passphrase_env

from e2e.machines import Lab, Machine, new_repository, run_keyvault, sign
from e2e.test_lost_laptop import RELEASES, write_delegation_key


@pytest.fixture
def age_lab(
    tmp_path: Any, file_age_backend: BackendSetup, notary: Notary, notary_server: Any
) -> Lab:
    return Lab(tmp_path, file_age_backend, notary, notary_server)


def keyvault(machine: Machine, *args: str, passphrases: bool = False) -> tuple[int, Any]:
    env = dict(machine.keyvault.backend.env)
    if passphrases:
        env |= passphrase_env()
    proc = run_keyvault(
        machine.keyvault.home,
        env,
        "--config",
        machine.keyvault.config,
        "--trust-dir",
        machine.trust_dir,
        "--json",
        *args,
    )
    return proc.returncode, json.loads(proc.stdout) if proc.stdout.strip() else proc.stderr


def server_args(lab: Lab) -> tuple[str, ...]:
    return ("--server", lab.server.url, "--tls-ca", str(lab.server.ca_cert))


def test_coverage_of_published_repositories(age_lab: Lab, tmp_path: Any) -> None:
    lab = age_lab
    gun = lab.gun("covered")
    laptop = lab.machine("laptop")
    ids = new_repository(laptop, gun)
    laptop.notary.rotate(gun, "snapshot", server_managed=True)  # the server holds it now
    key_path, cert_path = write_delegation_key(tmp_path, "alice")
    laptop.notary.delegation_add(gun, RELEASES, cert_path)
    laptop.notary.key_import(key_path, RELEASES)
    (delegation,) = laptop.notary.key_ids(RELEASES)
    sign(laptop, gun, "v2", roles=(RELEASES,))
    laptop.keyvault.backup()

    code, report = keyvault(laptop, "coverage", "--gun", gun, *server_args(lab))
    assert code == 0, report
    status = {(k["role"], k["key_id"]): k["status"] for k in report["keys"]}
    assert status[("root", ids["root"])] == "backed-up"
    assert status[("targets", ids["targets"])] == "backed-up"
    assert status[(RELEASES, delegation)] == "backed-up"
    assert {s for (role, _), s in status.items() if role in ("snapshot", "timestamp")} == {
        "server-managed"
    }
    assert ("snapshot", ids["snapshot"]) not in status  # rotated away before any backup
    root_row = next(k for k in report["keys"] if k["role"] == "root")
    assert root_row["listed_id"] != root_row["key_id"]  # a certificate ID, mapped to the file

    laptop.notary.rotate(gun, "targets")  # a new targets key nobody has backed up yet
    (new_targets,) = laptop.notary.key_ids("targets", gun)
    code, report = keyvault(laptop, "coverage", "--gun", gun, *server_args(lab))
    assert code == 8
    status = {(k["role"], k["key_id"]): k["status"] for k in report["keys"]}
    assert status[("targets", new_targets)] == "missing"
    assert status[("targets", ids["targets"])] == "stale"


@pytest.mark.proves("T5")
def test_drill_proves_signatures_against_the_published_keys(age_lab: Lab, tmp_path: Any) -> None:
    lab = age_lab
    gun = lab.gun("drilled")
    laptop = lab.machine("laptop")
    ids = new_repository(laptop, gun)
    key_path, cert_path = write_delegation_key(tmp_path, "bob")
    laptop.notary.delegation_add(gun, RELEASES, cert_path)
    laptop.notary.key_import(key_path, RELEASES)
    sign(laptop, gun, "v2", roles=(RELEASES,))
    laptop.keyvault.backup()

    code, report = keyvault(
        laptop,
        "drill",
        "--all",
        *server_args(lab),
        "--report-dir",
        str(tmp_path / "report"),
        passphrases=True,
    )
    assert code == 0, report
    checks = {c["key_id"]: c for c in report["checks"]}
    assert set(checks) >= set(ids.values())
    for key_id in (ids["root"], ids["targets"], *laptop.notary.key_ids(RELEASES)):
        assert checks[key_id]["signature"] == "passed", checks[key_id]
        assert checks[key_id]["key_id_check"] == "passed"
    # the snapshot key is published too (it was never rotated to the server)
    assert checks[ids["snapshot"]]["signature"] == "passed"


def test_drill_checks_a_root_key_against_a_published_root_json_that_lists_it(
    age_lab: Lab, tmp_path: Any
) -> None:
    """A root key drilled alone (no GUN of its own) is looked up in the root.json of the
    GUNs the store holds keys for (before: its signature was never checked); one that no
    published root.json lists is 'not-checked (not published)'."""
    lab = age_lab
    gun = lab.gun("rooted")
    laptop = lab.machine("laptop")
    ids = new_repository(laptop, gun)
    unused = lab.notary.generate_root(laptop.trust_dir)  # a root key no GUN uses (yet)
    laptop.keyvault.backup()

    for source in (server_args(lab), ()):  # the notary server, then the local TUF cache
        code, report = keyvault(
            laptop,
            "drill",
            "--key-id",
            ids["root"],
            *source,
            "--report-dir",
            str(tmp_path / f"one{len(source)}"),
            passphrases=True,
        )
        assert code == 0, report
        (check,) = report["checks"]
        assert (check["key_id_check"], check["signature"]) == ("passed", "passed"), check

    code, report = keyvault(
        laptop,
        "drill",
        "--role",
        "root",
        *server_args(lab),
        "--report-dir",
        str(tmp_path / "both"),
        passphrases=True,
    )
    assert code == 0, report
    checks = {c["key_id"]: c for c in report["checks"]}
    assert checks[ids["root"]]["signature"] == "passed"
    assert checks[unused]["signature"] == "not-checked (not published)"
    assert checks[unused]["passed"] and checks[unused]["key_id_check"] == "passed"

    code, report = keyvault(
        laptop,
        "drill",
        "--role",
        "root",
        *server_args(lab),
        "--require-published",
        "--report-dir",
        str(tmp_path / "strict"),
        passphrases=True,
    )
    assert code == 3, report
    checks = {c["key_id"]: c for c in report["checks"]}
    assert checks[ids["root"]]["passed"] and not checks[unused]["passed"]
    assert "no published metadata lists root key" in checks[unused]["error"]


def test_drill_fails_a_root_key_that_is_not_the_published_one(age_lab: Lab, tmp_path: Any) -> None:
    """The file under the published root key's ID holds another root key (here: another
    repository's): its signature does not verify against the published certificate."""
    lab = age_lab
    gun = lab.gun("forged")
    laptop = lab.machine("laptop")
    ids = new_repository(laptop, gun)
    other = lab.machine("other")
    other_ids = new_repository(other, lab.gun("elsewhere"))
    named = laptop.trust_dir / "private" / f"{ids['root']}.key"
    named.write_bytes(other.key_files()[other_ids["root"]])
    laptop.keyvault.backup()

    code, report = keyvault(
        laptop,
        "drill",
        "--key-id",
        ids["root"],
        *server_args(lab),
        "--report-dir",
        str(tmp_path / "r"),
        passphrases=True,
    )
    assert code == 5, report
    (check,) = report["checks"]
    assert (check["key_id_check"], check["signature"], check["passed"]) == (
        "failed",
        "failed",
        False,
    ), check
    markdown = (tmp_path / "r" / "report.md").read_text()
    assert "FAILED" in markdown
