"""Reading envelopes that may be installed: sealed by a pinned sealer, never rolled back.

Whoever can write the store can put any bytes there (SECURITY.md, T2). Before
an envelope's key reaches a trust directory, the reader checks, in order:

1. the sealer's signature over the whole envelope, against the pinned
   sealers (an unsigned v1 envelope only on an explicit ``--allow-unsigned``);
2. for the latest version: its signed chain against the version beneath it
   in the store (the digest of those stored bytes, and a higher number), so an
   older version copied on top is refused;
3. this machine's high-water mark: never a lower number than one seen before,
   nor another version under the same number.

Each refusal is an IntegrityError (exit 5) that names the key and says which
check failed. Restoring an older version on purpose (``--version``) checks
the signature only, and leaves the high-water mark where it is.
"""

from __future__ import annotations

import hashlib
import hmac
import posixpath
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from keyvault.errors import IntegrityError, KeyvaultError, NotFoundError
from keyvault.names import KeyAddress, key_words
from keyvault.ops.stored import StoredEnvelope, listing_start, read_envelope
from keyvault.ops.versionindex import VersionIndex
from keyvault.stores import Store
from keyvault.stores.base import VersionListing

if TYPE_CHECKING:
    from keyvault.envelope import Envelope, Header
    from keyvault.highwater import HighWater
    from keyvault.sealing import SealerTrust

UNSIGNED = "unsigned"
#: From this many keys on, a reader lists the versions under their common prefix once
#: (where the store can) instead of once per key.
BULK_LISTING = 16
#: Versions a page of the listing list_ahead makes: the first chain checks wait for one
#: such page (SeaweedFS: 0.2 s for 250, 0.9 s for 1,000; the whole listing costs the same).
AHEAD_PAGE = 250


def restore_relpath(header: Header) -> str:
    """Where under ``private/`` this key goes: derived from the authenticated facts."""
    from keyvault.trust.layout import derived_relpath

    return derived_relpath(header.source_name, header.key_id, header.role, header.gun)


def describe(address: KeyAddress) -> str:
    """How messages name a key: its role, its full ID and its GUN (or a GUN's trust pin)."""
    return key_words(address.role, address.gun, address.key_id)


