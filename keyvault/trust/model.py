"""The model of a key found in a trust directory.

A key file is carried as opaque bytes, exactly as found on disk (still
passphrase-encrypted by Notary where it was). Only ``verify --deep`` ever
decrypts one, and then only in memory.
"""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass, field, replace

#: Key files larger than this are refused before they are read (B13).
MAX_KEY_FILE_SIZE = 1024 * 1024


class Layout(enum.Enum):
    """Where in ``private/`` Notary (or the docker CLI) put a key file."""

    CURRENT = "current"  # private/<id>.key, role:/gun: PEM headers
    LEGACY_ROOT_KEYS = "root_keys"  # private/root_keys/<id>.key
    LEGACY_TUF_KEYS = "tuf_keys"  # private/tuf_keys/<gun>/<id>.key
    LEGACY_V01 = "v0.1"  # <id>_<role>.key, no headers, in any of the above


@dataclass(frozen=True)
class KeyFile:
    """One key file: identity, where it was, and its bytes (never shown in a repr).

    A bulk backup works on *released* key files (:meth:`released`): the bytes are
    dropped after the scan, their SHA-256 and length kept, and the file is read
    again, and checked against that digest, only when its envelope is sealed. So
    memory holds the keys in flight, not every key of the trust directory.
    """

    key_id: str
    role: str | None  # None: no role: header (notary still loads the key by its ID)
    gun: str | None
    algorithm: str | None  # "ecdsa", "rsa", "ed25519", or None when encrypted/unknown
    relpath: str  # POSIX path relative to <trust>/private, e.g. "tuf_keys/<gun>/<id>.key"
    mode: int  # permission bits as found, e.g. 0o600
    layout: Layout
    encrypted: bool
    data: bytes = field(repr=False)
    #: SHA-256 (hex) and length of the bytes as scanned; computed from ``data`` when given.
    digest: str = field(default="", repr=False, compare=False)
    length: int = field(default=-1, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.data or not self.digest:
            object.__setattr__(self, "digest", hashlib.sha256(self.data).hexdigest())
            object.__setattr__(self, "length", len(self.data))

    @property
    def sha256(self) -> str:
        return self.digest

    @property
    def size(self) -> int:
        return self.length

    @property
    def is_released(self) -> bool:
        return not self.data and self.length > 0

    def released(self) -> KeyFile:
        """The same key file without its bytes (digest and length kept)."""
        return replace(self, data=b"")


@dataclass(frozen=True)
class ScanProblem:
    """A file in ``private/`` that is not a usable key: reported, skipped, never fatal."""

    relpath: str
    code: str  # short stable slug: "empty", "not-pem", "no-role", "bad-name", "symlink", ...
    reason: str  # human sentence; never contains key material


@dataclass(frozen=True)
class ScanResult:
    trust_dir: str
    keys: tuple[KeyFile, ...]
    problems: tuple[ScanProblem, ...]
