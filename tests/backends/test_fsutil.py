"""keyvault.fsutil: atomic, private, symlink-refusing writes and clear OS errors."""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fixtures.host import run_as_nobody

from keyvault import fsutil
from keyvault.errors import (
    AccessDeniedError,
    ConflictError,
    IntegrityError,
    LocalIOError,
    NotFoundError,
    UsageError,
)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def leftovers(directory: Path) -> list[str]:
    return [p.name for p in directory.iterdir() if fsutil.is_temp_name(p.name)]


@pytest.fixture
def umask_zero() -> Iterator[None]:
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


# -- write_file_atomic ---------------------------------------------------------


@pytest.mark.proves("T7")
def test_exclusive_write_creates_file_0600_whatever_the_umask(
    tmp_path: Path, umask_zero: None
) -> None:
    fsutil.write_file_atomic(tmp_path, "key", b"secret bytes")
    assert (tmp_path / "key").read_bytes() == b"secret bytes"
    assert mode(tmp_path / "key") == 0o600
    assert leftovers(tmp_path) == []


def test_mode_is_exact_even_with_a_hostile_umask(tmp_path: Path) -> None:
    old = os.umask(0o277)
    try:
        fsutil.write_file_atomic(tmp_path, "key", b"x", mode=0o640)
    finally:
        os.umask(old)
    assert mode(tmp_path / "key") == 0o640


def test_exclusive_write_never_replaces(tmp_path: Path) -> None:
    (tmp_path / "key").write_bytes(b"original")
    with pytest.raises(ConflictError) as info:
        fsutil.write_file_atomic(tmp_path, "key", b"new secret")
    assert (tmp_path / "key").read_bytes() == b"original"
    assert str(tmp_path / "key") in info.value.message
    assert "new secret" not in str(info.value)
    assert leftovers(tmp_path) == []


@pytest.mark.proves("T9")
def test_exclusive_write_does_not_follow_a_dangling_symlink(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "key").symlink_to(outside)
    with pytest.raises(ConflictError):
        fsutil.write_file_atomic(tmp_path / "dir", "key", b"x")
    assert not outside.exists()


def test_replace_overwrites_atomically(tmp_path: Path) -> None:
    (tmp_path / "key").write_bytes(b"old")
    fsutil.write_file_atomic(tmp_path, "key", b"new", exclusive=False)
    assert (tmp_path / "key").read_bytes() == b"new"
    assert mode(tmp_path / "key") == 0o600
    assert leftovers(tmp_path) == []


def test_replace_replaces_a_symlink_itself(tmp_path: Path) -> None:
    target = tmp_path / "target"
    target.write_bytes(b"victim")
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "key").symlink_to(target)
    fsutil.write_file_atomic(tmp_path / "dir", "key", b"new", exclusive=False)
    assert target.read_bytes() == b"victim"
    assert not (tmp_path / "dir" / "key").is_symlink()
    assert (tmp_path / "dir" / "key").read_bytes() == b"new"


def test_replace_onto_a_directory_is_a_conflict(tmp_path: Path) -> None:
    (tmp_path / "key").mkdir()
    with pytest.raises(ConflictError):
        fsutil.write_file_atomic(tmp_path, "key", b"x", exclusive=False)
    assert leftovers(tmp_path) == []


def test_write_through_a_directory_descriptor(tmp_path: Path) -> None:
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fsutil.write_file_atomic(fd, "key", b"data")
        with pytest.raises(ConflictError) as info:
            fsutil.write_file_atomic(fd, "key", b"data")
    finally:
        os.close(fd)
    assert (tmp_path / "key").read_bytes() == b"data"
    assert str(tmp_path) in info.value.message


@pytest.mark.proves("T9")
def test_a_symlinked_target_directory_is_refused(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    with pytest.raises(UsageError):
        fsutil.write_file_atomic(tmp_path / "link", "key", b"x")
    assert list(real.iterdir()) == []


def test_missing_directory_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError) as info:
        fsutil.write_file_atomic(tmp_path / "nope", "key", b"x")
    assert "nope" in info.value.message


@pytest.mark.parametrize("name", ["", ".", "..", "a/b", "/abs", "nul\x00"])
def test_name_must_be_one_component(tmp_path: Path, name: str) -> None:
    with pytest.raises(ValueError):
        fsutil.write_file_atomic(tmp_path, name, b"x")


