"""Which private keys each GUN's local ``root.json`` relies on.

``<trust>/tuf/<gun>/metadata/root.json`` lists the keys of the root,
targets, snapshot and timestamp roles. Root keys appear as ``ecdsa-x509``
(or ``rsa-x509``) certificates whose ID is not the key file's name; the file
is named after the bare key type over the certificate's public key (notary
``X509PublicKeyID``). This module maps every listed key to the private key ID
it needs, so ``verify --deep`` can say "root key X is used by GUNs A and B as
cert ID Y". The file is untrusted: size-limited, strictly parsed; a bad one is
reported and the others are still read.
"""

from __future__ import annotations

import base64
import binascii
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from keyvault.bounded import TooDeep, json_loads
from keyvault.errors import InvalidInputError, KeyvaultError
from keyvault.names import validate_gun, validate_key_id, validate_role
from keyvault.trust.keyid import X509_KEYTYPES, cert_key_id, tuf_key_id
from keyvault.trust.safefs import DIR_FLAGS, ReadRefused, read_regular

MAX_ROOT_JSON_SIZE = 1024 * 1024
MAX_DEPTH = 64
_PLAIN_KEYTYPES = ("ecdsa", "rsa", "ed25519")


@dataclass(frozen=True, order=True)
class KeyUse:
    """One key a GUN's root.json lists for a role, and the private key file it needs."""

    gun: str
    role: str
    key_id: str  # the private key's ID: the key file name
    listed_id: str  # the ID root.json uses (a certificate ID for *-x509 keys)
    # What the metadata publishes, for drills that check a restored key's signature:
    keytype: str = field(default="", compare=False)
    public: bytes = field(default=b"", compare=False, repr=False)


@dataclass(frozen=True)
class MetadataProblem:
    path: str  # relative to the trust directory
    reason: str


@dataclass(frozen=True)
class TrustMetadata:
    uses: tuple[KeyUse, ...]
    problems: tuple[MetadataProblem, ...]

    def uses_of(self, key_id: str) -> tuple[KeyUse, ...]:
        """Where a private key is relied on, e.g. every GUN a root key signs for."""
        return tuple(u for u in self.uses if u.key_id == key_id)


def read_trust_metadata(trust_dir: Path) -> TrustMetadata:
    """Read every ``tuf/<gun>/metadata/root.json``; a missing ``tuf/`` means none."""
    uses: list[KeyUse] = []
    problems: list[MetadataProblem] = []
    try:
        tuf = os.open(trust_dir / "tuf", DIR_FLAGS)
    except OSError:
        return TrustMetadata((), ())
    try:
        for gun, data in _root_files(tuf, (), 0, problems):
            where = f"tuf/{gun}/metadata/root.json"
            try:
                uses.extend(parse_root_json(data, gun))
            except KeyvaultError as exc:
                problems.append(MetadataProblem(where, exc.message))
    finally:
        os.close(tuf)
    return TrustMetadata(tuple(sorted(uses)), tuple(problems))


def parse_root_json(data: bytes, gun: str) -> list[KeyUse]:
    """The keys a root.json lists per role; InvalidInputError if it is not one."""
    validate_gun(gun)
    if len(data) > MAX_ROOT_JSON_SIZE:
        raise InvalidInputError("root.json is too large")
    doc = _load_json(data)
    signed = _field(doc, "signed", dict)
    if signed.get("_type") != "Root":  # notary's TUFTypes spelling, checked exactly
        raise InvalidInputError("not a root.json (signed._type is not 'Root')")
    keys = _field(signed, "keys", dict)
    uses: list[KeyUse] = []
    for role, spec in _field(signed, "roles", dict).items():
        validate_role(role)
        keyids = _field(_expect(spec, dict, f"roles.{role}"), "keyids", list)
        for listed in keyids:
            validate_key_id(_expect(listed, str, f"roles.{role}.keyids"))
            key = _expect(keys.get(listed), dict, f"keys.{listed[:12]}")
            uses.append(_use(gun, role, key, listed))
    return uses


