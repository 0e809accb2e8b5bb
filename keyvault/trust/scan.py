"""Find every key file notary 0.7 and the docker CLI would read in a trust directory.

The walk is done with directory file descriptors: symlinks are never
followed (``O_NOFOLLOW``, ``lstat``), nothing but regular files is opened,
and no file larger than ``MAX_KEY_FILE_SIZE`` is read. A file that is not a
usable key becomes a ``ScanProblem`` with a stable code; only a trust
directory that is missing, not a directory or unreadable stops the scan.
Non-``.key`` files are ignored, as notary ignores them.

Problem codes: see ``PROBLEM_CODES``.
"""

from __future__ import annotations

import errno
import hashlib
import hmac
import os
import stat
from collections.abc import Iterator, Mapping
from pathlib import Path

from keyvault.errors import AccessDeniedError, ChangedOnDiskError, NotFoundError, UsageError
from keyvault.trust.interpret import interpret
from keyvault.trust.layout import KEY_SUFFIX, PRECEDENCE, place
from keyvault.trust.model import MAX_KEY_FILE_SIZE, KeyFile, ScanProblem, ScanResult
from keyvault.trust.safefs import DIR_FLAGS, ReadRefused, read_regular, why

PRIVATE_DIR = "private"
MAX_DEPTH = 64

PROBLEM_CODES = {
    "empty": "the file is empty",
    "not-pem": "no PEM block notary could decode",
    "not-a-private-key": "the first PEM block is a certificate, public key or other non-key",
    "unsupported-type": "a private key type notary does not read",
    "bad-key": "the key structure is malformed",
    "id-mismatch": "an unencrypted key whose real ID differs from its file name",
    "bad-role": "the role is not a valid Notary role",
    "bad-gun": "the GUN (header or path) is not a valid repository name",
    "conflicting-headers": "header and path/name disagree, or a header repeated differently",
    "bad-name": "the file name is not <64 hex>.key",
    "misplaced": "in a directory notary lists but never signs from",
    "duplicate-id": "the same key ID was already found in another file",
    "symlink": "a symbolic link (never followed)",
    "not-regular": "a FIFO, socket or device named *.key",
    "not-a-directory": "private/ is not a directory",
    "too-large": f"larger than {MAX_KEY_FILE_SIZE} bytes (not read)",
    "too-deep": f"nested more than {MAX_DEPTH} directories deep (not scanned)",
    "unreadable": "permission denied or I/O error",
}


def default_trust_dir(env: Mapping[str, str], home: Path) -> Path:
    """Docker's trust directory: ``$DOCKER_CONFIG/trust``, else ``~/.docker/trust``.

    Like docker's ``config.Dir()``, an empty ``DOCKER_CONFIG`` counts as unset.
    """
    config = env.get("DOCKER_CONFIG", "")
    return (Path(config) if config else home / ".docker") / "trust"


def scan_trust_dir(trust_dir: Path, *, keep_bytes: bool = True) -> ScanResult:
    """Every key file below ``<trust_dir>/private``, sorted by relpath, and every problem.

    With ``keep_bytes=False`` each key file is released as soon as it is read
    (:meth:`KeyFile.released`), so a scan of thousands of keys holds none of their
    bytes; :func:`read_key_bytes` reads one again when it is needed.
    """
    top = _open_trust_dir(trust_dir)
    found: list[KeyFile] = []
    problems: list[ScanProblem] = []
    try:
        private = _open_private(top, trust_dir, problems)
        if private is not None:
            try:
                for outcome in _walk(private, (), 0):
                    if isinstance(outcome, ScanProblem):
                        problems.append(outcome)
                    else:
                        found.append(outcome if keep_bytes else outcome.released())
            finally:
                os.close(private)
    finally:
        os.close(top)
    keys, duplicates = _resolve_duplicates(found)
    problems.extend(duplicates)
    return ScanResult(
        trust_dir=str(trust_dir.absolute()),
        keys=tuple(sorted(keys, key=lambda k: k.relpath)),
        problems=tuple(sorted(problems, key=lambda p: (p.relpath, p.code))),
    )


