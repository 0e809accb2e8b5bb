"""Bulk backups: one listing instead of a read per key, and a safe fallback on a race."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from cli.conftest import KV
from keyvault.ops.backup import LISTING_THRESHOLD
from keyvault.stores.file import FileStore
from keyvault.trust.sample import write_sample_trust_dir

GUNS = tuple(f"example.com/bulk/app{i}" for i in range(10))


@pytest.fixture
def many(kv: KV, home: Path) -> int:
    keys = write_sample_trust_dir(
        home / ".docker" / "trust", dict.fromkeys(("root", "targets", "snapshot"), "p"), GUNS
    )
    assert len(keys) >= LISTING_THRESHOLD
    assert kv("init").code == 0
    return len(keys)


def test_a_bulk_backup_reads_no_envelope_for_new_keys(
    kv: KV, many: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads: list[str] = []
    real_read = FileStore.read

    def counting_read(self: FileStore, name: str, version: str | None = None) -> object:
        reads.append(name)
        return real_read(self, name, version)

    monkeypatch.setattr(FileStore, "read", counting_read)
    first = kv("--json", "backup", "--jobs", "4")
    assert first.code == 0, first.err
    assert {k["action"] for k in first.json()["keys"]} == {"created"} and reads == []
    second = kv("--json", "backup")
    assert {k["action"] for k in second.json()["keys"]} == {"unchanged"}
    assert len(reads) == many  # an unchanged key costs its one read


def test_a_key_created_after_the_listing_is_compared_not_overwritten(
    kv: KV, many: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert kv("backup").code == 0

    def stale_listing(self: FileStore, prefix: str, *, after: str = "") -> Iterator[str]:
        return iter(())  # as if every object appeared after the listing

    monkeypatch.setattr(FileStore, "list", stale_listing)
    run = kv("--json", "backup")
    assert run.code == 0, run.err
    assert {k["action"] for k in run.json()["keys"]} == {"unchanged"}
    assert {k["version"] for k in run.json()["keys"]} == {"0000000001"}


def test_a_key_changed_after_the_scan_is_not_backed_up_and_a_rerun_takes_it(
    kv: KV, many: int, home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`backup` keeps no key bytes after its scan: each file is read again when sealed,
    and one that changed in between fails alone (exit 7) rather than being stored
    with bytes the scan never saw."""
    from keyvault.cli import keys as keys_cli

    real_scan = keys_cli._scan
    changed: list[Path] = []

    def scan_then_edit(state: object, *, keep_bytes: bool = True) -> object:
        result = real_scan(state, keep_bytes=keep_bytes)  # type: ignore[arg-type]
        assert not keep_bytes and all(k.data == b"" for k in result.keys)
        target = home / ".docker" / "trust" / "private" / result.keys[3].relpath
        target.write_bytes(target.read_bytes() + b"\n")  # e.g. a passphrase change
        changed.append(target)
        return result

    monkeypatch.setattr(keys_cli, "_scan", scan_then_edit)
    run = kv("--json", "backup", "--jobs", "4")
    assert run.code == 7, run.err
    by_action: dict[str, list[dict[str, object]]] = {}
    for entry in run.json()["keys"]:
        by_action.setdefault(str(entry["action"]), []).append(entry)
    assert len(by_action["failed"]) == 1 and len(by_action["created"]) == many - 1
    failed = by_action["failed"][0]
    assert failed["error"]["error"] == "conflict"  # type: ignore[index]
    assert failed["error"]["exit_code"] == 7  # type: ignore[index]
    assert "changed since it was scanned" in failed["error"]["message"]  # type: ignore[index]
    assert f"{failed['key_id']}.key" == changed[0].name

    monkeypatch.setattr(keys_cli, "_scan", real_scan)
    rerun = kv("--json", "backup")
    assert rerun.code == 0, rerun.err
    actions = {k["key_id"]: k["action"] for k in rerun.json()["keys"]}
    assert actions.pop(failed["key_id"]) == "created"
    assert set(actions.values()) == {"unchanged"}
    out = tmp_path / "restored"
    restored = kv("--trust-dir", out, "restore", "--key-id", str(failed["key_id"]))
    assert restored.code == 0, restored.err
    assert (out / "private" / changed[0].name).read_bytes() == changed[0].read_bytes()


@pytest.mark.parametrize("jobs", ["1", "4"])
def test_restore_writes_each_key_as_it_is_opened_not_after_opening_all(
    kv: KV, many: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, jobs: str
) -> None:
    """Memory holds the keys in flight: staging starts long before the last key is opened."""
    from keyvault.ops.session import Session
    from keyvault.trust import restore as restore_mod

    assert kv("backup").code == 0
    opened = 0
    opened_at_stage: list[int] = []
    real_open, real_stage = Session.open, restore_mod._Transaction.stage

    def counting_open(self: Session, envelope: object) -> bytes:
        nonlocal opened
        opened += 1
        return real_open(self, envelope)  # type: ignore[arg-type]

    def recording_stage(self: restore_mod._Transaction, item: restore_mod.RestoreItem) -> None:
        opened_at_stage.append(opened)
        real_stage(self, item)

    monkeypatch.setattr(Session, "open", counting_open)
    monkeypatch.setattr(restore_mod._Transaction, "stage", recording_stage)
    out = tmp_path / "restored"
    run = kv("--trust-dir", out, "restore", "--all", "--jobs", jobs)
    assert run.code == 0, run.err
    assert opened == len(opened_at_stage) == many
    window = 1 if jobs == "1" else 5 * int(jobs)  # running + waiting their turn
    assert opened_at_stage[0] <= window < many
    assert all(count - staged <= window for staged, count in enumerate(opened_at_stage))