def test_large_data_is_written_completely(tmp_path: Path) -> None:
    data = os.urandom(3 * 1024 * 1024 + 7)
    fsutil.write_file_atomic(tmp_path, "big", data)
    assert (tmp_path / "big").read_bytes() == data


@pytest.mark.parametrize("failing", ["write", "fsync", "fchmod"])
def test_failure_while_writing_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing: str
) -> None:
    def broken(*_: object, **__: object) -> None:
        raise OSError(errno.EIO, "I/O error")

    monkeypatch.setattr(os, failing, broken)
    with pytest.raises(LocalIOError) as info:
        fsutil.write_file_atomic(tmp_path, "key", b"top secret")
    monkeypatch.undo()
    assert list(tmp_path.iterdir()) == []
    assert str(tmp_path / "key") in info.value.message
    assert "top secret" not in str(info.value)


@pytest.mark.parametrize("exclusive", [True, False])
def test_failure_while_publishing_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, exclusive: bool
) -> None:
    def denied(*_: object, **__: object) -> None:
        raise OSError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(os, "link" if exclusive else "replace", denied)
    with pytest.raises(AccessDeniedError):
        fsutil.write_file_atomic(tmp_path, "key", b"x", exclusive=exclusive)
    monkeypatch.undo()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.proves("T7")
def test_interrupt_removes_the_temp_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted(*_: object, **__: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "fsync", interrupted)
    with pytest.raises(KeyboardInterrupt):
        fsutil.write_file_atomic(tmp_path, "key", b"x")
    monkeypatch.undo()
    assert list(tmp_path.iterdir()) == []


# -- ensure_private_dir / open_subdir ------------------------------------------


def test_ensure_private_dir_makes_missing_parents_0700(tmp_path: Path, umask_zero: None) -> None:
    target = tmp_path / "a" / "b" / "c"
    fsutil.ensure_private_dir(target)
    for path in (tmp_path / "a", tmp_path / "a" / "b", target):
        assert path.is_dir() and not path.is_symlink()
        assert mode(path) == 0o700


def test_ensure_private_dir_keeps_an_existing_directory(tmp_path: Path) -> None:
    target = tmp_path / "existing"
    target.mkdir(mode=0o750)
    (target / "file").write_bytes(b"kept")
    fsutil.ensure_private_dir(target)
    assert mode(target) == 0o750
    assert (target / "file").read_bytes() == b"kept"


