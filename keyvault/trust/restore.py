"""All-or-nothing restore of key files into a trust directory.

Every path below the trust directory is walked with directory file
descriptors and ``O_NOFOLLOW``, so a symlink planted inside the trust
directory is never followed out of it. Files are written to a temporary name
in their final directory (0600), fsynced, and then linked or renamed into
place; directories that had to be made are 0700. If anything fails, or the
user presses Ctrl-C, everything already moved into place is undone: new files
removed, replaced files put back, temporary files and new directories
removed. An existing file is never replaced unless the caller asked for it,
and then it is kept aside as ``<name>.keyvault-old-<UTC time>-<random>`` (unique:
two restores in one second each keep their own). The written bytes are read
back and compared before the restore counts as done, because Notary rewrites
key files on first touch.

Moving into place and undoing run with SIGINT and SIGTERM held back
(:mod:`keyvault.signals`); a signal that arrives meanwhile undoes the restore
once every step has run. The undo never trusts what it believes it did: it
asks which inode each name points to now (the file it staged, the original it
linked aside) and only renames or removes a name that holds what it expects,
so the original always survives, under its name or aside, and no new file is
left behind.

Items arrive as an iterable and each one is staged as soon as it arrives, so
a restore of thousands of keys holds only the keys in flight in memory: what
is kept per key is its path and a keyed digest of its bytes, which is what the
read-back compares against. Those records, the plan and what to undo, are
spooled (:mod:`keyvault.spool`): a window of them in memory, the rest in an
unnamed 0600 file, so memory stays flat however many keys come back, and the
undo still reaches every file moved into place. Temporary files a killed
restore left behind (they hold key bytes) are removed by the next restore from
each directory it writes to.
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
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from keyvault import fsutil, signals
from keyvault.errors import (
    AccessDeniedError,
    ConflictError,
    IntegrityError,
    KeyvaultError,
    LocalIOError,
    UsageError,
)
from keyvault.names import validate_gun
from keyvault.spool import Spool, keyed_digest
from keyvault.trust.keyindex import TrustIndex, index_trust_dir
from keyvault.trust.pins import root_version
from keyvault.trust.safefs import ReadRefused, inode_of, read_regular

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
    KEPT = "kept"  # a trust pin: a newer one is on disk and stays


@dataclass(frozen=True)
class RestoreItem:
    """One key file to put back: its path under ``private/`` and its bytes."""

    relpath: str
    data: bytes = field(repr=False)
    label: str = ""  # e.g. "targets key 1a2b3c… of example.com/app", for messages
    key_id: str | None = None  # to find the same key under another path (keyindex)
    #: A trust pin's root version (its relpath is then ``tuf/<gun>/metadata/root.json``,
    #: under the trust directory, not ``private/``); None for a key file.
    pin_version: int | None = None


@dataclass(frozen=True)
class PlannedWrite:
    """What the restore does with one key file; the key's bytes are not kept here."""

    relpath: str
    label: str
    action: Action
    reason: str = ""


#: The actions that put a file in place.
WRITES = (Action.CREATE, Action.REPLACE)


def planned_spool() -> Spool[PlannedWrite]:
    """Where a restore's plan goes: one record per file, paths and actions only."""
    return Spool(
        lambda p: [p.relpath, p.label, p.action.value, p.reason],
        lambda r: PlannedWrite(r[0], r[1], Action(r[2]), r[3]),
    )


@dataclass(frozen=True)
class RestoreResult:
    #: In item order; spooled (read it with ``iter``, as often as needed; ``close`` it).
    planned: Spool[PlannedWrite]
    kept_aside: tuple[str, ...]  # relpaths of old files kept beside replaced ones


def check_relpath(relpath: str) -> list[str]:
    """Split a relative key path, refusing anything that could leave ``private/``."""
    parts = relpath.split("/")
    if (
        not relpath
        or relpath.startswith("/")
        or "\\" in relpath
        or not relpath.isprintable()
        or any(p in ("", ".", "..") for p in parts)
        or not relpath.endswith(".key")
        or len(relpath) > 512
    ):
        raise UsageError(f"refusing unsafe key path {relpath[:80]!r}")
    return parts


