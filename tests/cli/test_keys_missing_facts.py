"""Keys notary loads by ID though their file lacks a fact are backed up like any other (#18).

``notary key generate --role targets`` writes no ``gun:`` header, and a key
file without a ``role:`` header is still listed and used by notary. Both are
backed up, restored byte-identical to ``private/<id>.key``, shown with the
missing fact marked, and kept from CI like a root key.
"""

from __future__ import annotations

import json
import shutil
import stat
from pathlib import Path

import pytest
from notarykit import GUN_A, BuiltTrustDir, Notary

from cli.conftest import KV
from keyvault.names import KeyAddress

pytestmark = pytest.mark.proves("B07")


def key_files(trust: Path) -> dict[str, bytes]:
    private = trust / "private"
    return {str(p.relative_to(private)): p.read_bytes() for p in private.rglob("*.key")}


def lacking(built: BuiltTrustDir) -> set[tuple[str, str | None, str | None]]:
    return {k for k in built.keys if k[1] is None or (k[1] != "root" and k[2] is None)}


def test_keys_without_gun_or_role_round_trip_byte_identical(
    kv: KV, notary: Notary, loose_trust_dir: BuiltTrustDir, tmp_path: Path
) -> None:
    built = loose_trust_dir
    assert len(lacking(built)) == 4
    before = key_files(built.path)
    assert kv("init").code == 0
    backup = kv("--trust-dir", built.path, "--json", "backup")
    assert backup.code == 0, backup.err
    assert "skipped" not in backup.err
    stored = {(k["key_id"], k["role"], k["gun"]) for k in backup.json()["keys"]}
    assert stored == set(built.keys)
    assert {k["action"] for k in backup.json()["keys"]} == {"created"}

    fresh = tmp_path / "new-laptop" / "trust"
    restore = kv("--trust-dir", fresh, "--json", "restore", "--all")
    assert restore.code == 0, restore.err
    assert key_files(fresh) == before  # byte-identical, at private/<id>.key
    assert set(before) == {f"{k}.key" for k, _, _ in built.keys}
    for path in (fresh / "private").iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    original = tmp_path / "original-copy"
    shutil.copytree(built.path, original)
    assert notary.key_list(fresh) == notary.key_list(original) == set(built.keys)
    # notary opens a role-less key with the delegation passphrase (role ""); the GUN's
    # targets key that lost its role: header was encrypted with the targets one.
    tried = {**notary.passphrases, "delegation": notary.passphrases["targets"]}
    for key_id, role, gun in lacking(built):
        assert notary.can_decrypt(fresh, key_id, tried if gun else None), (key_id, role, gun)


def test_store_names_of_keys_missing_a_fact(
    kv: KV, loose_trust_dir: BuiltTrustDir, home: Path
) -> None:
    assert kv("init").code == 0
    assert kv("--trust-dir", loose_trust_dir.path, "backup").code == 0
    store = home / ".local" / "share" / "keyvault" / "store"
    names = {str(p.relative_to(store)) for p in store.rglob("*.json") if "/teams/" in str(p)}
    team = json.loads(kv("--json", "list").out)["team"]
    for key_id, role, gun in loose_trust_dir.keys:
        name = KeyAddress(team, gun, role, key_id).object_name
        assert any(name.removesuffix(".json") in n for n in names), (name, names)
        if role is None:
            assert "/norole/" in name
        elif role != "root":
            assert f"/nogun/{role}/" in name


def test_a_key_already_elsewhere_in_the_trust_dir_is_a_conflict(
    kv: KV, loose_trust_dir: BuiltTrustDir, tmp_path: Path
) -> None:
    assert kv("init").code == 0
    assert kv("--trust-dir", loose_trust_dir.path, "backup").code == 0
    key_id = next(k for k, r, g in loose_trust_dir.keys if r is None and g is None)
    fresh = tmp_path / "fresh"
    (fresh / "private" / "tuf_keys").mkdir(parents=True)
    data = (loose_trust_dir.path / "private" / f"{key_id}.key").read_bytes()
    (fresh / "private" / "tuf_keys" / f"{key_id}.key").write_bytes(data)
    run = kv("--trust-dir", fresh, "restore", "--key-id", key_id)
    assert run.code == 7, run.err
    assert not (fresh / "private" / f"{key_id}.key").exists()