def read_key_bytes(trust_dir: Path, key: KeyFile) -> bytes:
    """The bytes of ``key`` (read again if it was released); they must be the ones scanned.

    The path is walked as the scan walked it (no symlink followed, regular files
    only), and a file that changed, moved or vanished since the scan is refused:
    what gets backed up is always what was scanned and interpreted.
    """
    if not key.is_released:
        return key.data
    where = f"{PRIVATE_DIR}/{key.relpath}"
    hint = "run the backup again: it takes the file as it is then"
    parts = key.relpath.split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise UsageError(f"refusing unsafe key path {key.relpath[:80]!r}")
    fds = [_open_trust_dir(trust_dir)]
    try:
        for name in (PRIVATE_DIR, *parts[:-1]):
            fds.append(os.open(name, DIR_FLAGS, dir_fd=fds[-1]))
        data = read_regular(fds[-1], parts[-1], MAX_KEY_FILE_SIZE)
    except (OSError, ReadRefused) as exc:
        reason = exc.reason if isinstance(exc, ReadRefused) else why(exc)
        raise ChangedOnDiskError(
            f"{where} changed since it was scanned ({reason}); nothing was written for it",
            hint=hint,
        ) from None
    finally:
        for fd in reversed(fds):
            os.close(fd)
    if not hmac.compare_digest(hashlib.sha256(data).hexdigest(), key.digest):
        raise ChangedOnDiskError(
            f"{where} changed since it was scanned; nothing was written for it", hint=hint
        )
    return data


