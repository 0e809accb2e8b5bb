"""Fixtures for the backend tests: root-only mounts and running code as another user.

Root ignores file modes, so permission cases run in a forked child that has
dropped to ``nobody`` (the interpreter under /root is not reachable by
``setpriv`` + a new python, so we drop privileges after fork instead: the
same kernel checks apply). Mount cases need root and skip cleanly otherwise.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fixtures.host import is_root, mounted_tmpfs, remount_read_only

NOBODY = 65534
TEST_SCRYPT_N = 2**14


@pytest.fixture
def root_only() -> None:
    if not is_root():
        pytest.skip("needs root (mounts, or permission checks as another user)")


@pytest.fixture
def tiny_tmpfs(root_only: None) -> Iterator[Path]:
    """A 64 KiB tmpfs: writes beyond it fail with ENOSPC (B30, F09)."""
    with mounted_tmpfs("64k") as mountpoint:
        yield mountpoint


@pytest.fixture
def make_read_only(tiny_tmpfs: Path) -> Callable[[], None]:
    """Remounts the tiny tmpfs read-only when called (B31, F10)."""
    return lambda: remount_read_only(tiny_tmpfs)


@pytest.fixture
def shared_dir(root_only: None) -> Iterator[Path]:
    """A root-owned 0755 directory that ``nobody`` can reach but not write."""
    path = Path(tempfile.mkdtemp(prefix="kv-shared-", dir="/tmp"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path)


def run_as_nobody(action: Callable[[], object]) -> dict[str, str]:
    """Run ``action`` in a forked child as uid/gid 65534; what it returned or raised."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never return into pytest
        outcome: dict[str, str]
        try:
            os.close(read_end)
            os.setgroups([])
            os.setresgid(NOBODY, NOBODY, NOBODY)
            os.setresuid(NOBODY, NOBODY, NOBODY)
            outcome = {"result": repr(action())}
        except BaseException as exc:
            outcome = {"error": type(exc).__name__, "message": str(exc)}
        try:
            os.write(write_end, json.dumps(outcome).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        raw = pipe.read()
    os.waitpid(pid, 0)
    return dict(json.loads(raw))
