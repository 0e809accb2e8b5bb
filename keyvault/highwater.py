"""This machine's high-water marks: the newest version of each key it has seen.

A signed version chain stops an older version being replayed *on top* of a
newer one, but whoever controls the store could also remove the newer
versions. So each machine remembers, per store and object, the highest
sequence number it has written or verified and the digest of those stored
bytes; a lower number later, or another version under the same number, is a
rollback (or a fork) and is refused. Modelled on how a TUF client keeps its
trusted metadata versions between runs.

One JSON file per store under the state directory (0600), merged under an
exclusive lock on save, so concurrent keyvault processes only ever raise a mark.
"""

from __future__ import annotations

import hmac
import json
import threading
from dataclasses import dataclass
from pathlib import Path

from keyvault.bounded import json_loads
from keyvault.errors import IntegrityError
from keyvault.statefile import locked, store_file

MAX_FILE_SIZE = 64 * 1024 * 1024


@dataclass(frozen=True)
class Mark:
    sequence: int
    digest: str  # SHA-256 (hex) of the stored bytes of that version


class HighWater:
    """The marks of one store on this machine. Thread-safe; saved explicitly."""

    def __init__(self, state_dir: Path, store_uri: str) -> None:
        self.path = store_file(state_dir, "highwater", store_uri)
        self.store_uri = store_uri
        self._marks: dict[str, Mark] | None = None
        self._dirty: dict[str, Mark] = {}
        self._lock = threading.Lock()

    def get(self, name: str) -> Mark | None:
        with self._lock:
            return self._loaded().get(name)

    def check(self, name: str, sequence: int, digest: str, what: str) -> None:
        """IntegrityError if version ``sequence`` is older than one seen, or a fork of it."""
        seen = self.get(name)
        if seen is None:
            return
        if sequence < seen.sequence:
            raise IntegrityError(
                f"{what}: rollback: the store's latest version is number {sequence}, older "
                f"than version {seen.sequence} this machine has already seen; refused",
                hint="someone replaced or removed the newer versions: investigate, or "
                     "restore a version on purpose with --version")
        if sequence == seen.sequence and not hmac.compare_digest(digest, seen.digest):
            raise IntegrityError(
                f"{what}: version {sequence} in the store differs from the version {sequence} "
                "this machine has seen (a fork of the key's history); refused",
                hint="investigate who sealed it; the sealer may be compromised")

    def note(self, name: str, sequence: int, digest: str) -> None:
        """Raise the mark of ``name`` (never lowers it)."""
        with self._lock:
            marks = self._loaded()
            seen = marks.get(name)
            if seen is None or sequence > seen.sequence:
                marks[name] = self._dirty[name] = Mark(sequence, digest)

    def save(self) -> None:
        """Merge the raised marks into the file (highest wins), atomically."""
        with self._lock:
            if not self._dirty:
                return
            from keyvault.fsutil import ensure_private_dir, write_file_atomic

            ensure_private_dir(self.path.parent)
            with locked(self.path):
                merged = _read(self.path)
                for name, mark in self._dirty.items():
                    current = merged.get(name)
                    if current is None or mark.sequence > current.sequence:
                        merged[name] = mark
                doc = {"store": self.store_uri,
                       "marks": {n: [m.sequence, m.digest] for n, m in sorted(merged.items())}}
                write_file_atomic(self.path.parent, self.path.name,
                                  json.dumps(doc, separators=(",", ":")).encode("utf-8"),
                                  exclusive=False)
            self._marks = merged
            self._dirty.clear()

    def _loaded(self) -> dict[str, Mark]:
        if self._marks is None:
            self._marks = _read(self.path)
        return self._marks


def _read(path: Path) -> dict[str, Mark]:
    """The marks in ``path``; a missing file is no marks. A corrupt one is refused loudly."""
    from keyvault.fsutil import read_private_file, refuse_if_others_can_replace

    refuse_if_others_can_replace(path, "high-water file")  # removing it forgets every mark
    if not path.exists():
        return {}
    data = read_private_file(path, "high-water file", MAX_FILE_SIZE)
    try:
        doc = json_loads(data)
        raw = doc["marks"]
        return {str(name): Mark(int(seq), str(digest)) for name, (seq, digest) in raw.items()}
    except (ValueError, KeyError, TypeError, AttributeError):
        raise IntegrityError(f"high-water file {path} is corrupt; refusing to guess what this "
                             "machine has seen",
                             hint="inspect it; remove it only if you know no rollback "
                                  "happened") from None
