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
    v1/teams/<team>/changes                            (the team's change marker, Vault KV)

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
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Protocol, TypeVar, cast

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
    if all(_ROLE_NAME.fullmatch(p) for p in parts) and (
        len(parts) == 1 or value.startswith("targets/")
    ):
        return value
    raise UsageError(
        f"unknown role {_shown(value)}: expected root, targets, snapshot, timestamp, "
        "targets/<delegation> or a lower-case signer name"
    )


def validate_fingerprint(value: str) -> str:
    """A sealer fingerprint as a user types it: ``sha256:`` and 64 hex digits."""
    text = value.strip().lower() if isinstance(value, str) else ""
    if not _FINGERPRINT.fullmatch(text):
        raise UsageError(
            f"invalid sealer fingerprint {_shown(str(value))}: expected 'sha256:' "
            "and 64 hex digits, as 'keyvault init' or 'keyvault sealer show' "
            "prints it"
        )
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
    if key_id in _CERT_SCOPES and role == "root" and gun is not None:
        return CertAddress("team", gun, role, key_id).shown
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
        return (self.team, self.gun is not None, self.gun or "", self.role or "", self.key_id)

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
        if len(parts) < 5 or parts[0] != FORMAT_PREFIX or parts[1] != "teams":
            raise _not_an_object_name(name)
        if not parts[-1].endswith(".json"):
            raise _not_an_object_name(name)
        team, section, key_id = parts[2], parts[3], parts[-1][: -len(".json")]
        if section == "root" and len(parts) == 5:
            return cls(team, None, "root", key_id)
        if section == "delegations" and len(parts) == 6:
            role = role_from_segment(parts[4])
            if role in CANONICAL_ROLES:
                raise _not_an_object_name(name)
            return cls(team, None, role, key_id)
        if section == NO_GUN_SECTION and len(parts) == 6:
            role = role_from_segment(parts[4])
            if role not in GUN_ROLES:
                raise _not_an_object_name(name)
            return cls(team, None, role, key_id)
        if section == NO_ROLE_SECTION and len(parts) >= 5:
            return cls(team, "/".join(parts[4:-1]) or None, None, key_id)
        if section == "guns" and len(parts) >= 7:
            return cls(team, "/".join(parts[4:-2]), role_from_segment(parts[-2]), key_id)
        raise _not_an_object_name(name)


def _not_an_object_name(name: str) -> UsageError:
    return UsageError(f"not a keyvault object name: {_shown(name)}")


def team_prefix(team: str) -> str:
    return f"{FORMAT_PREFIX}/teams/{validate_team(team)}/"


#: The team's change marker (``[vault] change_marker``): directly in the team's folder, where
#: no key, pin or cert is (each sits in a section folder below it), so no name parses as it.
CHANGE_MARKER = "changes"


def change_marker_name(team: str) -> str:
    """The object whose every new version announces a keyvault write in ``team``."""
    return f"{team_prefix(team)}{CHANGE_MARKER}"


def audit_prefix(team: str) -> str:
    """The team's audit section (keyvault.checkpoint): every log's checkpoints, never a key."""
    return f"{team_prefix(team)}audit/"


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
        if (
            len(parts) < 6
            or parts[0] != FORMAT_PREFIX
            or parts[1] != "teams"
            or parts[3] != PIN_SECTION
            or parts[-1] != PIN_FILE
        ):
            raise UsageError(f"not a keyvault trust pin name: {_shown(name)}")
        return cls.of(parts[2], "/".join(parts[4:-1]))


def pin_relpath(gun: str) -> str:
    """``tuf/<gun>/metadata/root.json``: the pin's path under the trust directory."""
    return f"tuf/{validate_gun(gun)}/metadata/{PIN_FILE}"


def pin_prefix(team: str) -> str:
    return f"{team_prefix(team)}{PIN_SECTION}/"


#: Store section of the certificates the notary client config pins, and their file names.
CERT_SECTION = "certs"
CA_FILE = "ca.pem"  # a trust_pinning.ca entry: the CA a GUN prefix's root must chain to
SERVER_CA_FILE = "root_ca.pem"  # remote_server.root_ca: the CA of the trust server's TLS
_CERT_SCOPES = {CA_FILE: "ca", SERVER_CA_FILE: "server"}


def validate_gun_prefix(value: str) -> str:
    """A ``trust_pinning.ca`` key: a GUN, or a GUN with one trailing ``/`` (``docker.com/``)."""
    if not isinstance(value, str):
        raise UsageError("invalid GUN prefix")
    bare = value[:-1] if value.endswith("/") else value
    try:
        validate_gun(bare)
    except UsageError:
        raise UsageError(
            f"invalid GUN prefix {_shown(value)}: expected a repository name or "
            "its start, such as 'registry.example.com/team/'"
        ) from None
    return value


def validate_server_host(value: str) -> str:
    """A trust server's ``host[:port]``, lower-case (what a ``remote_server.url`` names)."""
    if not isinstance(value, str) or value != value.lower() or not _GUN_HOST.fullmatch(value):
        raise UsageError(f"invalid trust server host {_shown(str(value))}")
    return value


@dataclass(frozen=True)
class CertAddress(KeyAddress):
    """Where one certificate file the notary client config pins lives in a store.

    ``key_id`` is :data:`CA_FILE` for a ``trust_pinning.ca`` entry, whose ``gun``
    is the GUN prefix it pins, or :data:`SERVER_CA_FILE` for
    ``remote_server.root_ca``, whose ``gun`` is the trust server's ``host[:port]``.
    Its role is ``root`` as a pin's is: the team's, never CI's. Read, signed,
    chained and high-water-checked by the code that does it for keys and pins.
    """

    @classmethod
    def ca(cls, team: str, prefix: str) -> CertAddress:
        return cls(team, prefix, "root", CA_FILE)

    @classmethod
    def server(cls, team: str, host: str) -> CertAddress:
        return cls(team, host, "root", SERVER_CA_FILE)

    def __post_init__(self) -> None:
        validate_team(self.team)
        if self.gun is None or self.role != "root" or self.key_id not in _CERT_SCOPES:
            raise UsageError("a pinned certificate is a GUN prefix's CA or a trust server's")
        if self.key_id == CA_FILE:
            validate_gun_prefix(self.gun)
        else:
            validate_server_host(self.gun)

    @property
    def is_server(self) -> bool:
        return self.key_id == SERVER_CA_FILE

    @property
    def segment(self) -> str:
        """The prefix (a trailing ``/`` as ``~``) or the host (``:`` as ``~``) in a name."""
        gun = str(self.gun)
        if self.is_server:
            return gun.replace(":", "~")
        return gun[:-1] + "~" if gun.endswith("/") else gun

    @property
    def object_name(self) -> str:
        return (
            f"{FORMAT_PREFIX}/teams/{self.team}/{CERT_SECTION}/"
            f"{_CERT_SCOPES[self.key_id]}/{self.segment}/{self.key_id}"
        )

    @property
    def shown(self) -> str:
        """How messages name it."""
        if self.is_server:
            return f"CA of trust server {self.gun} (remote_server.root_ca)"
        return f"CA pinned for GUN prefix {self.gun!r} (trust_pinning.ca)"

    @classmethod
    def from_object_name(cls, name: str) -> CertAddress:
        """Parse a ``certs/`` name back: it must build back to itself (one spelling)."""
        team, _, rest = name.removeprefix(f"{FORMAT_PREFIX}/teams/").partition(f"/{CERT_SECTION}/")
        scope, _, tail = rest.partition("/")
        segment, _, last = tail.rpartition("/")
        try:
            if _CERT_SCOPES.get(last) != scope:
                raise UsageError("not a certificate's section")
            address = (
                cls.server(team, segment.replace("~", ":"))
                if scope == "server"
                else cls.ca(team, segment[:-1] + "/" if segment.endswith("~") else segment)
            )
        except UsageError:
            address = None
        if address is None or address.object_name != name:
            raise UsageError(f"not a keyvault certificate name: {_shown(name)}")
        return address


def cert_prefix(team: str) -> str:
    return f"{team_prefix(team)}{CERT_SECTION}/"


def kind_of(address: KeyAddress) -> str:
    """What JSON output calls an object: ``key``, ``pin`` (a GUN's root.json) or ``cert``."""
    if isinstance(address, PinAddress):
        return "pin"
    return "cert" if isinstance(address, CertAddress) else "key"


def address_record(address: KeyAddress) -> list[str | None]:
    """An address as plain JSON data (its kind and names, no secret), for a spool."""
    return [kind_of(address), address.team, address.gun, address.role, address.key_id]


def address_from_record(record: list[str | None]) -> KeyAddress:
    """The address :func:`address_record` wrote. Not validated again (half the cost of
    reading a spooled record back): a spool holds this process's own records, written
    from validated addresses to a file without a name."""
    kind = {"pin": PinAddress, "cert": CertAddress}.get(str(record[0]), KeyAddress)
    address = object.__new__(kind)
    for name, value in zip(("team", "gun", "role", "key_id"), record[1:], strict=True):
        object.__setattr__(address, name, value)
    return address


A = TypeVar("A", bound="KeyAddress")


def parsed_names(names: Iterable[str], kind: type[A], team: str) -> Iterator[A]:
    """The team's addresses of one kind among listed object names; foreign objects in a
    shared bucket (another kind, another team, off-grammar) are skipped, not judged."""
    for name in names:
        try:
            address = kind.from_object_name(name)
        except UsageError:
            continue
        if address.team == team:
            yield cast(A, address)
