"""Fixtures for the backend tests: root-only mounts.

Permission cases run code as another user: ``run_as_nobody`` in the
``shared_dir`` fixture (tests/fixtures/host.py). Mount cases need root and
skip cleanly otherwise.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fixtures.host import is_root, mounted_tmpfs, remount_read_only

TEST_SCRYPT_N = 2**14


@pytest.fixture
def tiny_tmpfs() -> Iterator[Path]:
    """A 64 KiB tmpfs: writes beyond it fail with ENOSPC (B30, F09)."""
    if not is_root():
        pytest.skip("needs root to mount a tmpfs")
    with mounted_tmpfs("64k") as mountpoint:
        yield mountpoint


@pytest.fixture
def make_read_only(tiny_tmpfs: Path) -> Callable[[], None]:
    """Remounts the tiny tmpfs read-only when called (B31, F10)."""
    return lambda: remount_read_only(tiny_tmpfs)
