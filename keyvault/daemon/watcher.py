"""File events from the trust directories (inotify, FSEvents, kqueue via watchfiles).

Only paths under ``<trust dir>/private`` are kept, and of those only
``*.key`` files, plus new directories (whose ``*.key`` files are listed at
once, since a file created in a directory before the watch on that directory
exists produces no event of its own: notary creates ``private/`` and writes
the first key right after). Under ``<trust dir>/tuf``, each GUN's pinned
``<gun>/metadata/root.json`` becomes a :class:`PinEvent` (notary rotated the
root, or pulled a new GUN), new directories there likewise. Deletions are
ignored: the store keeps every backup. Paths outside the trust directories
never become events (T14); symlinks are not followed here, and the trust
reader refuses them later.

Events say only *which* file to look at; nothing is read here. The daemon
debounces them and reads the file through the trust reader when it is quiet.
A trust directory that does not exist yet is not watched; :meth:`refresh`
(called by the daemon periodically) starts watching it once it appears.
"""

from __future__ import annotations

import contextlib
import os
import stat
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from keyvault.daemon.log import EventLog

PRIVATE = "private"
TUF = "tuf"
KEY_SUFFIX = ".key"
PIN_TAIL = ("metadata", "root.json")
MAX_WALK_DEPTH = 16


@dataclass(frozen=True)
class KeyEvent:
    trust_dir: str  # the trust directory as configured (absolute)
    relpath: str  # POSIX path under private/, e.g. "<id>.key" or "tuf_keys/<gun>/<id>.key"


@dataclass(frozen=True)
class PinEvent:
    """A GUN's pinned root.json under ``tuf/`` was written: back up that GUN's pin."""

    trust_dir: str
    gun: str  # as the directory names it; the pin scan validates it


TrustEvent = KeyEvent | PinEvent


@dataclass(frozen=True)
class _Root:
    trust_dir: str  # as configured
    private: str  # real path of <trust dir>/private, as the OS reports events under it

    @property
    def tuf(self) -> str:
        return str(Path(self.private).parent / TUF)


