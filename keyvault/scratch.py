"""Private scratch directories for key bytes: on RAM where there is one, marked, zeroed.

``keyvault exec`` and ``fetch`` restore a CI job's keys into one; ``drill``
and ``quickstart`` restore every key of a selection, root included, into
one. Each directory is made 0700 under :func:`runtime_base` (``$KEYVAULT_TMPDIR``,
else ``/dev/shm`` or ``$XDG_RUNTIME_DIR``, both RAM-backed, and only then
keyvault's state directory), carries a marker (its kind, the owner's PID and
that process's start time, no secret), and is wiped on every way out: every
file overwritten with zeros, then removed. A directory whose process died
(SIGKILL, a power cut leaves nothing on RAM) is found by its marker and wiped
by :func:`sweep`: ``keyvault wipe --stale``, and the start of the next
``exec``, ``drill`` or ``quickstart``. Nothing without a marker of this user
is ever touched.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import stat
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from keyvault import fsutil
from keyvault.bounded import json_loads
from keyvault.errors import ConflictError, KeyvaultError, NotFoundError, UsageError

#: The marker file every directory made here carries; nothing without it is ever wiped.
MARKER_NAME = ".keyvault-ci"
MARKER_FORMAT = "keyvault-ci/v1"
#: Kind of directory -> its name prefix. A fetch directory outlives its process (it
#: expires instead); every other kind is stale once its process is gone.
PREFIXES = {
    "exec": "keyvault-exec-",
    "fetch": "keyvault-fetch-",
    "drill": "keyvault-drill-",
    "quickstart": "keyvault-quickstart-",
}
TRUST_SUBDIR = "trust"
#: Where the directories go, if set (else /dev/shm, $XDG_RUNTIME_DIR, the state dir).
BASE_ENV = "KEYVAULT_TMPDIR"
_WIPE_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
_MAX_MARKER = 4096
_ZERO_LIMIT = 16 * 1024 * 1024  # larger files cannot be key files: removed, not overwritten


@dataclass(frozen=True)
class Marker:
    """What a directory made here says about itself (no secret in it)."""

    kind: str  # a key of PREFIXES
    ident: str
    pid: int
    pid_start: str | None
    host: str
    uid: int
    created: float
    expires: float | None = None

    def to_bytes(self) -> bytes:
        return json.dumps(
            {
                "format": MARKER_FORMAT,
                "kind": self.kind,
                "id": self.ident,
                "pid": self.pid,
                "pid_start": self.pid_start,
                "host": self.host,
                "uid": self.uid,
                "created": self.created,
                "expires": self.expires,
            },
            sort_keys=True,
        ).encode()

    @classmethod
    def from_bytes(cls, raw: bytes) -> Marker:
        try:
            doc = json_loads(raw)
            if doc.get("format") != MARKER_FORMAT or doc.get("kind") not in PREFIXES:
                raise ValueError("not ours")
            expires = doc.get("expires")
            return cls(
                str(doc["kind"]),
                str(doc["id"]),
                int(doc["pid"]),
                None if doc.get("pid_start") is None else str(doc["pid_start"]),
                str(doc["host"]),
                int(doc["uid"]),
                float(doc["created"]),
                None if expires is None else float(expires),
            )
        except (ValueError, KeyError, TypeError, AttributeError):
            raise UsageError("not a keyvault marker") from None

    def owner_gone(self) -> bool:
        """This host's owning process has exited (or its PID now names another process)."""
        if self.host != socket.gethostname():
            return False  # another machine's directory (a shared base): not ours to judge
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            pass  # it exists but is another user's: the start time below decides
        return self.pid_start is not None and process_start(self.pid) != self.pid_start

    def expired(self, now: float | None = None) -> bool:
        return self.expires is not None and self.expires <= (now or time.time())


