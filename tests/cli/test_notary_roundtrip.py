"""Trust directories made by the real notary 0.7 round-trip through keyvault byte for byte.

Current layout, the legacy ``root_keys/`` + ``tuf_keys/<gun>/`` layout and the
0.1-style ``<id>_<role>.key`` names: back up, restore into a fresh directory,
compare every byte and mode, then let the real ``notary key list`` read the
restored directory (which migrates legacy layouts in place, so the bytes are
compared first).
"""

from __future__ import annotations

import shutil
import stat
from pathlib import Path

import pytest
from notarykit import BuiltTrustDir, Notary, passphrase_env

from cli.conftest import KV


def key_files(trust: Path) -> dict[str, bytes]:
    private = trust / "private"
    return {str(p.relative_to(private)): p.read_bytes() for p in private.rglob("*.key")}


def round_trip(kv: KV, notary: Notary, built: BuiltTrustDir, tmp_path: Path) -> Path:
    before = key_files(built.path)
    assert kv("init").code == 0
    backup = kv("--trust-dir", built.path, "--json", "backup")
    assert backup.code == 0, backup.err
    assert {k["action"] for k in backup.json()["keys"]} == {"created"}
    assert len(backup.json()["keys"]) == len(built.keys)
    assert key_files(built.path) == before  # a backup never touches the trust directory

    fresh = tmp_path / "new-laptop" / "trust"
    restore = kv("--trust-dir", fresh, "--json", "restore", "--all")
    assert restore.code == 0, restore.err
    assert key_files(fresh) == before
    for path in (fresh / "private").rglob("*"):
        expected = 0o600 if path.is_file() else 0o700
        assert stat.S_IMODE(path.stat().st_mode) == expected, path
    assert stat.S_IMODE((fresh / "private").stat().st_mode) == 0o700

    original = tmp_path / "original-copy"
    shutil.copytree(built.path, original)
    assert notary.key_list(fresh) == notary.key_list(original) == set(built.keys)
    return fresh


def test_current_layout_round_trips(
    kv: KV, notary: Notary, notary_trust_dir: BuiltTrustDir, tmp_path: Path
) -> None:
    fresh = round_trip(kv, notary, notary_trust_dir, tmp_path)
    algorithms = {k: v for k, v in notary_trust_dir.algorithms.items()}
    assert "rsa" in algorithms.values() and "ecdsa" in algorithms.values()
    for key_id in notary_trust_dir.ids():
        assert notary.can_decrypt(fresh, key_id)


def test_legacy_layout_round_trips(
    kv: KV, notary: Notary, legacy_trust_dir: BuiltTrustDir, tmp_path: Path
) -> None:
    paths = set(key_files(legacy_trust_dir.path))
    assert any(p.startswith("root_keys/") for p in paths)
    assert any(p.startswith("tuf_keys/") for p in paths)
    round_trip(kv, notary, legacy_trust_dir, tmp_path)


def test_legacy_v01_names_round_trip(
    kv: KV, notary: Notary, legacy_v01_trust_dir: BuiltTrustDir, tmp_path: Path
) -> None:
    assert any("_" in Path(p).name for p in key_files(legacy_v01_trust_dir.path))
    round_trip(kv, notary, legacy_v01_trust_dir, tmp_path)


def test_deep_verify_of_notary_keys(
    kv: KV, notary: Notary, notary_trust_dir: BuiltTrustDir, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in passphrase_env(notary.passphrases).items():
        monkeypatch.setenv(name, value)
    assert kv("init").code == 0
    assert kv("--trust-dir", notary_trust_dir.path, "backup").code == 0
    run = kv("--trust-dir", notary_trust_dir.path, "--json", "verify", "--all", "--deep")
    assert run.code == 0, run.err
    results = run.json()["keys"]
    assert {r["status"] for r in results} == {"ok"}
    assert {r["key_id"] for r in results} == set(notary_trust_dir.ids())
    assert all(r["deep"].startswith("key ID verified") for r in results)


def test_sample_keys_are_read_by_real_notary(
    kv: KV, notary: Notary, home: Path, tmp_path: Path
) -> None:
    """The quickstart's generated keys are notary's format: notary lists them after a restore."""
    run = kv("--json", "quickstart")
    assert run.code == 0, run.err
    doc = run.json()
    assert doc["sample"] and doc["verified_identical"] == 5
    fresh = tmp_path / "restored"
    assert kv("--team", "sample", "--trust-dir", fresh, "restore", "--all").code == 0
    listed = notary.key_list(fresh)
    assert {(k["key_id"], k["role"], k["gun"]) for k in doc["backed_up"]} == listed


def test_quickstart_uses_the_users_own_trust_dir(kv: KV, notary_trust_dir: BuiltTrustDir) -> None:
    run = kv("--trust-dir", notary_trust_dir.path, "--json", "quickstart")
    assert run.code == 0, run.err
    doc = run.json()
    assert not doc["sample"] and doc["team"] == "default"
    assert doc["verified_identical"] == len(notary_trust_dir.keys)