def is_pin_relpath(relpath: str) -> bool:
    """A trust pin's path (``tuf/<gun>/metadata/root.json``); a key's ends in ``.key``."""
    return relpath.startswith("tuf/") and relpath.endswith("/metadata/root.json")


def tree_parts(relpath: str) -> list[str]:
    """The path's components below the trust directory: a key file's under ``private/``,
    a trust pin's under ``tuf/`` (its GUN checked like every GUN); anything else refused."""
    if not is_pin_relpath(relpath):
        return [PRIVATE_DIR, *check_relpath(relpath)]
    try:
        validate_gun(relpath[len("tuf/") : -len("/metadata/root.json")])
    except UsageError:
        raise UsageError(f"refusing unsafe trust pin path {relpath[:80]!r}") from None
    return relpath.split("/")


def shown_path(relpath: str) -> str:
    """How messages name a file the restore writes, relative to the trust directory."""
    return relpath if is_pin_relpath(relpath) else f"{PRIVATE_DIR}/{relpath}"


def plan_restore(
    trust_dir: Path, items: Iterable[RestoreItem], *, force: bool
) -> Spool[PlannedWrite]:
    """Compare each item with what is on disk; nothing is written. (Spooled: ``close`` it.)"""
    seen = _Seen()
    plan = planned_spool()
    try:
        with _open_trust(trust_dir, create=False) as root:
            on_disk = index_trust_dir(root)
            for item in items:
                plan.append(_plan_unique(root, item, force, seen, on_disk))
    except BaseException:
        plan.close()
        raise
    return plan


def apply_restore(trust_dir: Path, items: Iterable[RestoreItem], *, force: bool) -> RestoreResult:
    """Stage each item as it arrives, then move everything into place or nothing.

    A conflict is reported only once every item has been seen (so an unreadable
    envelope later in ``items`` still wins), and then nothing is moved into place.
    """
    made = _missing_dirs(trust_dir)
    try:
        return _apply(trust_dir, items, force=force)
    except BaseException:
        for directory in reversed(made):
            with contextlib.suppress(OSError):
                directory.rmdir()
        raise


def _missing_dirs(trust_dir: Path) -> list[Path]:
    """The trust directory and those of its parents that do not exist yet, outermost first."""
    missing: list[Path] = []
    for directory in (trust_dir, *trust_dir.parents):
        if os.path.lexists(directory):
            break
        missing.append(directory)
    return missing[::-1]


def _apply(trust_dir: Path, items: Iterable[RestoreItem], *, force: bool) -> RestoreResult:
    with _open_trust(trust_dir, create=True) as root, _lock(root, trust_dir):
        assert root is not None  # created above
        txn = _Transaction(root)
        plan = planned_spool()
        try:
            conflicts = _Conflicts()
            seen = _Seen()
            on_disk = index_trust_dir(root)
            for item in items:
                planned = _plan_unique(root, item, force, seen, on_disk)
                plan.append(planned)
                if planned.action is Action.CONFLICT:
                    conflicts.note(planned)
                elif planned.action in WRITES and not conflicts.count:
                    txn.stage(item)
            txn.finish_staging()
            conflicts.check()
            txn.commit(p for p in plan if p.action in WRITES)
        except BaseException:
            plan.close()
            with signals.held():
                txn.rollback()
            raise
        finally:
            txn.close()
        return RestoreResult(plan, tuple(txn.aside_relpaths))


