"""The all-or-nothing restore writer (keyvault.trust.restore), without any store."""

from __future__ import annotations

import os
import stat
import threading
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest
from fixtures.host import is_root, mounted_tmpfs, remount_read_only, tree

from keyvault.errors import ConflictError, IntegrityError, LocalIOError, UsageError
from keyvault.trust import restore as restore_mod
from keyvault.trust.restore import Action, RestoreItem, apply_restore, plan_restore
from keyvault.trust.safefs import inode_of as real_inode_of

pytestmark = pytest.mark.proves("T8")

ID_A = "a" * 64
ID_B = "b" * 64


def items() -> list[RestoreItem]:
    return [
        RestoreItem(f"{ID_A}.key", b"key-a\n"),
        RestoreItem(f"tuf_keys/example.com/app/{ID_B}.key", b"key-b\n"),
    ]


def test_restore_into_fresh_dir_creates_0600_files_in_0700_dirs(tmp_path: Path) -> None:
    trust = tmp_path / "new" / "trust"
    result = apply_restore(trust, items(), force=False)
    assert [p.action for p in result.planned] == [Action.CREATE, Action.CREATE]
    a = trust / "private" / f"{ID_A}.key"
    b = trust / "private" / "tuf_keys" / "example.com" / "app" / f"{ID_B}.key"
    assert a.read_bytes() == b"key-a\n" and b.read_bytes() == b"key-b\n"
    assert stat.S_IMODE(a.stat().st_mode) == 0o600
    for d in (trust, trust / "private", b.parent, b.parent.parent):
        assert stat.S_IMODE(d.stat().st_mode) == 0o700
    leftovers = [p.name for p in (trust / "private").rglob("*") if "keyvault-tmp" in p.name]
    assert leftovers == []


def test_identical_file_is_left_alone(tmp_path: Path) -> None:
    trust = tmp_path / "trust"
    apply_restore(trust, items(), force=False)
    target = trust / "private" / f"{ID_A}.key"
    before = target.stat()
    result = apply_restore(trust, items(), force=False)
    assert {p.action for p in result.planned} == {Action.UNCHANGED}
    assert target.stat().st_ino == before.st_ino


@pytest.mark.proves("B28")
def test_different_file_is_a_conflict_and_nothing_changes(tmp_path: Path) -> None:
    """B28: target exists with different bytes, no --force."""
    trust = tmp_path / "trust"
    (trust / "private").mkdir(parents=True)
    (trust / "private" / f"{ID_A}.key").write_bytes(b"other\n")
    before = tree(trust)
    with pytest.raises(ConflictError, match="already exist with different bytes"):
        apply_restore(trust, items(), force=False)
    assert_unchanged(trust, before)


def test_force_replaces_and_keeps_the_old_file_aside(tmp_path: Path) -> None:
    trust = tmp_path / "trust"
    (trust / "private").mkdir(parents=True)
    (trust / "private" / f"{ID_A}.key").write_bytes(b"other\n")
    result = apply_restore(trust, items(), force=True)
    assert next(iter(result.planned)).action is Action.REPLACE
    assert (trust / "private" / f"{ID_A}.key").read_bytes() == b"key-a\n"
    (aside,) = result.kept_aside
    assert (trust / "private" / aside).read_bytes() == b"other\n"


def test_dry_run_plan_writes_nothing(tmp_path: Path) -> None:
    trust = tmp_path / "trust"
    plan = plan_restore(trust, items(), force=False)
    assert [p.action for p in plan] == [Action.CREATE, Action.CREATE]
    assert not trust.exists()


@pytest.mark.proves("B12")
def test_symlinked_directory_inside_trust_dir_is_not_followed(tmp_path: Path) -> None:
    """B12: a symlink planted inside the trust dir never leads a write outside."""
    trust = tmp_path / "trust"
    outside = tmp_path / "outside"
    outside.mkdir()
    (trust / "private").mkdir(parents=True)
    (trust / "private" / "tuf_keys").symlink_to(outside)
    with pytest.raises(ConflictError, match="symlink"):
        apply_restore(trust, items(), force=True)
    assert list(outside.iterdir()) == []
    assert not (trust / "private" / f"{ID_A}.key").exists()


