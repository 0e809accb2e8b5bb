"""Bad inputs of SECURITY.md at the CLI: exact exit code, a clear message, nothing changed.

Each test snapshots the trust directory and the store before the command and
compares after it. Case IDs (B01...) are the ones SECURITY.md lists.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

import pytest
from fixtures.host import (
    NOBODY,
    Unchanged,
    needs_root_for_nobody,
    open_to_nobody,
    run_as_nobody,
)

from cli.conftest import KV, Run
from keyvault.trust.model import KeyFile
from keyvault.trust.sample import write_sample_trust_dir

PASS = "correct horse"
GUN = "example.com/team-a/app"


@pytest.fixture
def setup(kv: KV, home: Path) -> Iterator[tuple[Path, Path, tuple[KeyFile, ...]]]:
    """A backed-up sample trust dir; yields (trust dir, store dir, keys)."""
    trust = home / ".docker" / "trust"
    keys = write_sample_trust_dir(
        trust, dict.fromkeys(("root", "targets", "snapshot"), PASS), (GUN,)
    )
    assert kv("init").code == 0
    assert kv("backup").code == 0
    yield trust, home / ".local" / "share" / "keyvault" / "store", keys


def plant(trust: Path, name: str, data: bytes) -> Path:
    path = trust / "private" / name
    path.write_bytes(data)
    path.chmod(0o600)
    return path


def backup_refuses(kv: KV, trust: Path, store: Path, code: str, fragment: str) -> None:
    """A bad file is reported (exit 2) and skipped; the good keys are already backed up."""
    guard = Unchanged(trust, store)
    run = kv("--json", "backup")
    assert run.code == 2, run.err
    problems = run.json()["problems"]
    assert [p["code"] for p in problems] == [code]
    assert fragment in problems[0]["reason"]
    assert {k["action"] for k in run.json()["keys"]} == {"unchanged"}
    human = kv("backup")
    assert human.code == 2 and f"[{code}]" in human.err
    guard.check()


BAD_ID = "f" * 64


@pytest.mark.proves("B01")
def test_b01_trust_dir_missing(
    kv: KV, setup: tuple[Path, Path, tuple[KeyFile, ...]], tmp_path: Path
) -> None:
    _, store, _ = setup
    guard = Unchanged(store)
    run = kv("--trust-dir", tmp_path / "nope", "backup")
    assert run.code == 3
    assert "does not exist" in run.err and str(tmp_path / "nope") in run.err
    guard.check()


@pytest.mark.proves("B02")
def test_b02_trust_dir_is_a_file(
    kv: KV, setup: tuple[Path, Path, tuple[KeyFile, ...]], tmp_path: Path
) -> None:
    _, store, _ = setup
    afile = tmp_path / "afile"
    afile.write_text("x")
    guard = Unchanged(store)
    run = kv("--trust-dir", afile, "backup")
    assert run.code == 2 and "not a directory" in run.err
    restore = kv("--trust-dir", afile, "restore", "--all")
    assert restore.code == 2 and "not a directory" in restore.err
    assert afile.read_text() == "x"
    guard.check()


@pytest.mark.proves("B04")
def test_b04_empty_key_file(kv: KV, setup: tuple[Path, Path, tuple[KeyFile, ...]]) -> None:
    trust, store, _ = setup
    plant(trust, f"{BAD_ID}.key", b"")
    backup_refuses(kv, trust, store, "empty", "empty")


@pytest.mark.proves("B05")
def test_b05_key_file_that_is_not_pem(
    kv: KV, setup: tuple[Path, Path, tuple[KeyFile, ...]]
) -> None:
    trust, store, _ = setup
    plant(trust, f"{BAD_ID}.key", b"this is not a key\n")
    backup_refuses(kv, trust, store, "not-pem", "PEM")


@pytest.mark.proves("B06")
def test_b06_certificate_only(kv: KV, setup: tuple[Path, Path, tuple[KeyFile, ...]]) -> None:
    trust, store, _ = setup
    block = b"-----BEGIN CERTIFICATE-----\nMIIBAA==\n-----END CERTIFICATE-----\n"
    plant(trust, f"{BAD_ID}.key", block)
    backup_refuses(kv, trust, store, "not-a-private-key", "CERTIFICATE")


def _variant(keys: tuple[KeyFile, ...], role: str, old: bytes, new: bytes) -> bytes:
    key = next(k for k in keys if k.role == role)
    assert old in key.data
    return key.data.replace(old, new)


@pytest.mark.proves("B08")
def test_b08_unknown_role(kv: KV, setup: tuple[Path, Path, tuple[KeyFile, ...]]) -> None:
    trust, store, keys = setup
    plant(trust, f"{BAD_ID}.key", _variant(keys, "root", b"role: root", b"role: Root!"))
    backup_refuses(kv, trust, store, "bad-role", "role")


@pytest.mark.parametrize("gun", [b"../../etc", b"/abs/app", b"a/../b"])
@pytest.mark.proves("B09")
def test_b09_gun_header_with_traversal(
    kv: KV, setup: tuple[Path, Path, tuple[KeyFile, ...]], gun: bytes
) -> None:
    trust, store, keys = setup
    plant(trust, f"{BAD_ID}.key", _variant(keys, "targets", GUN.encode(), gun))
    backup_refuses(kv, trust, store, "bad-gun", "GUN")


@pytest.mark.proves("B10")
def test_b10_file_name_not_hex(kv: KV, setup: tuple[Path, Path, tuple[KeyFile, ...]]) -> None:
    trust, store, keys = setup
    plant(trust, "renamed.key", keys[0].data)
    backup_refuses(kv, trust, store, "bad-name", "not a key ID")


@pytest.mark.proves("B11")
def test_b11_file_name_is_not_the_key_id(
    kv: KV,
    setup: tuple[Path, Path, tuple[KeyFile, ...]],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    _, store, keys = setup
    root = next(k for k in keys if k.role == "root")
    other = tmp_path / "other"
    (other / "private").mkdir(parents=True)
    plant(other, f"{BAD_ID}.key", root.data)
    monkeypatch.setenv("NOTARY_ROOT_PASSPHRASE", PASS)
    assert kv("--trust-dir", other, "--team", "other", "backup").code == 0
    guard = Unchanged(other, store)
    run = kv("--trust-dir", other, "--team", "other", "--json", "verify", "--all", "--deep")
    assert run.code == 5
    (only,) = run.json()["keys"]
    assert (
        "not the key's ID" in only["error"]["message"] and root.key_id in only["error"]["message"]
    )
    guard.check()


@pytest.mark.proves("B12")
def test_b12_symlink_pointing_outside(
    kv: KV, setup: tuple[Path, Path, tuple[KeyFile, ...]], tmp_path: Path
) -> None:
    trust, store, keys = setup
    outside = tmp_path / "outside.key"
    outside.write_bytes(keys[0].data)
    (trust / "private" / f"{BAD_ID}.key").symlink_to(outside)
    backup_refuses(kv, trust, store, "symlink", "symbolic link")


@pytest.mark.proves("B13")
def test_b13_key_file_over_one_mib(kv: KV, setup: tuple[Path, Path, tuple[KeyFile, ...]]) -> None:
    trust, store, _ = setup
    plant(trust, f"{BAD_ID}.key", b"A" * (1024 * 1024 + 1))
    backup_refuses(kv, trust, store, "too-large", "bytes")


@pytest.mark.proves("B16")
def test_b16_config_syntax_error_names_the_line(kv: KV, home: Path, tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text('[keyvault]\nteam = "a"\nstore = = "x"\n')
    run = kv("--config", config, "list")
    assert run.code == 2 and "line 3" in run.err and str(config) in run.err


@pytest.mark.proves("B17")
def test_b17_config_unknown_key(kv: KV, tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text('[keyvault]\nteem = "a"\n')
    run = kv("--config", config, "list")
    assert run.code == 2 and "unknown key 'teem'" in run.err


@pytest.mark.proves("B18")
def test_b18_unknown_store_scheme(kv: KV, setup: tuple[Path, Path, tuple[KeyFile, ...]]) -> None:
    trust, store, _ = setup
    guard = Unchanged(trust, store)
    run = kv("--store", "ftp://example/x", "list")
    assert run.code == 2 and "unknown store URI scheme 'ftp'" in run.err
    guard.check()


# Every command that opens a wrapper, with what it needs to get that far.
WRAPPER_COMMANDS = {
    "backup": ("backup",),  # with a new key, so it must wrap
    "backup --dry-run": ("backup", "--dry-run"),
    "restore": ("--trust-dir", "{fresh}", "restore", "--all"),
    "verify": ("verify", "--all"),
    "rewrap --add": ("rewrap", "--all", "--add", "rot13://y"),
    "rewrap": ("rewrap", "--all", "--remove", "{recipient}"),
    "drill": ("drill", "--all", "--no-metadata"),
    "exec": ("exec", "--gun", GUN, "--", "true"),
    "fetch": ("fetch", "--gun", GUN, "--into", "{fresh}"),
    "quickstart": ("quickstart",),
    "doctor": ("doctor",),
}


@pytest.mark.parametrize("command", list(WRAPPER_COMMANDS))
def test_b18_unknown_wrapper_scheme_refused_by_every_command(
    kv: KV, setup: tuple[Path, Path, tuple[KeyFile, ...]], home: Path, tmp_path: Path, command: str
) -> None:
    trust, store, _ = setup
    write_sample_trust_dir(
        trust, dict.fromkeys(("root", "targets", "snapshot"), PASS), ("example.com/team-a/new",)
    )
    config = (home / ".config" / "keyvault" / "config.toml").read_text()
    recipient = json.loads(config.split("wrappers = ", 1)[1].splitlines()[0])[0]
    fresh = tmp_path / "fresh"
    args = [a.format(fresh=fresh, recipient=recipient) for a in WRAPPER_COMMANDS[command]]
    guard = Unchanged(trust, store)
    bad = "rot13://y" if command == "rewrap --add" else "rot13://x"
    run = kv(*([] if command == "rewrap --add" else ["--wrapper", bad]), *args)
    if command == "doctor":  # reports it among its checks and exits 1 (troubleshooting.md)
        assert run.code == 1 and "rot13://x: unknown wrapper URI scheme 'rot13'" in run.out
    else:
        assert run.code == 2, (run.code, run.out, run.err)
        assert "unknown wrapper URI scheme 'rot13'" in run.err
    assert not fresh.exists()
    guard.check()


@pytest.mark.proves("B21")
def test_b21_missing_store(
    kv: KV, setup: tuple[Path, Path, tuple[KeyFile, ...]], tmp_path: Path
) -> None:
    trust, _, _ = setup
    guard = Unchanged(trust)
    missing = tmp_path / "no-store"
    run = kv("--store", missing.as_uri(), "backup")
    assert run.code == 3 and str(missing) in run.err and "point it at the store you kept" in run.err
    assert not missing.exists()
    guard.check()


def _envelope_path(store: Path, keys: tuple[KeyFile, ...], role: str) -> tuple[Path, KeyFile]:
    key = next(k for k in keys if k.role == role)
    matches = list(store.rglob(f"{key.key_id}.json/0000000001"))
    assert len(matches) == 1
    return matches[0], key


def _restore_fails(kv: KV, store: Path, fresh: Path, code: int, fragment: str) -> None:
    guard = Unchanged(store)
    run = kv("--trust-dir", fresh, "restore", "--all")
    assert run.code == code, run.err
    assert fragment in run.err
    assert not fresh.exists()
    guard.check()


def _edit(path: Path, change: object) -> None:
    doc = json.loads(path.read_bytes())
    change(doc)  # type: ignore[operator]
    path.chmod(0o600)
    path.write_text(json.dumps(doc, indent=2))


@pytest.mark.proves("B22")
def test_b22_truncated_envelope(
    kv: KV, setup: tuple[Path, Path, tuple[KeyFile, ...]], tmp_path: Path
) -> None:
    _, store, keys = setup
    path, _ = _envelope_path(store, keys, "targets")
    path.write_bytes(path.read_bytes()[:200])
    _restore_fails(kv, store, tmp_path / "fresh", 5, "not valid JSON")


@pytest.mark.proves("B23")
def test_b23_flipped_ciphertext_byte(
    kv: KV, setup: tuple[Path, Path, tuple[KeyFile, ...]], tmp_path: Path
) -> None:
    import base64

    _, store, keys = setup
    path, _ = _envelope_path(store, keys, "root")

    def flip(doc: dict[str, object]) -> None:
        raw = bytearray(base64.b64decode(str(doc["ciphertext"])))
        raw[10] ^= 0x01
        doc["ciphertext"] = base64.b64encode(bytes(raw)).decode()

    _edit(path, flip)  # the sealer's signature covers the ciphertext: refused before any unwrap
    _restore_fails(kv, store, tmp_path / "fresh", 5, "signature does not verify")


@pytest.mark.proves("B24")
def test_b24_flipped_header_field(
    kv: KV, setup: tuple[Path, Path, tuple[KeyFile, ...]], tmp_path: Path
) -> None:
    _, store, keys = setup
    path, _ = _envelope_path(store, keys, "targets")
    _edit(path, lambda d: d["header"].update(gun="example.com/team-a/evil"))
    _restore_fails(kv, store, tmp_path / "fresh", 5, "holds the envelope of another key")


@pytest.mark.proves("B25")
def test_b25_envelope_copied_to_another_guns_name(
    kv: KV, setup: tuple[Path, Path, tuple[KeyFile, ...]], tmp_path: Path
) -> None:
    _, store, keys = setup
    path, _ = _envelope_path(store, keys, "targets")
    moved = Path(str(path).replace(GUN, "example.com/team-a/other"))
    moved.parent.mkdir(parents=True, mode=0o700)
    moved.write_bytes(path.read_bytes())
    moved.chmod(0o600)
    run = kv("--trust-dir", tmp_path / "fresh", "restore", "--gun", "example.com/team-a/other")
    assert run.code == 5 and "moved or swapped" in run.err
    assert not (tmp_path / "fresh").exists()


@pytest.mark.proves("B26")
def test_b26_unknown_format_version(
    kv: KV, setup: tuple[Path, Path, tuple[KeyFile, ...]], tmp_path: Path
) -> None:
    _, store, keys = setup
    path, _ = _envelope_path(store, keys, "snapshot")
    _edit(path, lambda d: d.update(version=3))
    _restore_fails(kv, store, tmp_path / "fresh", 5, "unsupported envelope version")


@pytest.mark.proves("B27")
def test_b27_wrapped_dek_of_wrong_length(
    kv: KV, setup: tuple[Path, Path, tuple[KeyFile, ...]], tmp_path: Path
) -> None:
    import base64

    _, store, keys = setup
    path, _ = _envelope_path(store, keys, "root")

    def shorten(doc: dict[str, list[dict[str, str]]]) -> None:
        entry = doc["wrapped_keys"][0]
        entry["wrapped"] = base64.b64encode(base64.b64decode(entry["wrapped"])[:-1]).decode()

    _edit(path, shorten)
    _restore_fails(kv, store, tmp_path / "fresh", 5, "signature does not verify")


def test_every_single_flipped_byte_of_an_envelope_is_refused(
    kv: KV, setup: tuple[Path, Path, tuple[KeyFile, ...]], tmp_path: Path
) -> None:
    """Done-when: any flipped byte makes restore exit 5; the trust dir is untouched."""
    _, store, keys = setup
    path, key = _envelope_path(store, keys, "targets")
    original = path.read_bytes()
    fresh = tmp_path / "fresh"
    (fresh / "private").mkdir(parents=True)
    guard = Unchanged(fresh)
    codes: dict[int, int] = {}
    try:
        for i in range(len(original)):
            flipped = bytearray(original)
            flipped[i] ^= 0x01
            path.write_bytes(bytes(flipped))
            run = kv("--trust-dir", fresh, "restore", "--key-id", key.key_id)
            codes[run.code] = codes.get(run.code, 0) + 1
            assert run.code == 5, (i, chr(original[i]), run.err)
    finally:
        path.write_bytes(original)
    guard.check()
    assert codes == {5: len(original)}
    assert kv("--trust-dir", fresh, "restore", "--key-id", key.key_id).code == 0


def _kv_as_nobody(kv: KV, home: Path, tmp_path: Path, *args: str | Path) -> Run:
    """Run the CLI in a forked child as uid 65534 (root ignores modes), owning its HOME.

    The child may pass through the test's directories; everything else in them
    stays root's.
    """
    for p in [home, *home.rglob("*")]:
        os.chown(p, NOBODY, NOBODY, follow_symlinks=False)
    with open_to_nobody(tmp_path):
        outcome = run_as_nobody(lambda: asdict(kv(*args)))
    assert "result" in outcome, outcome
    return Run(**outcome["result"])


@needs_root_for_nobody
@pytest.mark.proves("B29")
def test_b29_restore_target_not_writable(
    kv: KV, setup: tuple[Path, Path, tuple[KeyFile, ...]], home: Path, tmp_path: Path
) -> None:
    """B03/B29 need a non-root user: the trust directory is root's, read-only to others."""
    target = tmp_path / "ro-trust"
    (target / "private").mkdir(parents=True, mode=0o755)
    target.chmod(0o755)
    guard = Unchanged(target)
    run = _kv_as_nobody(kv, home, tmp_path, "--trust-dir", target, "restore", "--all")
    assert run.code == 4, run.err
    assert "permission denied" in run.err and str(target) in run.err
    guard.check()