@dataclass
class _Conflicts:
    """How many conflicts a restore met, and the first of each sort (what the error shows)."""

    count: int = 0
    pins: int = 0
    first: PlannedWrite | None = None
    elsewhere: int = 0
    first_elsewhere: PlannedWrite | None = None

    def note(self, planned: PlannedWrite) -> None:
        self.count += 1
        self.pins += is_pin_relpath(planned.relpath)
        self.first = self.first or planned
        if planned.reason.startswith(ELSEWHERE):
            self.elsewhere += 1
            self.first_elsewhere = self.first_elsewhere or planned

    def check(self) -> None:
        """Raise the conflict that stops the restore, if any."""
        if self.first_elsewhere is not None:
            first = self.first_elsewhere
            raise ConflictError(
                f"{self.elsewhere} key(s) already exist in the trust directory under "
                f"another path, e.g. {first.label or first.relpath}: "
                f"{first.reason}; notary would migrate one file over the other, "
                "so nothing was restored",
                hint="restore into a fresh directory, or move the existing file away "
                "first (--force does not apply: it replaces the same path only)",
            )
        if self.first is not None:
            raise ConflictError(
                f"{self._counted()} already exist with different bytes, e.g. "
                f"{shown_path(self.first.relpath)}"
                f"{_why(self.first)}; nothing was restored",
                hint="use --force to replace them (the old files are kept aside), "
                "or --dry-run to see every difference",
            )

    def _counted(self) -> str:
        """``3 key file(s)``, ``1 trust pin(s)``, or both."""
        parts = [
            f"{n} {what}"
            for n, what in ((self.count - self.pins, "key file(s)"), (self.pins, "trust pin(s)"))
            if n
        ]
        return " and ".join(parts)


def _why(planned: PlannedWrite) -> str:
    """A pin's conflict says which versions differ; a key's reason adds nothing."""
    return f" ({planned.reason})" if is_pin_relpath(planned.relpath) else ""


#: The reason of a conflict with the same key ID under another path.
ELSEWHERE = "already present as "


@dataclass
class _Seen:
    """The paths and key IDs a restore has planned so far (sets: a bulk restore stays linear)."""

    relpaths: set[str] = field(default_factory=set)
    by_key_id: dict[str, str] = field(default_factory=dict)


def _plan_unique(
    root: int | None, item: RestoreItem, force: bool, seen: _Seen, on_disk: TrustIndex
) -> PlannedWrite:
    tree_parts(item.relpath)  # before the path is shown in any message
    if item.relpath in seen.relpaths:  # before reading the file on disk again
        raise ConflictError(
            f"two selected keys would both be restored to {item.relpath}",
            hint="narrow the selection with --gun, --role or --key-id",
        )
    key_id = item.key_id
    if key_id is not None and key_id in seen.by_key_id:
        raise ConflictError(
            f"key {key_id} would be restored twice, to "
            f"{seen.by_key_id[key_id]} and {item.relpath}; notary would "
            "migrate one over the other",
            hint="narrow the selection with --gun, --role or --key-id",
        )
    seen.relpaths.add(item.relpath)
    if key_id is not None:
        seen.by_key_id[key_id] = item.relpath
    others = [p for p in on_disk.by_key_id.get(key_id or "", []) if p != item.relpath]
    if others:
        return PlannedWrite(
            item.relpath, item.label, Action.CONFLICT, f"{ELSEWHERE}{PRIVATE_DIR}/{others[0]}"
        )
    # No read per key in a fresh directory (the index knows private/, not a pin's tuf/).
    if item.pin_version is None and on_disk.surely_absent(item.relpath):
        return PlannedWrite(item.relpath, item.label, Action.CREATE)
    return _plan_one(root, item, force)


def _plan_one(root: int | None, item: RestoreItem, force: bool) -> PlannedWrite:
    parts = tree_parts(item.relpath)
    if root is None:
        return PlannedWrite(item.relpath, item.label, Action.CREATE)
    existing = _read_existing(root, parts, item.relpath)
    if existing is None:
        return PlannedWrite(item.relpath, item.label, Action.CREATE)
    if _same(_digest(existing), _digest(item.data)):
        return PlannedWrite(
            item.relpath, item.label, Action.UNCHANGED, "identical file already present"
        )
    if item.pin_version is not None:
        return _plan_pin(item, existing, force)
    if force:
        return PlannedWrite(
            item.relpath, item.label, Action.REPLACE, "different bytes; old file kept aside"
        )
    return PlannedWrite(item.relpath, item.label, Action.CONFLICT, "exists with different bytes")


