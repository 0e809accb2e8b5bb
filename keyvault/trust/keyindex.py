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

from keyvault.trust.layout import KEY_SUFFIX, place

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
#: Bounds for a hostile tree: deeper or bigger than any real trust directory.
MAX_DEPTH = 64
MAX_ENTRIES = 1_000_000


def key_paths(root: int | None) -> dict[str, list[str]]:
    """Key ID -> relpaths under ``private/`` of the trust directory open at ``root``."""
    found: dict[str, list[str]] = {}
    if root is None:
        return found
    try:
        private = os.open("private", _DIR_FLAGS, dir_fd=root)
    except OSError:
        return found  # absent (or not a directory: the restore itself reports that)
    budget = [MAX_ENTRIES]
    try:
        _walk(private, (), found, budget)
    finally:
        os.close(private)
    return found


def _walk(fd: int, parts: tuple[str, ...], found: dict[str, list[str]],
          budget: list[int]) -> None:
    if len(parts) > MAX_DEPTH:
        return
    with os.scandir(fd) as entries:
        for entry in entries:
            budget[0] -= 1
            if budget[0] < 0:
                return
            try:
                mode = entry.stat(follow_symlinks=False).st_mode
            except OSError:
                continue
            if stat.S_ISDIR(mode):
                try:
                    child = os.open(entry.name, _DIR_FLAGS, dir_fd=fd)
                except OSError:
                    continue
                try:
                    _walk(child, (*parts, entry.name), found, budget)
                finally:
                    os.close(child)
            elif stat.S_ISREG(mode) and entry.name.endswith(KEY_SUFFIX):
                key_id = place((*parts, entry.name)).key_id
                if key_id is not None:
                    found.setdefault(key_id, []).append("/".join((*parts, entry.name)))
