"""Trust pins travel with the keys: each GUN's ``tuf/<gun>/metadata/root.json`` is
backed up beside its keys, signed and chained as they are, and restored byte for byte
in the same all-or-nothing transaction, never over a newer pin and never silently over
a different one."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from tufdocs import root_json, write_cache

from cli.conftest import KV
from keyvault import envelope as ev
from keyvault.config import load_config
from keyvault.names import PinAddress
from keyvault.sealing import Ed25519FileSealer
from keyvault.stores import Store, open_store
from keyvault.stores.base import Deleting
from keyvault.trust.deep import load_private_key
from keyvault.trust.keyid import private_key_id
from keyvault.trust.model import KeyFile
from keyvault.trust.sample import write_sample_trust_dir
from keyvault.wrappers import Wrapper, open_wrapper

pytestmark = pytest.mark.proves("T16")

PASS = "correct horse"
PASSPHRASES = {"root": PASS, "targets": PASS, "snapshot": PASS}
GUNS = ("example.com/team-a/app", "example.com/team-a/web")
APP = GUNS[0]


def root_doc(version: int, marker: str = "a") -> bytes:
    """A root.json as notary caches it (only what keyvault reads of it matters here)."""
    doc = {
        "signed": {
            "_type": "Root",
            "version": version,
            "expires": "2036-01-01T00:00:00Z",
            "consistent_snapshot": False,
            "keys": {},
            "roles": {},
            "marker": marker,
        },
        "signatures": [{"keyid": "0" * 64, "method": "ecdsa", "sig": "c2ln"}],
    }
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
    kv: KV, trust: tuple[Path, tuple[KeyFile, ...]]
) -> None:
    assert kv("init").code == 0
    run = kv("--json", "backup")
    assert run.code == 0, run.err
    pins = [k for k in run.json()["keys"] if k["kind"] == "pin"]
    assert sorted(p["gun"] for p in pins) == sorted(GUNS)
    assert {p["object"] for p in pins} == {f"v1/teams/default/pins/{g}/root.json" for g in GUNS}
    assert all(p["action"] == "created" for p in pins)
    again = kv("--json", "backup")
    assert again.code == 0, again.err
    assert {k["action"] for k in again.json()["keys"]} == {"unchanged"}


def store_dir(home: Path) -> Path:
    return home / ".local" / "share" / "keyvault" / "store"


def pin_object(gun: str) -> str:
    return f"v1/teams/default/pins/{gun}/root.json"


@contextlib.contextmanager
def backend(home: Path) -> Iterator[tuple[Store, Wrapper]]:
    """The owner's store and (public) wrapper, as any store writer can open them."""
    config = load_config(home / ".config" / "keyvault" / "config.toml", dict(os.environ))
    options = config.backend_options(None)
    store = open_store(config.require_store(), options)
    wrapper = open_wrapper(config.wrappers[0], options)
    try:
        yield store, wrapper
    finally:
        wrapper.close()
        store.close()


def tree(path: Path) -> dict[str, bytes]:
    return (
        {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}
        if path.exists()
        else {}
    )


def test_restore_puts_each_pin_back_byte_for_byte_with_the_keys(
    kv: KV, home: Path, ready: tuple[Path, tuple[KeyFile, ...]]
) -> None:
    original, keys = ready
    target = home / "new-laptop" / "trust"
    run = kv("--json", "--trust-dir", target, "restore", "--all")
    assert run.code == 0, run.err
    entries = run.json()["keys"]
    pins = {e["gun"]: e for e in entries if e["kind"] == "pin"}
    assert set(pins) == set(GUNS)
    assert all(p["action"] == "create" and p["signed"] for p in pins.values())
    for gun in GUNS:
        assert pin_path(target, gun).read_bytes() == pin_path(original, gun).read_bytes()
        assert stat.S_IMODE(pin_path(target, gun).stat().st_mode) == 0o600
        assert pins[gun]["path"] == f"tuf/{gun}/metadata/root.json"
    assert len([e for e in entries if e["kind"] == "key"]) == len(keys)
    again = kv("--json", "--trust-dir", target, "restore", "--all")
    assert {e["action"] for e in again.json()["keys"]} == {"unchanged"}


