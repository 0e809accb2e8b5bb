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
    keys = write_sample_trust_dir(home / ".docker" / "trust",
                                  dict.fromkeys(("root", "targets", "snapshot"), "p"), GUNS)
    assert len(keys) >= LISTING_THRESHOLD
    assert kv("init").code == 0
    return len(keys)


def test_a_bulk_backup_reads_no_envelope_for_new_keys(kv: KV, many: int,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
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
        kv: KV, many: int, monkeypatch: pytest.MonkeyPatch) -> None:
    assert kv("backup").code == 0

    def stale_listing(self: FileStore, prefix: str) -> Iterator[str]:
        return iter(())  # as if every object appeared after the listing

    monkeypatch.setattr(FileStore, "list", stale_listing)
    run = kv("--json", "backup")
    assert run.code == 0, run.err
    assert {k["action"] for k in run.json()["keys"]} == {"unchanged"}
    assert {k["version"] for k in run.json()["keys"]} == {"0000000001"}
