"""The embedded default store: a local directory, create-only and versioned.

Layout::

    <root>/keyvault-store.json            {"format":"keyvault-file-store","version":1}
    <root>/objects/<object-name>/0000000001
    <root>/objects/<object-name>/0000000002 ...

Every version is a file of its own, written once (temp file, fsync, ``link``)
and never changed, so a new version cannot destroy an old one (T2, T12).
``link`` fails if the name exists: of two writers racing for the same version,
exactly one wins and the other gets ConflictError, across processes, with no
lock file to go stale.
The one removal, :meth:`FileStore.delete_all_versions` (the Deleting capability,
used for quickstart's sample only), unlinks one object's version files and,
if then empty, its directory.

Below the root nothing is followed: every directory and file is opened with
``O_NOFOLLOW`` relative to its parent's descriptor, so a symlink planted in
the store is reported as tampering (IntegrityError), never read through. The
root itself is configuration and resolved like any path the user gives.
Entries that are not 10-digit regular files (crash leftovers starting with
``.keyvault-tmp-``, editor files) are never versions.
"""

from __future__ import annotations

import errno
import os
import re
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Self
from urllib.parse import unquote, urlsplit

from keyvault import fsutil
from keyvault.errors import (
    ConflictError,
    IntegrityError,
    KeyvaultError,
    NotFoundError,
    UsageError,
)
from keyvault.plugins import BackendOptions
from keyvault.stores.base import (
    MAX_NAME_LENGTH,
    MAX_OBJECT_SIZE,
    OBJECT_SEGMENT,
    ObjectVersion,
    StoredObject,
    all_before,
    shown,
    validate_object_name,
)

MARKER_NAME = "keyvault-store.json"
MARKER = {"format": "keyvault-file-store", "version": 1}
#: The marker as ``keyvault init`` writes it (a test checks it is json.dumps(MARKER)):
#: comparing bytes lets a command open the store without importing json.
MARKER_BYTES = b'{"format": "keyvault-file-store", "version": 1}\n'
OBJECTS_DIR = "objects"
_MAX_MARKER_SIZE = 4096
_VERSION = re.compile(r"[0-9]{10}")
_PARTIAL_SEGMENT = re.compile(r"[A-Za-z0-9._:~-]*")
_MAX_VERSION = 10**10 - 1
#: ``list`` is a method of FileStore, so annotations inside the class use this alias.
_Names = list[str]
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


