"""Per-key records of a bulk run, at most a window of them in memory, the rest on disk.

A restore or backup of 100,000 keys keeps a record per key: what it did (the
report) and what to undo if it fails (the rollback records). Held as Python
objects, with the ``--json`` document built from them, that was 3.5 to 5 KB per
key, 330 to 480 MiB at 100,000 keys (docs/performance.md). A :class:`Spool`
keeps up to :data:`WINDOW` records in memory and then writes them, one JSON
line per window, to an unnamed file (0600, made in a fresh 0700 directory that is
removed at once). The file has no name, so it goes away when the spool is
closed, when the process ends however it ends (Ctrl-C, SIGKILL), and never
lingers for anyone to read.

What goes in: names, versions, paths, actions, reasons, error messages (which
never hold a secret, keyvault.errors), inode numbers and keyed digests only;
never key bytes, passphrases or tokens. A digest of key
bytes (what a restore compares its read-back with) is stored only as an HMAC
under a random key that lives in this process's memory
(:func:`keyed_digest`), so the file says nothing about the key.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any, Generic, TypeVar

T = TypeVar("T")

#: Records a spool keeps in memory before it writes them out.
WINDOW = 1000

#: The per-process key of :func:`keyed_digest`: never written anywhere.
_DIGEST_KEY = secrets.token_bytes(32)


class Stats:
    """The most records any spool of this process held in memory at once, appended or
    read back (tests check it). Reading back holds one window read from the file beside
    the records not yet written: at most twice the window per spool."""

    peak = 0

    @classmethod
    def reset(cls) -> None:
        cls.peak = 0


def keyed_digest(data: bytes) -> bytes:
    """A digest of ``data`` that is safe to spill: an HMAC under a key only this process
    holds, so equal bytes still compare equal and the spooled value reveals nothing."""
    return hmac.new(_DIGEST_KEY, hashlib.sha256(data).digest(), hashlib.sha256).digest()


class Spool(Generic[T]):
    """An append-only list of records: the last ``window`` in memory, the rest on disk.

    Read back in order, as often as needed, with ``iter``; not while appending.
    ``encode`` turns a record into JSON-able data (no secret: see the module), and
    ``decode`` turns it back.
    """

    def __init__(
        self,
        encode: Callable[[T], Any],
        decode: Callable[[Any], T],
        *,
        window: int | None = None,
        directory: str | None = None,
    ) -> None:
        self._encode, self._decode = encode, decode
        self._window = max(1, WINDOW if window is None else window)
        self._directory = directory
        self._held: list[T] = []
        self._file: IO[bytes] | None = None
        self._spilled = 0
        self.closed = False

    def append(self, record: T) -> None:
        if self.closed:
            raise ValueError("append to a closed spool")
        self._held.append(record)
        Stats.peak = max(Stats.peak, len(self._held))
        if len(self._held) >= self._window:
            self._spill()

    def __len__(self) -> int:
        return self._spilled + len(self._held)

    def __iter__(self) -> Iterator[T]:
        if self._file is not None:
            self._file.flush()
            fd = self._file.fileno()
            # pread: the file's own position (where appends go) is never moved.
            offset, rest = 0, b""
            while chunk := os.pread(fd, 1 << 16, offset):
                offset += len(chunk)
                *lines, rest = (rest + chunk).split(b"\n")
                for line in lines:  # one window of records
                    batch = json.loads(line)
                    Stats.peak = max(Stats.peak, len(batch))
                    yield from map(self._decode, batch)
        yield from list(self._held)

    def _spill(self) -> None:
        if self._file is None:
            self._file = _unnamed_file(self._directory)
        line = json.dumps([self._encode(r) for r in self._held], separators=(",", ":"))
        self._file.write(line.encode() + b"\n")
        self._spilled += len(self._held)
        self._held.clear()

    def close(self) -> None:
        """Drop every record; the file (unnamed) is freed with its descriptor."""
        self.closed = True
        self._held.clear()
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> Spool[T]:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def _unnamed_file(directory: str | None) -> IO[bytes]:
    """A 0600 file without a name, opened in a fresh 0700 directory removed right away."""
    made = Path(tempfile.mkdtemp(prefix="keyvault-spool-", dir=directory))  # 0700
    try:
        return tempfile.TemporaryFile("w+b", dir=made)  # O_TMPFILE or unlinked at once: 0600
    finally:
        made.rmdir()