def test_one_guns_restore_brings_its_pin_only(
    kv: KV, home: Path, ready: tuple[Path, tuple[KeyFile, ...]]
) -> None:
    target = home / "ci-like" / "trust"
    run = kv("--json", "--trust-dir", target, "restore", "--gun", APP)
    assert run.code == 0, run.err
    assert [e["gun"] for e in run.json()["keys"] if e["kind"] == "pin"] == [APP]
    assert pin_path(target, APP).exists() and not pin_path(target, GUNS[1]).exists()
    skipped = home / "no-pins" / "trust"
    assert kv("--trust-dir", skipped, "restore", "--all", "--no-pins").code == 0
    assert not (skipped / "tuf").exists()


def test_a_newer_pin_on_disk_is_kept_and_said(
    kv: KV, home: Path, ready: tuple[Path, tuple[KeyFile, ...]]
) -> None:
    target = home / "laptop" / "trust"
    newer = write_pin(target, APP, root_doc(7, "rotated since"))
    run = kv("--trust-dir", target, "restore", "--all")
    assert run.code == 0, run.err
    assert newer.read_bytes() == root_doc(7, "rotated since")
    assert f"kept tuf/{APP}/metadata/root.json: a newer pin is on disk (root version 7" in run.out
    assert pin_path(target, GUNS[1]).read_bytes() == root_doc(2, GUNS[1])
    forced = kv("--json", "--trust-dir", target, "restore", "--all", "--force")
    assert forced.code == 0 and newer.read_bytes() == root_doc(7, "rotated since")
    assert not forced.json()["kept_aside"]


@pytest.mark.parametrize("version", [1, 0], ids=["same-version", "lower-or-unreadable"])
def test_a_different_pin_of_no_higher_version_is_a_conflict_then_replaced_with_force(
    kv: KV, home: Path, ready: tuple[Path, tuple[KeyFile, ...]], version: int
) -> None:
    target = home / "laptop" / "trust"
    theirs = root_doc(version, "someone else's root") if version else b"not json"
    write_pin(target, APP, theirs)
    before = tree(target)
    run = kv("--trust-dir", target, "restore", "--all")
    assert run.code == 7, run.err
    assert (
        f"1 trust pin(s) already exist with different bytes, e.g. tuf/{APP}/metadata/root.json"
        in run.err
        and "nothing was restored" in run.err
    )
    assert tree(target) == before  # no key written either: one transaction
    forced = kv("--json", "--trust-dir", target, "restore", "--all", "--force")
    assert forced.code == 0, forced.err
    assert pin_path(target, APP).read_bytes() == pin_path(ready[0], APP).read_bytes()
    (aside,) = forced.json()["kept_aside"]
    assert aside.startswith(f"tuf/{APP}/metadata/root.json.keyvault-old-")
    assert (target / aside).read_bytes() == theirs


def forged_pin(home: Path, gun: str, data: bytes) -> None:
    """A store writer's pin: sealed with the owner's public wrapper and a sealer of their
    own, chained on top of the latest version as a real one would be."""
    with backend(home) as (store, wrapper):
        latest = store.read(pin_object(gun))
        address = PinAddress.of("default", gun)
        header = ev.new_header(
            address=address,
            algorithm=None,
            source_name=address.relpath,
            source_mode=0o600,
            data=data,
        )
        other = Ed25519FileSealer(Path("/nonexistent"), ed25519.Ed25519PrivateKey.generate())
        sealed = ev.seal(
            header,
            data,
            [wrapper],
            sealer=other,
            chain=ev.Chain(2, hashlib.sha256(latest.data).hexdigest()),
        )
        store.write(pin_object(gun), sealed.to_bytes(), replaces=latest.version)


def test_a_pin_a_store_writer_swapped_is_refused_and_nothing_is_written(
    kv: KV, home: Path, ready: tuple[Path, tuple[KeyFile, ...]]
) -> None:
    forged_pin(home, APP, root_doc(99, "the attacker's root"))
    target = home / "laptop" / "trust"
    run = kv("--trust-dir", target, "restore", "--all")
    assert run.code == 5, run.err
    assert f"trust pin (root.json) of {APP}" in run.err
    assert tree(target) == {}


def test_a_pin_moved_under_another_guns_name_is_refused(
    kv: KV, home: Path, ready: tuple[Path, tuple[KeyFile, ...]]
) -> None:
    with backend(home) as (store, _):
        web = store.read(pin_object(GUNS[1])).data
        latest = store.read(pin_object(APP))
        store.write(pin_object(APP), web, replaces=latest.version)
    target = home / "laptop" / "trust"
    run = kv("--trust-dir", target, "restore", "--gun", APP)
    assert run.code == 5, run.err
    assert tree(target) == {}