def _plan_pin(item: RestoreItem, existing: bytes, force: bool) -> PlannedWrite:
    """A different pin on disk: a newer root stays; any other is never replaced silently."""
    assert item.pin_version is not None
    try:
        on_disk: int | None = root_version(existing)
    except UsageError:
        on_disk = None  # not a root.json notary could use: still never replaced silently
    if on_disk is not None and on_disk > item.pin_version:
        return PlannedWrite(
            item.relpath,
            item.label,
            Action.KEPT,
            f"a newer pin is on disk (root version {on_disk}; the backup's "
            f"is {item.pin_version}); kept",
        )
    what = f"root version {on_disk}" if on_disk is not None else "not a readable root.json"
    reason = f"a different pin is on disk ({what}; the backup's is version {item.pin_version})"
    if force:
        return PlannedWrite(
            item.relpath, item.label, Action.REPLACE, f"{reason}; old file kept aside"
        )
    return PlannedWrite(item.relpath, item.label, Action.CONFLICT, reason)


def _digest(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def _same(digest_a: bytes, digest_b: bytes) -> bool:
    return hmac.compare_digest(digest_a, digest_b)


def _read_existing(root: int, parts: list[str], relpath: str) -> bytes | None:
    """The bytes at ``parts`` below ``root`` without following links; None if absent.

    The file itself is read by safefs.read_regular (non-blocking open, type and size
    checked on the open descriptor), so a FIFO or link swapped in cannot hang or
    redirect the restore.
    """
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
            return read_regular(fd, parts[-1], _MAX_EXISTING)
        except ReadRefused as refused:
            if refused.code == "missing":
                return None
            if refused.code == "too-large":
                return b""  # larger than any key file: certainly different from ours
            if refused.code in ("symlink", "not-regular"):
                raise ConflictError(
                    f"{shown_path(relpath)} exists and is not a regular "
                    "file (a symlink?); refusing to touch it"
                ) from None
            raise AccessDeniedError(
                f"cannot read {shown_path(relpath)} ({refused.reason})",
                hint="check the trust directory's owner and permissions",
            ) from None
    finally:
        os.close(fd)


def _refuse(exc: OSError, relpath: str) -> KeyvaultError:
    if exc.errno in (errno.ELOOP, errno.ENOTDIR):
        return ConflictError(
            f"a directory on the way to {shown_path(relpath)} is a symlink "
            "or a file; refusing to follow it"
        )
    return _os_error(exc, shown_path(relpath))


def _os_error(exc: OSError, where: str) -> KeyvaultError:
    if exc.errno in (errno.EACCES, errno.EPERM):
        return AccessDeniedError(
            f"permission denied writing {where}",
            hint="check the trust directory's owner and permissions",
        )
    if exc.errno == errno.ENOSPC:
        return LocalIOError(
            f"no space left on device writing {where}; nothing was changed",
            hint="free some space and run the restore again",
        )
    if exc.errno == errno.EROFS:
        return LocalIOError(f"read-only file system at {where}; nothing was changed")
    return LocalIOError(f"could not write {where}: {os.strerror(exc.errno or 0)}")


@contextlib.contextmanager
def _open_trust(trust_dir: Path, *, create: bool) -> Iterator[int | None]:
    """A descriptor of the trust directory (made 0700 with its parents if asked)."""
    try:
        if create:  # exist_ok: a racing restore made it first (then its lock decides)
            fsutil.make_private_dirs(trust_dir)
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
    """One restore at a time per trust directory (F12).

    The lock file is removed when the restore ends, whether it worked or not, so
    nothing of keyvault's stays in the user's trust directory (and a failed restore
    leaves it exactly as it was). It is removed while still locked, and whoever
    locks it checks that the name still points at what they locked, so removing it
    never lets two restores in at once.
    """
    assert root is not None
    fd = _take_lock(root, trust_dir)
    try:
        try:
            yield
        finally:
            with contextlib.suppress(OSError):
                os.unlink(LOCK_NAME, dir_fd=root)  # still ours: checked when locked
    finally:
        os.close(fd)


def _take_lock(root: int, trust_dir: Path) -> int:
    """The locked lock file's descriptor; ConflictError while another restore holds it.

    A name found removed (or replaced) after locking belonged to a restore that just
    ended: open it again, a few times.
    """
    shown = str(trust_dir / LOCK_NAME)
    flags = os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_CREAT
    for _ in range(5):
        try:
            fd = os.open(LOCK_NAME, flags, 0o600, dir_fd=root)
        except OSError as exc:
            raise _os_error(exc, shown) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            held, named = os.fstat(fd), os.stat(LOCK_NAME, dir_fd=root, follow_symlinks=False)
            if (held.st_dev, held.st_ino) == (named.st_dev, named.st_ino):
                return fd
        except BlockingIOError:
            os.close(fd)
            raise ConflictError(
                f"another keyvault process is restoring into {trust_dir}",
                hint="wait for it to finish, then run again",
            ) from None
        except FileNotFoundError:
            pass
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)  # removed by a restore that just ended: take the new one
    raise ConflictError(
        f"another keyvault process is restoring into {trust_dir}",
        hint="wait for it to finish, then run again",
    )