class TrustWatcher:
    """Watches trust directories in a background thread; calls ``emit`` with key and pin
    events."""

    def __init__(
        self,
        trust_dirs: Sequence[str],
        emit: Callable[[list[TrustEvent]], None],
        log: EventLog,
        *,
        step_ms: int = 50,
        retry_s: float = 5.0,
    ) -> None:
        self._dirs = list(trust_dirs)
        self._emit = emit
        self._log = log
        self._step_ms = step_ms
        self._retry_s = retry_s
        self._stop = threading.Event()
        self._run_stop = threading.Event()  # ends the current watch (stop or refresh)
        self._roots: list[_Root] = []
        self._thread: threading.Thread | None = None
        self.watching: tuple[str, ...] = ()

    def start(self) -> None:
        self._roots = self._existing()
        self._thread = threading.Thread(target=self._run, name="keyvault-watcher", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._run_stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def refresh(self) -> bool:
        """Restart the watch if the set of existing trust directories changed."""
        roots = self._existing()
        if roots == self._roots:
            return False
        self._roots = roots
        self._run_stop.set()
        return True

    def _existing(self) -> list[_Root]:
        roots = []
        for trust_dir in self._dirs:
            with contextlib.suppress(OSError):
                if Path(trust_dir).is_dir():
                    real = Path(trust_dir).resolve()
                    roots.append(_Root(trust_dir, str(real / PRIVATE)))
        return roots

    def _run(self) -> None:
        import watchfiles

        while not self._stop.is_set():
            roots = self._roots
            self._run_stop.clear()
            self.watching = tuple(r.trust_dir for r in roots)
            if not roots:
                self._run_stop.wait(self._retry_s)
                continue
            try:
                for changes in watchfiles.watch(
                    *[Path(r.private).parent for r in roots],
                    watch_filter=lambda _change, path: (
                        self._match(path) is not None or self._match_tuf(path) is not None
                    ),
                    stop_event=self._run_stop,
                    step=self._step_ms,
                    rust_timeout=0,
                    raise_interrupt=False,
                    force_polling=False,
                    ignore_permission_denied=True,
                ):
                    events = self._events(changes)
                    if events:
                        self._emit(events)
            except Exception as exc:  # the OS watch failed (dir removed, watch limit)
                self._log.warning(
                    "watch-failed",
                    error=type(exc).__name__,
                    detail=str(exc)[:200],
                    retry_in_s=self._retry_s,
                )
                self._run_stop.wait(self._retry_s)
                self._roots = self._existing()

    def _match(self, path: str) -> tuple[_Root, tuple[str, ...]] | None:
        return self._below(path, lambda root: root.private)

    def _match_tuf(self, path: str) -> tuple[_Root, tuple[str, ...]] | None:
        return self._below(path, lambda root: root.tuf)

    def _below(
        self, path: str, base: Callable[[_Root], str]
    ) -> tuple[_Root, tuple[str, ...]] | None:
        """The root whose ``base`` directory holds ``path``, and the parts below it."""
        for root in self._roots:
            top = base(root)
            if path == top:
                return root, ()
            if path.startswith(top + os.sep):
                return root, Path(path[len(top) + 1 :]).parts
        return None

    def _events(self, changes: set[tuple[Any, str]]) -> list[TrustEvent]:
        from watchfiles import Change

        events: dict[TrustEvent, None] = {}
        for change, path in sorted(changes, key=lambda c: c[1]):
            if change == Change.deleted:
                continue
            pinned = self._match_tuf(path)
            if pinned is not None:
                root, parts = pinned
                for gun in _pin_guns(path, parts, change == Change.added):
                    events[PinEvent(root.trust_dir, gun)] = None
                continue
            matched = self._match(path)
            if matched is None:
                continue
            root, parts = matched
            if parts and parts[-1].endswith(KEY_SUFFIX):
                events[KeyEvent(root.trust_dir, "/".join(parts))] = None
            elif change == Change.added and _is_real_dir(path):
                for relpath in _keys_below(path, parts):
                    events[KeyEvent(root.trust_dir, relpath)] = None
        return list(events)


def _is_real_dir(path: str) -> bool:
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False


def _keys_below(path: str, parts: tuple[str, ...]) -> list[str]:
    """``*.key`` names below a new directory (no symlink followed, bounded depth)."""
    found: list[str] = []
    base_depth = path.rstrip(os.sep).count(os.sep)
    for dirpath, dirnames, filenames in os.walk(path, followlinks=False):
        if dirpath.count(os.sep) - base_depth >= MAX_WALK_DEPTH:
            dirnames.clear()
        prefix = [*parts, *Path(dirpath).relative_to(path).parts]
        found += ["/".join([*prefix, name]) for name in filenames if name.endswith(KEY_SUFFIX)]
    return found


def _pin_guns(path: str, parts: tuple[str, ...], added: bool) -> list[str]:
    """The GUNs whose ``root.json`` this change under ``tuf/`` names: the file itself, or
    every one below a new directory (written before the watch on it existed)."""
    if len(parts) > len(PIN_TAIL) and parts[-len(PIN_TAIL) :] == PIN_TAIL:
        return ["/".join(parts[: -len(PIN_TAIL)])]
    if not added or not _is_real_dir(path):
        return []
    found: list[str] = []
    base_depth = path.rstrip(os.sep).count(os.sep)
    for dirpath, dirnames, filenames in os.walk(path, followlinks=False):
        if dirpath.count(os.sep) - base_depth >= MAX_WALK_DEPTH:
            dirnames.clear()
        below = (*parts, *Path(dirpath).relative_to(path).parts)
        if PIN_TAIL[1] in filenames and below[-1:] == PIN_TAIL[:1] and len(below) > 1:
            found.append("/".join(below[:-1]))
    return found
