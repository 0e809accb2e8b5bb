"""Read one small regular file below a directory descriptor, never following a symlink.

Also :func:`inode_of`: which file a name below a directory descriptor points to.

Shared by the key scan and the metadata reader: open with ``O_NOFOLLOW`` and
``O_NONBLOCK`` (a FIFO swapped in after the ``lstat`` cannot block us),
re-check the type and size on the open descriptor, and never read more than
the limit, even if the file grows meanwhile.
"""

from __future__ import annotations

import errno
import os
import stat

FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_CHUNK = 64 * 1024


class ReadRefused(Exception):  # noqa: N818 - carries a ScanProblem code, not an error
    """Why a file was not read: ``code`` is a scan problem code, or ``missing``."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code, self.reason = code, reason


def why(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__


def read_regular(dir_fd: int, name: str, limit: int) -> bytes:
    """The bytes of ``name`` (at most ``limit``), or ReadRefused."""
    try:
        fd = os.open(name, FILE_FLAGS, dir_fd=dir_fd)
    except OSError as exc:
        codes = {errno.ELOOP: "symlink", errno.ENOENT: "missing"}
        code = codes.get(exc.errno or 0, "unreadable")
        raise ReadRefused(code, f"cannot open it ({why(exc)})") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ReadRefused("not-regular", "not a regular file")
        if st.st_size > limit:
            raise ReadRefused(
                "too-large",
                f"{st.st_size} bytes, more than the {limit} allowed, so it was not read",
            )
        chunks: list[bytes] = []
        size = 0
        # os.read(n) allocates n bytes up front: ask for what fstat says (plus one, to see
        # growth), then small chunks, never ``limit`` at once (a bulk backup re-reads
        # files from several threads).
        want = st.st_size + 1
        while size <= limit:
            chunk = os.read(fd, min(want, limit + 1 - size))
            want = _CHUNK
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as exc:
        raise ReadRefused("unreadable", f"cannot read it ({why(exc)})") from None
    finally:
        os.close(fd)
    if size > limit:
        raise ReadRefused("too-large", f"grew beyond {limit} bytes while being read")
    return b"".join(chunks)


def inode_of(dir_fd: int, name: str) -> tuple[int, int] | None:
    """(device, inode) of ``name`` below ``dir_fd``, a symlink itself and not its target;
    None if nothing is there. Lets an undo check a name still holds the file it expects."""
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino
