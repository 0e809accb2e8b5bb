"""Put pinned certificate files back where the local notary config reads them.

Planned before anything is written (a different file already there is a
conflict, exit 7, unless ``force``), written after the keys and pins, each
file in one atomic step (0600, new directories 0700), never through a
symbolic link in its last component. There is no version to compare: equal
bytes are ``unchanged``, any difference is a conflict; ``force`` keeps the old
file aside as ``<name>.keyvault-old-<UTC time>-<random>``.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from keyvault.errors import ConflictError, UsageError
from keyvault.fsutil import ensure_private_dir, fsync_dir, translate_os_error, write_file_atomic
from keyvault.trust.certpins import MAX_CERT_FILE
from keyvault.trust.restore import Action
from keyvault.trust.safefs import DIR_FLAGS, ReadRefused, read_regular


@dataclass(frozen=True)
class CertWrite:
    """One certificate to put at ``path`` (from the local config, never from the store)."""

    path: Path
    data: bytes = field(repr=False)
    label: str


@dataclass(frozen=True)
class PlannedCert:
    write: CertWrite
    action: Action
    reason: str = ""


def plan_certs(writes: Sequence[CertWrite], *, force: bool) -> list[PlannedCert]:
    """What each write would do; ConflictError (nothing written) on a difference."""
    plan = [_plan_one(w, force) for w in writes]
    conflicts = [p for p in plan if p.action is Action.CONFLICT]
    if conflicts:
        first = conflicts[0].write
        raise ConflictError(
            f"{len(conflicts)} pinned certificate file(s) already exist with different bytes, "
            f"e.g. {first.path} ({first.label}); nothing was restored",
            hint="use --force to replace them (the old files are kept aside), or compare "
            "them first: notary trusts whichever file is there",
        )
    return plan


def apply_certs(plan: Sequence[PlannedCert]) -> list[str]:
    """Write the planned creates and replaces; the paths of the old files kept aside."""
    aside: list[str] = []
    for planned in plan:
        if planned.action not in (Action.CREATE, Action.REPLACE):
            continue
        path = planned.write.path
        ensure_private_dir(path.parent)
        if planned.action is Action.REPLACE:
            aside.append(_keep_aside(path))
        write_file_atomic(path.parent, path.name, planned.write.data, exclusive=True)
    return aside


def _plan_one(write: CertWrite, force: bool) -> PlannedCert:
    existing = _existing(write.path)
    if existing is None:
        return PlannedCert(write, Action.CREATE)
    if hmac.compare_digest(hashlib.sha256(existing).digest(), hashlib.sha256(write.data).digest()):
        return PlannedCert(write, Action.UNCHANGED)
    reason = "a different file is there"
    return PlannedCert(write, Action.REPLACE if force else Action.CONFLICT, reason)


def _existing(path: Path) -> bytes | None:
    """The bytes at ``path`` (None if absent); a symlink or non-file there is refused."""
    try:
        dir_fd = os.open(path.parent, DIR_FLAGS & ~os.O_NOFOLLOW)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise translate_os_error(exc, path.parent, "open directory") from None
    try:
        return read_regular(dir_fd, path.name, MAX_CERT_FILE + 1)
    except ReadRefused as exc:
        if exc.code == "missing":
            return None
        raise UsageError(
            f"{path} is not a regular file keyvault may replace ({exc.reason}); "
            "nothing was restored",
            hint="keyvault never writes through a symbolic link: point the "
            "notary config at the real file",
        ) from None
    finally:
        os.close(dir_fd)


def _keep_aside(path: Path) -> str:
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    aside = f"{path.name}.keyvault-old-{stamp}-{os.urandom(4).hex()}"
    dir_fd = os.open(path.parent, DIR_FLAGS & ~os.O_NOFOLLOW)
    try:
        os.rename(path.name, aside, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        fsync_dir(dir_fd, str(path.parent))
    except OSError as exc:
        raise translate_os_error(exc, path, "keep aside") from None
    finally:
        os.close(dir_fd)
    return str(path.parent / aside)