def _remove_leftovers(dir_fd: int) -> None:
    """Remove temporary files a killed restore left in a directory this one writes to.

    They hold key bytes. Only a restore writes them into the trust directory, and this
    one holds the lock and has not staged anything here yet, so every one is garbage.
    """
    with contextlib.suppress(OSError):  # best effort: never a reason to fail the restore
        for name in os.listdir(dir_fd):
            if fsutil.is_temp_name(name):
                with contextlib.suppress(OSError):
                    if stat.S_ISREG(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode):
                        os.unlink(name, dir_fd=dir_fd)


_Inode = tuple[int, int]  # (st_dev, st_ino): which file a name points to


@dataclass
class _Staged:
    """A rollback record: names, inodes and a keyed digest, never key bytes (spooled)."""

    relpath: str
    dir_fd: int
    name: str
    tmp: str
    digest: bytes = field(repr=False)  # keyed digest of the bytes written, for the read-back
    staged: _Inode | None = None  # the temporary file, wherever it is linked now
    aside: str | None = None  # named before it is made, so the undo looks for it
    original: _Inode | None = None  # the file that was at ``name`` when it was linked aside


def _write_staged(dir_fd: int, data: bytes, shown: str) -> tuple[str, _Inode | None]:
    """A fsynced temporary file and the inode it is (the undo checks a name still is it).
    Both in the staging pool's thread: the thread that hands keys on does neither."""
    tmp = fsutil.write_temp(dir_fd, data, 0o600, shown)
    try:
        return tmp, inode_of(dir_fd, tmp)
    except BaseException:  # not recorded anywhere yet: the undo could not find it
        with contextlib.suppress(OSError):
            os.unlink(tmp, dir_fd=dir_fd)
        raise


def _staged_spool() -> Spool[_Staged]:
    def encode(e: _Staged) -> list[object]:
        return [e.relpath, e.dir_fd, e.name, e.tmp, e.digest.hex(), e.staged, e.aside, e.original]

    def inode(value: list[int] | None) -> _Inode | None:
        return None if value is None else (value[0], value[1])

    def decode(r: list[Any]) -> _Staged:
        return _Staged(r[0], r[1], r[2], r[3], bytes.fromhex(r[4]), inode(r[5]), r[6], inode(r[7]))

    return Spool(encode, decode)


#: write (its temporary file and inode), relpath, dir fd, name, digest
_Pending = tuple[Future[tuple[str, _Inode | None]], str, int, str, bytes]


