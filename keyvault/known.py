"""What this machine last sealed or verified of each key, so a backup can skip reading it.

Proving a key unchanged used to cost a read of its latest envelope. This
file remembers, per store and object, the latest version this machine wrote
itself or read and authenticated (signature, chain, high-water mark): its
entity tag (S3 ETag), version, chain number and digest, sealer, dual-control
threshold and wrappers. A backup lists the store once (a page per 1,000 keys)
and takes a key as unchanged, with no read, only when the listed tag of its
latest version is exactly the one recorded, the high-water mark has not moved
past it, its sealer is still trusted and the key file on disk is the one that
was sealed. Anything else takes the authenticated read of the latest version.

The key file is recorded by a keyed digest (HMAC of its SHA-256), never by a
plain hash. Every record carries an HMAC-SHA256 tag over all of it: a record
whose tag does not verify (edited, or copied from another machine or store)
is no shortcut. A key whose bytes changed while its record still names the
store's latest version is sealed on top of that version without reading it. The MAC key
is derived from this machine's sealing key (the Ed25519 signature, which is
deterministic, of a label naming the store), so forging a record takes the
sealing key, with which one could seal envelopes anyway. A sealer whose
signatures are randomized (ECDSA: AWS KMS, Transit ecdsa-p256) gives no
stable key: no record is kept and every key is read, as before.

One JSON file per store under the state directory (0600), merged under an
exclusive lock on save, like the high-water marks beside it.

With ``[vault] change_marker`` the file also records, per team, the tag of the team's
change marker read before this machine's last listing, when that was and which folders
it listed (:meth:`KnownVersions.marker`), under the same MAC key: a backup of keys in
those folders that finds the marker unmoved, within ``[vault] full_check_every``,
takes the records as the listing.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from keyvault.statefile import locked, store_file

MAX_FILE_SIZE = 128 * 1024 * 1024
#: The HMACs are kept to 128 bits (hex), as truncated HMAC-SHA256 allows: half the bytes.
MAC_HEX = 32
#: What the sealer signs to give the MAC key (with the store's URI after it).
LABEL = b"keyvault known-versions MAC key v1\x00"


@dataclass(frozen=True, slots=True)
class Seen:
    """One key's latest version as this machine sealed or verified it."""

    tag: str  # the store's entity tag of that version (S3 ETag, hex)
    version: str  # the store's version ID
    sequence: int  # its number in the signed chain
    digest: str  # SHA-256 (hex) of its stored bytes
    sealer: str  # fingerprint of the sealer that signed it
    threshold: int  # M of its threshold group; 1 without one
    wrappers: str  # SHA-256 (hex) of its wrapper URIs, sorted, one a line
    key: str  # keyed digest of the key file that was sealed (key_digest), never a plain hash

    def row(self) -> list[str | int]:
        """The fields in order, as the file stores them (dataclasses.astuple deep-copies)."""
        return [
            self.tag,
            self.version,
            self.sequence,
            self.digest,
            self.sealer,
            self.threshold,
            self.wrappers,
            self.key,
        ]


def wrappers_digest(uris: list[str] | tuple[str, ...]) -> str:
    return hashlib.sha256("\n".join(sorted(set(uris))).encode("utf-8")).hexdigest()


