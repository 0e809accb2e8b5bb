"""Rewrap: change which wrappers hold an envelope's DEK; the sealed key is never touched.

``add``/``remove`` unwrap the DEK once (through the configured wrappers),
wrap it for each added wrapper, drop the removed entries, and write the
result as a new version on top of the one read (compare-and-set: a
concurrent writer makes this key fail with a conflict, never lose data).
``rotate`` asks wrappers that can re-encrypt server-side (Vault Transit,
KMS) to move their entry to the newest key version: the DEK is never seen.
The ciphertext, nonce, header and commitment stay byte-identical. The trust
pins that travel with the selected keys (each GUN's pinned root.json, which
``restore`` brings back with them) are rewrapped with the keys: a wrapper
retired from the keys must not be the only one that still opens a pin.

Every version written is signed by this machine's sealer and chained to the
version it replaces. ``reseal`` re-signs without changing wrappers (after a
sealer rotation), and migrates unsigned v1 envelopes (read only with
``--allow-unsigned``) to v2: those are decrypted and sealed anew, for the
same wrappers, since the format version is part of their associated data.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from keyvault.envelope import (
    FIRST,
    VERSION,
    Chain,
    Envelope,
    rewrap,
    seal,
    sign,
    through,
    unwrap_dek,
)
from keyvault.errors import AccessDeniedError, KeyvaultError, UsageError
from keyvault.names import CertAddress, KeyAddress
from keyvault.ops.backup import next_number
from keyvault.ops.certs import cert_addresses
from keyvault.ops.listing import pins_in_store
from keyvault.ops.marker import announce_writes
from keyvault.ops.parallel import DEFAULT_CONCURRENCY, bounded_map
from keyvault.ops.selection import Selection
from keyvault.ops.session import Session, key_ref
from keyvault.ops.stored import StoredEnvelope, list_addresses
from keyvault.wrappers import Wrapper, canonical_wrapper_uri, check_wrapper_uri, open_wrapper
from keyvault.wrappers.base import Rotatable

REWRAPPED, ROTATED, RESEALED, UNCHANGED, FAILED, NOT_ATTEMPTED = (
    "rewrapped",
    "rotated",
    "resealed",
    "unchanged",
    "failed",
    "not-attempted",
)


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
    reseal: bool = False,
    dry_run: bool = False,
    concurrency: int = DEFAULT_CONCURRENCY,
    on_done: Callable[[RewrapOutcome], None] | None = None,
    pins_refused: list[AccessDeniedError] | None = None,
) -> list[RewrapOutcome]:
    """Rewrap the selected envelopes and the trust pins that travel with them. When the
    backend refuses to list the pins, they are left out and the refusal is appended to
    ``pins_refused`` (the caller says so and fails: a retired wrapper may still be the
    only one that opens them)."""
    selection.require_explicit("rewrap")
    if not (add or remove or rotate or reseal):
        raise UsageError("say what to change: --add URI, --remove URI, --rotate or --reseal")
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
        reader = session.reader()
        sealer = session.sealer()
        addresses = sorted(list_addresses(store, team, selection))
        selection.check_found(
            [(a.gun, a.role, a.key_id) for a in addresses], f"the store for team {team!r}"
        )
        if not session.is_ci(team):  # the trust pins that travel with the keys, as restore
            pins, refusal = pins_in_store(session, team, selection, addresses)
            certs: list[CertAddress] = []
            try:  # and the CA files the notary config pins, which restore brings with them
                certs = cert_addresses(
                    session, team, selection, {a.gun for a in addresses if a.gun is not None}
                )
            except AccessDeniedError as exc:
                refusal = refusal or exc
            addresses += [*pins, *certs]
            if refusal is not None and pins_refused is not None:
                pins_refused.append(refusal)
        denied = session.access().refusals("rewrap", addresses)
        reader.prefetch([a for a in addresses if a not in denied])

        breaker = session.breaker

        def one(address: KeyAddress) -> RewrapOutcome:
            if address in denied:  # refused by the policy: never read nor written
                return RewrapOutcome(address, FAILED, error=denied[address])
            if breaker.is_open:  # a backend is down: start no new key (a re-run goes on)
                return RewrapOutcome(address, NOT_ATTEMPTED, error=breaker.skip())
            outcome = _one(address)
            breaker.note(outcome.error)
            return outcome

        def _one(address: KeyAddress) -> RewrapOutcome:
            try:
                stored = reader.latest(address)
                changed = _change(session, stored.envelope, holders, added, remove, rotate, reseal)
            except KeyvaultError as exc:
                return RewrapOutcome(address, FAILED, error=exc)
            before = stored.envelope.wrapper_uris
            if changed is None:
                return RewrapOutcome(address, UNCHANGED, before, before, stored.version)
            envelope, action = changed
            if dry_run:
                return RewrapOutcome(address, action, before, envelope.wrapper_uris)
            old = stored.envelope.chain
            chain = Chain(old.sequence + 1 if old else next_number(session, address), stored.digest)
            try:
                payload = sign(envelope, sealer, chain).to_bytes()
                version = store.write(address.object_name, payload, replaces=stored.version)
            except KeyvaultError as exc:
                return RewrapOutcome(address, FAILED, before, error=exc)
            reader.highwater.note(
                address.object_name, chain.sequence, hashlib.sha256(payload).hexdigest()
            )
            return RewrapOutcome(address, action, before, envelope.wrapper_uris, version)

        outcomes: list[RewrapOutcome] = []
        for outcome in bounded_map(one, addresses, concurrency):
            outcomes.append(outcome)
            if on_done:
                on_done(outcome)
        if not dry_run:
            reader.highwater.save()
            changed = [o for o in outcomes if o.action in (REWRAPPED, ROTATED, RESEALED)]
            failed = [o for o in outcomes if o.action in (FAILED, NOT_ATTEMPTED)]
            session.record(
                "rewrap",
                "partial" if failed else "ok",
                team=team,
                keys=[key_ref(o.address) for o in changed + failed],
                detail=f"add={','.join(w.uri for w in added)} "
                f"remove={','.join(remove)} "
                f"rotate={rotate} reseal={reseal}: {len(changed)} changed, "
                f"{len(failed)} failed",
            )
            if changed:  # other machines' records name the versions before these
                announce_writes(session, team)
        return outcomes
    finally:
        for wrapper in added:
            wrapper.close()


def _change(
    session: Session,
    envelope: Envelope,
    holders: Sequence[Wrapper],
    added: Sequence[Wrapper],
    remove: Sequence[str],
    rotate: bool,
    reseal: bool,
) -> tuple[Envelope, str] | None:
    """The new (unsigned) envelope and what was done, or None when nothing would change."""
    if envelope.version != VERSION:
        return _reseal_v1(session, envelope, holders, added, remove), RESEALED
    result, action = envelope, RESEALED if reseal else None
    if rotate:
        result, action = _rotate(result, holders), ROTATED
    present = set(result.wrapper_uris)
    to_add = [w for w in added if w.uri not in present]
    to_remove = [uri for uri in remove if uri in present]
    if to_add or to_remove:
        if len(to_remove) == len(present) and not to_add:
            raise UsageError(
                f"key {envelope.header.key_id[:12]}: removing "
                f"{', '.join(to_remove)} would leave no wrapper"
            )
        dek = bytearray(_unwrap(session, result, holders))
        try:
            result = rewrap(result, bytes(dek), to_add, to_remove)
        finally:
            dek[:] = bytes(len(dek))
        action = REWRAPPED
    if action is None or (result == envelope and action != RESEALED):
        return None
    return result, action


def _unwrap(session: Session, envelope: Envelope, holders: Sequence[Wrapper]) -> bytes:
    return unwrap_dek(
        envelope,
        holders,
        check_wrapper_uri,
        sealers=session.sealers(),
        allow_unsigned=session.config.allow_unsigned,
    )


def _reseal_v1(
    session: Session,
    envelope: Envelope,
    holders: Sequence[Wrapper],
    added: Sequence[Wrapper],
    remove: Sequence[str],
) -> Envelope:
    """A v1 envelope sealed anew as v2 for the same wrappers (plus/minus the changes).

    The caller signs it; the header keeps every fact, only its version changes.
    """
    from keyvault.envelope import decrypt_with_dek

    dek = bytearray(_unwrap(session, envelope, holders))
    try:
        data = decrypt_with_dek(envelope, bytes(dek))
    finally:
        dek[:] = bytes(len(dek))
    uris = [u for u in envelope.wrapper_uris if u not in remove]
    uris += [w.uri for w in added if w.uri not in uris]
    if not uris:
        raise UsageError(f"key {envelope.header.key_id[:12]}: that would leave no wrapper")
    by_uri = {w.uri: w for w in (*holders, *added)}
    options = session.config.backend_options(session.prompt)
    opened = [open_wrapper(u, options) for u in uris if u not in by_uri]  # public halves
    by_uri.update((w.uri, w) for w in opened)
    header = replace(envelope.header, version=VERSION)
    try:
        sealed = seal(
            header,
            data,
            [by_uri[u] for u in uris],
            envelope.threshold,
            sealer=session.sealer(),
            chain=FIRST,
        )
    finally:
        for wrapper in opened:
            wrapper.close()
    return replace(sealed, signature=None)


def _rotate(envelope: Envelope, holders: Sequence[Wrapper]) -> Envelope:
    """Each entry whose wrapper can rotate server-side moves to its newest key version."""
    by_uri = {w.uri: w for w in holders if isinstance(w, Rotatable)}
    if not by_uri:
        raise UsageError(
            "none of the configured wrappers can rotate server-side "
            "(Vault Transit and AWS KMS can); use --add and --remove instead"
        )
    context = envelope.header.context()
    entries = tuple(
        replace(
            through(by_uri[entry.uri], by_uri[entry.uri].rewrap, entry, context),
            share=entry.share,
            threshold=entry.threshold,
        )
        if entry.uri in by_uri
        else entry
        for entry in envelope.wrapped_keys
    )
    return replace(envelope, wrapped_keys=entries)


__all__ = ["RewrapOutcome", "StoredEnvelope", "rewrap_keys"]
