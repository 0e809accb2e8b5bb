"""One daemon per state directory: an ``fcntl`` lock held for the process's lifetime.

The lock file holds the owner's PID (for messages only: the lock itself is
what counts, and the kernel releases it when the process dies, even by
SIGKILL, so a stale file never blocks a restart).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from pathlib import Path

from keyvault.errors import ConflictError, LocalIOError
from keyvault.fsutil import make_private_dirs, translate_os_error

LOCK_NAME = "daemon.lock"
_FLAGS = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC


class InstanceLock:
    """Held while the daemon runs; ``release()`` (or process exit) frees it."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path, self._fd = path, fd

    def release(self) -> None:
        if self._fd >= 0:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)
            os.close(self._fd)  # closing drops the flock
            self._fd = -1


def private_dir(path: Path) -> Path:
    """Create ``path`` (0700) if needed and make sure nobody else can read it."""
    try:
        make_private_dirs(path)
        st = path.lstat()
        if st.st_uid == os.geteuid() and st.st_mode & 0o077:
            path.chmod(0o700)
    except OSError as exc:
        raise translate_os_error(exc, path, "create state directory") from None
    return path


def acquire(state_dir: Path) -> InstanceLock:
    """Take the lock or raise ConflictError (exit 7) naming the PID that holds it."""
    path = private_dir(state_dir) / LOCK_NAME
    try:
        fd = os.open(path, _FLAGS, 0o600)
    except OSError as exc:
        raise translate_os_error(exc, path, "open lock file") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        pid = _read_pid(fd)
        os.close(fd)
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            owner = f" (pid {pid})" if pid else ""
            raise ConflictError(
                f"another keyvault daemon{owner} is already running with state directory "
                f"{state_dir}",
                hint="stop it first (systemctl --user stop keyvault-daemon), or give this one "
                "its own state directory (XDG_STATE_HOME)",
            ) from None
        raise LocalIOError(f"cannot lock {path}: {exc.strerror}") from None
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
    except OSError as exc:
        os.close(fd)
        raise translate_os_error(exc, path, "write lock file") from None
    return InstanceLock(path, fd)


def holder(state_dir: Path) -> int | None:
    """The PID of the running daemon for ``state_dir``, or None when nobody holds the lock."""
    path = state_dir / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            return _read_pid(fd) or -1
        return None
    finally:
        os.close(fd)


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None
