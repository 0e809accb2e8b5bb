"""The model of a key found in a trust directory.

A key file is carried as opaque bytes, exactly as found on disk (still
passphrase-encrypted by Notary where it was). Only ``verify --deep`` ever
decrypts one, and then only in memory.
"""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass, field

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
    """One key file: identity, where it was, and its bytes (never shown in a repr)."""

    key_id: str
    role: str
    gun: str | None
    algorithm: str | None  # "ecdsa", "rsa", "ed25519", or None when encrypted/unknown
    relpath: str  # POSIX path relative to <trust>/private, e.g. "tuf_keys/<gun>/<id>.key"
    mode: int  # permission bits as found, e.g. 0o600
    layout: Layout
    encrypted: bool
    data: bytes = field(repr=False)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    @property
    def size(self) -> int:
        return len(self.data)


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