@needs_root_for_nobody
def test_an_audit_log_the_user_cannot_write_is_access_denied(
    kv: KV, setup: tuple[Path, Path, tuple[KeyFile, ...]], home: Path, tmp_path: Path
) -> None:
    """File permissions are access (4), as for an unreadable trust directory; a full or
    read-only disk is local I/O (1). troubleshooting.md lists it under 4."""
    trust, store, _ = setup
    log = home / ".local" / "state" / "keyvault" / "audit.log"
    before = log.read_bytes()
    write_sample_trust_dir(
        trust, dict.fromkeys(("root", "targets", "snapshot"), PASS), ("example.com/team-a/new",)
    )
    known = {p for p in store.rglob("*") if p.is_file()}
    for p in [home, *home.rglob("*")]:  # nobody's home, but the log stays root's, 0600
        os.chown(p, NOBODY, NOBODY, follow_symlinks=False)
    os.chown(log, 0, 0)
    with open_to_nobody(tmp_path):
        outcome = run_as_nobody(lambda: asdict(kv("backup")))
    run = Run(**outcome["result"])
    assert run.code == 4, run.err
    assert f"cannot write the audit log {log}" in run.err
    assert log.read_bytes() == before
    # The log is appended after the work: the new keys were stored, whole (a re-run with
    # the log fixed reports them unchanged); the run still fails so nobody misses it.
    for new in {p for p in store.rglob("*") if p.is_file()} - known:
        assert json.loads(new.read_bytes())
    page = (Path(__file__).resolve().parents[2] / "docs" / "troubleshooting.md").read_text()
    section = page.split("## 4: access denied", 1)[1].split("\n## ", 1)[0]
    assert "`cannot write the audit log ...`" in section


