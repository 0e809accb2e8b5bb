"""This machine's high-water marks: the newest version of each key it has seen.

A signed version chain stops an older version being replayed *on top* of a
newer one, but whoever controls the store could also remove the newer
versions. So each machine remembers, per store and object, the highest
sequence number it has written or verified and the digest of those stored
bytes; a lower number later, or another version under the same number, is a
rollback (or a fork) and is refused. Modelled on how a TUF client keeps its
trusted metadata versions between runs.

The marks of one store are kept in SHARDS small JSON files under the state
directory (0600), a key's shard chosen by its GUN's folder, so reading one
GUN's marks costs the same whether this machine has seen a hundred keys or a
hundred thousand. At most MAX_LOADED shards are held in memory, and once
FLUSH_AT marks have been raised they are saved, so a bulk run's marks stream
to disk in batches. Each save merges under an exclusive lock, so concurrent keyvault
processes only ever raise a mark. The single file of earlier versions is
split into the shards on first use.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from keyvault.bounded import json_loads
from keyvault.errors import IntegrityError
from keyvault.statefile import locked, store_file

MAX_FILE_SIZE = 64 * 1024 * 1024
#: Shard files per store: at 100,000 keys about 400 marks (80 KB) each.
SHARDS = 256
#: Shards read from disk held in memory at once (the least recently used is dropped).
MAX_LOADED = 16
#: Raised marks held in memory before they are saved (about 250 bytes each).
FLUSH_AT = 20_000
#: Shard files written at once by a save (a first restore of 1,000 keys raises ~250).
SAVE_WORKERS = 8


@dataclass(frozen=True)
class Mark:
    sequence: int
    digest: str  # SHA-256 (hex) of the stored bytes of that version


def shard_of(name: str) -> str:
    """The shard of object ``name``: its GUN's folder (``.../guns/<gun>`` for a key's
    ``.../guns/<gun>/<role>/<id>.json``) decides, so one GUN's keys share one file."""
    folder = name.rsplit("/", 2)[0]
    return f"{int(hashlib.sha256(folder.encode('utf-8')).hexdigest()[:8], 16) % SHARDS:02x}"


