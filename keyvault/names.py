"""Strict grammars for every name that becomes part of a path or an object name.

Team names, GUNs, roles and key IDs come from key files, envelopes, config and
the command line; any of them may be hostile. Nothing is joined into a file
path or a store object name before it passed these checks: no `..`, no
absolute paths, no empty segments, no control characters, bounded lengths.

Object names in a store (docs/envelope.md section 11):

    v1/teams/<team>/root/<key-id>.json
    v1/teams/<team>/guns/<gun>/<role>/<key-id>.json
    v1/teams/<team>/delegations/<role>/<key-id>.json   (keys with no GUN)
    v1/teams/<team>/nogun/<role>/<key-id>.json         (targets/snapshot/timestamp, no GUN)
    v1/teams/<team>/norole/<key-id>.json               (no role: header)
    v1/teams/<team>/norole/<gun>/<key-id>.json         (no role: header, a gun: one)
    v1/teams/<team>/pins/<gun>/root.json               (a GUN's trust pin, not a key)

A trust pin is the GUN's ``tuf/<gun>/metadata/root.json``, the root of trust
notary pinned on first use (:class:`PinAddress`). Its last segment is not a key
ID, so it can never parse as a key's name, nor a key's as a pin's.

The last three hold keys notary loads by ID although a fact is missing; they
belong to the team, like a root key (:meth:`KeyAddress.team_only`), and sit in
sections of their own, so no GUN-scoped grant (``guns/``, ``delegations/``)
ever covers them.

A delegation role such as ``targets/releases`` contains a slash; in an object
name it is written with ``~`` instead (``targets~releases``), a character the
role grammar does not allow, so names parse back without ambiguity.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass
from typing import Protocol

from keyvault.errors import UsageError

FORMAT_PREFIX = "v1"
#: Store sections of keys a fact is missing from (team-only, see the module docstring).
NO_GUN_SECTION = "nogun"
NO_ROLE_SECTION = "norole"
#: Store section of the GUNs' trust pins, and the one file name a pin has there.
PIN_SECTION = "pins"
PIN_FILE = "root.json"
CANONICAL_ROLES = ("root", "targets", "snapshot", "timestamp")
GUN_ROLES = ("targets", "snapshot", "timestamp")
MAX_GUN_LENGTH = 255
MAX_ROLE_LENGTH = 255

_KEY_ID = re.compile(r"[0-9a-f]{64}")
_TEAM = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_GUN_HOST = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?(?::[0-9]{1,5})?")
_GUN_PATH = re.compile(r"[a-z0-9](?:[a-z0-9._-]*[a-z0-9])?")
_ROLE_NAME = re.compile(r"[a-z0-9](?:[a-z0-9_-]{0,62}[a-z0-9])?")
_GLOB = re.compile(r"[A-Za-z0-9.:_*?/-]{1,255}")
_FINGERPRINT = re.compile(r"sha256:[0-9a-f]{64}")


def _shown(value: str) -> str:
    """A bounded, escaped rendering of an untrusted value for error messages."""
    text = value if len(value) <= 80 else value[:77] + "..."
    return repr(text)


def validate_key_id(value: str) -> str:
    """A Notary key ID: 64 lower-case hex digits (a SHA-256)."""
    if not isinstance(value, str) or not _KEY_ID.fullmatch(value):
        raise UsageError(f"invalid key ID {_shown(str(value))}: expected 64 lower-case hex digits")
    return value


def validate_team(value: str) -> str:
    """A team name: lower-case letters, digits and inner hyphens, at most 63 characters."""
    if not isinstance(value, str) or not _TEAM.fullmatch(value):
        raise UsageError(
            f"invalid team name {_shown(str(value))}: use lower-case letters, digits and "
            "hyphens (1-63 characters, no slash)"
        )
    return value


def validate_gun(value: str) -> str:
    """A GUN (Notary collection name): a docker-style repository name.

    The first segment may be a registry host with a port; the others are
    lower-case path components. No empty segments, no ``.``/``..``, no
    leading or trailing slash.
    """
    if not isinstance(value, str) or not value or len(value) > MAX_GUN_LENGTH:
        raise UsageError(f"invalid GUN {_shown(str(value))}: empty or longer than 255 characters")
    segments = value.split("/")
    first, rest = segments[0], segments[1:]
    ok = bool(_GUN_HOST.fullmatch(first)) and all(_GUN_PATH.fullmatch(s) for s in rest)
    if not ok or any(s in (".", "..") for s in segments):
        raise UsageError(
            f"invalid GUN {_shown(value)}: expected a repository name such as "
            "'registry.example.com/team/app' (no empty, '.' or '..' segments)"
        )
    return value


def validate_role(value: str) -> str:
    """A Notary role: a canonical role, ``targets/<name>[/<name>...]``, or a signer name."""
    if not isinstance(value, str) or not value or len(value) > MAX_ROLE_LENGTH:
        raise UsageError(f"unknown role {_shown(str(value))}")
    if value in CANONICAL_ROLES:
        return value
    parts = value.split("/")
    if parts[0] == "targets" and len(parts) > 1:
        parts = parts[1:]
    if all(_ROLE_NAME.fullmatch(p) for p in parts) and (len(parts) == 1 or value.startswith(
            "targets/")):
        return value
    raise UsageError(
        f"unknown role {_shown(value)}: expected root, targets, snapshot, timestamp, "
        "targets/<delegation> or a lower-case signer name"
    )


def validate_fingerprint(value: str) -> str:
    """A sealer fingerprint as a user types it: ``sha256:`` and 64 hex digits."""
    text = value.strip().lower() if isinstance(value, str) else ""
    if not _FINGERPRINT.fullmatch(text):
        raise UsageError(f"invalid sealer fingerprint {_shown(str(value))}: expected 'sha256:' "
                         "and 64 hex digits, as 'keyvault init' or 'keyvault sealer show' "
                         "prints it")
    return text


def is_delegation_role(role: str | None) -> bool:
    return role is not None and role not in CANONICAL_ROLES


def validate_gun_glob(value: str) -> str:
    """A ``--gun`` selector: a GUN, optionally with ``*``/``?`` wildcards."""
    if not isinstance(value, str) or not _GLOB.fullmatch(value) or ".." in value.split("/"):
        raise UsageError(f"invalid GUN pattern {_shown(str(value))}")
    return value


def gun_matches(gun: str | None, pattern: str) -> bool:
    """Docker-style matching: ``*`` matches within and across segments, case-sensitive."""
    return gun is not None and fnmatch.fnmatchcase(gun, pattern)


def role_segment(role: str) -> str:
    return validate_role(role).replace("/", "~")


def role_from_segment(segment: str) -> str:
    if "/" in segment:
        raise UsageError(f"invalid role segment {_shown(segment)}")
    return validate_role(segment.replace("~", "/"))


def role_shown(role: str | None) -> str:
    """A role for messages and tables; a key without a ``role:`` header says so."""
    return role if role is not None else NO_ROLE


def gun_shown(role: str | None, gun: str | None) -> str:
    """A GUN for tables: ``-`` where none belongs, ``(no gun)`` where one is missing."""
    if gun is not None:
        return gun
    return NO_GUN if lacks_gun(role, gun) else "-"


def key_words(role: str | None, gun: str | None, key_id: str) -> str:
    """How messages name a key: ``targets key <id> of <gun>``, missing facts marked (and a
    GUN's trust pin: ``trust pin (root.json) of <gun>``; no key ID is ``root.json``)."""
    if key_id == PIN_FILE and role == "root":
        return f"trust pin ({PIN_FILE}) of {gun}"
    where = f" of {gun}" if gun else (f" {NO_GUN}" if lacks_gun(role, gun) else "")
    return f"{role_shown(role)} key {key_id}{where}"


class NamedKey(Protocol):
    """Anything that says which key it is (a KeyAddress, a KeyFile)."""

    @property
    def role(self) -> str | None: ...
    @property
    def gun(self) -> str | None: ...
    @property
    def key_id(self) -> str: ...


def key_cells(key: NamedKey) -> list[str]:
    """The ROLE, GUN and KEY ID cells of a table row, missing facts marked."""
    return [role_shown(key.role), gun_shown(key.role, key.gun), key.key_id]


#: How tables and messages mark a missing fact.
NO_ROLE = "(no role)"
NO_GUN = "(no gun)"


def is_team_only(role: str | None, gun: str | None) -> bool:
    """Keys CI never sees: root, and keys whose role or GUN notary's file does not say."""
    return role is None or role == "root" or (role in GUN_ROLES and gun is None)


def lacks_gun(role: str | None, gun: str | None) -> bool:
    """A targets/snapshot/timestamp key without a GUN (``notary key generate --role R``)."""
    return role in GUN_ROLES and gun is None


def lacks_fact(role: str | None, gun: str | None) -> bool:
    """No role, or a GUN role without a GUN: the file does not say whose key it is."""
    return role is None or lacks_gun(role, gun)


#: The wrap-context member (and its value) that marks a key lacking a fact as the
#: team's: KMS and Transit policies deny CI any context that holds it (docs/envelope.md).
SCOPE_CONTEXT = "keyvault:scope"
TEAM_SCOPE = "team"


@dataclass(frozen=True)
class KeyAddress:
    """Where one key lives in a store: team, GUN (or none), role (or none), key ID.

    ``role`` is None for a key file without a ``role:`` header, which notary
    still loads by its ID; ``gun`` is None for a key of no GUN, and also for a
    targets/snapshot/timestamp key whose file has no ``gun:`` header (what
    ``notary key generate --role targets`` writes).
    """

    team: str
    gun: str | None
    role: str | None
    key_id: str

    def __lt__(self, other: KeyAddress) -> bool:
        """Team-level keys (root, GUN-less delegations) sort before GUN keys."""
        return self._order() < other._order()

    def _order(self) -> tuple[str, bool, str, str, str]:
        return (self.team, self.gun is not None, self.gun or "", self.role or "",
                self.key_id)

    def __post_init__(self) -> None:
        validate_team(self.team)
        if self.role is not None:
            validate_role(self.role)
        validate_key_id(self.key_id)
        if self.gun is not None:
            validate_gun(self.gun)
        if self.role == "root" and self.gun is not None:
            raise UsageError("a root key belongs to a team, not to a GUN")

    @property
    def team_only(self) -> bool:
        """Root, GUN-less targets/snapshot/timestamp and role-less keys: never CI's."""
        return is_team_only(self.role, self.gun)

    @property
    def object_name(self) -> str:
        base = f"{FORMAT_PREFIX}/teams/{self.team}"
        if self.role == "root":
            return f"{base}/root/{self.key_id}.json"
        if self.role is None:
            where = f"{self.gun}/" if self.gun is not None else ""
            return f"{base}/{NO_ROLE_SECTION}/{where}{self.key_id}.json"
        if self.gun is None and self.role in GUN_ROLES:
            return f"{base}/{NO_GUN_SECTION}/{role_segment(self.role)}/{self.key_id}.json"
        if self.gun is None:
            return f"{base}/delegations/{role_segment(self.role)}/{self.key_id}.json"
        return f"{base}/guns/{self.gun}/{role_segment(self.role)}/{self.key_id}.json"

    @classmethod
    def from_object_name(cls, name: str) -> KeyAddress:
        """Parse an object name back; anything off-grammar is refused."""
        parts = name.split("/")
        bad = UsageError(f"not a keyvault object name: {_shown(name)}")
        if len(parts) < 5 or parts[0] != FORMAT_PREFIX or parts[1] != "teams":
            raise bad
        if not parts[-1].endswith(".json"):
            raise bad
        team, section, key_id = parts[2], parts[3], parts[-1][: -len(".json")]
        if section == "root" and len(parts) == 5:
            return cls(team, None, "root", key_id)
        if section == "delegations" and len(parts) == 6:
            role = role_from_segment(parts[4])
            if role in CANONICAL_ROLES:
                raise bad
            return cls(team, None, role, key_id)
        if section == NO_GUN_SECTION and len(parts) == 6:
            role = role_from_segment(parts[4])
            if role not in GUN_ROLES:
                raise bad
            return cls(team, None, role, key_id)
        if section == NO_ROLE_SECTION and len(parts) >= 5:
            return cls(team, "/".join(parts[4:-1]) or None, None, key_id)
        if section == "guns" and len(parts) >= 7:
            return cls(team, "/".join(parts[4:-2]), role_from_segment(parts[-2]), key_id)
        raise bad


def team_prefix(team: str) -> str:
    return f"{FORMAT_PREFIX}/teams/{validate_team(team)}/"


def gun_prefix(team: str, gun: str) -> str:
    return f"{team_prefix(team)}guns/{validate_gun(gun)}/"


@dataclass(frozen=True)
class PinAddress(KeyAddress):
    """Where one GUN's trust pin (its pinned ``root.json``) lives in a store.

    It is a :class:`KeyAddress` so that pins are read, signed, chained and
    high-water-checked by the very code that does it for keys; its role is
    ``root`` (the TUF role the file describes: a pin is the team's, as a root
    key is, and CI is never granted it) and its ``key_id`` is :data:`PIN_FILE`.
    """

    @classmethod
    def of(cls, team: str, gun: str) -> PinAddress:
        return cls(team, gun, "root", PIN_FILE)

    def __post_init__(self) -> None:
        validate_team(self.team)
        if self.gun is None or self.role != "root" or self.key_id != PIN_FILE:
            raise UsageError("a trust pin belongs to exactly one GUN")
        validate_gun(self.gun)

    @property
    def object_name(self) -> str:
        return f"{FORMAT_PREFIX}/teams/{self.team}/{PIN_SECTION}/{self.gun}/{PIN_FILE}"

    @property
    def relpath(self) -> str:
        """Where the pin lives under the trust directory (notary's TUF cache)."""
        return pin_relpath(str(self.gun))

    @classmethod
    def from_object_name(cls, name: str) -> PinAddress:
        parts = name.split("/")
        if (len(parts) < 6 or parts[0] != FORMAT_PREFIX or parts[1] != "teams"
                or parts[3] != PIN_SECTION or parts[-1] != PIN_FILE):
            raise UsageError(f"not a keyvault trust pin name: {_shown(name)}")
        return cls.of(parts[2], "/".join(parts[4:-1]))


def pin_relpath(gun: str) -> str:
    """``tuf/<gun>/metadata/root.json``: the pin's path under the trust directory."""
    return f"tuf/{validate_gun(gun)}/metadata/{PIN_FILE}"


def pin_prefix(team: str) -> str:
    return f"{team_prefix(team)}{PIN_SECTION}/"