@pytest.mark.proves("B32")
def test_b32_key_id_matching_nothing(
    kv: KV, setup: tuple[Path, Path, tuple[KeyFile, ...]], tmp_path: Path
) -> None:
    trust, store, _ = setup
    guard = Unchanged(trust, store)
    for args in (["restore"], ["backup"], ["list"], ["verify"]):
        run = kv(
            "--trust-dir",
            trust if args != ["restore"] else tmp_path / "x",
            *args,
            "--key-id",
            "0123456789ab",
        )
        assert run.code == 3, args
        assert "--key-id 0123456789ab matches no key" in run.err
    assert not (tmp_path / "x").exists()
    guard.check()


@pytest.mark.proves("B33")
def test_b33_gun_glob_matching_nothing(
    kv: KV, setup: tuple[Path, Path, tuple[KeyFile, ...]], tmp_path: Path
) -> None:
    trust, store, _ = setup
    guard = Unchanged(trust, store)
    run = kv("--trust-dir", tmp_path / "x", "restore", "--gun", "example.com/nobody/*")
    assert run.code == 3 and "--gun 'example.com/nobody/*' matches no key" in run.err
    assert not (tmp_path / "x").exists()
    guard.check()


@pytest.mark.parametrize("team", ["team/a", "../a", "Team"])
@pytest.mark.proves("B34")
def test_b34_team_name_with_a_slash(
    kv: KV, setup: tuple[Path, Path, tuple[KeyFile, ...]], team: str
) -> None:
    trust, store, _ = setup
    guard = Unchanged(trust, store)
    run = kv("--team", team, "backup")
    assert run.code == 2 and "invalid team name" in run.err
    guard.check()


@needs_root_for_nobody
@pytest.mark.proves("B03")
def test_b03_trust_dir_unreadable(
    kv: KV, setup: tuple[Path, Path, tuple[KeyFile, ...]], home: Path, tmp_path: Path
) -> None:
    """Root ignores modes: the CLI runs in a forked child as uid 65534."""
    _, store, _ = setup
    locked = tmp_path / "locked-trust"
    (locked / "private").mkdir(parents=True)
    locked.chmod(0o700)  # root's, unreadable to the child
    guard = Unchanged(store, locked)
    run = _kv_as_nobody(kv, home, tmp_path, "--trust-dir", locked, "backup")
    assert run.code == 4, run.err
    assert str(locked) in run.err
    guard.check()