def test_an_older_pin_copied_on_top_is_refused_as_a_rollback(
    kv: KV, home: Path, ready: tuple[Path, tuple[KeyFile, ...]]
) -> None:
    original, _ = ready
    with backend(home) as (store, _):
        first = store.read(pin_object(APP)).data
    write_pin(original, APP, root_doc(3, "rotated"))
    run = kv("--json", "backup", "--gun", APP)
    assert run.code == 0, run.err
    assert [k["action"] for k in run.json()["keys"] if k["kind"] == "pin"] == ["updated"]
    with backend(home) as (store, _):
        store.write(pin_object(APP), first, replaces=store.read(pin_object(APP)).version)
    target = home / "laptop" / "trust"
    refused = kv("--trust-dir", target, "restore", "--all")
    assert refused.code == 5, refused.err
    assert "rollback" in refused.err or "chain" in refused.err
    assert tree(target) == {}


def test_coverage_checks_the_keys_against_the_pin_in_the_store_offline(kv: KV, home: Path) -> None:
    """The machine's TUF cache is gone and no trust server is given: --pinned reads each
    GUN's pin from the store, proven as a restore proves it."""
    trust = home / ".docker" / "trust"
    keys = write_sample_trust_dir(trust, PASSPHRASES, (APP,))
    private = {k.role: load_private_key(k, PASS) for k in keys}
    timestamp = ec.generate_private_key(ec.SECP256R1())
    doc, _ = root_json(
        APP,
        private["root"],
        {"targets": private["targets"], "snapshot": private["snapshot"], "timestamp": timestamp},
    )
    write_cache(trust, APP, {"root": doc})
    assert kv("init").code == 0
    assert kv("backup").code == 0
    shutil.rmtree(trust / "tuf")
    cache = kv("coverage", "--gun", APP)
    assert cache.code == 3 and "no published TUF metadata" in cache.err
    run = kv("--json", "coverage", "--gun", APP, "--pinned")
    assert run.code == 0, run.err
    status = {(r["role"], r["key_id"]): r["status"] for r in run.json()["keys"]}
    by_role = {k.role: k.key_id for k in keys}
    assert status == {
        ("root", by_role["root"]): "backed-up",
        ("targets", by_role["targets"]): "backed-up",
        ("snapshot", by_role["snapshot"]): "backed-up",
        ("timestamp", private_key_id(timestamp)): "server-managed",
    }
    assert run.json()["source"].startswith("trust pins in the store")
    both = kv("coverage", "--gun", APP, "--pinned", "--server", "https://notary.example.com")
    assert both.code == 2
    forged_pin(home, APP, root_doc(99, "the attacker's root"))
    refused = kv("coverage", "--gun", APP, "--pinned")
    assert refused.code == 5 and f"trust pin (root.json) of {APP}" in refused.err


def test_backup_calls_a_pin_unchanged_only_on_a_version_it_trusts(
    kv: KV, home: Path, ready: tuple[Path, tuple[KeyFile, ...]]
) -> None:
    """A forged latest version holding the very bytes on disk is not 'unchanged': a fresh
    version is sealed on top, and a restore brings back the machine's own pin."""
    original, _ = ready
    forged_pin(home, APP, pin_path(original, APP).read_bytes())
    run = kv("--json", "backup", "--gun", APP)
    assert run.code == 0, run.err
    (pin,) = [k for k in run.json()["keys"] if k["kind"] == "pin"]
    assert pin["action"] == "updated" and "not trusted" in pin["warning"]
    target = home / "laptop" / "trust"
    assert kv("--trust-dir", target, "restore", "--gun", APP).code == 0
    assert pin_path(target, APP).read_bytes() == pin_path(original, APP).read_bytes()


def test_the_audit_log_names_the_pins_written(
    kv: KV, ready: tuple[Path, tuple[KeyFile, ...]]
) -> None:
    records = kv("--json", "audit", "show", "--action", "backup").json()["records"]
    pins = [k for k in records[-1]["keys"] if k["key_id"] == "root.json"]
    assert sorted(k["gun"] for k in pins) == sorted(GUNS)