class KnownVersions:
    """The records of one store on this machine, keyed by a MAC key. Thread-safe."""

    def __init__(self, state_dir: Path, store_uri: str, mac_key: bytes) -> None:
        self.path = store_file(state_dir, "known", store_uri)
        self.store_uri = store_uri
        self._keyed = hmac.new(mac_key, digestmod=hashlib.sha256)  # copied for each MAC
        self._records: dict[str, tuple[Seen, str]] | None = None
        self._dirty: dict[str, tuple[Seen, str]] = {}
        self._gone: set[str] = set()
        self._markers: dict[str, Marker] | None = None
        self._dirty_markers: dict[str, Marker] = {}
        self._lock = threading.Lock()

    def match(self, name: str, listed_tag: str) -> Seen | None:
        """The record of ``name`` if its MAC verifies and the store's latest version is the
        recorded one (its listed tag); else None."""
        with self._lock:
            found = self._loaded().get(name)
        if found is None or not listed_tag:
            return None
        seen, mac = found
        if not hmac.compare_digest(seen.tag, listed_tag):
            return None
        return seen if hmac.compare_digest(mac, self._mac(name, seen)) else None

    def key_digest(self, name: str, key_sha256: str) -> str:
        """The keyed digest of a key file (by its SHA-256) stored as :attr:`Seen.key`."""
        return self._hmac("key", self.store_uri, name, key_sha256)

    def holds(self, seen: Seen, name: str, key_sha256: str) -> bool:
        """Whether the recorded version ``seen`` holds exactly this key file."""
        return hmac.compare_digest(seen.key, self.key_digest(name, key_sha256))

    def recorded_tag(self, name: str) -> str:
        """The tag recorded for ``name`` ("" if none), unverified: :meth:`match` checks it."""
        with self._lock:
            found = self._loaded().get(name)
        return found[0].tag if found is not None else ""

    def marker(self, team: str) -> Marker | None:
        """The team's change marker as this machine's last complete listing found it, if its
        MAC verifies."""
        with self._lock:
            marker = self._loaded_markers().get(team)
        if marker is None:
            return None
        return marker if hmac.compare_digest(marker.mac, self._marker_mac(team, marker)) else None

    def note_marker(
        self,
        team: str,
        tag: str,
        checked: float,
        folders: frozenset[str] = frozenset(),
        *,
        pending: bool = False,
    ) -> None:
        """Record the marker's ``tag`` read before a listing of ``folders`` made at
        ``checked`` (``pending``: a write is not announced yet; no tag, no folders then)."""
        if pending:
            tag, folders = "", frozenset()
        marker = Marker(tag, round(checked, 3), pending, tuple(sorted(folders)), "")
        marker = marker._replace(mac=self._marker_mac(team, marker))
        with self._lock:
            self._loaded_markers()[team] = self._dirty_markers[team] = marker

    def _marker_mac(self, team: str, marker: Marker) -> str:
        checked, pending = repr(marker.checked), int(marker.pending)
        return self._hmac(
            "marker", self.store_uri, team, marker.tag, checked, pending, *marker.folders
        )

    def note(self, name: str, seen: Seen) -> None:
        """Record ``seen`` as the latest version of ``name``."""
        if not seen.tag:
            return
        with self._lock:
            self._loaded()[name] = self._dirty[name] = (seen, self._mac(name, seen))

    def forget(self, name: str) -> None:
        """No record of ``name`` (its latest version is not one this machine vouches for)."""
        with self._lock:
            records = self._loaded()
            if name in records:
                del records[name]
                self._dirty.pop(name, None)
                self._gone.add(name)

    def save(self) -> None:
        """Merge this run's records into the file (this run's win), atomically."""
        from keyvault.fsutil import ensure_private_dir, write_file_atomic

        with self._lock:
            if not self._dirty and not self._gone and not self._dirty_markers:
                return
            ensure_private_dir(self.path.parent)
            with locked(self.path):
                records, markers = _read(self.path)
                merged = {**records, **self._dirty}
                for name in self._gone:
                    merged.pop(name, None)
                markers.update(self._dirty_markers)
                doc = {
                    "store": self.store_uri,
                    "keys": {n: [*s.row(), mac] for n, (s, mac) in sorted(merged.items())},
                    "markers": {t: list(m) for t, m in sorted(markers.items())},
                }
                write_file_atomic(
                    self.path.parent,
                    self.path.name,
                    json.dumps(doc, separators=(",", ":")).encode("utf-8"),
                    exclusive=False,
                )
            self._records, self._markers = merged, markers
            self._dirty.clear()
            self._gone.clear()
            self._dirty_markers.clear()

    def _mac(self, name: str, seen: Seen) -> str:
        return self._hmac("record", self.store_uri, name, *seen.row())

    def _hmac(self, *fields: str | int) -> str:
        """HMAC-SHA256 of the fields, each length-prefixed (no separator to confuse)."""
        mac = self._keyed.copy()
        parts = [str(value).encode("utf-8") for value in fields]
        mac.update(b"".join(len(p).to_bytes(4, "big") + p for p in parts))
        return mac.hexdigest()[:MAC_HEX]

    def _loaded(self) -> dict[str, tuple[Seen, str]]:
        if self._records is None:
            self._records, self._markers = _read(self.path)
        return self._records

    def _loaded_markers(self) -> dict[str, Marker]:
        if self._markers is None:
            self._records, self._markers = _read(self.path)
        return self._markers


class Marker(NamedTuple):
    """A team's change marker as this machine's last complete listing found it."""

    tag: str  # the marker's tag read before that listing
    checked: float  # when (seconds since the epoch)
    pending: bool  # a write of a later run is not announced yet
    folders: tuple[str, ...]  # the folders that listing listed, sorted
    mac: str


def _read(path: Path) -> tuple[dict[str, tuple[Seen, str]], dict[str, Marker]]:
    """The records in ``path``. A missing, unreadable or corrupt file is no records: it is
    only ever a shortcut (each record's MAC is checked on use), so keys are read instead."""
    from keyvault.errors import KeyvaultError
    from keyvault.fsutil import read_private_file, refuse_if_others_can_replace

    refuse_if_others_can_replace(path, "known-versions file")
    if not path.exists():
        return {}, {}
    try:  # plain json: the file is this user's own, and a deep one is only no records
        doc = json.loads(read_private_file(path, "known-versions file", MAX_FILE_SIZE))
        # the sealer and the wrappers are the same for most keys: one string each in memory
        records = {
            str(name): (
                Seen(
                    str(t),
                    str(v),
                    int(s),
                    str(d),
                    sys.intern(str(f)),
                    int(m),
                    sys.intern(str(w)),
                    str(k),
                ),
                str(mac),
            )
            for name, (t, v, s, d, f, m, w, k, mac) in doc["keys"].items()
        }
        markers = {
            str(team): Marker(str(t), float(c), bool(p), tuple(map(str, f)), str(mac))
            for team, (t, c, p, f, mac) in doc.get("markers", {}).items()
        }
    except (KeyvaultError, ValueError, KeyError, TypeError, AttributeError, RecursionError):
        return {}, {}
    return records, markers
