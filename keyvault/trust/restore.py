"""All-or-nothing restore of key files into a trust directory.

Every path below the trust directory is walked with directory file
descriptors and ``O_NOFOLLOW``, so a symlink planted inside the trust
directory is never followed out of it. Files are written to a temporary name
in their final directory (0600), fsynced, and then linked or renamed into
place; directories that had to be made are 0700. If anything fails, or the
user presses Ctrl-C, everything already moved into place is undone: new files
removed, replaced files put back, temporary files and new directories
removed. An existing file is never replaced unless the caller asked for it,
and then it is kept aside as ``<name>.keyvault-old-<UTC time>``. The written
bytes are read back and compared before the restore counts as done, because
Notary rewrites key files on first touch.
"""

from __future__ import annotations

import contextlib
import enum
import errno
import fcntl
import hashlib
import hmac
import os
import stat
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from keyvault import fsutil
from keyvault.errors import (
    AccessDeniedError,
    ConflictError,
    IntegrityError,
    KeyvaultError,
    LocalIOError,
    UsageError,
)

LOCK_NAME = ".keyvault.lock"
#: From this many files on, temporary files are written by a small pool (overlapping fsyncs).
PARALLEL_STAGING = 16
STAGING_WORKERS = 8
PRIVATE_DIR = "private"
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_MAX_EXISTING = 1024 * 1024


class Action(enum.Enum):
    CREATE = "create"
    UNCHANGED = "unchanged"
    REPLACE = "replace"
    CONFLICT = "conflict"


@dataclass(frozen=True)
class RestoreItem:
    """One key file to put back: its path under ``private/`` and its bytes."""

    relpath: str
    data: bytes = field(repr=False)
    label: str = ""  # e.g. "targets key 1a2b3c… of example.com/app", for messages


@dataclass(frozen=True)
class PlannedWrite:
    item: RestoreItem
    action: Action
    reason: str = ""


@dataclass(frozen=True)
class RestoreResult:
    planned: tuple[PlannedWrite, ...]
    kept_aside: tuple[str, ...]  # relpaths of old files kept beside replaced ones


def check_relpath(relpath: str) -> list[str]:
    """Split a relative key path, refusing anything that could leave ``private/``."""
    parts = relpath.split("/")
    if (not relpath or relpath.startswith("/") or "\\" in relpath or not relpath.isprintable()
            or any(p in ("", ".", "..") for p in parts) or not relpath.endswith(".key")
            or len(relpath) > 512):
        raise UsageError(f"refusing unsafe key path {relpath[:80]!r}")
    return parts


def plan_restore(trust_dir: Path, items: Sequence[RestoreItem], *, force: bool) -> list[
        PlannedWrite]:
    """Compare each item with what is on disk; nothing is written."""
    seen: set[str] = set()
    plan: list[PlannedWrite] = []
    with _open_trust(trust_dir, create=False) as root:
        for item in items:
            check_relpath(item.relpath)
            if item.relpath in seen:
                raise ConflictError(f"two selected keys would both be restored to {item.relpath}",
                                    hint="narrow the selection with --gun, --role or --key-id")
            seen.add(item.relpath)
            plan.append(_plan_one(root, item, force))
    return plan


def apply_restore(
    trust_dir: Path,
    items: Sequence[RestoreItem],
    *,
    force: bool,
    on_progress: Callable[[RestoreItem], None] | None = None,
) -> RestoreResult:
    """Plan, then write everything or nothing. Conflicts abort before any write."""
    created_trust_dir = not trust_dir.exists()
    try:
        return _apply(trust_dir, items, force=force, on_progress=on_progress)
    except BaseException:
        if created_trust_dir:
            with contextlib.suppress(OSError):
                (trust_dir / LOCK_NAME).unlink()
                trust_dir.rmdir()
        raise


def _apply(
    trust_dir: Path,
    items: Sequence[RestoreItem],
    *,
    force: bool,
    on_progress: Callable[[RestoreItem], None] | None,
) -> RestoreResult:
    with _open_trust(trust_dir, create=True) as root, _lock(root, trust_dir):
        assert root is not None  # created above
        plan = [_plan_one(root, item, force) for item in items]
        conflicts = [p for p in plan if p.action is Action.CONFLICT]
        if conflicts:
            first = conflicts[0]
            raise ConflictError(
                f"{len(conflicts)} key file(s) already exist with different bytes, e.g. "
                f"{PRIVATE_DIR}/{first.item.relpath}; nothing was restored",
                hint="use --force to replace them (the old files are kept aside), "
                     "or --dry-run to see every difference",
            )
        txn = _Transaction(root)
        try:
            txn.stage_all([p for p in plan if p.action in (Action.CREATE, Action.REPLACE)])
            for p in plan:
                if p.action in (Action.CREATE, Action.REPLACE):
                    txn.commit_one(p)
                    if on_progress:
                        on_progress(p.item)
            txn.sync()
            txn.verify()
        except BaseException:
            txn.rollback()
            raise
        finally:
            txn.close()
        return RestoreResult(tuple(plan), tuple(txn.aside_relpaths))