def drop_pin(home: Path, gun: str) -> None:
    """The GUN's pin gone from the store, every version (as if never backed up)."""
    with backend(home) as (store, _):
        assert isinstance(store, Deleting)
        store.delete_all_versions(pin_object(gun))


def test_list_shows_each_pin_after_the_keys(
    kv: KV, ready: tuple[Path, tuple[KeyFile, ...]]
) -> None:
    _, keys = ready
    run = kv("--json", "list")
    assert run.code == 0, run.err
    entries = run.json()["keys"]
    pins = [e for e in entries if e["kind"] == "pin"]
    assert [(p["gun"], p["key_id"], p["object"]) for p in pins] == [
        (g, "root.json", pin_object(g)) for g in sorted(GUNS)
    ]
    assert len([e for e in entries if e["kind"] == "key"]) == len(keys)
    one = kv("--json", "list", "--gun", APP, "--long")
    assert one.code == 0, one.err
    (pin,) = [e for e in one.json()["keys"] if e["kind"] == "pin"]
    assert pin["gun"] == APP and pin["signed"] and pin["sequence"] == 1
    text = kv("list")
    assert text.code == 0 and "root.json" in text.out


def test_list_of_a_gun_without_a_pin_shows_none(
    kv: KV, home: Path, ready: tuple[Path, tuple[KeyFile, ...]]
) -> None:
    drop_pin(home, APP)
    run = kv("--json", "list", "--gun", APP)
    assert run.code == 0, run.err
    assert [e["kind"] for e in run.json()["keys"]] == ["key"] * len(run.json()["keys"])


def test_verify_checks_each_pin_against_the_trust_directory(
    kv: KV, ready: tuple[Path, tuple[KeyFile, ...]]
) -> None:
    original, _ = ready
    run = kv("--json", "verify", "--all")
    assert run.code == 0, run.err
    pins = {e["gun"]: e for e in run.json()["keys"] if e["kind"] == "pin"}
    assert {g: (p["status"], p["root_version"]) for g, p in pins.items()} == {
        GUNS[0]: ("ok", 1),
        GUNS[1]: ("ok", 2),
    }
    write_pin(original, APP, root_doc(5, "rotated"))
    changed = kv("--json", "verify", "--gun", APP)
    assert changed.code == 5, changed.err
    (pin,) = [e for e in changed.json()["keys"] if e["kind"] == "pin"]
    assert pin["status"] == "differs" and "root version 5) is newer than" in pin["detail"]
    pin_path(original, APP).unlink()
    gone = kv("--json", "verify", "--gun", APP)
    assert gone.code == 0, gone.err
    assert [e["status"] for e in gone.json()["keys"] if e["kind"] == "pin"] == ["store-only"]


def test_verify_refuses_a_pin_a_store_writer_swapped(
    kv: KV, home: Path, ready: tuple[Path, tuple[KeyFile, ...]]
) -> None:
    forged_pin(home, APP, root_doc(99, "the attacker's root"))
    run = kv("--json", "verify", "--all")
    assert run.code == 5, run.err
    statuses = {e["gun"]: e["status"] for e in run.json()["keys"] if e["kind"] == "pin"}
    assert statuses == {APP: "broken", GUNS[1]: "ok"}
    assert all(e["status"] == "ok" for e in run.json()["keys"] if e["kind"] == "key")
    text = kv("verify", "--all")
    assert text.code == 5 and f"trust pin of {APP}:" in text.err
    assert "root key root.json" not in text.err  # a pin is not named as a key


def test_verify_says_a_pin_on_disk_is_not_backed_up(
    kv: KV, home: Path, ready: tuple[Path, tuple[KeyFile, ...]]
) -> None:
    drop_pin(home, APP)
    run = kv("verify", "--gun", APP)
    assert run.code == 3, run.err
    assert f"the trust pin of {APP} is not backed up" in run.err


def test_versions_lists_each_pins_chain_after_the_keys(
    kv: KV, home: Path, ready: tuple[Path, tuple[KeyFile, ...]]
) -> None:
    original, _ = ready
    write_pin(original, APP, root_doc(3, "rotated"))
    assert kv("backup", "--gun", APP).code == 0
    forged_pin(home, APP, root_doc(99, "the attacker's root"))
    run = kv("--json", "versions", "--gun", APP)
    assert run.code == 0, run.err
    (pin,) = [e for e in run.json()["keys"] if e["kind"] == "pin"]
    assert pin["object"] == pin_object(APP)
    chain = [(v["sequence"], v["chain"]) for v in pin["versions"]]
    assert chain[1:] == [(2, "linked"), (1, "first")]
    assert chain[0][0] is None and chain[0][1].startswith("not verified")
    assert run.json()["keys"][0]["kind"] == "key"


