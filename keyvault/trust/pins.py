"""A GUN's trust pin: the ``tuf/<gun>/metadata/root.json`` notary trusted on first use.

Docker Content Trust rests on it: a machine that has it refuses a root the
old root did not sign; a machine without it trusts whatever the server says
next. keyvault carries it with the GUN's keys (backup, restore) and checks
published keys against it (coverage, drill). The file is untrusted input:
size-limited, read without following links, and parsed strictly enough to
know its root version, never more.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from keyvault.bounded import TooDeep, json_loads
from keyvault.errors import InvalidInputError, UsageError
from keyvault.names import gun_matches, pin_relpath, validate_gun
from keyvault.trust.model import KeyFile, Layout
from keyvault.trust.tufmeta import MAX_ROOT_JSON_SIZE, MetadataProblem, root_files

#: The mode a pin is recorded with: notary's metadata is not secret, keyvault restores it 0600.
PIN_MODE = 0o600


@dataclass(frozen=True)
class PinFile:
    """One GUN's pinned root.json, its bytes exactly as found, and its root version."""

    gun: str
    data: bytes
    version: int

    @property
    def relpath(self) -> str:
        return pin_relpath(self.gun)

    def as_key_file(self) -> KeyFile:
        """The pin in the shape backup seals: opaque bytes under a name of its own."""
        return KeyFile(
            key_id="root.json",
            role="root",
            gun=self.gun,
            algorithm=None,
            relpath=self.relpath,
            mode=PIN_MODE,
            layout=Layout.CURRENT,
            encrypted=False,
            data=self.data,
        )


def root_version(data: bytes) -> int:
    """``signed.version`` of a root.json; InvalidInputError if it is not one."""
    if len(data) > MAX_ROOT_JSON_SIZE:
        raise InvalidInputError("root.json is too large")
    try:
        doc = json_loads(data)
    except (ValueError, TooDeep, UnicodeDecodeError):
        raise InvalidInputError("root.json is not JSON") from None
    signed = doc.get("signed") if isinstance(doc, dict) else None
    if not isinstance(signed, dict) or signed.get("_type") != "Root":
        raise InvalidInputError("not a root.json (signed._type is not 'Root')")
    version = signed.get("version")
    if type(version) is not int or version < 1:
        raise InvalidInputError("root.json has no positive integer signed.version")
    return version


def scan_pins(
    trust_dir: Path, guns: list[str] | None = None
) -> tuple[list[PinFile], list[MetadataProblem]]:
    """The pins under ``trust_dir/tuf`` whose GUN is, or matches, one of ``guns``
    (every pin when None); a bad one is reported and the others still read."""
    problems: list[MetadataProblem] = []
    try:
        tuf = os.open(
            trust_dir / "tuf", os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
        )
    except OSError:
        return [], []
    pins: list[PinFile] = []
    try:
        for gun, data in root_files(tuf, problems):
            if guns is not None and not any(gun_matches(gun, g) for g in guns):
                continue
            try:
                pins.append(PinFile(validate_gun(gun), data, root_version(data)))
            except UsageError as exc:  # a bad GUN directory name, or not a root.json
                problems.append(MetadataProblem(f"tuf/{gun[:200]}/metadata/root.json", exc.message))
    finally:
        os.close(tuf)
    return pins, problems
