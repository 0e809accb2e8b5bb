"""One JSON Schema per command (keyvault/cli/schemas, docs/json.md), and what they promise.

Every --json output of every CLI test is validated by the ``kv`` fixture
(cli/conftest.py); here each command of the embedded default (file store + age)
runs once with --json and is checked explicitly, with the consistency the
schemas promise: ISO-8601 times, store and team beside the keys, one entry shape
for backup and quickstart, --json exec refused, --version --json.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
import typer.main
from schemacheck import SchemaError, strictness_problems, validate

from cli.conftest import KV, Run
from keyvault import __version__
from keyvault.cli.app import full_app
from keyvault.cli.schemas import command_schemas, schema_for
from keyvault.envelope import VERSION, VERSIONS
from keyvault.trust.model import KeyFile
from keyvault.trust.sample import write_sample_trust_dir
from keyvault.wrappers.age import generate_identity

PASS = "correct horse"
GUN = "example.com/team-a/app"
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def ready(kv: KV, home: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[KeyFile, ...]:
    keys = write_sample_trust_dir(
        home / ".docker" / "trust", dict.fromkeys(("root", "targets", "snapshot"), PASS), (GUN,)
    )
    for role in ("ROOT", "TARGETS", "SNAPSHOT"):
        monkeypatch.setenv(f"NOTARY_{role}_PASSPHRASE", PASS)
    assert kv("init").code == 0
    return keys


def conforming(run: Run, schema: str, code: int = 0) -> dict[str, Any]:
    assert run.code == code, run.err
    doc = run.json()
    validate(doc, schema)
    assert isinstance(doc, dict)
    return doc


def json_commands() -> set[str]:
    """Every command path with a --json option of its own."""
    root = typer.main.get_command(full_app())
    found: set[str] = set()

    def walk(command: object, path: list[str]) -> None:
        for name, sub in getattr(command, "commands", {}).items():
            if getattr(sub, "hidden", False):
                continue
            if any("--json" in getattr(p, "opts", []) for p in sub.params):
                found.add(" ".join([*path, name]))
            walk(sub, [*path, name])

    walk(root, [])
    return found


def test_every_command_with_json_has_a_schema_and_every_schema_a_command() -> None:
    commands = {schema_for(c) for c in json_commands()}
    assert commands == set(command_schemas()) - {"error", "version"}


def test_every_schema_is_strict() -> None:
    assert strictness_problems() == []


def test_the_validator_rejects_a_drift(ready: tuple[KeyFile, ...], kv: KV) -> None:
    doc = conforming(kv("--json", "backup"), "backup")
    with pytest.raises(SchemaError, match="unexpected field 'extra'"):
        validate({**doc, "extra": 1}, "backup")
    without = {k: v for k, v in doc.items() if k != "team"}
    with pytest.raises(SchemaError, match="missing"):
        validate(without, "backup")
    with pytest.raises(SchemaError, match="ISO-8601"):
        validate(
            {
                "trust_dir": "t",
                "docker_config": "d",
                "expires": "1796445580.49",
                "missing_passphrases": [],
                "keys": [],
            },
            "fetch",
        )


def test_each_command_of_the_embedded_default_conforms(
    ready: tuple[KeyFile, ...], kv: KV, home: Path, tmp_path: Path
) -> None:
    conforming(kv("--json", "init"), "init")
    conforming(kv("--json", "doctor"), "doctor")
    conforming(kv("--json", "scan"), "scan")
    conforming(kv("--json", "backup"), "backup")
    conforming(kv("--json", "list"), "list")
    listed = conforming(kv("--json", "list", "--long"), "list")
    assert all(k["created"] for k in listed["keys"])
    conforming(kv("--json", "versions", "--all"), "versions")
    conforming(kv("--json", "verify", "--all", "--deep"), "verify")
    conforming(kv("--json", "restore", "--all", "--dry-run"), "restore")
    second = generate_identity(tmp_path / "second.txt")  # a second recipient (dry run)
    conforming(kv("--json", "rewrap", "--all", "--add", second, "--dry-run"), "rewrap")
    conforming(kv("--json", "audit", "show"), "audit-show")
    conforming(kv("--json", "audit", "verify"), "audit-verify")
    conforming(kv("--json", "drill", "--all", "--no-metadata"), "drill")
    conforming(kv("--json", "sealer", "show"), "sealer-show")
    conforming(kv("--json", "policy", "whoami"), "policy-whoami")
    policy = REPO / "deploy" / "policy.example.toml"
    conforming(kv("--json", "policy", "validate", policy), "policy-validate")
    conforming(kv("--json", "policy", "show", policy), "policy-show")
    conforming(kv("--json", "policy", "render", policy, "--target", "aws"), "policy-render")
    conforming(
        kv(
            "--json",
            "recovery",
            "split",
            "--shares",
            "3",
            "--threshold",
            "2",
            "--out",
            tmp_path / "shares",
        ),
        "recovery-split",
    )
    conforming(kv("--json", "wipe", tmp_path / "never-made"), "wipe")
    conforming(kv("--json", "restore", "--key-id", "ffffff"), "error", code=3)


def test_fetch_expires_is_an_iso_time(ready: tuple[KeyFile, ...], kv: KV, tmp_path: Path) -> None:
    """Before: a Unix time as a float (1796445580.4950962), unlike every other time."""
    assert kv("backup").code == 0
    doc = conforming(
        kv("--json", "fetch", "--gun", GUN, "--into", tmp_path / "ci", "--ttl", "15m"), "fetch"
    )
    expires = doc["expires"]
    assert isinstance(expires, str) and expires.endswith("Z") and "T" in expires
    assert conforming(kv("--json", "wipe", tmp_path / "ci"), "wipe")["wiped"]
    untimed = conforming(kv("--json", "fetch", "--gun", GUN, "--into", tmp_path / "ci2"), "fetch")
    assert untimed["expires"] is None


def test_backup_restore_verify_and_list_name_the_store_and_team(
    ready: tuple[KeyFile, ...], kv: KV, home: Path
) -> None:
    assert kv("backup").code == 0
    store = (home / ".local" / "share" / "keyvault" / "store").as_uri()
    for args, schema in (
        (["backup"], "backup"),
        (["list"], "list"),
        (["verify", "--all"], "verify"),
        (["restore", "--all", "--dry-run"], "restore"),
    ):
        doc = conforming(kv("--json", *args), schema)
        assert (doc["store"], doc["team"]) == (store, "default"), args


def test_quickstart_and_backup_write_the_same_entries(ready: tuple[KeyFile, ...], kv: KV) -> None:
    quick = conforming(kv("--json", "quickstart"), "quickstart")
    backup = conforming(kv("--json", "backup"), "backup")
    entries = quick["backed_up"]
    assert isinstance(entries, list) and isinstance(backup["keys"], list)
    assert [sorted(e) for e in entries] == [sorted(e) for e in backup["keys"]]
    by_id = {e["key_id"]: e for e in backup["keys"]}
    for entry in entries:  # the same keys, the same objects and versions; now unchanged
        same = by_id[entry["key_id"]]
        assert (entry["object"], entry["version"]) == (same["object"], same["version"])
        assert (entry["action"], same["action"]) == ("created", "unchanged")


def test_json_exec_is_refused_before_anything_is_fetched(
    ready: tuple[KeyFile, ...], kv: KV, tmp_path: Path
) -> None:
    assert kv("backup").code == 0
    ran = tmp_path / "ran"
    command = [sys.executable, "-c", f"open({str(ran)!r}, 'w').close()"]
    refused = kv("--json", "exec", "--gun", GUN, "--", *command)
    conforming(refused, "error", code=2)
    assert "exec writes no JSON" in refused.err and "fetch" in refused.err
    assert not ran.exists()
    audit = conforming(kv("--json", "audit", "show", "--action", "fetch"), "audit-show")
    assert audit["records"] == []
    # A --json after '--' is the command's own: exec runs it, and keyvault writes no JSON.
    passed = kv("exec", "--gun", GUN, "--", *command, "--json")
    assert passed.code == 0, passed.err
    assert ran.exists() and passed.out == ""


def test_version_names_the_envelope_formats(kv: KV) -> None:
    text = kv("--version")
    assert text.code == 0
    first, second = text.out.splitlines()
    assert first == f"keyvault {__version__}"
    assert second.startswith(f"envelope format: writes v{VERSION}; reads ")
    assert all(f"v{v}" in second for v in VERSIONS) and "--allow-unsigned" in second
    for args in (("--version", "--json"), ("--json", "--version")):
        doc = conforming(kv(*args), "version")
        assert doc == {
            "version": __version__,
            "envelope_formats": {"reads": list(VERSIONS), "writes": VERSION, "unsigned": 1},
        }


def test_the_version_is_written_once() -> None:
    """pyproject.toml takes it from keyvault/__init__.py (hatch's dynamic version)."""
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert "version" not in project["project"] and "version" in project["project"]["dynamic"]
    assert project["tool"]["hatch"]["version"]["path"] == "keyvault/__init__.py"