@dataclass
class AuthenticReader:
    """Reads envelopes out of one store and proves each one before it is used."""

    store: Store
    sealers: SealerTrust
    highwater: HighWater
    allow_unsigned: bool = False
    #: Version IDs (newest first) of the objects a bulk listing found, by object name.
    _listed: dict[str, tuple[str, ...]] = field(default_factory=dict, init=False, repr=False)
    #: The versions listings list_ahead makes, page by page, with the prefix of each.
    _ahead: list[tuple[str, VersionIndex]] = field(default_factory=list, init=False, repr=False)

    def prefetch(self, addresses: Collection[KeyAddress]) -> None:
        """List the versions of many keys at once, ahead of reading them as latest.

        Only a speed-up: a key whose latest version the listing does not hold
        (written after it) has its versions listed again on its own.
        """
        if len(addresses) < BULK_LISTING or not isinstance(self.store, VersionListing):
            return
        names = {a.object_name for a in addresses}
        common = posixpath.commonpath(list(names))  # whole segments: object names use "/"
        prefix = f"{common}/" if common else ""
        teams = {a.team for a in addresses}
        after = listing_start(teams.pop(), prefix) if len(teams) == 1 else ""
        self._listed = {
            name: tuple(v.version for v in found)
            for name, found in self.store.versions_under(prefix, after=after).items()
            if name in names
        }

    def list_ahead(self, listings: Sequence[tuple[str, str]]) -> None:
        """Start listing the versions under each (prefix, name it starts after) of
        ``listings`` (keyvault.ops.stored: listing_start) in the background, where the
        store can: the caller meanwhile lists the names and starts reading, and each
        chain check waits until that listing has passed its key (pages of AHEAD_PAGE, so
        the first keys wait for a small page, not for the whole listing); an error of
        the listing is raised by the chain checks. :meth:`stop_listing` ends it.

        As prefetch, only a speed-up, so it may be incomplete: a key it does not hold
        has its versions listed again on its own.
        """
        store = self.store
        if not isinstance(store, VersionListing):
            return
        self.stop_listing()
        self._ahead = [
            (
                prefix,
                VersionIndex(
                    store.versions_pages(prefix, page_size=AHEAD_PAGE, after=after)
                ).start(),
            )
            for prefix, after in listings
        ]

    def stop_listing(self) -> None:
        """End the listings list_ahead started (a daemon thread each: nothing waits)."""
        ahead, self._ahead = self._ahead, []
        for _, index in ahead:
            index.close()

    def _versions_listed(self, name: str) -> tuple[str, ...]:
        """``name``'s version IDs (newest first) as a bulk listing found them; () if none
        did (its versions are then listed on their own)."""
        for prefix, index in self._ahead:
            if name.startswith(prefix):
                return index.wait(name) or ()
        return self._listed.get(name, ())

    def latest(self, address: KeyAddress) -> StoredEnvelope:
        """The latest version, signed by a trusted sealer and no older than it should be."""
        return self.check_latest(read_envelope(self.store, address))

    def version(self, address: KeyAddress, version: str) -> StoredEnvelope:
        """A given version, on purpose: its signature is checked, its age is the caller's."""
        return self.authenticate(read_envelope(self.store, address, version))

    def read(self, address: KeyAddress, version: str | None = None) -> StoredEnvelope:
        return self.latest(address) if version is None else self.version(address, version)

    def authenticate(self, entry: StoredEnvelope) -> StoredEnvelope:
        """The signature check alone (step 1)."""
        from keyvault.envelope import authenticate

        sealer = authenticate(entry.envelope, self.sealers, allow_unsigned=self.allow_unsigned)
        return replace(entry, sealer=UNSIGNED if sealer is None else sealer.fingerprint)

    def check_latest(self, entry: StoredEnvelope) -> StoredEnvelope:
        """Steps 1 to 3 for an entry read as the latest version."""
        entry = self.authenticate(entry)
        chain = entry.envelope.chain
        if chain is None:  # unsigned v1, explicitly allowed: it has no chain to check
            return entry
        what = describe(entry.address)
        self.check_chain(entry)
        name = entry.address.object_name
        self.highwater.check(name, chain.sequence, entry.digest, what)
        self.highwater.note(name, chain.sequence, entry.digest)
        return entry

    def check_chain(self, entry: StoredEnvelope) -> None:
        """The latest version must be sealed on top of exactly the version beneath it."""
        chain = entry.envelope.chain
        assert chain is not None
        what = describe(entry.address)
        name = entry.address.object_name
        versions = self._versions_listed(name)
        if entry.version not in versions:
            versions = tuple(v.version for v in self.store.versions(name))
        if entry.version not in versions:
            raise IntegrityError(
                f"{what}: the store lists no version {entry.version} of "
                f"{name}, though it returned it; refused"
            )
        below = versions[versions.index(entry.version) + 1 :]
        if not below:
            return  # the first version, or older ones were pruned: the high-water mark guards
        if chain.previous is None:
            raise IntegrityError(
                f"{what}: rollback: the latest version {entry.version} says it is the key's "
                f"first (number {chain.sequence}), but {len(below)} older version(s) lie "
                "beneath it; an old version was copied on top; refused",
                hint="investigate who wrote it; restore a version on purpose with --version",
            )
        beneath = self._read_beneath(entry, below[0])
        if not hmac.compare_digest(hashlib.sha256(beneath).hexdigest(), chain.previous):
            raise IntegrityError(
                f"{what}: broken chain: the latest version {entry.version} (number "
                f"{chain.sequence}) was not sealed on top of version {below[0]} beneath it; "
                "an older version was copied on top, or the history was rewritten; refused",
                hint="investigate who wrote it; restore a version on purpose with --version",
            )
        older = self._signed_sequence(beneath)
        if older is not None and older >= chain.sequence:
            raise IntegrityError(
                f"{what}: rollback: the latest version has number {chain.sequence}, not "
                f"higher than number {older} beneath it; refused"
            )

    def _read_beneath(self, entry: StoredEnvelope, version: str) -> bytes:
        try:
            return self.store.read(entry.address.object_name, version).data
        except NotFoundError:
            raise IntegrityError(
                f"{describe(entry.address)}: the version beneath the latest ({version}) "
                "cannot be read, so the latest cannot be shown to be newer; refused",
                hint="restore a version on purpose with --version",
            ) from None

    def _signed_sequence(self, data: bytes) -> int | None:
        """The chain number of a stored version, if a trusted sealer signed it."""
        from keyvault.envelope import Envelope, authenticate

        try:
            envelope: Envelope = Envelope.from_bytes(data)
            if envelope.chain is None or authenticate(envelope, self.sealers) is None:
                return None
        except KeyvaultError:
            return None  # junk beneath a repair: its digest is what the chain names
        return envelope.chain.sequence
