"""A wrapper that fails for every key is said once on the console, not once per key.

The passphrase wrapper without KEYVAULT_PASSPHRASE and without a terminal fails
each time it is asked, as a disabled KMS key or a missing identity would: backup
and rewrap print one line naming it, the kind of error and how many keys;
``--json`` keeps each key's own error.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from cli.conftest import KV
from keyvault.trust.sample import write_sample_trust_dir

GUNS = ("example.com/fail/app", "example.com/fail/web")
PASS = "notary pass"
WRAPPER_LINE = "wrapper passphrase: failed for 5 keys (usage; the first: no passphrase"


@pytest.fixture
def trust(kv: KV, home: Path) -> Path:
    trust = home / ".docker" / "trust"
    write_sample_trust_dir(trust, dict.fromkeys(("root", "targets", "snapshot"), PASS), GUNS)
    assert kv("init").code == 0
    config = home / ".config" / "keyvault" / "config.toml"
    config.write_text(config.read_text() + "\n[passphrase]\nscrypt_n = 16384\n")
    return trust


def age_recipient(home: Path) -> str:
    """The recipient ``init`` configured (nothing backed up yet)."""
    config = tomllib.loads((home / ".config" / "keyvault" / "config.toml").read_text())
    (uri,) = config["keyvault"]["wrappers"]
    assert uri.startswith("age1")
    return str(uri)


def warnings(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("warning: ")]


def test_backup_names_the_failing_wrapper_once(kv: KV, trust: Path, home: Path) -> None:
    age = age_recipient(home)
    run = kv("--wrapper", age, "--wrapper", "passphrase:", "backup")
    assert run.code == 2, run.err
    lines = warnings(run.err)
    assert [line for line in lines if "passphrase" in line] == [
        f"warning: {WRAPPER_LINE}: set KEYVAULT_PASSPHRASE or run in a terminal); "
        "--json lists each key's error"
    ], run.err
    assert not any(" key " in line and "no passphrase" in line for line in lines)
    doc = kv("--wrapper", age, "--wrapper", "passphrase:", "--json", "backup").json()
    errors = [k["error"] for k in doc["keys"]]
    assert len(errors) == 5 and all(e["message"].startswith("no passphrase") for e in errors)


def test_rewrap_names_the_failing_wrapper_once(kv: KV, trust: Path) -> None:
    assert kv("backup").code == 0
    run = kv("rewrap", "--all", "--add", "passphrase:")
    assert run.code == 2, run.err
    lines = [line for line in warnings(run.err) if "passphrase" in line]
    assert len(lines) == 1 and WRAPPER_LINE in lines[0], run.err
    doc = kv("--json", "rewrap", "--all", "--add", "passphrase:").json()
    assert [k["action"] for k in doc["keys"]] == ["failed"] * 5
    assert all(k["error"]["message"].startswith("no passphrase") for k in doc["keys"])


def test_one_failing_key_is_still_named(kv: KV, trust: Path, home: Path) -> None:
    """A failure of one key alone is that key's line, as before."""
    assert kv("backup").code == 0
    (root,) = [p for p in (trust / "private").rglob("*.key") if b"role: root" in p.read_bytes()]
    run = kv("rewrap", "--key-id", root.stem, "--add", "passphrase:")
    assert run.code == 2
    (line,) = [line for line in warnings(run.err) if "passphrase" in line]
    assert line.startswith(f"warning: root key {root.stem[:12]}: no passphrase")