def parse_targets_json(
    data: bytes, gun: str, role: str = "targets"
) -> tuple[list[KeyUse], list[str]]:
    """The delegation keys a targets (or delegated targets) document lists, and the
    delegated role names to read next; InvalidInputError if it is not one."""
    validate_gun(gun)
    validate_role(role)
    if len(data) > MAX_ROOT_JSON_SIZE:
        raise InvalidInputError(f"{role}.json is too large")
    doc = _load_json(data)
    signed = _field(doc, "signed", dict)
    if signed.get("_type") != "Targets":
        raise InvalidInputError(f"not a targets document ({role}.json: signed._type)")
    delegations = signed.get("delegations")
    if delegations is None:
        return [], []
    delegations = _expect(delegations, dict, "delegations")
    keys = _expect(delegations.get("keys", {}), dict, "delegations.keys")
    uses: list[KeyUse] = []
    names: list[str] = []
    for spec in _expect(delegations.get("roles", []), list, "delegations.roles"):
        spec = _expect(spec, dict, "delegations.roles[]")
        name = validate_role(_field(spec, "name", str))
        names.append(name)
        for listed in _field(spec, "keyids", list):
            validate_key_id(_expect(listed, str, f"{name}.keyids"))
            key = _expect(keys.get(listed), dict, f"delegations.keys.{listed[:12]}")
            uses.append(_use(gun, name, key, listed))
    return uses, names


def _use(gun: str, role: str, key: dict[str, Any], listed: str) -> KeyUse:
    keytype = _field(key, "keytype", str)
    public = _public(key, listed)
    return KeyUse(gun, role, _private_id(keytype, public, listed), listed, keytype, public)


def _public(key: dict[str, Any], listed: str) -> bytes:
    try:
        return base64.b64decode(_field(_field(key, "keyval", dict), "public", str), validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInputError(f"key {listed[:12]}: public is not base64") from None


def _private_id(keytype: str, public: bytes, listed: str) -> str:
    if keytype in X509_KEYTYPES:
        return cert_key_id(keytype, public)
    if keytype in _PLAIN_KEYTYPES:
        return tuf_key_id(keytype, public)
    raise InvalidInputError(f"key {listed[:12]}: unknown key type {keytype[:20]!r}")


def _load_json(data: bytes) -> dict[str, Any]:
    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        out = dict(pairs)
        if len(out) != len(pairs):
            raise InvalidInputError("root.json has a duplicate key")
        return out

    def no_constants(name: str) -> None:
        raise InvalidInputError(f"root.json contains {name}")

    try:
        doc = json_loads(
            data.decode("utf-8"), object_pairs_hook=no_duplicates, parse_constant=no_constants
        )
    except TooDeep as exc:
        raise InvalidInputError(f"root.json is {exc}") from None
    except (UnicodeDecodeError, ValueError):
        raise InvalidInputError("root.json is not valid JSON") from None
    result: dict[str, Any] = _expect(doc, dict, "root.json")
    return result


def _expect(value: Any, kind: type, where: str) -> Any:
    if not isinstance(value, kind):
        raise InvalidInputError(f"root.json: {where} is missing or not a {kind.__name__}")
    return value


def _field(obj: dict[str, Any], name: str, kind: type) -> Any:
    return _expect(obj.get(name), kind, name)


def root_files(tuf_fd: int, problems: list[MetadataProblem]) -> list[tuple[str, bytes]]:
    """(gun, bytes) of every ``<gun>/metadata/root.json`` below the ``tuf/`` descriptor."""
    return _root_files(tuf_fd, (), 0, problems)


def _root_files(
    dir_fd: int, parts: tuple[str, ...], depth: int, problems: list[MetadataProblem]
) -> list[tuple[str, bytes]]:
    """(gun, bytes) of every ``<gun>/metadata/root.json`` below ``tuf/``; no symlinks."""
    found: list[tuple[str, bytes]] = []
    if parts:
        data = _read_root_json(dir_fd, parts, problems)
        if data is not None:
            found.append(("/".join(parts), data))
    if depth >= MAX_DEPTH:
        return found
    with os.scandir(dir_fd) as entries:
        names = sorted(e.name for e in entries if e.is_dir(follow_symlinks=False))
    for name in names:
        try:
            fd = os.open(name, DIR_FLAGS, dir_fd=dir_fd)
        except OSError:
            continue
        try:
            found.extend(_root_files(fd, (*parts, name), depth + 1, problems))
        finally:
            os.close(fd)
    return found


def _read_root_json(
    dir_fd: int, parts: tuple[str, ...], problems: list[MetadataProblem]
) -> bytes | None:
    where = "tuf/" + "/".join(parts) + "/metadata/root.json"
    try:
        meta = os.open("metadata", DIR_FLAGS, dir_fd=dir_fd)
    except OSError:
        return None
    try:
        return read_regular(meta, "root.json", MAX_ROOT_JSON_SIZE)
    except ReadRefused as refused:
        if refused.code != "missing":
            problems.append(MetadataProblem(where, refused.reason))
        return None
    finally:
        os.close(meta)
