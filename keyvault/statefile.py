"""Where this machine's per-store state lives, and the lock that serializes its saves.

The high-water marks (keyvault.highwater) and the known versions (keyvault.known)
each keep one JSON file per store under the state directory, merged under an
exclusive lock on save so concurrent keyvault processes never lose each other's
records.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path


def store_file(state_dir: Path, kind: str, store_uri: str) -> Path:
    """``<state>/<kind>/<hash of the store URI>.json``: one file per store, no URI in it."""
    digest = hashlib.sha256(store_uri.encode("utf-8")).hexdigest()[:32]
    return state_dir / kind / f"{digest}.json"


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """An exclusive lock on ``path``'s ``.lock`` file (0600), held for the block."""
    lock = path.with_suffix(".lock")
    fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