class _Transaction:
    """Temp files staged first, then moved into place; undone on any failure.

    ``staged`` holds a record per temporary file, in staging order; ``committed`` the same
    records, updated, for the first of them as each is moved into place (appended before
    the move, so the undo knows of every file it must put back). Both are spooled.
    """

    def __init__(self, root: int) -> None:
        self.root = root
        self.staged: Spool[_Staged] = _staged_spool()
        self.committed: Spool[_Staged] = _staged_spool()
        self._to_commit: Iterator[_Staged] = iter(())
        self.created_dirs: list[tuple[int, str]] = []
        self.dir_fds: dict[tuple[str, ...], int] = {}
        self.aside_relpaths: list[str] = []
        self.stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        self._count = 0
        self._pool: ThreadPoolExecutor | None = None
        self._pending: deque[_Pending] = deque()

    def _dir(self, parts: tuple[str, ...], relpath: str) -> int:
        if parts in self.dir_fds:
            return self.dir_fds[parts]
        parent = self.root if not parts[:-1] else self._dir(parts[:-1], relpath)
        name = parts[-1]
        try:
            try:
                fd = os.open(name, _DIR_FLAGS, dir_fd=parent)
                _remove_leftovers(fd)
            except FileNotFoundError:
                os.mkdir(name, 0o700, dir_fd=parent)
                self.created_dirs.append((parent, name))
                fd = os.open(name, _DIR_FLAGS, dir_fd=parent)
                os.fchmod(fd, 0o700)
        except OSError as exc:
            raise _refuse(exc, relpath) from None
        self.dir_fds[parts] = fd
        return fd

    def stage(self, item: RestoreItem) -> None:
        """Write ``item`` to a fsynced temporary file beside its final name.

        The first few are written here; from the PARALLEL_STAGING-th on a small pool
        writes them so their fsyncs overlap, with at most 2 * STAGING_WORKERS waiting
        (the bytes of those are all that is held).
        """
        parts = tree_parts(item.relpath)
        name, shown = parts[-1], shown_path(item.relpath)
        dir_fd = self._dir(tuple(parts[:-1]), item.relpath)
        digest = keyed_digest(item.data)
        self._count += 1
        if self._count < PARALLEL_STAGING:
            tmp, inode = _write_staged(dir_fd, item.data, shown)
            self.staged.append(_Staged(item.relpath, dir_fd, name, tmp, digest, inode))
            return
        if self._pool is None:
            self._pool = ThreadPoolExecutor(
                max_workers=STAGING_WORKERS, thread_name_prefix="keyvault-stage"
            )
        write = self._pool.submit(_write_staged, dir_fd, item.data, shown)
        self._pending.append((write, item.relpath, dir_fd, name, digest))
        while len(self._pending) > 2 * STAGING_WORKERS:
            self._settle_oldest()

    def _settle_oldest(self) -> None:
        """Record the oldest pooled write. It leaves the queue only once it has a result,
        so a Ctrl-C while waiting still lets _stop_pool find its temporary file."""
        write, relpath, dir_fd, name, digest = self._pending[0]
        tmp, inode = write.result()
        self._pending.popleft()
        self.staged.append(_Staged(relpath, dir_fd, name, tmp, digest, inode))

    def finish_staging(self) -> None:
        """Wait for the pool's writes (the first failure is raised), then end the pool."""
        while self._pending:
            self._settle_oldest()
        self._stop_pool()

    def _stop_pool(self) -> None:
        """Stop the pool and record every temporary file it did write (for the rollback)."""
        if self._pool is None:
            return
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._pool = None
        while self._pending:
            write, relpath, dir_fd, name, digest = self._pending.popleft()
            if write.done() and not write.cancelled() and write.exception() is None:
                tmp, inode = write.result()
                self.staged.append(_Staged(relpath, dir_fd, name, tmp, digest, inode))

    def commit(self, writes: Iterable[PlannedWrite]) -> None:
        """Move every staged file into place and check it, or undo it all.

        Signals are held for the whole of it: one that arrives meanwhile undoes the
        restore at the end (a restore cut short leaves the directory as it was, and the
        user is told nothing was restored), then interrupts as usual.
        """
        with signals.held() as held:
            try:
                self._to_commit = iter(self.staged)  # the same order as ``writes``
                for planned in writes:
                    self._commit_one(planned)
                self.sync()
                self.verify()
            except BaseException:
                self.rollback()
                raise
            interrupted = held.pending()
            if interrupted:
                self.rollback()
        if interrupted:  # its handler did not raise: still, nothing was restored
            raise KeyboardInterrupt

    def _commit_one(self, p: PlannedWrite) -> None:
        entry = next(self._to_commit)
        if entry.relpath != p.relpath:  # never: both follow the items' order
            raise RuntimeError("staged and planned writes out of step")
        where = shown_path(p.relpath)
        try:
            if p.action is Action.REPLACE:
                self._link_aside(entry, where)  # records ``entry`` in ``committed``
                os.rename(entry.tmp, entry.name, src_dir_fd=entry.dir_fd, dst_dir_fd=entry.dir_fd)
                assert entry.aside is not None
                self.aside_relpaths.append(
                    p.relpath.rsplit("/", 1)[0] + "/" + entry.aside
                    if "/" in p.relpath
                    else entry.aside
                )
            else:
                self.committed.append(entry)
                os.link(
                    entry.tmp,
                    entry.name,
                    src_dir_fd=entry.dir_fd,
                    dst_dir_fd=entry.dir_fd,
                    follow_symlinks=False,
                )
                os.unlink(entry.tmp, dir_fd=entry.dir_fd)
        except FileExistsError:
            raise ConflictError(
                f"{where} appeared while restoring; nothing was changed",
                hint="another process is writing keys: run again",
            ) from None
        except OSError as exc:
            raise _os_error(exc, where) from None

    def _link_aside(self, entry: _Staged, where: str) -> None:
        """A second name for the file about to be replaced: the copy the undo puts back."""
        original = inode_of(entry.dir_fd, entry.name)
        if original is None:
            raise ConflictError(
                f"{where} disappeared while restoring; nothing was changed",
                hint="another process is writing keys: run again",
            )
        entry.original = original
        entry.aside = f"{entry.name}.keyvault-old-{self.stamp}-{os.urandom(4).hex()}"
        self.committed.append(entry)
        os.link(
            entry.name,
            entry.aside,
            src_dir_fd=entry.dir_fd,
            dst_dir_fd=entry.dir_fd,
            follow_symlinks=False,
        )
        if inode_of(entry.dir_fd, entry.aside) != original:
            raise ConflictError(
                f"{where} changed while restoring; nothing was changed",
                hint="another process is writing keys: run again",
            )

    def sync(self) -> None:
        for fd in self.dir_fds.values():
            with contextlib.suppress(OSError):
                os.fsync(fd)
        with contextlib.suppress(OSError):
            os.fsync(self.root)

    def verify(self) -> None:
        """Read every written file back: its bytes must hash to what was staged."""
        for entry in self.staged:
            try:
                on_disk = read_regular(entry.dir_fd, entry.name, _MAX_EXISTING)
            except ReadRefused:
                on_disk = b""  # gone, replaced or grown: not what was written
            if not _same(keyed_digest(on_disk), entry.digest):
                raise IntegrityError(f"{shown_path(entry.relpath)} does not read back as written")

    def rollback(self) -> None:
        """Undo whatever got done, judged by what each name points to now.

        Safe to run at any point, and twice: the original is put back only from an
        aside that still is it, over a name that holds what this restore staged;
        a name is removed only when it is this restore's file.
        """
        self._stop_pool()
        committed = iter(self.committed)  # the first of ``staged``, as they were moved
        for staged in self.staged:  # each its own name: the order does not matter
            entry = next(committed, staged)
            with contextlib.suppress(OSError):
                self._undo(entry)
        self.aside_relpaths.clear()
        for parent, name in reversed(self.created_dirs):
            with contextlib.suppress(OSError):
                os.rmdir(name, dir_fd=parent)

    @staticmethod
    def _undo(entry: _Staged) -> None:
        fd = entry.dir_fd
        at_name = inode_of(fd, entry.name)
        ours = entry.staged is not None and at_name == entry.staged
        if (
            entry.aside is not None
            and entry.original is not None
            and inode_of(fd, entry.aside) == entry.original
        ):
            if ours:  # the new file is in place: the original goes back over it
                os.rename(entry.aside, entry.name, src_dir_fd=fd, dst_dir_fd=fd)
            elif at_name == entry.original:  # never replaced: the aside is a spare name
                os.unlink(entry.aside, dir_fd=fd)
            # else someone else's file is at the name: the aside stays, the only original
        elif ours and entry.aside is None:  # created by this restore
            os.unlink(entry.name, dir_fd=fd)
        if entry.staged is not None and inode_of(fd, entry.tmp) == entry.staged:
            os.unlink(entry.tmp, dir_fd=fd)

    def close(self) -> None:
        self._stop_pool()
        self.staged.close()
        self.committed.close()
        for fd in self.dir_fds.values():
            with contextlib.suppress(OSError):
                os.close(fd)
        self.dir_fds.clear()