def _open_trust_dir(trust_dir: Path) -> int:
    """Open the trust directory itself (a symlink *to* it is the user's choice and followed)."""
    hint = "run keyvault as the user who owns it, or give it u+rx permissions"
    try:
        st = trust_dir.stat()
    except FileNotFoundError:
        raise NotFoundError(
            f"trust directory {trust_dir} does not exist",
            hint="check the trust directory setting or DOCKER_CONFIG",
        ) from None
    except NotADirectoryError:
        raise UsageError(f"trust directory {trust_dir}: a parent is not a directory") from None
    except PermissionError:
        raise AccessDeniedError(f"cannot reach trust directory {trust_dir}", hint=hint) from None
    if not stat.S_ISDIR(st.st_mode):
        raise UsageError(
            f"trust directory {trust_dir} is not a directory",
            hint="point it at the directory that holds private/ and tuf/",
        )
    try:
        return os.open(trust_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except PermissionError:
        raise AccessDeniedError(f"cannot read trust directory {trust_dir}", hint=hint) from None


def _open_private(top: int, trust_dir: Path, problems: list[ScanProblem]) -> int | None:
    """``private/``'s descriptor; None when it is missing (no keys) or not usable."""
    where = trust_dir / PRIVATE_DIR
    hint = "run keyvault as the user who owns it, or give it u+rx permissions"
    try:
        st = os.stat(PRIVATE_DIR, dir_fd=top, follow_symlinks=False)
        if stat.S_ISLNK(st.st_mode):
            problems.append(
                ScanProblem(
                    ".",
                    "symlink",
                    "private/ is a symbolic link: notary "
                    "ignores the keys behind it and keyvault does not follow"
                    " it; make it a real directory",
                )
            )
            return None
        if not stat.S_ISDIR(st.st_mode):
            problems.append(ScanProblem(".", "not-a-directory", "private is not a directory"))
            return None
        fd = os.open(PRIVATE_DIR, DIR_FLAGS, dir_fd=top)
    except FileNotFoundError:
        return None
    except PermissionError:
        raise AccessDeniedError(f"cannot read {where}", hint=hint) from None
    try:
        _names(fd)
    except PermissionError:
        os.close(fd)
        raise AccessDeniedError(f"cannot list {where}", hint=hint) from None
    return fd


def _display(parts: tuple[str, ...]) -> str:
    """A POSIX relpath that is always valid UTF-8 (odd bytes shown escaped)."""
    joined = "/".join(parts)
    return joined.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


Outcome = KeyFile | ScanProblem


def _names(dir_fd: int) -> list[str]:
    with os.scandir(dir_fd) as entries:
        return sorted(entry.name for entry in entries)


def _walk(dir_fd: int, parts: tuple[str, ...], depth: int) -> Iterator[Outcome]:
    try:
        names = _names(dir_fd)
    except OSError as exc:
        yield _problem(parts, "unreadable", f"cannot list this directory ({why(exc)})")
        return
    for name in names:
        path = (*parts, name)
        try:
            st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except OSError as exc:
            yield _problem(path, "unreadable", f"cannot stat it ({why(exc)})")
            continue
        if stat.S_ISLNK(st.st_mode):
            yield _problem(
                path,
                "symlink",
                "a symbolic link in the key store; notary ignores it and keyvault never follows it",
            )
        elif stat.S_ISDIR(st.st_mode):
            yield from _subdir(dir_fd, name, path, depth)
        elif name.endswith(KEY_SUFFIX):
            outcome = _key_file(dir_fd, name, path, st)
            if outcome is not None:
                yield outcome


def _subdir(dir_fd: int, name: str, path: tuple[str, ...], depth: int) -> Iterator[Outcome]:
    if depth >= MAX_DEPTH:
        yield _problem(path, "too-deep", "directory nesting too deep; not scanned")
        return
    try:
        fd = os.open(name, DIR_FLAGS, dir_fd=dir_fd)
    except OSError as exc:
        code = "symlink" if exc.errno == errno.ELOOP else "unreadable"
        yield _problem(path, code, f"cannot open this directory ({why(exc)})")
        return
    try:
        yield from _walk(fd, path, depth + 1)
    finally:
        os.close(fd)


def _key_file(dir_fd: int, name: str, path: tuple[str, ...], st: os.stat_result) -> Outcome | None:
    if not stat.S_ISREG(st.st_mode):
        return _problem(path, "not-regular", "not a regular file")
    placement = place(path)
    if placement.misplaced:
        return _problem(
            path,
            "misplaced",
            "notary lists keys in this directory but can only "
            "sign with private/<id>.key; move it there to use it",
        )
    if placement.key_id is None:
        return _problem(path, "bad-name", _bad_name_reason(path))
    if st.st_size > MAX_KEY_FILE_SIZE:
        return _problem(
            path,
            "too-large",
            f"{st.st_size} bytes; key files are at most "
            f"{MAX_KEY_FILE_SIZE} bytes, so it was not read",
        )
    try:
        data = read_regular(dir_fd, name, MAX_KEY_FILE_SIZE)
    except ReadRefused as refused:
        if refused.code == "missing":  # removed since it was listed: nothing to report
            return None
        return _problem(path, refused.code, refused.reason)
    return interpret(data, placement, _display(path), stat.S_IMODE(st.st_mode))


def _bad_name_reason(path: tuple[str, ...]) -> str:
    stem = path[-1][: -len(KEY_SUFFIX)]
    if len(path) == 1 and "_" in stem:
        return (
            "a 0.1-style <id>_<role>.key name outside root_keys/ and tuf_keys/: notary "
            "does not migrate it and cannot sign with it"
        )
    return "the file name is not a key ID (64 lower-case hex digits + .key)"


def _problem(parts: tuple[str, ...], code: str, reason: str) -> ScanProblem:
    return ScanProblem(_display(parts) or ".", code, reason)


def _resolve_duplicates(found: list[KeyFile]) -> tuple[list[KeyFile], list[ScanProblem]]:
    """One key per ID: the current layout wins over legacy ones, then the lower relpath.

    Notary's own migration would overwrite ``private/<id>.key`` with the legacy
    copy; the reason says so, because the two files may not hold the same key.
    """
    by_id: dict[str, list[KeyFile]] = {}
    for key in found:
        by_id.setdefault(key.key_id, []).append(key)
    keys: list[KeyFile] = []
    problems: list[ScanProblem] = []
    for group in by_id.values():
        group.sort(key=lambda k: (PRECEDENCE.index(k.layout), k.relpath))
        winner, *others = group
        keys.append(winner)
        problems.extend(
            ScanProblem(
                k.relpath,
                "duplicate-id",
                f"key ID {k.key_id[:12]} is also in {winner.relpath}, the copy keyvault "
                "keeps; notary's migration keeps only one of them (legacy copies "
                "overwrite private/<id>.key), so check that both hold the same key "
                "with 'keyvault verify --deep'",
            )
            for k in others
        )
    return keys, problems