def process_start(pid: int) -> str | None:
    """A process's start time in clock ticks since boot (Linux), to tell a reused PID."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    fields = raw[raw.rfind(b")") + 2 :].split()
    return fields[19].decode() if len(fields) > 19 else None


@dataclass(frozen=True)
class WorkDir:
    """A private directory (0700) holding a marker and ``trust/`` (for exec, DOCKER_CONFIG)."""

    path: Path
    marker: Marker

    @property
    def trust_dir(self) -> Path:
        return self.path / TRUST_SUBDIR

    @classmethod
    def create_in(cls, base: Path, kind: str, ttl: float | None = None) -> WorkDir:
        for _ in range(8):
            path = base / f"{PREFIXES[kind]}{os.getpid()}-{secrets.token_hex(6)}"
            try:
                path.mkdir(mode=0o700)
            except FileExistsError:
                continue
            except OSError as exc:
                raise _io(exc, path) from None
            return cls._mark(path, kind, ttl)
        raise ConflictError(f"could not make a fresh directory under {base}")

    @classmethod
    def create_at(cls, path: Path, ttl: float | None) -> WorkDir:
        """``fetch --into``: a new directory, or an existing empty one of ours (mktemp -d)."""
        try:
            path.mkdir(mode=0o700)
        except FileExistsError:
            st = path.lstat()
            if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or any(path.iterdir()):
                raise ConflictError(
                    f"{path} already exists and is not an empty directory of "
                    "yours; nothing was fetched",
                    hint="name a new directory (keyvault makes it, 0700)",
                ) from None
        except FileNotFoundError:
            raise NotFoundError(f"the parent of {path} does not exist") from None
        except OSError as exc:
            raise _io(exc, path) from None
        return cls._mark(path, "fetch", ttl)

    @classmethod
    def _mark(cls, path: Path, kind: str, ttl: float | None) -> WorkDir:
        now = time.time()
        marker = Marker(
            kind,
            secrets.token_hex(8),
            os.getpid(),
            process_start(os.getpid()),
            socket.gethostname(),
            os.getuid(),
            now,
            None if ttl is None else now + ttl,
        )
        try:
            path.chmod(0o700)
            fsutil.write_file_atomic(path, MARKER_NAME, marker.to_bytes(), mode=0o600)
        except (OSError, KeyvaultError) as exc:
            with contextlib.suppress(OSError):
                path.rmdir()  # unmarked, it would never be swept
            if isinstance(exc, KeyvaultError):
                raise
            raise _io(exc, path) from None
        return cls(path, marker)

    def wipe(self) -> None:
        wipe_tree(self.path)


def read_marker(path: Path) -> Marker:
    """The marker of a directory of ours; UsageError (exit 2) for anything else."""
    not_ours = UsageError(
        f"{path} is not a directory made by 'keyvault exec', 'fetch', "
        "'drill' or 'quickstart' (no keyvault marker); refusing to touch it"
    )
    try:
        st = path.lstat()
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
            raise not_ours
        fd = os.open(path / MARKER_NAME, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        raise not_ours from None
    with os.fdopen(fd, "rb") as fh:
        mst = os.fstat(fh.fileno())
        raw = fh.read(_MAX_MARKER + 1)
    if not stat.S_ISREG(mst.st_mode) or mst.st_uid != os.getuid() or len(raw) > _MAX_MARKER:
        raise not_ours
    try:
        marker = Marker.from_bytes(raw)
    except UsageError:
        raise not_ours from None
    if marker.uid != os.getuid():
        raise not_ours
    return marker


def find_workdir(path: Path) -> Path:
    """The marked directory ``path`` names: itself, or the parent of its ``trust/``."""
    with contextlib.suppress(UsageError):
        read_marker(path)
        return path
    if path.name == TRUST_SUBDIR:
        read_marker(path.parent)
        return path.parent
    read_marker(path)  # raises the refusal
    return path


def wipe_tree(path: Path) -> None:
    """Overwrite every file with zeros, then remove it all; signals wait until done."""
    old = signal.pthread_sigmask(signal.SIG_BLOCK, _WIPE_SIGNALS)
    try:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise _io(exc, path) from None
        try:
            os.fchmod(fd, 0o700)
            _wipe_children(fd, path)
        finally:
            os.close(fd)
        try:
            path.rmdir()
        except OSError as exc:
            raise _io(exc, path) from None
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _wipe_children(dir_fd: int, where: Path) -> None:
    with os.scandir(dir_fd) as entries:
        names = [e.name for e in entries]
    for name in names:
        try:
            st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            if stat.S_ISDIR(st.st_mode):
                sub = os.open(
                    name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd
                )
                try:
                    os.fchmod(sub, 0o700)
                    _wipe_children(sub, where / name)
                finally:
                    os.close(sub)
                os.rmdir(name, dir_fd=dir_fd)
                continue
            # a file with other hard links may be someone's file elsewhere: unlink only
            if stat.S_ISREG(st.st_mode) and st.st_nlink == 1 and 0 < st.st_size <= _ZERO_LIMIT:
                _zero(dir_fd, name, st.st_size)
            os.unlink(name, dir_fd=dir_fd)
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise _io(exc, where / name) from None


def _zero(dir_fd: int, name: str, size: int) -> None:
    flags = os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(name, flags, dir_fd=dir_fd)
    except PermissionError:  # made read-only by the command: make it writable first
        rfd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
        try:
            os.fchmod(rfd, 0o600)
        finally:
            os.close(rfd)
        fd = os.open(name, flags, dir_fd=dir_fd)
    try:
        zeros = bytes(min(size, 65536))
        left = size
        while left > 0:
            left -= os.write(fd, zeros[:left])
        os.fsync(fd)
    finally:
        os.close(fd)


def _io(exc: OSError, path: Path) -> KeyvaultError:
    return fsutil.translate_os_error(exc, path, "use")


def runtime_base(config_env: Mapping[str, str], state_dir: Path) -> Path:
    """Where the directories go: $KEYVAULT_TMPDIR, else RAM (/dev/shm, $XDG_RUNTIME_DIR),
    else keyvault's state directory."""
    chosen = config_env.get(BASE_ENV)
    if chosen:
        base = Path(chosen)
    else:
        candidates = [Path("/dev/shm")]  # noqa: S108 - RAM; our dirs are 0700, random
        if config_env.get("XDG_RUNTIME_DIR"):
            candidates.append(Path(config_env["XDG_RUNTIME_DIR"]))
        base = next(
            (c for c in candidates if c.is_dir() and os.access(c, os.W_OK | os.X_OK)),
            state_dir / "run",
        )
    try:
        base.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise _io(exc, base) from None
    return base


def sweep(base: Path, *, stale: bool = True, expired: bool = False) -> list[Path]:
    """Wipe this user's directories under ``base`` whose process died (all kinds but fetch,
    which is meant to outlive it) or whose time is up."""
    wiped: list[Path] = []
    try:
        candidates = [p for p in base.iterdir() if p.name.startswith(tuple(PREFIXES.values()))]
    except OSError:
        return wiped
    for path in candidates:
        try:
            marker = read_marker(path)
        except UsageError:
            continue  # not ours, or still being made: never touched
        if (stale and marker.kind != "fetch" and marker.owner_gone()) or (
            expired and marker.expired()
        ):
            wipe_tree(path)
            wiped.append(path)
    return wiped


@contextlib.contextmanager
def private_scratch(env: Mapping[str, str], state_dir: Path, kind: str) -> Iterator[WorkDir]:
    """A fresh marked directory for ``kind`` under :func:`runtime_base`, wiped on the way out.

    Directories of earlier runs that died are wiped first: key bytes a SIGKILL left
    behind stay no longer than the next run.
    """
    base = runtime_base(env, state_dir)
    sweep(base)
    work = WorkDir.create_in(base, kind)
    try:
        yield work
    finally:
        work.wipe()
