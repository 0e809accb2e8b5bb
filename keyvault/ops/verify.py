"""Verify backups: every selected envelope opens, and matches the trust directory.

Without ``deep`` this proves that each backup can be opened through the
configured wrappers and that its bytes equal the key file on disk (by
digest). With ``deep`` it also decrypts each key with its Notary passphrase
(from the environment) and checks that the file name is the key's real ID.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from keyvault.errors import IntegrityError, KeyvaultError, NotFoundError
from keyvault.names import KeyAddress, role_shown
from keyvault.ops.authentic import restore_relpath
from keyvault.ops.selection import Selection
from keyvault.ops.session import Session
from keyvault.ops.stored import list_addresses
from keyvault.trust.deep import NoPassphraseError
from keyvault.trust.model import KeyFile, Layout

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


DeepCheck = Callable[[KeyFile], str]


def verify_backups(
    session: Session,
    *,
    team: str,
    selection: Selection,
    local_keys: Sequence[KeyFile] | None,
    deep: DeepCheck | None = None,
    on_done: Callable[[Verified], None] | None = None,
) -> list[Verified]:
    session.wrappers()  # fail on a bad wrapper URI before reading anything else
    session.check("restore", team, selection)  # verify opens every envelope
    stored = set(list_addresses(session.store(), team, selection, ci=session.is_ci(team)))
    session.check("restore", team, addresses=stored)
    local: Mapping[KeyAddress, KeyFile] = {
        KeyAddress(team, k.gun, k.role, k.key_id): k for k in local_keys or ()
        if selection.matches(k.gun, k.role, k.key_id)}
    everything = sorted(stored | set(local))
    found = [(a.gun, a.role, a.key_id) for a in everything]
    if not selection.is_empty:
        selection.check_found(found, "the store or the trust directory")
    results: list[Verified] = []
    for address in everything:
        result = _verify_one(session, address, address in stored, local.get(address),
                             deep)
        results.append(result)
        if on_done:
            on_done(result)
    session.highwater().save()
    return results


def _verify_one(session: Session, address: KeyAddress, in_store: bool, key: KeyFile | None,
                deep: DeepCheck | None) -> Verified:
    if not in_store:
        return Verified(address, MISSING, "in the trust directory but not in the store",
                        error=NotFoundError(f"{role_shown(address.role)} key "
                                            f"{address.key_id[:12]} is not backed up",
                                            hint="run 'keyvault backup'"))
    try:
        stored = session.reader().latest(address)  # sealer, chain, high-water mark
        data = session.open(stored.envelope)
    except KeyvaultError as exc:
        return Verified(address, BROKEN, exc.message, error=exc)
    deep_status: str | None = None
    if deep is not None:
        header = stored.envelope.header
        restored = KeyFile(key_id=header.key_id, role=header.role, gun=header.gun,
                           algorithm=header.algorithm, relpath=restore_relpath(header),
                           mode=header.source_mode,
                           layout=key.layout if key else Layout.CURRENT,
                           encrypted=key.encrypted if key else True, data=data)
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
        return Verified(address, DIFFERS,
                        "the key file changed since its last backup",
                        deep_status, IntegrityError(
                            f"{role_shown(address.role)} key {address.key_id[:12]} differs from "
                            "its backup",
                            hint="run 'keyvault backup' to store the new bytes"), sealer)
    return Verified(address, OK, "backup opens and matches the key file", deep_status,
                    sealer=sealer)