def test_symlinked_key_file_is_refused_even_with_force(tmp_path: Path) -> None:
    trust = tmp_path / "trust"
    (trust / "private").mkdir(parents=True)
    victim = tmp_path / "victim"
    victim.write_bytes(b"do not touch\n")
    (trust / "private" / f"{ID_A}.key").symlink_to(victim)
    with pytest.raises(ConflictError, match="not a regular file"):
        apply_restore(trust, items(), force=True)
    assert victim.read_bytes() == b"do not touch\n"


@pytest.mark.parametrize(
    "relpath",
    [
        "../evil.key",
        "/abs.key",
        "a/../../b.key",
        "x/./y.key",
        "noext",
        "a//b.key",
        "bad\nname.key",
        "",
    ],
)
def test_unsafe_relative_paths_are_refused(tmp_path: Path, relpath: str) -> None:
    with pytest.raises(UsageError):
        apply_restore(tmp_path / "trust", [RestoreItem(relpath, b"x")], force=False)
    assert not (tmp_path / "evil.key").exists()


@pytest.mark.proves("B40")
def test_failure_halfway_rolls_everything_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """B40/F07-like: an interruption after the first file is in place undoes it."""
    trust = tmp_path / "trust"
    (trust / "private").mkdir(parents=True)
    (trust / "private" / f"{ID_A}.key").write_bytes(b"old-a\n")
    before = tree(trust)
    real_commit = restore_mod._Transaction._commit_one
    calls = {"n": 0}

    def interrupted(self: restore_mod._Transaction, p: restore_mod.PlannedWrite) -> None:
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        real_commit(self, p)

    monkeypatch.setattr(restore_mod._Transaction, "_commit_one", interrupted)
    with pytest.raises(KeyboardInterrupt):
        apply_restore(trust, items(), force=True)
    assert_unchanged(trust, before)


def test_failure_on_a_fresh_trust_dir_leaves_no_trust_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    trust = tmp_path / "trust"

    def boom(self: restore_mod._Transaction) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(restore_mod._Transaction, "verify", boom)
    with pytest.raises(OSError):
        apply_restore(trust, items(), force=False)
    assert not trust.exists()


