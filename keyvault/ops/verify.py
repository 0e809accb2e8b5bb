"""Verify backups: every selected envelope opens, and matches the trust directory.

Without ``deep`` this proves that each backup can be opened through the
configured wrappers and that its bytes equal the key file on disk (by
digest). With ``deep`` it also decrypts each key with its Notary passphrase
(from the environment) and checks that the file name is the key's real ID.

The trust pins that travel with the selected keys (each GUN's pinned
``root.json``) are checked the same way: each backup is opened as ``restore``
opens it (trusted sealer, unbroken chain, never older than this machine has
seen), must hold a root.json, and is compared with the pin on disk. A pin a
store writer swapped is ``broken`` (exit 5), as a swapped key is.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from keyvault.errors import IntegrityError, KeyvaultError, NotFoundError, UsageError
from keyvault.names import KeyAddress, PinAddress, role_shown
from keyvault.ops.authentic import restore_relpath
from keyvault.ops.selection import Selection
from keyvault.ops.session import Session
from keyvault.ops.stored import list_addresses
from keyvault.trust.deep import NoPassphraseError
from keyvault.trust.model import KeyFile, Layout
from keyvault.trust.pins import PinFile, root_version

OK, MISSING, DIFFERS, BROKEN, NOT_LOCAL = "ok", "not-backed-up", "differs", "broken", "store-only"
NOT_CHECKED = "not-checked"  # the deep check of a key whose passphrase was not given


@dataclass(frozen=True)
class Verified:
    address: KeyAddress
    status: str
    detail: str = ""
    deep: str | None = None  # "key-id-ok", or None when not checked
    error: KeyvaultError | None = None
    sealer: str = ""  # the verified sealer's fingerprint, "unsigned", or "" (not opened)
    root_version: int | None = None  # a pin's: its backup's root version, once opened


DeepCheck = Callable[[KeyFile], str]


def verify_backups(
    session: Session,
    *,
    team: str,
    selection: Selection,
    local_keys: Sequence[KeyFile] | None,
    deep: DeepCheck | None = None,
    on_done: Callable[[Verified], None] | None = None,
    local_pins: Sequence[PinFile] | None = None,
) -> list[Verified]:
    """Each selected key, then (``local_pins`` given: the pins on disk that travel with
    the selection) each trust pin in the store or on disk; CI checks keys only."""
    session.wrappers()  # fail on a bad wrapper URI before reading anything else
    session.check("restore", team, selection)  # verify opens every envelope
    stored = set(list_addresses(session.store(), team, selection, ci=session.is_ci(team)))
    session.check("restore", team, addresses=stored)
    local: Mapping[KeyAddress, KeyFile] = {
        KeyAddress(team, k.gun, k.role, k.key_id): k
        for k in local_keys or ()
        if selection.matches(k.gun, k.role, k.key_id)
    }
    everything = sorted(stored | set(local))
    found = [(a.gun, a.role, a.key_id) for a in everything]
    if not selection.is_empty:
        selection.check_found(found, "the store or the trust directory")
    results: list[Verified] = []
    for address in everything:
        result = _verify_one(session, address, address in stored, local.get(address), deep)
        results.append(result)
        if on_done:
            on_done(result)
    if local_pins is not None and not session.is_ci(team):
        results += _verify_pins(session, team, selection, sorted(stored), local_pins)
    session.highwater().save()
    return results


def _verify_pins(
    session: Session,
    team: str,
    selection: Selection,
    keys: list[KeyAddress],
    local_pins: Sequence[PinFile],
) -> list[Verified]:
    from keyvault.ops.listing import stored_pins

    in_store = set(stored_pins(session, team, selection, keys))
    local = {PinAddress.of(team, p.gun): p for p in local_pins}
    pins = session.visible("restore", sorted(in_store | set(local)))
    return [
        _verify_pin(session, a, a in in_store, local.get(a))
        for a in pins
        if isinstance(a, PinAddress)
    ]


def _verify_pin(
    session: Session, address: PinAddress, in_store: bool, pin: PinFile | None
) -> Verified:
    what = f"trust pin of {address.gun}"
    if not in_store:
        return Verified(
            address,
            MISSING,
            "pin in the trust directory but not in the store",
            error=NotFoundError(f"the {what} is not backed up", hint="run 'keyvault backup'"),
        )
    try:
        stored = session.reader().latest(address)  # sealer, chain, high-water mark
        data = session.open(stored.envelope)
        try:
            version = root_version(data)
        except UsageError as exc:  # signed by a trusted sealer, yet not a root.json
            raise IntegrityError(f"the {what}: {exc.message}") from None
    except KeyvaultError as exc:
        return Verified(address, BROKEN, exc.message, error=exc)
    sealer = stored.sealer or ""
    if pin is None:
        return Verified(
            address,
            NOT_LOCAL,
            f"pin in the store only (root version {version})",
            sealer=sealer,
            root_version=version,
        )
    if not hmac.compare_digest(pin.as_key_file().sha256, stored.envelope.header.sha256):
        newer = pin.version > version
        detail = (
            f"the pin on disk (root version {pin.version}) is "
            + ("newer than" if newer else "not newer than, yet differs from")
            + f" its backup (root version {version})"
        )
        return Verified(
            address,
            DIFFERS,
            detail,
            error=IntegrityError(
                f"the {what} differs from its backup: {detail}",
                hint="run 'keyvault backup' to store the new pin"
                if newer
                else "find out who changed tuf/<gun>/metadata/root.json; 'keyvault restore "
                "--gun <gun> --force' puts the backed-up pin back",
            ),
            sealer=sealer,
            root_version=version,
        )
    return Verified(
        address,
        OK,
        f"pin opens and matches the trust directory (root version {version})",
        sealer=sealer,
        root_version=version,
    )


def _verify_one(
    session: Session,
    address: KeyAddress,
    in_store: bool,
    key: KeyFile | None,
    deep: DeepCheck | None,
) -> Verified:
    if not in_store:
        return Verified(
            address,
            MISSING,
            "in the trust directory but not in the store",
            error=NotFoundError(
                f"{role_shown(address.role)} key {address.key_id[:12]} is not backed up",
                hint="run 'keyvault backup'",
            ),
        )
    try:
        stored = session.reader().latest(address)  # sealer, chain, high-water mark
        data = session.open(stored.envelope)
    except KeyvaultError as exc:
        return Verified(address, BROKEN, exc.message, error=exc)
    deep_status: str | None = None
    if deep is not None:
        header = stored.envelope.header
        restored = KeyFile(
            key_id=header.key_id,
            role=header.role,
            gun=header.gun,
            algorithm=header.algorithm,
            relpath=restore_relpath(header),
            mode=header.source_mode,
            layout=key.layout if key else Layout.CURRENT,
            encrypted=key.encrypted if key else True,
            data=data,
        )
        try:
            deep_status = deep(restored)
        except NoPassphraseError as exc:  # nothing wrong with the backup: the check was not made
            deep_status = f"{NOT_CHECKED}: no passphrase ({exc.hint or exc.message})"
        except KeyvaultError as exc:
            return Verified(address, BROKEN, exc.message, error=exc)
    sealer = stored.sealer or ""
    if key is None:
        return Verified(address, NOT_LOCAL, "in the store only", deep_status, sealer=sealer)
    if not hmac.compare_digest(key.sha256, stored.envelope.header.sha256):
        return Verified(
            address,
            DIFFERS,
            "the key file changed since its last backup",
            deep_status,
            IntegrityError(
                f"{role_shown(address.role)} key {address.key_id[:12]} differs from its backup",
                hint="run 'keyvault backup' to store the new bytes",
            ),
            sealer,
        )
    return Verified(
        address, OK, "backup opens and matches the key file", deep_status, sealer=sealer
    )