def test_list_and_scan_mark_the_missing_facts(kv: KV, loose_trust_dir: BuiltTrustDir) -> None:
    built = loose_trust_dir
    assert kv("init").code == 0
    scan = kv("--trust-dir", built.path, "scan")
    assert scan.code == 0, scan.err
    assert kv("--trust-dir", built.path, "backup").code == 0
    listing = kv("list")
    assert listing.code == 0, listing.err
    for out in (scan.out, listing.out):
        for key_id, role, gun in lacking(built):
            row = next(line for line in out.splitlines() if key_id[:12] in line)
            if role is None:
                assert "(no role)" in row, row
            if gun is None and role is not None:
                assert "(no gun)" in row, row
            if gun is not None:
                assert gun in row
    for args in (("scan",), ("list",)):
        got = json.loads(kv("--trust-dir", built.path, "--json", *args).out)["keys"]
        assert {(k["key_id"], k["role"], k["gun"]) for k in got} == set(built.keys)


def test_selections_of_keys_missing_a_fact(kv: KV, loose_trust_dir: BuiltTrustDir) -> None:
    """--role picks a GUN-less key of that role; --gun never picks a role-less key."""
    trust = loose_trust_dir.path
    assert kv("init").code == 0
    run = kv("--trust-dir", trust, "--json", "backup", "--role", "targets")
    assert run.code == 0, run.err
    assert [(k["role"], k["gun"]) for k in run.json()["keys"]] == [("targets", None)]
    by_gun = kv("--trust-dir", trust, "backup", "--gun", GUN_A)
    assert by_gun.code == 3 and "matches no key" in by_gun.err
    key_id = next(k for k, r, g in loose_trust_dir.keys if r is None and g == GUN_A)
    run = kv("--trust-dir", trust, "--json", "backup", "--key-id", key_id[:8])
    assert run.code == 0, run.err
    assert [(k["role"], k["gun"]) for k in run.json()["keys"]] == [(None, GUN_A)]


def test_ci_never_sees_or_fetches_them_members_do(
    kv: KV, home: Path, tmp_path: Path, loose_trust_dir: BuiltTrustDir
) -> None:
    """Policy: a key without a GUN or a role is the team's, like root (file store, --as)."""
    from keyvault.ops.session import local_principal

    me = local_principal().split("@")[0]
    policy = tmp_path / "p.toml"
    policy.write_text(
        '[teams.team-a]\nguns = ["example.com/*"]\n'
        f'members = ["local:{me}"]\nci = ["local:ci-bot"]\n'
    )
    assert kv("--team", "team-a", "--trust-dir", loose_trust_dir.path, "init").code == 0
    cfg = home / ".config" / "keyvault" / "config.toml"
    cfg.write_text(cfg.read_text().replace("[keyvault]\n", f'[keyvault]\npolicy = "{policy}"\n'))
    assert kv("--trust-dir", loose_trust_dir.path, "backup").code == 0
    member = kv("--json", "list")
    assert member.code == 0, member.err
    assert len(member.json()["keys"]) == len(loose_trust_dir.keys)
    listed = kv("--as", "local:ci-bot", "--json", "list")
    assert listed.code == 0, listed.err
    assert listed.json()["keys"] == []  # root, GUN-less and role-less: none is CI's
    for key_id, _role, _ in lacking(loose_trust_dir):
        asked = kv(
            "--as", "local:ci-bot", "--trust-dir", tmp_path / "ci", "restore", "--key-id", key_id
        )
        # not listed for CI at all (the backend would refuse the folder): "no such key"
        assert asked.code == 3, asked.err
        assert "keys without a GUN or role are never listed for CI" in asked.err
        assert not (tmp_path / "ci").exists()
    # --gun never selects a role-less key (it is filed under norole/, not the GUN's prefix),
    # for a member as for CI: --key-id or --all do.
    for who in ((), ("--as", "local:ci-bot")):
        gun_a = kv(*who, "--trust-dir", tmp_path / "ci", "restore", "--gun", GUN_A)
        assert gun_a.code == 3 and "matches no key" in gun_a.err, gun_a.err
        assert not (tmp_path / "ci").exists()
