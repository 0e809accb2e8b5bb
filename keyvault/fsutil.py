"""Safe local writes: private directories, atomic create-only or replacing writes.

Shared by the file store and the restore code, which must never leave a
half-written file behind (T8), never follow a symlink planted where a file or
directory is expected (T9, B12), and turn disk-full, read-only and permission
failures into errors that name the path and say what to do (B29-B31, F09-F10).

The recipe for a write: a temporary file in the target directory (same file
system, so the final step is atomic), created with ``O_CREAT|O_EXCL|O_NOFOLLOW``
and set to the wanted mode whatever the umask; every byte written; fsync; then
``link`` to the final name (create-only: an existing name, even a dangling
symlink, is a conflict) or ``rename`` over it; fsync of the directory. The
temporary file is removed on every path out, including Ctrl-C. Its name starts
with :data:`TEMP_PREFIX`, so a crash leftover is recognisable and never taken
for real data.

Directories given as a ``Path`` are opened without following a symlink in
their last component; their ancestors are the caller's choice (like
``mkdir -p``, a home directory may well be a symlink).
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path

from keyvault.errors import (
    AccessDeniedError,
    ConflictError,
    InvalidInputError,
    KeyvaultError,
    LocalIOError,
    NotFoundError,
    UsageError,
)

#: Name prefix of temporary files; readers skip such files (crash leftovers).
TEMP_PREFIX = ".keyvault-tmp-"

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
_NOFOLLOW_DIR_FLAGS = _DIR_FLAGS | os.O_NOFOLLOW
_TEMP_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC

Directory = int | Path


def translate_os_error(exc: OSError, path: str | os.PathLike[str], action: str) -> KeyvaultError:
    """Our error for a failed file-system call on ``path`` (``action``: "write", "create"...).

    Only the path and the errno's meaning go into the message, never data.
    """
    code = exc.errno
    where = f"cannot {action} {os.fspath(path)}"
    if code in (errno.EACCES, errno.EPERM):
        return AccessDeniedError(
            f"{where}: permission denied",
            hint="check the owner and mode of the directory, or run as the user who owns it",
        )
    if code in (errno.ENOSPC, errno.EDQUOT):
        return LocalIOError(
            f"{where}: no space left on the device (or quota exceeded)",
            hint="free some space and run the command again; nothing was half-written",
        )
    if code == errno.EROFS:
        return LocalIOError(
            f"{where}: the file system is read-only",
            hint="remount it read-write or choose another directory",
        )
    if code == errno.EIO:
        return LocalIOError(
            f"{where}: I/O error from the device",
            hint="check the disk (dmesg), then run the command again",
        )
    if code == errno.ENOENT:
        return NotFoundError(f"{where}: no such file or directory")
    if code == errno.EEXIST:
        return ConflictError(f"{where}: it already exists")
    if code in (errno.ELOOP, errno.ENOTDIR):
        return UsageError(
            f"{where}: a path component is a symbolic link or not a directory",
            hint="keyvault does not follow symbolic links here",
        )
    if code == errno.EISDIR:
        return ConflictError(f"{where}: a directory is in the way")
    reason = os.strerror(code) if code is not None else type(exc).__name__
    return LocalIOError(f"{where}: {reason}")


def fd_path(fd: int) -> str:
    """The path a directory descriptor names, for messages only (Linux: /proc)."""
    try:
        return str(Path(f"/proc/self/fd/{fd}").readlink())
    except OSError:
        return f"<directory fd {fd}>"


def open_subdir(
    base: Directory,
    parts: Sequence[str] = (),
    *,
    create: bool = False,
    unexpected: type[KeyvaultError] = UsageError,
) -> int:
    """Open ``base/parts[0]/parts[1]/...`` as a directory, following no symlink on the way.

    With ``create``, missing components are made 0700 (whatever the umask) and
    their parents fsynced. A component that is a symlink or not a directory
    raises ``unexpected`` (a store passes IntegrityError: someone tampered).
    The caller closes the returned descriptor.
    """
    fd = _open_base(base)
    try:
        for part in parts:
            _check_component(part)
            child = _open_child_dir(fd, part, create=create, unexpected=unexpected)
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


def make_private_dirs(path: Path) -> None:
    """``mkdir -p`` in which every directory made, the parents too, is 0700.

    ``Path.mkdir(mode=0o700, parents=True)`` makes the parents 0777 less the
    umask: 0777 under ``umask 000``. Existing directories are used as they are
    (a symlink to one too: the user's choice), like ``exist_ok=True``; so is
    FileExistsError when ``path`` is something else.
    """
    missing: list[Path] = []
    for directory in (path, *path.parents):
        if os.path.lexists(directory):
            break
        missing.append(directory)
    for directory in reversed(missing):
        with suppress(FileExistsError):  # made meanwhile by a racing process
            directory.mkdir(mode=0o700)  # one level: no parents made 0777
    if not path.is_dir():
        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(path))


def ensure_private_dir(path: Path) -> None:
    """Make ``path`` and its missing parents as directories 0700, refusing symlinks.

    Existing ancestors are used as they are (they may be symlinks the user
    chose); every directory this creates, and ``path`` itself, must be a real
    directory. An existing ``path`` keeps its mode.
    """
    target = Path(os.path.abspath(path))  # noqa: PTH100 (lexical: resolve() would follow)
    missing: list[str] = []
    anchor = target
    while not os.path.lexists(anchor):
        if anchor.parent == anchor:
            break
        missing.append(anchor.name)
        anchor = anchor.parent
    try:
        fd = os.open(anchor, _NOFOLLOW_DIR_FLAGS if not missing else _DIR_FLAGS)
    except OSError as exc:
        raise translate_os_error(exc, anchor, "open directory") from None
    try:
        os.close(open_subdir(fd, list(reversed(missing)), create=True))
    finally:
        os.close(fd)


def write_file_atomic(
    directory: Directory,
    name: str,
    data: bytes,
    *,
    mode: int = 0o600,
    exclusive: bool = True,
    sync_dir: bool = True,
) -> None:
    """Write ``directory/name`` in one step: readers see no file or the whole file.

    ``exclusive`` (the default) never replaces anything: an existing name
    raises ConflictError. Otherwise the name is atomically replaced (a
    symlink there is replaced itself, never followed). ``sync_dir=False``: the
    caller writes many files there and calls fsync_dir once after the last.
    """
    _check_component(name)
    with _directory_fd(directory) as dir_fd:
        shown = str(Path(fd_path(dir_fd)) / name)
        temp = write_temp(dir_fd, data, mode, shown)
        try:
            if exclusive:
                os.link(temp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd, follow_symlinks=False)
            else:
                os.replace(temp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except OSError as exc:
            _remove_quietly(dir_fd, temp)
            if exc.errno == errno.EEXIST:
                raise ConflictError(f"{shown} already exists; it was left untouched") from None
            raise translate_os_error(exc, shown, "write") from None
        except BaseException:
            _remove_quietly(dir_fd, temp)
            raise
        if exclusive:
            _remove_quietly(dir_fd, temp)
        if sync_dir:
            fsync_dir(dir_fd, shown)


def fsync_dir(directory: Directory, shown: str) -> None:
    """Make a directory's new entries durable (a rename is not, until this)."""
    with _directory_fd(directory) as dir_fd:
        try:
            os.fsync(dir_fd)
        except OSError as exc:
            raise translate_os_error(exc, shown, "sync the directory of") from None


def is_temp_name(name: str) -> bool:
    return name.startswith(TEMP_PREFIX)


def read_at_most(fd: int, limit: int) -> bytes:
    """Up to ``limit`` bytes from ``fd``: a file that grew after its fstat cannot flood us."""
    chunks: list[bytes] = []
    total = 0
    while total < limit:
        chunk = os.read(fd, min(65536, limit - total))
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
    return b"".join(chunks)


def read_private_file(
    path: str | os.PathLike[str],
    what: str,
    limit: int,
    *,
    private: bool = True,
    missing_hint: str | None = None,
) -> bytes:
    """The bytes of a small file holding a secret (a PIN, a token, an identity).

    Opened without blocking (a FIFO swapped in cannot hang us) and checked on the
    open descriptor: a regular file of at most ``limit`` bytes that group and others
    can neither read nor write (``private``), or at least cannot write.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except FileNotFoundError:
        raise NotFoundError(f"{what} {path} does not exist", hint=missing_hint) from None
    except PermissionError:
        raise AccessDeniedError(f"{what} {path} is not readable") from None
    except OSError as exc:
        raise translate_os_error(exc, path, f"read {what}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UsageError(f"{what} {path} is not a regular file")
        if st.st_mode & (0o077 if private else 0o022):
            raise AccessDeniedError(
                f"{what} {path} is {'accessible' if private else 'writable'} by group or "
                "others; refusing to use it",
                hint=f"chmod 600 {path}",
            )
        if private:  # a secret that steers keyvault (identity pins, sealer, marks, tokens)
            refuse_if_others_can_change(path, st, what)
        data = b"" if st.st_size > limit else read_at_most(fd, limit + 1)
    except OSError as exc:
        raise translate_os_error(exc, path, f"read {what}") from None
    finally:
        os.close(fd)
    if st.st_size > limit or len(data) > limit:
        raise InvalidInputError(f"{what} {path} is too large")
    return data


def write_temp(dir_fd: int, data: bytes, mode: int, shown: str) -> str:
    """A fully written, fsynced temp file in ``dir_fd``; its name. Removed if anything fails."""
    temp = TEMP_PREFIX + os.urandom(8).hex()
    try:
        fd = os.open(temp, _TEMP_FLAGS, 0o600, dir_fd=dir_fd)
    except OSError as exc:
        raise translate_os_error(exc, shown, "create") from None
    try:
        try:
            os.fchmod(fd, mode)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        _remove_quietly(dir_fd, temp)
        raise translate_os_error(exc, shown, "write") from None
    except BaseException:
        _remove_quietly(dir_fd, temp)
        raise
    return temp


def _remove_quietly(dir_fd: int, name: str) -> None:
    with suppress(OSError):
        os.unlink(name, dir_fd=dir_fd)


@contextmanager
def _directory_fd(directory: Directory) -> Iterator[int]:
    """A descriptor of ``directory``: our own (closed after) for a Path, the caller's for an int."""
    if isinstance(directory, int):
        yield directory
        return
    fd = _open_base(directory)
    try:
        yield fd
    finally:
        os.close(fd)


def _open_base(base: Directory) -> int:
    """A new descriptor: a Path opened without following its last component, or a dup."""
    try:
        if isinstance(base, int):
            return os.open(".", _DIR_FLAGS, dir_fd=base)
        return os.open(base, _NOFOLLOW_DIR_FLAGS)
    except OSError as exc:
        raise translate_os_error(
            exc, base if isinstance(base, Path) else fd_path(base), "open directory"
        ) from None


def _open_child_dir(fd: int, part: str, *, create: bool, unexpected: type[KeyvaultError]) -> int:
    def shown() -> str:  # for messages only: a readlink per component would cost every open
        return str(Path(fd_path(fd)) / part)

    made = False
    if create:
        try:
            os.mkdir(part, 0o700, dir_fd=fd)
            made = True
        except FileExistsError:
            pass
        except OSError as exc:
            raise translate_os_error(exc, shown(), "create directory") from None
    try:
        child = os.open(part, _NOFOLLOW_DIR_FLAGS, dir_fd=fd)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise unexpected(
                f"{shown()} is {_what_is(fd, part)}, not a directory; "
                "keyvault does not follow symbolic links here"
            ) from None
        raise translate_os_error(exc, shown(), "open directory") from None
    if made:
        try:
            os.fchmod(child, 0o700)
            os.fsync(fd)
        except OSError as exc:
            os.close(child)
            raise translate_os_error(exc, shown(), "create directory") from None
    return child


def _what_is(fd: int, name: str) -> str:
    try:
        st = os.stat(name, dir_fd=fd, follow_symlinks=False)
    except OSError:
        return "something else"
    return "a symbolic link" if stat.S_ISLNK(st.st_mode) else "a file"


def _check_component(name: str) -> None:
    """One path component; callers validate untrusted names before this (programming error)."""
    if not name or name in (".", "..") or "/" in name or "\0" in name:
        raise ValueError("not a single path component")


def read_small_text(path: Path, what: str, limit: int, missing_hint: str) -> str:
    """A small UTF-8 file a person wrote (config, policy), with errors that name it.

    Size-limited before decoding; a missing file is NotFoundError with
    ``missing_hint``; a directory, an unreadable or a non-UTF-8 file are
    clear errors too, and so is one that someone else could have changed
    (:func:`refuse_if_others_can_change`): it steers what keyvault does.
    """
    try:
        with path.open("rb") as fh:
            refuse_if_others_can_change(path, os.fstat(fh.fileno()), what)
            raw = fh.read(limit + 1)
    except FileNotFoundError:
        raise NotFoundError(f"{what} {path} does not exist", hint=missing_hint) from None
    except IsADirectoryError:
        raise UsageError(f"{what} {path} is a directory") from None
    except PermissionError:
        raise AccessDeniedError(f"{what} {path} is not readable") from None
    if len(raw) > limit:
        raise InvalidInputError(f"{what} {path} is larger than {limit} bytes")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidInputError(f"{what} {path} is not UTF-8 text") from None


def refuse_if_others_can_change(
    path: str | os.PathLike[str], st: os.stat_result, what: str
) -> None:
    """AccessDeniedError unless only this user (or root) can change the file ``st`` describes.

    For the files that steer keyvault (config, policy, identities with their sealer
    pins, the sealing key, high-water marks, tokens): whoever can change one can make
    keyvault wrap for another recipient, trust another sealer or forget a rollback.
    The file must be owned by this user or root and not group/world-writable; so must
    every directory above it (:func:`refuse_if_others_can_replace`).
    """
    if _others_can_write(st):
        raise AccessDeniedError(
            f"{what} {path} is writable by group or others (mode "
            f"{stat.S_IMODE(st.st_mode):04o}); whoever can change it steers keyvault: "
            "refusing to use it",
            hint=f"chmod go-w {path}",
        )
    if st.st_uid not in (os.geteuid(), 0):
        raise AccessDeniedError(
            f"{what} {path} is owned by {_user(st.st_uid)}, not by you ({_user(os.geteuid())}) "
            "or root; its owner could change it: refusing to use it",
            hint=f"check it, then 'chown {_user(os.geteuid())} {path}'",
        )
    refuse_if_others_can_replace(path, what)


def refuse_if_others_can_replace(path: str | os.PathLike[str], what: str) -> None:
    """AccessDeniedError if a directory above ``path`` lets someone else swap it.

    Every directory from the one holding ``path`` (symlinks resolved: where the bytes
    really are) up to ``/`` must be owned by this user or root, and not
    group/world-writable unless it has the sticky bit (``/tmp``: others cannot rename
    or remove what they do not own). Directories that do not exist are skipped.
    """
    real = Path(os.path.realpath(path))  # the real location is what counts
    for directory in real.parents:
        try:
            st = directory.stat()
        except OSError:
            continue
        if st.st_uid not in (os.geteuid(), 0):
            raise AccessDeniedError(
                f"{what} {path} is in {directory}, owned by {_user(st.st_uid)}, who could "
                "replace it: refusing to use it",
                hint=f"move the file to a directory of yours, or 'chown "
                f"{_user(os.geteuid())} {directory}'",
            )
        if _others_can_write(st) and not st.st_mode & stat.S_ISVTX:
            raise AccessDeniedError(
                f"{what} {path} is in {directory}, which group or others can write (mode "
                f"{stat.S_IMODE(st.st_mode):04o}), so they could replace it: refusing to "
                "use it",
                hint=f"chmod go-w {directory}",
            )


def _others_can_write(st: os.stat_result) -> bool:
    """World-writable, or group-writable by a group that is not this user's own.

    A user private group (the user's primary group, named after the user, with
    no other member: what Debian, Ubuntu and Fedora give every user, with umask
    002) holds nobody else, so its write bit lets no one else in; OpenSSH's
    StrictModes accepts it on those systems for the same reason.
    """
    if st.st_mode & 0o002:
        return True
    return bool(st.st_mode & 0o020) and not _is_private_group(st.st_gid)


def _is_private_group(gid: int) -> bool:
    import grp
    import pwd

    try:
        me = pwd.getpwuid(os.geteuid())
        group = grp.getgrgid(gid)
    except KeyError:
        return False
    return gid == me.pw_gid and group.gr_name == me.pw_name and set(group.gr_mem) <= {me.pw_name}


def _user(uid: int) -> str:
    """A user's name for messages (``uid N`` when it has none)."""
    import pwd

    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"
