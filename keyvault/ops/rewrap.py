"""Rewrap: change which wrappers hold an envelope's DEK; the sealed key is never touched.

``add``/``remove`` unwrap the DEK once (through the configured wrappers),
wrap it for each added wrapper, drop the removed entries, and write the
result as a new version on top of the one read (compare-and-set: a
concurrent writer makes this key fail with a conflict, never lose data).
``rotate`` asks wrappers that can re-encrypt server-side (Vault Transit,
KMS) to move their entry to the newest key version: the DEK is never seen.
The ciphertext, nonce, header and commitment stay byte-identical.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from keyvault.envelope import Envelope, rewrap, unwrap_dek
from keyvault.errors import KeyvaultError, UsageError
from keyvault.names import KeyAddress
from keyvault.ops.parallel import DEFAULT_CONCURRENCY, bounded_map
from keyvault.ops.selection import Selection
from keyvault.ops.session import Session, key_ref
from keyvault.ops.stored import StoredEnvelope, list_addresses, read_envelope
from keyvault.wrappers import Wrapper, canonical_wrapper_uri, check_wrapper_uri, open_wrapper
from keyvault.wrappers.base import Rotatable

REWRAPPED, ROTATED, UNCHANGED, FAILED = "rewrapped", "rotated", "unchanged", "failed"


@dataclass(frozen=True)
class RewrapOutcome:
    address: KeyAddress
    action: str
    before: tuple[str, ...] = ()
    after: tuple[str, ...] = ()
    version: str | None = None
    error: KeyvaultError | None = None


def rewrap_keys(
    session: Session,
    *,
    team: str,
    selection: Selection,
    add: Sequence[str] = (),
    remove: Sequence[str] = (),
    rotate: bool = False,
    dry_run: bool = False,
    concurrency: int = DEFAULT_CONCURRENCY,
    on_done: Callable[[RewrapOutcome], None] | None = None,
) -> list[RewrapOutcome]:
    selection.require_explicit("rewrap")
    if not (add or remove or rotate):
        raise UsageError("say what to change: --add URI, --remove URI, or --rotate")
    overlap = set(add) & set(remove)
    if overlap:
        raise UsageError(f"cannot both add and remove {', '.join(sorted(overlap))}")
    remove = [canonical_wrapper_uri(uri) for uri in remove]
    session.access().precheck("rewrap", team, selection)  # policy: before any request
    options = session.config.backend_options(session.prompt)
    added: list[Wrapper] = [open_wrapper(uri, options) for uri in add]
    try:
        store = session.store()
        holders = session.wrappers()  # the wrappers that may open the DEK (strict mode)
        addresses = sorted(list_addresses(store, team, selection))
        selection.check_found([(a.gun, a.role, a.key_id) for a in addresses],
                              f"the store for team {team!r}")
        denied = session.access().refusals("rewrap", addresses)

        def one(address: KeyAddress) -> RewrapOutcome:
            if address in denied:  # refused by the policy: never read nor written
                return RewrapOutcome(address, FAILED, error=denied[address])
            try:
                stored = read_envelope(store, address)
                changed = _change(stored.envelope, holders, added, remove, rotate)
            except KeyvaultError as exc:
                return RewrapOutcome(address, FAILED, error=exc)
            before = stored.envelope.wrapper_uris
            if changed is None:
                return RewrapOutcome(address, UNCHANGED, before, before, stored.version)
            envelope, action = changed
            if dry_run:
                return RewrapOutcome(address, action, before, envelope.wrapper_uris)
            try:
                version = store.write(address.object_name, envelope.to_bytes(),
                                      replaces=stored.version)
            except KeyvaultError as exc:
                return RewrapOutcome(address, FAILED, before, error=exc)
            return RewrapOutcome(address, action, before, envelope.wrapper_uris, version)

        outcomes: list[RewrapOutcome] = []
        for outcome in bounded_map(one, addresses, concurrency):
            outcomes.append(outcome)
            if on_done:
                on_done(outcome)
        if not dry_run:
            changed = [o for o in outcomes if o.action in (REWRAPPED, ROTATED)]
            failed = [o for o in outcomes if o.action == FAILED]
            session.record("rewrap", "partial" if failed else "ok", team=team,
                           keys=[key_ref(o.address) for o in changed + failed],
                           detail=f"add={','.join(w.uri for w in added)} "
                                  f"remove={','.join(remove)} "
                                  f"rotate={rotate}: {len(changed)} changed, "
                                  f"{len(failed)} failed")
        return outcomes
    finally:
        for wrapper in added:
            wrapper.close()


def _change(envelope: Envelope, holders: Sequence[Wrapper], added: Sequence[Wrapper],
            remove: Sequence[str], rotate: bool) -> tuple[Envelope, str] | None:
    """The new envelope and what was done, or None when nothing would change."""
    result, action = envelope, None
    if rotate:
        result, action = _rotate(result, holders), ROTATED
    present = set(result.wrapper_uris)
    to_add = [w for w in added if w.uri not in present]
    to_remove = [uri for uri in remove if uri in present]
    if to_add or to_remove:
        if len(to_remove) == len(present) and not to_add:
            raise UsageError(f"key {envelope.header.key_id[:12]}: removing "
                             f"{', '.join(to_remove)} would leave no wrapper")
        dek = bytearray(unwrap_dek(result, holders, check_wrapper_uri))
        try:
            result = rewrap(result, bytes(dek), to_add, to_remove)
        finally:
            dek[:] = bytes(len(dek))
        action = REWRAPPED
    if action is None or result == envelope:
        return None
    return result, action


def _rotate(envelope: Envelope, holders: Sequence[Wrapper]) -> Envelope:
    """Each entry whose wrapper can rotate server-side moves to its newest key version."""
    by_uri = {w.uri: w for w in holders if isinstance(w, Rotatable)}
    if not by_uri:
        raise UsageError("none of the configured wrappers can rotate server-side "
                         "(Vault Transit and AWS KMS can); use --add and --remove instead")
    context = envelope.header.context()
    entries = tuple(
        replace(by_uri[entry.uri].rewrap(entry, context), share=entry.share,
                threshold=entry.threshold) if entry.uri in by_uri else entry
        for entry in envelope.wrapped_keys)
    return replace(envelope, wrapped_keys=entries)


__all__ = ["RewrapOutcome", "StoredEnvelope", "rewrap_keys"]