def _plan_one(root: int | None, item: RestoreItem, force: bool) -> PlannedWrite:
    parts = check_relpath(item.relpath)
    if root is None:
        return PlannedWrite(item, Action.CREATE)
    existing = _read_existing(root, [PRIVATE_DIR, *parts], item.relpath)
    if existing is None:
        return PlannedWrite(item, Action.CREATE)
    if _same(existing, item.data):
        return PlannedWrite(item, Action.UNCHANGED, "identical file already present")
    if force:
        return PlannedWrite(item, Action.REPLACE, "different bytes; old file kept aside")
    return PlannedWrite(item, Action.CONFLICT, "exists with different bytes")


def _same(a: bytes, b: bytes) -> bool:
    return hmac.compare_digest(hashlib.sha256(a).digest(), hashlib.sha256(b).digest())


def _read_existing(root: int, parts: list[str], relpath: str) -> bytes | None:
    """The bytes at ``parts`` below ``root`` without following links; None if absent."""
    fd = os.dup(root)
    try:
        for name in parts[:-1]:
            try:
                nxt = os.open(name, _DIR_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                return None
            except OSError as exc:
                raise _refuse(exc, relpath) from None
            os.close(fd)
            fd = nxt
        try:
            st = os.stat(parts[-1], dir_fd=fd, follow_symlinks=False)
        except FileNotFoundError:
            return None
        if stat.S_ISLNK(st.st_mode) or not stat.S_ISREG(st.st_mode):
            raise ConflictError(f"{PRIVATE_DIR}/{relpath} exists and is not a regular file "
                                "(a symlink?); refusing to touch it")
        if st.st_size > _MAX_EXISTING:
            return b""  # larger than any key file: certainly different from ours
        ffd = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
        with os.fdopen(ffd, "rb") as fh:
            return fh.read(_MAX_EXISTING + 1)
    except PermissionError:
        raise AccessDeniedError(f"cannot read {PRIVATE_DIR}/{relpath}",
                                hint="check the trust directory's owner and permissions") from None
    finally:
        os.close(fd)


def _refuse(exc: OSError, relpath: str) -> KeyvaultError:
    if exc.errno in (errno.ELOOP, errno.ENOTDIR):
        return ConflictError(f"a directory on the way to {PRIVATE_DIR}/{relpath} is a symlink "
                             "or a file; refusing to follow it")
    return _os_error(exc, f"{PRIVATE_DIR}/{relpath}")


def _os_error(exc: OSError, where: str) -> KeyvaultError:
    if exc.errno in (errno.EACCES, errno.EPERM):
        return AccessDeniedError(f"permission denied writing {where}",
                                 hint="check the trust directory's owner and permissions")
    if exc.errno == errno.ENOSPC:
        return LocalIOError(f"no space left on device writing {where}; nothing was changed",
                            hint="free some space and run the restore again")
    if exc.errno == errno.EROFS:
        return LocalIOError(f"read-only file system at {where}; nothing was changed")
    return LocalIOError(f"could not write {where}: {os.strerror(exc.errno or 0)}")


@contextlib.contextmanager
def _open_trust(trust_dir: Path, *, create: bool) -> Iterator[int | None]:
    """A descriptor of the trust directory (made 0700 with its parents if asked)."""
    try:
        if create and not trust_dir.exists():
            trust_dir.mkdir(mode=0o700, parents=True)
        fd = os.open(trust_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        yield None
        return
    except NotADirectoryError:
        raise UsageError(f"trust directory {trust_dir} is not a directory") from None
    except FileExistsError:
        raise UsageError(f"trust directory {trust_dir} is not a directory") from None
    except OSError as exc:
        raise _os_error(exc, str(trust_dir)) from None
    try:
        yield fd
    finally:
        os.close(fd)


@contextlib.contextmanager
def _lock(root: int | None, trust_dir: Path) -> Iterator[None]:
    """One restore at a time per trust directory (F12)."""
    assert root is not None
    try:
        fd = os.open(LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                     dir_fd=root)
    except OSError as exc:
        raise _os_error(exc, str(trust_dir / LOCK_NAME)) from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConflictError(f"another keyvault process is restoring into {trust_dir}",
                                hint="wait for it to finish, then run again") from None
        yield
    finally:
        os.close(fd)


@dataclass
class _Staged:
    dir_fd: int
    name: str
    tmp: str
    data: bytes = field(repr=False)
    aside: str | None = None
    committed: bool = False


class _Transaction:
    """Temp files staged first, then moved into place; undone on any failure."""

    def __init__(self, root: int) -> None:
        self.root = root
        self.staged: dict[str, _Staged] = {}
        self.created_dirs: list[tuple[int, str]] = []
        self.dir_fds: dict[tuple[str, ...], int] = {}
        self.aside_relpaths: list[str] = []
        self.stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")

    def _dir(self, parts: tuple[str, ...], relpath: str) -> int:
        if parts in self.dir_fds:
            return self.dir_fds[parts]
        parent = self.root if not parts[:-1] else self._dir(parts[:-1], relpath)
        name = parts[-1]
        try:
            try:
                fd = os.open(name, _DIR_FLAGS, dir_fd=parent)
            except FileNotFoundError:
                os.mkdir(name, 0o700, dir_fd=parent)
                self.created_dirs.append((parent, name))
                fd = os.open(name, _DIR_FLAGS, dir_fd=parent)
                os.fchmod(fd, 0o700)
        except OSError as exc:
            raise _refuse(exc, relpath) from None
        self.dir_fds[parts] = fd
        return fd

    def stage_all(self, plans: list[PlannedWrite]) -> None:
        """Write and fsync every temporary file; a pool when there are many (fsyncs overlap).

        Directories are made first, in order; whatever happens (an error, Ctrl-C), every
        temporary file that was written is recorded before returning, so rollback finds it.
        """
        jobs = []
        for p in plans:
            parts = check_relpath(p.item.relpath)
            jobs.append((p, parts[-1], self._dir((PRIVATE_DIR, *parts[:-1]), p.item.relpath)))
        if len(jobs) < PARALLEL_STAGING:
            for p, name, dfd in jobs:
                tmp = fsutil.write_temp(dfd, p.item.data, 0o600, f"{PRIVATE_DIR}/{p.item.relpath}")
                self.staged[p.item.relpath] = _Staged(dfd, name, tmp, p.item.data)
            return
        pool = ThreadPoolExecutor(max_workers=STAGING_WORKERS, thread_name_prefix="keyvault-stage")
        futures = [(pool.submit(fsutil.write_temp, dfd, p.item.data, 0o600,
                                f"{PRIVATE_DIR}/{p.item.relpath}"), p, name, dfd)
                   for p, name, dfd in jobs]
        try:
            for future, *_ in futures:
                future.result()  # the first failure, in order
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            for future, p, name, dfd in futures:
                if future.done() and not future.cancelled() and future.exception() is None:
                    self.staged[p.item.relpath] = _Staged(dfd, name, future.result(),
                                                          p.item.data)

    def commit_one(self, p: PlannedWrite) -> None:
        entry = self.staged[p.item.relpath]
        where = f"{PRIVATE_DIR}/{p.item.relpath}"
        try:
            if p.action is Action.REPLACE:
                aside = f"{entry.name}.keyvault-old-{self.stamp}"
                os.link(entry.name, aside, src_dir_fd=entry.dir_fd, dst_dir_fd=entry.dir_fd,
                        follow_symlinks=False)
                entry.aside = aside
                os.rename(entry.tmp, entry.name, src_dir_fd=entry.dir_fd, dst_dir_fd=entry.dir_fd)
                self.aside_relpaths.append(p.item.relpath.rsplit("/", 1)[0] + "/" + aside
                                           if "/" in p.item.relpath else aside)
            else:
                os.link(entry.tmp, entry.name, src_dir_fd=entry.dir_fd, dst_dir_fd=entry.dir_fd,
                        follow_symlinks=False)
                os.unlink(entry.tmp, dir_fd=entry.dir_fd)
            entry.committed = True
        except FileExistsError:
            raise ConflictError(f"{where} appeared while restoring; nothing was changed",
                                hint="another process is writing keys: run again") from None
        except OSError as exc:
            raise _os_error(exc, where) from None

    def sync(self) -> None:
        for fd in self.dir_fds.values():
            with contextlib.suppress(OSError):
                os.fsync(fd)
        with contextlib.suppress(OSError):
            os.fsync(self.root)

    def verify(self) -> None:
        """Read every written file back: the bytes on disk must be the envelope's."""
        for relpath, entry in self.staged.items():
            ffd = os.open(entry.name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC,
                          dir_fd=entry.dir_fd)
            with os.fdopen(ffd, "rb") as fh:
                on_disk = fh.read(_MAX_EXISTING + 1)
            if not _same(on_disk, entry.data):
                raise IntegrityError(f"{PRIVATE_DIR}/{relpath} does not read back as written")

    def rollback(self) -> None:
        for entry in reversed(list(self.staged.values())):
            with contextlib.suppress(OSError):
                if entry.committed and entry.aside is not None:
                    os.rename(entry.aside, entry.name, src_dir_fd=entry.dir_fd,
                              dst_dir_fd=entry.dir_fd)
                elif entry.committed:
                    os.unlink(entry.name, dir_fd=entry.dir_fd)
                elif entry.aside is not None:
                    os.unlink(entry.aside, dir_fd=entry.dir_fd)
            with contextlib.suppress(OSError):
                os.unlink(entry.tmp, dir_fd=entry.dir_fd)
        self.aside_relpaths.clear()
        for parent, name in reversed(self.created_dirs):
            with contextlib.suppress(OSError):
                os.rmdir(name, dir_fd=parent)

    def close(self) -> None:
        for fd in self.dir_fds.values():
            with contextlib.suppress(OSError):
                os.close(fd)
        self.dir_fds.clear()