class FileStore:
    """Envelopes in a local directory; see the module docstring for the guarantees."""

    def __init__(self, root: Path, root_fd: int) -> None:
        self._root = root
        self._root_fd = root_fd

    @classmethod
    def from_uri(cls, uri: str, options: BackendOptions, *, create: bool = False) -> Self:
        """Open the store at ``file:///abs/path``; ``create`` (``keyvault init``) makes it."""
        del options  # a local directory needs no credentials or settings
        root = parse_file_uri(uri)
        return cls(root, _open_root(root, create=create))

    @property
    def uri(self) -> str:
        return self._root.as_uri()

    def __repr__(self) -> str:
        return f"FileStore({self.uri!r})"

    def read(self, name: str, version: str | None = None) -> StoredObject:
        segments = validate_object_name(name)
        if version is not None:
            _check_version(version)
        with self._object_dir(name, segments) as obj_fd:
            chosen = version or _latest(obj_fd, self._where(name))
            if chosen is None:
                raise self._not_found(name)
            return StoredObject(name, chosen, self._read_version(obj_fd, name, chosen))

    def write(self, name: str, data: bytes, *, replaces: str | None = None) -> str:
        segments = validate_object_name(name)
        if not isinstance(data, bytes) or len(data) > MAX_OBJECT_SIZE:
            raise UsageError(
                f"object {name}: data must be bytes of at most "
                f"{MAX_OBJECT_SIZE} bytes; nothing was written"
            )
        if replaces is not None:
            _check_version(replaces)
        obj_fd = self._open(segments, create=True)
        try:
            latest = _latest(obj_fd, self._where(name))
            if latest != replaces:
                raise _stale(name, latest, replaces)
            number = 1 if latest is None else int(latest) + 1
            if number > _MAX_VERSION:
                raise ConflictError(f"object {name} has no version numbers left")
            new = f"{number:010d}"
            try:
                fsutil.write_file_atomic(obj_fd, new, data, mode=0o600, exclusive=True)
            except ConflictError:
                raise ConflictError(
                    f"object {name} was written by someone else in between (version {new})",
                    hint="read it again and retry on top of the new version",
                ) from None
            return new
        finally:
            os.close(obj_fd)

    def versions(self, name: str) -> list[ObjectVersion]:
        segments = validate_object_name(name)
        with self._object_dir(name, segments) as obj_fd:
            numbers = _version_names(obj_fd, self._where(name))
            if not numbers:
                raise self._not_found(name)
            result = []
            for i, version in enumerate(sorted(numbers, reverse=True)):
                st = self._stat_version(obj_fd, name, version)
                created = datetime.fromtimestamp(st.st_mtime, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
                result.append(ObjectVersion(name, version, st.st_size, created, latest=i == 0))
            return result

    def list(self, prefix: str, *, after: str = "") -> Iterator[str]:
        """Names starting with ``prefix`` (plain string prefix, as in S3), sorted; with
        ``after``, those that sort after it.

        Only the directory the prefix names is walked, so listing one team's or
        GUN's prefix never opens another's directories; nor is a directory whose
        every name sorts before ``after``.
        """
        if not isinstance(prefix, str):
            raise UsageError("an object name prefix must be a string")
        dir_part, _, partial = prefix.rpartition("/")
        dir_segments = validate_object_name(dir_part) if dir_part else []
        if not _PARTIAL_SEGMENT.fullmatch(partial) or len(prefix) > MAX_NAME_LENGTH:
            raise UsageError(f"invalid object name prefix {shown(prefix)}")
        try:
            start_fd = self._open(dir_segments, create=False)
        except NotFoundError:
            return iter(())
        found: _Names = []
        try:
            base = f"{dir_part}/" if dir_part else ""
            self._walk(start_fd, base, found, only=partial, after=after)
        finally:
            os.close(start_fd)
        return iter(sorted(name for name in found if name > after))

    def delete_all_versions(self, name: str) -> None:
        """Unlink every version file of ``name``, then its directory if that is empty (an
        object whose name continues below this one keeps it). Opened like every read, with
        nothing followed: a symlink or directory among the versions is tampering, refused
        before anything is unlinked. An absent name is nothing to do."""
        segments = validate_object_name(name)
        where = self._where(name)
        try:
            parent_fd = self._open(segments[:-1], create=False)
        except NotFoundError:
            return
        try:
            try:
                obj_fd = fsutil.open_subdir(parent_fd, segments[-1:], unexpected=IntegrityError)
            except NotFoundError:
                return
            try:
                versions = _version_names(obj_fd, where)
                for version in versions:
                    self._stat_version(obj_fd, name, version)
                for version in versions:
                    _unlink(obj_fd, version, where)
                fsutil.fsync_dir(obj_fd, where)
            finally:
                os.close(obj_fd)
            try:
                os.rmdir(segments[-1], dir_fd=parent_fd)
            except OSError as exc:
                if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                    raise fsutil.translate_os_error(exc, where, "delete") from None
            fsutil.fsync_dir(parent_fd, where)
        finally:
            os.close(parent_fd)

    def close(self) -> None:
        if self._root_fd >= 0:
            os.close(self._root_fd)
            self._root_fd = -1

    # -- internals ---------------------------------------------------------------

    def _open(self, segments: _Names, *, create: bool) -> int:
        if self._root_fd < 0:
            raise UsageError(f"store {self.uri} is closed")
        return fsutil.open_subdir(
            self._root_fd, [OBJECTS_DIR, *segments], create=create, unexpected=IntegrityError
        )

    @contextmanager
    def _object_dir(self, name: str, segments: _Names) -> Iterator[int]:
        try:
            fd = self._open(segments, create=False)
        except NotFoundError:
            raise self._not_found(name) from None
        try:
            yield fd
        finally:
            os.close(fd)

    def _walk(
        self, fd: int, base: str, found: _Names, *, only: str | None = None, after: str = ""
    ) -> None:
        """Collect object names below ``fd``.

        ``only`` marks the prefix's own directory: just the entries starting
        with it are walked, and the directory itself is not an object. A directory
        whose every name sorts before ``after`` is not walked.
        """
        is_object = False
        children: _Names = []
        with os.scandir(fd) as entries:
            for entry in entries:
                if only is not None and not entry.name.startswith(only):
                    continue
                if entry.is_symlink():
                    raise self._tampered(base + entry.name, "is a symbolic link")
                if entry.is_dir(follow_symlinks=False):
                    children.append(entry.name)
                elif only is None and _VERSION.fullmatch(entry.name):
                    is_object = True
        if is_object:
            found.append(base.rstrip("/"))
        for child in children:
            name = base + child
            if len(name) > MAX_NAME_LENGTH or not OBJECT_SEGMENT.fullmatch(child):
                continue
            if all_before(name + "/", after):
                continue
            child_fd = fsutil.open_subdir(fd, [child], unexpected=IntegrityError)
            try:
                self._walk(child_fd, name + "/", found, after=after)
            finally:
                os.close(child_fd)

    def _read_version(self, obj_fd: int, name: str, version: str) -> bytes:
        try:
            fd = os.open(version, _READ_FLAGS, dir_fd=obj_fd)
        except OSError as exc:
            raise self._version_error(exc, name, version) from None
        try:
            st = os.fstat(fd)
            self._check_version_stat(st, name, version)
            data = fsutil.read_at_most(fd, MAX_OBJECT_SIZE + 1)
        except OSError as exc:
            raise fsutil.translate_os_error(exc, self._where(name), "read") from None
        finally:
            os.close(fd)
        if len(data) > MAX_OBJECT_SIZE:
            raise self._tampered(name, f"version {version} grew beyond {MAX_OBJECT_SIZE} bytes")
        return data

    def _stat_version(self, obj_fd: int, name: str, version: str) -> os.stat_result:
        try:
            st = os.stat(version, dir_fd=obj_fd, follow_symlinks=False)
        except OSError as exc:
            raise self._version_error(exc, name, version) from None
        self._check_version_stat(st, name, version)
        return st

    def _check_version_stat(self, st: os.stat_result, name: str, version: str) -> None:
        if not stat.S_ISREG(st.st_mode):
            raise self._tampered(name, f"version {version} is not a regular file")
        if st.st_size > MAX_OBJECT_SIZE:
            raise self._tampered(
                name,
                f"version {version} is larger than {MAX_OBJECT_SIZE} bytes; refused before reading",
            )

    def _version_error(self, exc: OSError, name: str, version: str) -> KeyvaultError:
        if exc.errno == errno.ENOENT:
            return NotFoundError(f"object {name} has no version {version} in store {self.uri}")
        if exc.errno == errno.ELOOP:
            return self._tampered(name, f"version {version} is a symbolic link")
        return fsutil.translate_os_error(exc, self._where(name), "read")

    def _where(self, name: str) -> str:
        return str(self._root / OBJECTS_DIR / name)

    def _not_found(self, name: str) -> NotFoundError:
        return NotFoundError(f"object {name} not found in store {self.uri}")

    def _tampered(self, name: str, what: str) -> IntegrityError:
        return IntegrityError(
            f"store {self.uri}: {name} {what}; the store was changed outside keyvault",
            hint="inspect the directory; keyvault never follows symbolic links inside a store",
        )


def parse_file_uri(uri: str) -> Path:
    """``file:///abs``, ``file:/abs`` or ``file://localhost/abs`` (percent-decoded) -> Path."""
    parts = urlsplit(uri)
    if parts.scheme.lower() != "file":
        raise UsageError(f"not a file: store URI: {shown(uri)}")
    if parts.netloc not in ("", "localhost"):
        raise UsageError(
            f"file store URI {shown(uri)} names host {(parts.hostname or '')[:60]!r}",
            hint="use file:///absolute/path (the host must be empty or localhost)",
        )
    if parts.query or parts.fragment or uri.endswith(("?", "#")):
        raise UsageError(f"file store URI {shown(uri)} must not have a query or fragment")
    try:
        path = unquote(parts.path, errors="strict")
    except UnicodeDecodeError:
        raise UsageError(
            f"file store URI {shown(uri)} is not valid percent-encoded UTF-8"
        ) from None
    if not path.startswith("/") or "\0" in path or not path.isprintable():
        raise UsageError(
            f"file store URI {shown(uri)} must name an absolute path",
            hint="use file:///absolute/path",
        )
    return Path(os.path.normpath(path))


def _open_root(root: Path, *, create: bool) -> int:
    """The root's descriptor, after checking (or, with ``create``, writing) the marker."""
    if not root.exists():
        if not create:
            raise NotFoundError(
                f"store directory {root} does not exist",
                hint="check the store URI: on a new machine, point it at the "
                "store you kept (removable disk, synced directory); "
                "'keyvault --store URI init' makes a new, empty one",
            )
        fsutil.ensure_private_dir(root)
    try:
        fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno == errno.ENOTDIR:
            raise UsageError(f"store path {root} is a file, not a directory") from None
        raise fsutil.translate_os_error(exc, root, "open store directory") from None
    try:
        _check_or_make_marker(fd, root, create=create)
        if create:
            os.close(fsutil.open_subdir(fd, [OBJECTS_DIR], create=True, unexpected=IntegrityError))
    except BaseException:
        os.close(fd)
        raise
    return fd


def _check_or_make_marker(fd: int, root: Path, *, create: bool) -> None:
    """A store has our marker; only ``create`` adopts an empty directory by writing one."""
    raw = _read_marker(fd, root)
    if raw is None:
        raw = _adopt_empty_dir(fd, root, create=create)
    _check_marker(raw, root)


def _adopt_empty_dir(fd: int, root: Path, *, create: bool) -> bytes:
    """Write the marker into an empty directory; the marker's bytes (ours or a racing init's)."""
    try:
        entries = [e for e in os.listdir(fd) if not fsutil.is_temp_name(e)]
    except OSError as exc:
        raise fsutil.translate_os_error(exc, root, "list") from None
    if MARKER_NAME not in entries:  # else another `keyvault init` wrote it since we looked
        if entries:
            raise UsageError(
                f"{root} is not empty and is not a keyvault store (no {MARKER_NAME})",
                hint="choose an empty or new directory for the store",
            )
        if not create:
            raise NotFoundError(
                f"{root} is not a keyvault store yet (empty directory)",
                hint="run 'keyvault init' to create the store there",
            )
        try:
            os.fchmod(fd, 0o700)
            fsutil.write_file_atomic(fd, MARKER_NAME, MARKER_BYTES, mode=0o600, exclusive=True)
        except OSError as exc:
            raise fsutil.translate_os_error(exc, root, "make private") from None
        except ConflictError:
            pass  # a racing init won: check its marker like any other
    return _read_marker(fd, root) or b""


def _read_marker(fd: int, root: Path) -> bytes | None:
    marker = root / MARKER_NAME
    try:
        marker_fd = os.open(MARKER_NAME, _READ_FLAGS, dir_fd=fd)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UsageError(f"{marker} is a symbolic link, not a store marker") from None
        raise fsutil.translate_os_error(exc, marker, "read") from None
    try:
        if not stat.S_ISREG(os.fstat(marker_fd).st_mode):
            raise UsageError(f"{marker} is not a regular file")
        return fsutil.read_at_most(marker_fd, _MAX_MARKER_SIZE + 1)
    except OSError as exc:
        raise fsutil.translate_os_error(exc, marker, "read") from None
    finally:
        os.close(marker_fd)


def _check_marker(raw: bytes, root: Path) -> None:
    if raw == MARKER_BYTES:
        return
    from keyvault.bounded import json_loads

    try:
        doc = json_loads(raw) if len(raw) <= _MAX_MARKER_SIZE else None
    except ValueError:
        doc = None
    if not isinstance(doc, dict) or doc.get("format") != MARKER["format"]:
        raise UsageError(f"{root / MARKER_NAME} is not a keyvault file store marker")
    if doc.get("version") != MARKER["version"]:
        raise UsageError(
            f"store {root} has format version {str(doc.get('version'))[:20]!r}; "
            f"this keyvault reads version {MARKER['version']}",
            hint="upgrade keyvault",
        )


def _latest(obj_fd: int, shown: str) -> str | None:
    numbers = _version_names(obj_fd, shown)
    return max(numbers) if numbers else None


def _version_names(obj_fd: int, shown: str) -> list[str]:
    """Version files of one object: 10-digit regular files (symlinks are found when opened)."""
    try:
        with os.scandir(obj_fd) as entries:
            return [
                e.name
                for e in entries
                if _VERSION.fullmatch(e.name) and not e.is_dir(follow_symlinks=False)
            ]
    except OSError as exc:
        raise fsutil.translate_os_error(exc, shown, "list") from None


def _unlink(obj_fd: int, version: str, shown: str) -> None:
    try:
        os.unlink(version, dir_fd=obj_fd)
    except FileNotFoundError:
        pass  # deleted by a racing delete: what we wanted
    except OSError as exc:
        raise fsutil.translate_os_error(exc, shown, "delete") from None


def _check_version(version: str) -> None:
    if not isinstance(version, str) or not _VERSION.fullmatch(version) or int(version) == 0:
        raise UsageError(f"invalid version {shown(version)}: expected 10 digits, e.g. 0000000001")


def _stale(name: str, latest: str | None, replaces: str | None) -> ConflictError:
    if replaces is None:
        return ConflictError(
            f"object {name} already exists (latest version {latest})",
            hint="read it and write on top of its latest version",
        )
    if latest is None:
        return ConflictError(
            f"object {name} does not exist, so version {replaces} cannot be replaced"
        )
    return ConflictError(
        f"object {name} changed: latest version is {latest}, not {replaces}",
        hint="read it again and retry on top of the new version",
    )