@pytest.mark.proves("F12")
def test_concurrent_restore_is_refused(tmp_path: Path) -> None:
    """F12: a second restore into the same trust dir while one holds the lock."""
    import fcntl

    trust = tmp_path / "trust"
    trust.mkdir()
    fd = os.open(trust / restore_mod.LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        with pytest.raises(ConflictError, match="another keyvault process"):
            apply_restore(trust, items(), force=False)
    finally:
        os.close(fd)
    assert not (trust / "private").exists()


def test_trust_dir_that_is_a_file_is_a_usage_error(tmp_path: Path) -> None:
    trust = tmp_path / "trust"
    trust.write_text("not a dir")
    with pytest.raises(UsageError, match="not a directory"):
        apply_restore(trust, items(), force=False)
    assert trust.read_text() == "not a dir"


def test_two_items_for_one_path_are_refused(tmp_path: Path) -> None:
    dup = [RestoreItem(f"{ID_A}.key", b"1"), RestoreItem(f"{ID_A}.key", b"2")]
    with pytest.raises(ConflictError):
        plan_restore(tmp_path, dup, force=False)


def assert_unchanged(trust: Path, before: dict[str, tuple[int, bytes | None]]) -> None:
    """Exactly as before: the lock file goes when the restore ends, whatever the outcome."""
    assert tree(trust) == before


@pytest.mark.skipif(not is_root(), reason="needs root to mount a tmpfs")
@pytest.mark.proves("B30", "F09")
def test_disk_full_leaves_nothing_behind(tmp_path: Path) -> None:
    """B30/F09: ENOSPC on a 64 KiB tmpfs."""
    with mounted_tmpfs("64k") as mnt:
        trust = mnt / "trust"
        (trust / "private").mkdir(parents=True)
        (trust / "private" / f"{ID_B}.key").write_bytes(b"existing\n")
        before = tree(trust)
        big = [RestoreItem(f"{ID_A}.key", b"x" * 200_000)]
        with pytest.raises(LocalIOError, match="no space left"):
            apply_restore(trust, big, force=False)
        assert_unchanged(trust, before)


@pytest.mark.skipif(not is_root(), reason="needs root to remount read-only")
@pytest.mark.proves("B31", "F10")
def test_read_only_file_system_is_a_clear_error(tmp_path: Path) -> None:
    """B31/F10: EROFS."""
    with mounted_tmpfs("1m") as mnt:
        trust = mnt / "trust"
        (trust / "private").mkdir(parents=True)
        remount_read_only(mnt)
        with pytest.raises(LocalIOError, match="read-only"):
            apply_restore(trust, items(), force=False)
        assert list((trust / "private").iterdir()) == []


@pytest.mark.skipif(not is_root(), reason="needs root to mount a tmpfs")
def test_disk_full_while_many_files_are_staged_in_parallel(tmp_path: Path) -> None:
    """The pooled staging (16+ files): the files written before ENOSPC are all removed."""
    with mounted_tmpfs("64k") as mnt:
        trust = mnt / "trust"
        (trust / "private").mkdir(parents=True)
        before = tree(trust)
        many = [RestoreItem(f"{i:064x}.key", bytes([i % 256]) * 4096) for i in range(40)]
        assert len(many) >= restore_mod.PARALLEL_STAGING
        with pytest.raises(LocalIOError, match="no space left"):
            apply_restore(trust, many, force=False)
        assert_unchanged(trust, before)


def test_many_files_round_trip_through_the_pool(tmp_path: Path) -> None:
    many = [RestoreItem(f"sub{i % 3}/{i:064x}.key", bytes([i]) * (i + 1)) for i in range(50)]
    result = apply_restore(tmp_path / "trust", many, force=False)
    assert {p.action for p in result.planned} == {Action.CREATE}
    for item in many:
        assert (tmp_path / "trust" / "private" / item.relpath).read_bytes() == item.data
    assert [p for p in (tmp_path / "trust").rglob("*") if "keyvault-tmp" in p.name] == []


@pytest.mark.parametrize(
    ("count", "failing_call"),
    [(3, 3), (40, 30)],  # a file written in this thread; one written by the pool
)
def test_a_staged_file_whose_inode_cannot_be_read_is_removed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, count: int, failing_call: int
) -> None:
    """A temporary file is written, then its inode read: if that fails, the file is not
    recorded anywhere yet, so the staging itself removes it (the rollback the rest)."""
    calls = 0
    lock = threading.Lock()

    def inode_of(dir_fd: int, name: str) -> tuple[int, int] | None:
        nonlocal calls
        if "keyvault-tmp" in name:
            with lock:
                calls += 1
                failing = calls == failing_call
            if failing:
                raise OSError(5, "Input/output error")
        return real_inode_of(dir_fd, name)

    monkeypatch.setattr("keyvault.trust.restore.inode_of", inode_of)
    trust = tmp_path / "trust"
    (trust / "private").mkdir(parents=True)
    before = tree(trust)
    many = [RestoreItem(f"{i:064x}.key", bytes([i % 256]) * 100) for i in range(count)]
    with pytest.raises(OSError, match="Input/output"):
        apply_restore(trust, many, force=False)
    assert calls >= failing_call
    assert_unchanged(trust, before)


def _opened_then_failing(count: int, fail_at: int) -> Iterator[RestoreItem]:
    """Items as a restore opens them, the ``fail_at``-th raising (a tampered envelope)."""
    for i in range(count):
        if i == fail_at:
            raise IntegrityError("envelope failed its check")
        yield RestoreItem(f"sub{i % 3}/{i:064x}.key", bytes([i % 256]) * 100)


@pytest.mark.parametrize("fail_at", [3, 40])  # before and after the pool takes over
def test_an_item_failing_late_undoes_everything_already_staged(
    tmp_path: Path, fail_at: int
) -> None:
    trust = tmp_path / "trust"
    (trust / "private").mkdir(parents=True)
    (trust / "private" / f"{ID_A}.key").write_bytes(b"old-a\n")
    before = tree(trust)
    with pytest.raises(IntegrityError):
        apply_restore(trust, _opened_then_failing(60, fail_at), force=False)
    assert_unchanged(trust, before)


