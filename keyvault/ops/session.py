"""A command's session: the config plus the store and wrappers it opens, once.

Backends are opened on first use and closed at the end, so one bulk
operation reuses one store connection and one HSM login, and commands that
need no backend (``scan``) never load one.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from types import TracebackType
from typing import TYPE_CHECKING

from keyvault.breaker import Breaker
from keyvault.config import Config
from keyvault.errors import KeyvaultError
from keyvault.names import KeyAddress
from keyvault.ops.identity import key_ref, local_principal
from keyvault.plugins import BackendOptions, SecretPrompt
from keyvault.stores import Store, open_store

__all__ = ["Session", "key_ref", "local_principal"]

if TYPE_CHECKING:
    from keyvault.audit import AuditLog, KeyRef
    from keyvault.envelope import Envelope
    from keyvault.highwater import HighWater
    from keyvault.known import KnownVersions
    from keyvault.ops.access import Access
    from keyvault.ops.authentic import AuthenticReader
    from keyvault.ops.selection import Selection
    from keyvault.sealing import Sealer, SealerTrust
    from keyvault.wrappers import Wrapper


@dataclass
class Session:
    config: Config
    prompt: SecretPrompt | None = None
    #: ``--as PRINCIPAL``: honoured with the file store only (keyvault.ops.access).
    acting_as: str | None = None
    _access: Access | None = field(default=None, init=False, repr=False)
    _store: Store | None = field(default=None, init=False, repr=False)
    _wrappers: list[Wrapper] | None = field(default=None, init=False, repr=False)
    _sealer: Sealer | None = field(default=None, init=False, repr=False)
    _sealers: SealerTrust | None = field(default=None, init=False, repr=False)
    _highwater: HighWater | None = field(default=None, init=False, repr=False)
    #: (whether it was looked for, and) what this machine sealed or verified (keyvault.known)
    _known: tuple[KnownVersions | None] | None = field(default=None, init=False, repr=False)
    #: This run's circuit breaker: once a backend is down, no new key is started.
    breaker: Breaker = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.breaker = Breaker(self.config.give_up_after)

    def options(self) -> BackendOptions:
        """What the session's backends are opened with, its breaker included."""
        return replace(self.config.backend_options(self.prompt), breaker=self.breaker)

    def store(self) -> Store:
        if self._store is None:
            self._store = open_store(self.config.require_store(), self.options())
        return self._store

    def wrappers(self) -> list[Wrapper]:
        """The configured wrappers: every one seals; any one may open (strict mode)."""
        if self._wrappers is None:
            from keyvault.wrappers import open_wrapper  # not loaded by commands that only list

            options = self.options()
            self._wrappers = [open_wrapper(uri, options) for uri in self.config.require_wrappers()]
        return self._wrappers

    def sealer(self) -> Sealer:
        """This machine's sealing key; the default key file is made on first use (0600)."""
        if self._sealer is None:
            from keyvault.sealers import open_sealer
            from keyvault.sealing import Ed25519FileSealer

            spec, path = self.config.sealing_key, self.config.sealing_key_path
            if spec is None and not path.exists():
                self._sealer = Ed25519FileSealer.generate(path)
            else:
                self._sealer = open_sealer(spec or str(path), self.options())
        return self._sealer

    def sealers(self) -> SealerTrust:
        """The sealers whose envelopes this session accepts (docs/envelope.md, pinning)."""
        if self._sealers is None:
            from keyvault.ops.pins import trusted_sealers

            self._sealers = trusted_sealers(self)
        return self._sealers

    def highwater(self) -> HighWater:
        """This machine's high-water marks for the session's store."""
        if self._highwater is None:
            from keyvault.highwater import HighWater

            self._highwater = HighWater(self.config.paths.state_dir, self.store().uri)
        return self._highwater

    def known(self, *, open_sealer: bool = True) -> KnownVersions | None:
        """What this machine last sealed or verified of each key in the store, under a MAC
        key derived from the sealing key; None where that key gives no stable MAC key
        (ECDSA signatures are randomized) or, without ``open_sealer``, none exists yet."""
        if self._known is None:
            from keyvault.known import LABEL, KnownVersions
            from keyvault.sealing import ED25519

            exists = self.config.sealing_key is not None or self.config.sealing_key_path.exists()
            if not open_sealer and not exists and self._sealer is None:
                return None  # a dry run makes no sealing key
            uri = self.store().uri
            try:
                sealer = self.sealer()
                if sealer.key.alg != ED25519:
                    self._known = (None,)
                    return None
                signature = sealer.sign(LABEL + uri.encode("utf-8"))
            except KeyvaultError:
                return None  # a sealer out of reach: every key is read this time
            mac_key = hashlib.sha256(LABEL + signature).digest()
            self._known = (KnownVersions(self.config.paths.state_dir, uri, mac_key),)
        return self._known[0]

    def reader(self) -> AuthenticReader:
        """Reads envelopes proven to come from a trusted sealer, never rolled back."""
        from keyvault.ops.authentic import AuthenticReader

        return AuthenticReader(
            self.store(), self.sealers(), self.highwater(), self.config.allow_unsigned
        )

    def access(self) -> Access:
        """The policy checks (teams.md): every check passes when no policy is configured."""
        if self._access is None:
            from keyvault.ops.access import Access

            self._access = Access(self)
        return self._access

    def check(
        self,
        action: str,
        team: str,
        selection: Selection | None = None,
        addresses: Iterable[KeyAddress] | None = None,
    ) -> None:
        """The teams policy, when one is configured: before any request (``selection``)
        or before any envelope is read (``addresses``). Without a policy (and without
        --as) nothing is loaded, so single-user commands start as fast as before."""
        if self.config.policy is None and self.acting_as is None:
            return
        if addresses is None:
            self.access().precheck(action, team, selection)
        else:
            self.access().require(action, addresses)

    def is_ci(self, team: str) -> bool:
        """The teams policy, already checked, names this principal as the team's CI."""
        return self._access is not None and self._access.is_ci(team)

    def visible(self, action: str, addresses: Iterable[KeyAddress]) -> list[KeyAddress]:
        """The addresses the policy lets this principal ``action``, the others left out
        silently: what a broad listing shows (a CI job's bare ``list`` is its keys, not a
        refusal because the team also holds a root key)."""
        found = list(addresses)
        if self.config.policy is None and self.acting_as is None:
            return found
        return self.access().allowed(action, found)

    def audit(self) -> AuditLog:
        """The local hash-chained audit log of this user."""
        from keyvault.audit import AuditLog

        return AuditLog(
            self.config.paths.state_dir / "audit.log", local_principal(), claimed_as=self.acting_as
        )

    def record(
        self,
        action: str,
        outcome: str,
        *,
        team: str,
        keys: Sequence[KeyRef] = (),
        detail: str = "",
        anchor: bool = True,
    ) -> None:
        """Append an audit record naming this session's store and wrappers (never secrets:
        URIs and the detail are redacted, since a record can never be scrubbed later), then
        anchor it in the store with a signed checkpoint (keyvault.ops.anchor).

        Only what was done is anchored at once: a refused or failed command makes no
        store write (a refusal no store request at all), and ``anchor=False`` says that
        nothing was done (a backup with nothing to write). Nor is what CI does (``fetch``,
        or a principal the policy names as CI): CI may only read the store, and a
        runner's log goes with the runner. The next checkpoint anchors all of these, as
        a head's hash covers every record before it.
        """
        from keyvault.audit import audit_object_name
        from keyvault.canonical import canonical_json
        from keyvault.redact import redact

        backend = {
            "store": redact(self.config.store or ""),
            "wrappers": ",".join(map(redact, self.config.wrappers)),
        }
        record = self.audit().append(
            action, outcome, team=team, keys=keys, backend=backend, detail=redact(detail)
        )
        if self.config.audit_to_store and self.config.store:
            self.store().write(audit_object_name(team, record), canonical_json(record))
        done = anchor and outcome not in ("failed", "refused")
        ci = action == "fetch" or self.is_ci(team)
        if done and self.config.store and not ci:
            from keyvault.ops.anchor import write_checkpoint

            write_checkpoint(self, record)

    def open(self, envelope: Envelope) -> bytes:
        """Open an envelope with the configured wrappers (strict mode), its sealer first."""
        from keyvault.envelope import open_envelope
        from keyvault.wrappers import check_wrapper_uri

        return open_envelope(
            envelope,
            self.wrappers(),
            check_wrapper_uri,
            sealers=self.sealers(),
            allow_unsigned=self.config.allow_unsigned,
        )

    def close(self) -> None:
        if self._highwater is not None:
            with contextlib.suppress(KeyvaultError):  # each operation saved what it must
                self._highwater.save()
        known = self._known[0] if self._known else None
        if known is not None:
            with contextlib.suppress(KeyvaultError):
                known.save()
        for wrapper in self._wrappers or []:
            wrapper.close()
        close_sealer = getattr(self._sealer, "close", None)  # backend sealers hold a client
        if close_sealer is not None:
            close_sealer()
        if self._store is not None:
            self._store.close()
        self._wrappers, self._store, self._highwater, self._sealer = None, None, None, None
        self._known = None
        self.breaker.reset()  # the next use is a new run (the daemon's next cycle)

    def __enter__(self) -> Session:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
