"""Where a key file sits under ``private/`` and what its path says about it.

What notary 0.7 does (``storage/filestore.go``): it lists every ``*.key``
regular file below ``private/`` (recursively, skipping symlinks) and takes the
base name as the key ID. Before that, on every start, it migrates the legacy
directories in place: each file in ``root_keys/`` or ``tuf_keys/`` becomes
``private/<id>.key``; the directories between the legacy directory and the
file become a ``gun:`` header, and a 0.1-style ``<id>_<role>`` name becomes a
``role:`` header, both overwriting a header already there. Only files at the
top (``private/<id>.key``) can be used to sign: ``GetKey`` opens exactly that
name, so a file in any other sub-directory is listed but unusable.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from keyvault.trust.model import Layout

KEY_SUFFIX = ".key"
ROOT_KEYS = "root_keys"
TUF_KEYS = "tuf_keys"
_ID = re.compile(r"[0-9a-f]{64}")
_V01 = re.compile(r"([0-9a-f]{64})_([^_]+)")


@dataclass(frozen=True)
class Placement:
    """What the path of one ``*.key`` file says: layout, key ID, and GUN/role if any."""

    layout: Layout
    key_id: str | None  # None: the name is not a key ID (bad-name)
    path_gun: str | None = None  # from tuf_keys/<gun>/ (or root_keys/<gun>/)
    name_role: str | None = None  # from a 0.1-style <id>_<role>.key name
    misplaced: bool = False  # in a directory notary neither migrates nor signs from


def place(parts: tuple[str, ...]) -> Placement:
    """Classify ``private/<parts...>`` (the last part ends in ``.key``)."""
    stem = parts[-1][: -len(KEY_SUFFIX)]
    dirs = parts[:-1]
    legacy = bool(dirs) and dirs[0] in (ROOT_KEYS, TUF_KEYS)
    if dirs and not legacy:
        return Placement(Layout.CURRENT, _key_id(stem), misplaced=True)
    path_gun = "/".join(dirs[1:]) or None
    v01 = _V01.fullmatch(stem)
    if legacy and v01:
        return Placement(Layout.LEGACY_V01, v01.group(1), path_gun, v01.group(2))
    if not legacy:
        return Placement(Layout.CURRENT, _key_id(stem))
    layout = Layout.LEGACY_ROOT_KEYS if dirs[0] == ROOT_KEYS else Layout.LEGACY_TUF_KEYS
    return Placement(layout, _key_id(stem), path_gun)


def _key_id(stem: str) -> str | None:
    return stem if _ID.fullmatch(stem) else None


#: When one key ID is found twice, the first of these wins (then the lower relpath).
PRECEDENCE = (Layout.CURRENT, Layout.LEGACY_ROOT_KEYS, Layout.LEGACY_TUF_KEYS, Layout.LEGACY_V01)


def derived_relpath(source_name: str, key_id: str, role: str | None, gun: str | None) -> str:
    """The path under ``private/`` a key is restored to, from its authenticated facts.

    A backup records where the file was (``source_name``), but the path is only
    ever accepted when it is exactly where notary keeps *this* key: its own ID
    in the file name, in one of the known layouts, with the layout's directory
    GUN and name role equal to the key's own (a key without a role or a GUN
    has neither in its path: it is ``<id>.key`` at the top, or in a legacy
    directory that names no GUN). Anything else (a new key's
    envelope aimed at ``root_keys/<another id>.key``, a misplaced directory) is
    refused, so no envelope chooses which file it lands in.
    """
    from keyvault.errors import IntegrityError
    from keyvault.names import role_shown

    parts = tuple(source_name.split("/"))
    ok = (
        bool(parts)
        and parts[-1].endswith(KEY_SUFFIX)
        and all(p not in ("", ".", "..") for p in parts)
    )
    if ok:
        found = place(parts)
        ok = (
            found.key_id == key_id
            and not found.misplaced
            and (
                (found.layout is Layout.CURRENT and len(parts) == 1)
                or (found.layout is not Layout.CURRENT and found.path_gun == gun)
            )
            and (found.name_role is None or found.name_role == role)
        )
    if not ok:
        raise IntegrityError(
            f"{role_shown(role)} key {key_id}: the recorded file name {source_name[:120]!r} "
            "is not where notary keeps this key (its ID, role and GUN say otherwise); refused",
            hint="the envelope was made to write another key's file: investigate who wrote it",
        )
    return source_name