def test_an_item_failing_late_into_a_new_trust_dir_leaves_no_directory(tmp_path: Path) -> None:
    trust = tmp_path / "new" / "parents" / "trust"
    with pytest.raises(IntegrityError):
        apply_restore(trust, _opened_then_failing(60, 40), force=False)
    assert list(tmp_path.iterdir()) == []


def test_a_later_unreadable_key_wins_over_an_earlier_conflict(tmp_path: Path) -> None:
    """Every item is seen before a conflict is reported: exit 5 is not hidden behind exit 4."""
    trust = tmp_path / "trust"
    (trust / "private" / "sub0").mkdir(parents=True)
    (trust / "private" / "sub0" / f"{0:064x}.key").write_bytes(b"different\n")
    before = tree(trust)
    with pytest.raises(IntegrityError):
        apply_restore(trust, _opened_then_failing(30, 20), force=False)
    assert_unchanged(trust, before)


def test_conflicts_are_counted_over_every_item(tmp_path: Path) -> None:
    trust = tmp_path / "trust"
    many = [RestoreItem(f"{i:064x}.key", b"new\n") for i in range(40)]
    (trust / "private").mkdir(parents=True)
    for item in many[5:8] + many[30:32]:
        (trust / "private" / item.relpath).write_bytes(b"old\n")
    before = tree(trust)
    with pytest.raises(ConflictError, match=r"^5 key file\(s\) already exist"):
        apply_restore(trust, iter(many), force=False)
    assert_unchanged(trust, before)


def test_a_lock_file_left_by_an_older_keyvault_goes_and_nothing_else_changes(
    tmp_path: Path,
) -> None:
    """A failed restore leaves the trust directory as it was, less keyvault's own lock file
    (older versions left it behind; nothing of keyvault's stays in the trust directory)."""
    trust = tmp_path / "trust"
    trust.mkdir()
    before = tree(trust)
    (trust / restore_mod.LOCK_NAME).write_bytes(b"")
    with pytest.raises(IntegrityError):
        apply_restore(trust, _opened_then_failing(5, 2), force=False)
    assert_unchanged(trust, before)


def test_memory_holds_the_keys_in_flight_not_every_key(tmp_path: Path) -> None:
    """Items are staged as they arrive: 16 MiB of keys restore with a small peak."""
    size, count = 32 * 1024, 512

    def generated() -> Iterator[RestoreItem]:
        for i in range(count):
            yield RestoreItem(f"{i:064x}.key", os.urandom(size))

    tracemalloc.start()
    try:
        apply_restore(tmp_path / "trust", generated(), force=False)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    held_at_most = (2 * restore_mod.STAGING_WORKERS + 8) * size  # queued writes, a few more
    assert peak < held_at_most + 2 * 1024 * 1024, peak
    assert peak < count * size // 4  # far below holding them all (16 MiB)
    restored = tmp_path / "trust" / "private"
    assert len(list(restored.iterdir())) == count


@pytest.mark.proves("F07")
def test_leftovers_of_a_killed_restore_are_removed_from_the_directories_written_to(
    tmp_path: Path,
) -> None:
    """A SIGKILL mid-restore leaves 0600 temporary files holding key bytes; the next
    restore removes them (only regular files with keyvault's prefix, only where it writes)."""
    from keyvault.fsutil import TEMP_PREFIX

    trust = tmp_path / "trust"
    sub = trust / "private" / "tuf_keys" / "example.com" / "app"
    other = trust / "private" / "elsewhere"
    for d in (sub, other):
        d.mkdir(parents=True)
    leftovers = [trust / "private" / f"{TEMP_PREFIX}0123", sub / f"{TEMP_PREFIX}4567"]
    for path in leftovers:
        path.write_bytes(b"key bytes of a killed restore")
    untouched = [other / f"{TEMP_PREFIX}89ab", trust / "private" / "notes.txt"]
    for path in untouched:
        path.write_bytes(b"keep")
    link = trust / "private" / f"{TEMP_PREFIX}link"
    link.symlink_to(trust / "private" / "notes.txt")
    apply_restore(trust, items(), force=False)
    assert [p for p in leftovers if p.exists()] == []
    assert all(p.read_bytes() == b"keep" for p in untouched)
    assert link.is_symlink()