class HighWater:
    """The marks of one store on this machine. Thread-safe; saved explicitly (and every
    FLUSH_AT raised marks)."""

    def __init__(self, state_dir: Path, store_uri: str) -> None:
        #: The one file earlier versions kept: split into the shards on first use.
        self.path = store_file(state_dir, "highwater", store_uri)
        self._stem, self.directory = self.path.stem, self.path.parent
        self.store_uri = store_uri
        self._loaded: OrderedDict[str, dict[str, Mark]] = OrderedDict()
        #: Shards found empty (no file yet): remembered apart, so that a run touching more
        #: than MAX_LOADED of them (a first restore) does not read each again and again.
        self._empty: set[str] = set()
        self._dirty: dict[str, dict[str, Mark]] = {}  # raised, not saved yet: by shard
        self._raised = 0
        self._migrated = False
        self._lock = threading.Lock()

    def shard_path(self, name: str) -> Path:
        """The file that holds the mark of object ``name``."""
        return self.directory / f"{self._stem}-{shard_of(name)}.json"

    def get(self, name: str) -> Mark | None:
        with self._lock:
            return self._seen(shard_of(name), name)

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
                "restore a version on purpose with --version",
            )
        if sequence == seen.sequence and not hmac.compare_digest(digest, seen.digest):
            raise IntegrityError(
                f"{what}: version {sequence} in the store differs from the version {sequence} "
                "this machine has seen (a fork of the key's history); refused",
                hint="investigate who sealed it; the sealer may be compromised",
            )

    def note(self, name: str, sequence: int, digest: str) -> None:
        """Raise the mark of ``name`` (never lowers it)."""
        sid = shard_of(name)
        with self._lock:
            seen = self._seen(sid, name)
            if seen is None or sequence > seen.sequence:
                raised = self._dirty.setdefault(sid, {})
                self._raised += name not in raised
                raised[name] = Mark(sequence, digest)
                if self._raised >= FLUSH_AT:
                    self._save()

    def save(self) -> None:
        """Merge the raised marks into their shard files (highest wins), atomically."""
        with self._lock:
            self._save()

    def _seen(self, sid: str, name: str) -> Mark | None:
        """The mark of ``name``: raised in this run, or else in its shard file. Lock held."""
        return self._dirty.get(sid, {}).get(name) or self._shard(sid).get(name)

    def _save(self) -> None:
        from keyvault.fsutil import ensure_private_dir, fsync_dir

        if self._dirty:
            ensure_private_dir(self.directory)
            with locked(self.path):  # once for all the shards: a bulk run raises hundreds
                if len(self._dirty) == 1:  # the daemon's usual save: no pool for one file
                    sid = next(iter(self._dirty))
                    self._saved(*self._merge(sid, self._dirty[sid]))
                else:  # each shard its own file: their fsyncs overlap, the folder's is one
                    with ThreadPoolExecutor(
                        max_workers=SAVE_WORKERS, thread_name_prefix="keyvault-marks"
                    ) as pool:
                        merging = [
                            pool.submit(self._merge, sid, m, sync_dir=False)
                            for sid, m in self._dirty.items()
                        ]
                        merged = [m.result() for m in merging]
                    fsync_dir(self.directory, str(self.path))
                    for sid, marks in merged:
                        self._saved(sid, marks)
        self._raised = 0

    def _shard(self, sid: str) -> dict[str, Mark]:
        """Shard ``sid``'s marks as saved, loaded if need be; the least recently used
        shard beyond MAX_LOADED is dropped. Lock held."""
        found = self._loaded.get(sid)
        if found is not None:
            self._loaded.move_to_end(sid)
            return found
        if sid in self._empty:
            return {}
        if not self._migrated:
            self._migrate()
        found = _read(self.directory / f"{self._stem}-{sid}.json", folder_checked=True)
        if not found:
            self._empty.add(sid)
            return found
        self._loaded[sid] = found
        while len(self._loaded) > MAX_LOADED:
            del self._loaded[next(iter(self._loaded))]
        return found

    def _saved(self, sid: str, merged: dict[str, Mark]) -> None:
        """Shard ``sid`` is on disk as ``merged``: its raised marks are no longer pending."""
        del self._dirty[sid]
        self._empty.discard(sid)
        if sid in self._loaded:
            self._loaded[sid] = merged

    def _merge(
        self, sid: str, raised: dict[str, Mark], *, sync_dir: bool = True
    ) -> tuple[str, dict[str, Mark]]:
        """Write shard ``sid`` with ``raised`` merged in (highest wins); file lock held.
        Touches no shared state (called from several threads): (``sid``, the merged marks)."""
        from keyvault.fsutil import write_file_atomic

        path = self.directory / f"{self._stem}-{sid}.json"
        merged = _read(path, folder_checked=self._migrated)
        for name, mark in raised.items():
            current = merged.get(name)
            if current is None or mark.sequence > current.sequence:
                merged[name] = mark
        doc = {
            "store": self.store_uri,
            "shard": sid,
            "marks": {n: [m.sequence, m.digest] for n, m in sorted(merged.items())},
        }
        write_file_atomic(
            path.parent,
            path.name,
            json.dumps(doc, separators=(",", ":")).encode("utf-8"),
            exclusive=False,
            sync_dir=sync_dir,
        )
        return sid, merged

    def _migrate(self) -> None:
        """Split the single file of earlier versions into the shards, then remove it (a
        corrupt one is refused, as it always was). Lock held. Only once this has passed
        are the shards' folders taken as checked (a refusal here is raised again)."""
        if not self.path.exists():  # checked again under the file lock
            _read(self.path)  # who could remove it could remove the shards: refuse that too
            self._migrated = True
            return
        with locked(self.path):
            old = _read(self.path)
            by_shard: dict[str, dict[str, Mark]] = {}
            for name, mark in old.items():
                by_shard.setdefault(shard_of(name), {})[name] = mark
            for sid, marks in by_shard.items():
                self._merge(sid, marks)
            self.path.unlink()
        self._migrated = True


def _read(path: Path, *, folder_checked: bool = False) -> dict[str, Mark]:
    """The marks in ``path``; a missing file is no marks. A corrupt one is refused loudly.

    ``folder_checked``: the folders above ``path`` were found safe in this run (the
    shards share them), so a missing shard is not checked again: a first restore looks
    for hundreds of them."""
    from keyvault.fsutil import read_private_file, refuse_if_others_can_replace

    if not path.exists():
        if not folder_checked:  # who could remove it could remove the shards: refused
            refuse_if_others_can_replace(path, "high-water file")
        return {}
    # Checks the file, and the folders above it (removing it forgets every mark).
    data = read_private_file(path, "high-water file", MAX_FILE_SIZE)
    try:
        doc = json_loads(data)
        raw = doc["marks"]
        return {str(name): Mark(int(seq), str(digest)) for name, (seq, digest) in raw.items()}
    except (ValueError, KeyError, TypeError, AttributeError):
        raise IntegrityError(
            f"high-water file {path} is corrupt; refusing to guess what this machine has seen",
            hint="inspect it; remove it only if you know no rollback happened",
        ) from None