def test_ensure_private_dir_refuses_a_symlink(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    with pytest.raises(UsageError):
        fsutil.ensure_private_dir(tmp_path / "link")
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    with pytest.raises(UsageError):
        fsutil.ensure_private_dir(tmp_path / "dangling")
    assert not (tmp_path / "nowhere").exists()


def test_ensure_private_dir_refuses_a_file(tmp_path: Path) -> None:
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(UsageError):
        fsutil.ensure_private_dir(tmp_path / "file")
    with pytest.raises(UsageError):
        fsutil.ensure_private_dir(tmp_path / "file" / "sub")


def test_open_subdir_refuses_symlinked_components(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    (outside / "b").mkdir(parents=True)
    (tmp_path / "root").mkdir()
    (tmp_path / "root" / "a").symlink_to(outside)
    with pytest.raises(IntegrityError) as info:
        fsutil.open_subdir(tmp_path / "root", ["a", "b"], create=True, unexpected=IntegrityError)
    assert "symbolic link" in info.value.message
    with pytest.raises(UsageError):
        fsutil.open_subdir(tmp_path / "root", ["a", "b"])
    assert list((outside / "b").iterdir()) == []


def test_open_subdir_creates_and_opens(tmp_path: Path) -> None:
    fd = fsutil.open_subdir(tmp_path, ["x", "y"], create=True)
    try:
        fsutil.write_file_atomic(fd, "f", b"1")
    finally:
        os.close(fd)
    assert (tmp_path / "x" / "y" / "f").read_bytes() == b"1"
    with pytest.raises(NotFoundError):
        fsutil.open_subdir(tmp_path, ["missing"])
    with pytest.raises(ValueError):
        fsutil.open_subdir(tmp_path, [".."])


# -- translate_os_error --------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "kind", "words"),
    [
        (errno.EACCES, AccessDeniedError, "permission denied"),
        (errno.EPERM, AccessDeniedError, "permission denied"),
        (errno.ENOSPC, LocalIOError, "no space left"),
        (errno.EDQUOT, LocalIOError, "quota"),
        (errno.EROFS, LocalIOError, "read-only"),
        (errno.EIO, LocalIOError, "I/O error"),
        (errno.ENOENT, NotFoundError, "no such file"),
        (errno.EEXIST, ConflictError, "already exists"),
        (errno.ELOOP, UsageError, "symbolic link"),
        (errno.EMFILE, LocalIOError, "open files"),
    ],
)
def test_os_errors_become_clear_keyvault_errors(code: int, kind: type, words: str) -> None:
    error = fsutil.translate_os_error(OSError(code, os.strerror(code)), Path("/x/key"), "write")
    assert type(error) is kind
    assert "/x/key" in error.message and words in error.message
    if kind in (AccessDeniedError, LocalIOError) and code != errno.EMFILE:
        assert error.hint  # permission, space, read-only and I/O failures say what to do


# -- real faults (root only) ---------------------------------------------------


@pytest.mark.proves("F09")
def test_disk_full_leaves_nothing_behind(tiny_tmpfs: Path) -> None:
    (tiny_tmpfs / "keep").write_bytes(b"kept")
    with pytest.raises(LocalIOError) as info:
        fsutil.write_file_atomic(tiny_tmpfs, "big", b"\0" * (256 * 1024))
    assert "no space left" in info.value.message
    assert sorted(p.name for p in tiny_tmpfs.iterdir()) == ["keep"]
    fsutil.write_file_atomic(tiny_tmpfs, "small", b"fits")
    assert (tiny_tmpfs / "small").read_bytes() == b"fits"


@pytest.mark.proves("F10")
def test_read_only_file_system(tiny_tmpfs: Path, make_read_only: Callable[[], None]) -> None:
    (tiny_tmpfs / "existing").mkdir()
    make_read_only()
    with pytest.raises(LocalIOError) as info:
        fsutil.write_file_atomic(tiny_tmpfs, "key", b"x")
    assert "read-only" in info.value.message and info.value.hint
    with pytest.raises(LocalIOError):
        fsutil.ensure_private_dir(tiny_tmpfs / "new")
    assert sorted(p.name for p in tiny_tmpfs.iterdir()) == ["existing"]


def test_unwritable_directory_as_another_user(shared_dir: Path) -> None:
    outcome = run_as_nobody(lambda: fsutil.write_file_atomic(shared_dir, "key", b"x"))
    assert outcome.get("error") == "AccessDeniedError", outcome
    assert str(shared_dir) in outcome["message"]
    outcome = run_as_nobody(lambda: fsutil.ensure_private_dir(shared_dir / "sub"))
    assert outcome.get("error") == "AccessDeniedError", outcome
    assert list(shared_dir.iterdir()) == []


def test_nobody_can_write_where_allowed(shared_dir: Path) -> None:
    writable = shared_dir / "mine"
    writable.mkdir()
    os.chown(writable, 65534, 65534)
    outcome = run_as_nobody(lambda: fsutil.write_file_atomic(writable, "key", b"x"))
    assert "error" not in outcome, outcome
    assert (writable / "key").stat().st_uid == 65534


# -- make_private_dirs ----------------------------------------------------------


@pytest.mark.proves("T8")
def test_make_private_dirs_makes_every_parent_0700_whatever_the_umask(
    tmp_path: Path, umask_zero: None
) -> None:
    fsutil.make_private_dirs(tmp_path / "a" / "b" / "c")
    assert [mode(tmp_path / p) for p in ("a", "a/b", "a/b/c")] == [0o700] * 3


def test_make_private_dirs_uses_what_exists_like_mkdir_p(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir(mode=0o755)
    (tmp_path / "link").symlink_to("real")
    fsutil.make_private_dirs(tmp_path / "link")  # a symlinked directory: the user's choice
    fsutil.make_private_dirs(tmp_path / "link" / "sub")
    assert mode(tmp_path / "real") == 0o755 and mode(tmp_path / "real" / "sub") == 0o700
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(FileExistsError):
        fsutil.make_private_dirs(tmp_path / "file")
    with pytest.raises(NotADirectoryError):
        fsutil.make_private_dirs(tmp_path / "file" / "sub")
