"""Turn one key file's bytes (and what its path says) into a KeyFile or a ScanProblem.

The rules follow notary 0.7 (``utils.ExtractPrivateKeyAttributes``, the
legacy migration in ``storage/filestore.go``, ``GenericKeyStore.AddKey``):

* only the first PEM block counts, and only the key types notary parses;
* ``role:``/``gun:`` come from the headers; a legacy path's GUN and a 0.1
  name's role are what notary's migration writes into them. keyvault reports
  a disagreement (``conflicting-headers``) instead of silently picking one;
* root keys belong to no GUN (notary drops the GUN when it stores a root key);
* a missing fact is kept as None, not refused: notary loads a key by its ID
  (``GenericKeyStore.GetKey``) whatever its headers say, so a targets key
  without ``gun:`` (what ``notary key generate --role targets`` writes) and a
  key without ``role:`` still sign, and are backed up like any other;
* an unencrypted key is loaded, so its algorithm is known and its real ID is
  checked against the file name; an encrypted one is only checked for shape.
"""

from __future__ import annotations

from keyvault.errors import InvalidInputError, UsageError
from keyvault.names import validate_gun, validate_role
from keyvault.trust import deep, pkcs8, rfc1421
from keyvault.trust.keyid import algorithm_of, private_key_id
from keyvault.trust.layout import Placement
from keyvault.trust.model import KeyFile, ScanProblem
from keyvault.trust.pem import PemBlock, decode_first

_LEGACY_ALGORITHMS = {
    "EC PRIVATE KEY": "ecdsa",
    "RSA PRIVATE KEY": "rsa",
    "ED25519 PRIVATE KEY": "ed25519",
}


def _show(value: str) -> str:
    """A bounded, escaped rendering of an untrusted header value."""
    return repr(value if len(value) <= 60 else value[:57] + "...")


class _Refused(Exception):  # noqa: N818 - internal control flow, never escapes
    def __init__(self, code: str, reason: str) -> None:
        super().__init__(code)
        self.code, self.reason = code, reason


def interpret(data: bytes, placement: Placement, relpath: str, mode: int) -> KeyFile | ScanProblem:
    """A KeyFile, or the first reason it is not a usable one."""
    try:
        block = _first_key_block(data)
        role, gun = _identity(block, placement)
        assert placement.key_id is not None  # bad names never get this far
        algorithm = _check_key(block, placement.key_id)
    except _Refused as refused:
        return ScanProblem(relpath, refused.code, refused.reason)
    return KeyFile(
        key_id=placement.key_id,
        role=role,
        gun=gun,
        algorithm=algorithm,
        relpath=relpath,
        mode=mode,
        layout=placement.layout,
        encrypted=deep.is_encrypted(block),
        data=data,
    )


def _first_key_block(data: bytes) -> PemBlock:
    if not data:
        raise _Refused("empty", "the file is empty")
    block = decode_first(data)
    if block is None:
        raise _Refused("not-pem", "no PEM block notary could decode")
    if block.type not in deep.KEY_TYPES:
        code = "unsupported-type" if block.type.endswith("PRIVATE KEY") else "not-a-private-key"
        raise _Refused(
            code,
            f"the first PEM block is {_show(block.type)}, which notary does "
            "not read as a private key",
        )
    return block


def _identity(block: PemBlock, placement: Placement) -> tuple[str | None, str | None]:
    """(role, gun) as notary would see them after migrating the file."""
    headers = block.headers
    repeated = sorted(block.duplicates & {"role", "gun"})
    if repeated:
        raise _Refused(
            "conflicting-headers", f"the {repeated[0]}: header is given twice, differently"
        )
    header_role = headers.get("role") or None
    header_gun = headers.get("gun") or None
    if placement.name_role and header_role and placement.name_role != header_role:
        raise _Refused(
            "conflicting-headers",
            (
                f"the file name says role {_show(placement.name_role)} but the role: header says "
                f"{_show(header_role)}; notary's migration would use the name"
            ),
        )
    if placement.path_gun and header_gun and placement.path_gun != header_gun:
        raise _Refused(
            "conflicting-headers",
            (
                f"the directory says GUN {_show(placement.path_gun)} but the gun: header says "
                f"{_show(header_gun)}; notary's migration would use the directory"
            ),
        )
    role = placement.name_role or header_role
    gun = placement.path_gun or header_gun
    if role is not None:
        try:
            validate_role(role)
        except UsageError:
            raise _Refused("bad-role", f"role {_show(role)} is not a valid Notary role") from None
    if gun is not None:
        try:
            validate_gun(gun)
        except UsageError:
            raise _Refused("bad-gun", f"GUN {_show(gun)} is not a valid repository name") from None
    if role == "root":
        return role, None
    return role, gun


def _check_key(block: PemBlock, key_id: str) -> str | None:
    """The algorithm (None if encrypted PKCS#8); refuses a malformed or misnamed key."""
    label = f"key {key_id[:12]}"
    try:
        if block.type == "ENCRYPTED PRIVATE KEY":
            pkcs8.parse_encrypted(block.data)
            return None
        if deep.is_encrypted(block):
            rfc1421.parse(block.headers, block.data)
            return _LEGACY_ALGORITHMS[block.type]
        key = deep.open_block(block, None, label).key
    except InvalidInputError as exc:
        raise _Refused("bad-key", f"the key is malformed: {exc.message}") from None
    real = private_key_id(key)
    if real != key_id:
        raise _Refused(
            "id-mismatch",
            f"the unencrypted key inside has ID {real}, not the "
            "file name; notary cannot sign with it under this name",
        )
    return algorithm_of(key)
