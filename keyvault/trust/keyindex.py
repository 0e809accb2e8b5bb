"""Which key IDs a trust directory already holds, and under which paths.

Notary finds a key by the ID in its file name, wherever below ``private/``
the file sits, and on start migrates legacy files (``root_keys/``,
``tuf_keys/``) over ``private/<id>.key``. So a restore that would put a key
at one path while the same ID already lives at another is a conflict: one
file would silently replace the other. The walk uses directory descriptors
and never follows a symlink.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field

from keyvault.trust.layout import KEY_SUFFIX, place

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
#: Bounds for a hostile tree: deeper or bigger than any real trust directory.
MAX_DEPTH = 64
MAX_ENTRIES = 1_000_000


@dataclass
class TrustIndex:
    """What ``private/`` held when the restore looked, walked once."""

    #: Key ID -> relpaths of the key files that carry it.
    by_key_id: dict[str, list[str]] = field(default_factory=dict)
    #: Relpaths of every entry that is not a directory (files, links, FIFOs...).
    others: set[str] = field(default_factory=set)
    #: False when part of the tree could not be walked: absence then proves nothing.
    complete: bool = True

    def surely_absent(self, relpath: str) -> bool:
        """True if nothing was at ``relpath``, nor a non-directory on the way to it.

        A restore then need not read the path before creating it: a file that
        appears after the walk makes the final link fail (EEXIST), never replaces.
        """
        if not self.complete:
            return False
        parts = relpath.split("/")
        return not any("/".join(parts[:i]) in self.others for i in range(1, len(parts) + 1))


def index_trust_dir(root: int | None) -> TrustIndex:
    """The index of ``private/`` under the trust directory open at ``root``."""
    index = TrustIndex()
    if root is None:
        return index
    try:
        private = os.open("private", _DIR_FLAGS, dir_fd=root)
    except FileNotFoundError:
        return index
    except OSError:
        index.complete = False  # not a directory (the restore itself reports that)
        return index
    budget = [MAX_ENTRIES]
    try:
        _walk(private, (), index, budget)
    finally:
        os.close(private)
    return index


def _walk(fd: int, parts: tuple[str, ...], index: TrustIndex, budget: list[int]) -> None:
    if len(parts) > MAX_DEPTH:
        index.complete = False
        return
    with os.scandir(fd) as entries:
        for entry in entries:
            budget[0] -= 1
            if budget[0] < 0:
                index.complete = False
                return
            relpath = "/".join((*parts, entry.name))
            try:
                mode = entry.stat(follow_symlinks=False).st_mode
            except OSError:
                index.complete = False
                continue
            if not stat.S_ISDIR(mode):
                index.others.add(relpath)
            if stat.S_ISDIR(mode):
                try:
                    child = os.open(entry.name, _DIR_FLAGS, dir_fd=fd)
                except OSError:
                    index.complete = False
                    continue
                try:
                    _walk(child, (*parts, entry.name), index, budget)
                finally:
                    os.close(child)
            elif stat.S_ISREG(mode) and entry.name.endswith(KEY_SUFFIX):
                key_id = place((*parts, entry.name)).key_id
                if key_id is not None:
                    index.by_key_id.setdefault(key_id, []).append(relpath)