def test_rewrap_moves_the_pins_with_the_keys(
    kv: KV, home: Path, ready: tuple[Path, tuple[KeyFile, ...]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """After 'rewrap --all' to a new wrapper, that wrapper alone restores keys and pins."""
    original, keys = ready
    config = home / ".config" / "keyvault" / "config.toml"
    config.write_text(config.read_text() + "\n[passphrase]\nscrypt_n = 16384\n")
    monkeypatch.setenv("KEYVAULT_PASSPHRASE", "wrapper passphrase")
    run = kv("--json", "rewrap", "--all", "--add", "passphrase:")
    assert run.code == 0, run.err
    pins = [k for k in run.json()["keys"] if k["kind"] == "pin"]
    assert sorted(p["gun"] for p in pins) == sorted(GUNS)
    assert {(p["action"], "passphrase:" in p["after"]) for p in pins} == {("rewrapped", True)}
    target = home / "laptop" / "trust"
    restored = kv("--wrapper", "passphrase:", "--trust-dir", target, "restore", "--all")
    assert restored.code == 0, restored.err
    for gun in GUNS:
        assert pin_path(target, gun).read_bytes() == pin_path(original, gun).read_bytes()
    assert len(list((target / "private").rglob("*.key"))) == len(keys)


PULL_ONLY = "example.com/team-a/pulled"  # a GUN this machine pulls: a pin, no key


@pytest.fixture
def pull_only(kv: KV, ready: tuple[Path, tuple[KeyFile, ...]]) -> str:
    write_pin(ready[0], PULL_ONLY, root_doc(4, "pulled"))
    run = kv("--json", "backup")
    assert run.code == 0, run.err
    assert [k["gun"] for k in run.json()["keys"] if k["action"] == "created"] == [PULL_ONLY]
    return PULL_ONLY


def test_list_and_versions_of_a_gun_with_only_a_pin_show_the_pin(kv: KV, pull_only: str) -> None:
    run = kv("--json", "list", "--gun", pull_only)
    assert run.code == 0, run.err
    assert [(e["kind"], e["gun"]) for e in run.json()["keys"]] == [("pin", pull_only)]
    versions = kv("--json", "versions", "--gun", pull_only)
    assert versions.code == 0, versions.err
    assert [e["kind"] for e in versions.json()["keys"]] == ["pin"]
    nothing = kv("list", "--gun", "example.com/team-a/nothing")
    assert nothing.code == 3 and "matches no key" in nothing.err


def test_restore_version_of_a_pin_is_refused_saying_why_and_where_to_look(
    kv: KV, home: Path, pull_only: str
) -> None:
    run = kv("--trust-dir", home / "laptop", "restore", "--gun", pull_only, "--version", "1")
    assert run.code == 3, run.err
    assert "latest version only" in run.err and "keyvault versions --gun" in run.err
    many = kv("--trust-dir", home / "laptop", "restore", "--gun", APP, "--version", "1")
    assert many.code == 2 and "latest version only" in many.err
    assert tree(home / "laptop") == {}


def test_list_names_the_pins_from_the_one_listing_of_the_teams_folder(
    kv: KV, ready: tuple[Path, tuple[KeyFile, ...]], monkeypatch: pytest.MonkeyPatch
) -> None:
    from keyvault.stores.file import FileStore

    listed: list[str] = []
    real = FileStore.list

    def counted(self: FileStore, prefix: str, *, after: str = "") -> Iterator[str]:
        listed.append(prefix)
        return real(self, prefix, after=after)

    monkeypatch.setattr(FileStore, "list", counted)
    run = kv("--json", "list")
    assert run.code == 0, run.err
    assert sorted(e["gun"] for e in run.json()["keys"] if e["kind"] == "pin") == sorted(GUNS)
    assert listed == ["v1/teams/default/"]
    listed.clear()
    assert kv("versions", "--all").code == 0
    assert not [p for p in listed if "/pins/" in p]
