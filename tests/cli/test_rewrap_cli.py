"""``keyvault rewrap`` on the embedded default: age and passphrase wrappers, file store."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from cli.conftest import KV
from keyvault.trust.model import KeyFile
from keyvault.trust.sample import write_sample_trust_dir
from keyvault.wrappers.age import generate_identity

PASS = "correct horse"


@pytest.fixture
def setup(kv: KV, home: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, tuple[KeyFile, ...]]:
    trust = home / ".docker" / "trust"
    keys = write_sample_trust_dir(
        trust, dict.fromkeys(("root", "targets", "snapshot"), PASS), ("example.com/a/app",)
    )
    monkeypatch.setenv("KEYVAULT_PASSPHRASE", "wrapper passphrase")
    init = kv("--store", (home / "store").as_uri(), "--json", "init")
    assert init.code == 0, init.err
    config = Path(init.json()["config_file"])
    config.write_text(config.read_text() + "\n[passphrase]\nscrypt_n = 16384\n")
    return trust, keys


def envelopes(home: Path) -> dict[str, dict[str, Any]]:
    """Latest envelope of every object in the file store, by key ID."""
    out: dict[str, dict[str, Any]] = {}
    for obj in (home / "store" / "objects").rglob("*.json"):
        if "audit" in obj.parts:  # the audit log's checkpoints
            continue
        latest = max(p.name for p in obj.iterdir() if not p.name.startswith("."))
        doc = json.loads((obj / latest).read_bytes())
        out[doc["header"]["key_id"]] = doc
    return out


@pytest.mark.proves("T5")
def test_age_to_passphrase_and_back_keeps_the_sealed_key(
    kv: KV, home: Path, setup: tuple[Path, tuple[KeyFile, ...]], tmp_path: Path
) -> None:
    _, keys = setup
    assert kv("backup").code == 0
    first = envelopes(home)
    (age_uri,) = {w["uri"] for d in first.values() for w in d["wrapped_keys"]}

    moved = kv("--json", "rewrap", "--all", "--add", "passphrase:", "--remove", age_uri)
    assert moved.code == 0, moved.err
    assert {k["action"] for k in moved.json()["keys"]} == {"rewrapped"}
    assert {tuple(k["after"]) for k in moved.json()["keys"]} == {("passphrase:",)}
    second = envelopes(home)
    for key_id, doc in second.items():
        for field in ("ciphertext", "nonce", "commitment", "header"):
            assert doc[field] == first[key_id][field], field
    # only the passphrase wrapper can open them now: restore with it alone
    fresh = tmp_path / "fresh"
    run = kv("--wrapper", "passphrase:", "--trust-dir", fresh, "restore", "--all")
    assert run.code == 0, run.err
    for key in keys:
        assert (fresh / "private" / key.relpath).read_bytes() == key.data
    denied = kv("--trust-dir", tmp_path / "other", "restore", "--all")  # configured: age only
    assert denied.code == 4 and "not wrapped by any wrapper you hold" in denied.err

    back = kv(
        "--wrapper",
        "passphrase:",
        "--json",
        "rewrap",
        "--all",
        "--add",
        age_uri,
        "--remove",
        "passphrase:",
    )
    assert back.code == 0, back.err
    assert {tuple(k["after"]) for k in back.json()["keys"]} == {(age_uri,)}
    assert {k["version"] for k in back.json()["keys"]} == {"0000000003"}
    final = tmp_path / "final"
    assert kv("--trust-dir", final, "restore", "--all").code == 0
    for key in keys:
        assert (final / "private" / key.relpath).read_bytes() == key.data


@pytest.mark.proves("T5")
def test_adding_a_second_wrapper_lets_either_open(
    kv: KV,
    home: Path,
    setup: tuple[Path, tuple[KeyFile, ...]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _, keys = setup
    assert kv("backup").code == 0
    second = generate_identity(tmp_path / "second.txt")
    run = kv("--json", "rewrap", "--role", "root", "--add", second)
    assert run.code == 0, run.err
    (only,) = run.json()["keys"]
    assert only["action"] == "rewrapped" and len(only["after"]) == 2
    again = kv("--json", "rewrap", "--role", "root", "--add", second)
    assert {k["action"] for k in again.json()["keys"]} == {"unchanged"}
    monkeypatch.setenv("KEYVAULT_AGE_IDENTITY", str(tmp_path / "second.txt"))
    out = kv("--wrapper", second, "--trust-dir", tmp_path / "t", "restore", "--role", "root")
    assert out.code == 0, out.err
    root = next(k for k in keys if k.role == "root")
    assert (tmp_path / "t" / "private" / root.relpath).read_bytes() == root.data


def test_bad_rewrap_requests(kv: KV, home: Path, setup: tuple[Path, tuple[KeyFile, ...]]) -> None:
    assert kv("backup").code == 0
    before = envelopes(home)
    assert kv("rewrap", "--add", "passphrase:").code == 2  # no selection
    nothing = kv("rewrap", "--all")
    assert nothing.code == 2 and "say what to change" in nothing.err
    rotate = kv("rewrap", "--all", "--rotate")
    assert rotate.code == 2 and "can rotate server-side" in rotate.err
    (age_uri,) = {w["uri"] for d in before.values() for w in d["wrapped_keys"]}
    last = kv("--json", "rewrap", "--all", "--remove", age_uri)
    assert last.code == 2
    assert all("would leave no wrapper" in k["error"]["message"] for k in last.json()["keys"])
    typo = kv("--json", "rewrap", "--all", "--remove", "passphrase:typo")
    assert typo.code == 2 and typo.json()["unused_remove"] == ["passphrase:typo"]
    bad = kv("rewrap", "--all", "--add", "rot13://x")
    assert bad.code == 2 and "unknown wrapper URI scheme" in bad.err
    assert envelopes(home) == before
