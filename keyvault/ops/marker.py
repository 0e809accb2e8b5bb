"""A team's change marker (``[vault] change_marker``, opt-in): one request tells a backup
that nothing of the team changed since this machine's last listing of its folders.

KV v2 lists one folder at a time, so proving 100,000 keys in 1,000 GUNs unchanged costs
some 3,000 LISTs. With the marker on, every keyvault run that wrote a key, pin or cert of
the team then writes a new version of ``v1/teams/<team>/changes`` (a random nonce); its
tag (version and creation time, both Vault's) names the team's last announced change. A
backup reads that tag first (one request): if it is the one recorded, under the MAC of
keyvault.known, before this machine's last listing, and that listing is younger than
``[vault] full_check_every``, each record in the folders it listed stands for the
listing; each key's own checks (its MAC, high-water mark, sealer, key file on disk)
still hold. Other folders are listed as without the marker, and the tag read before
them is recorded.

What it trades: a version written on top outside keyvault (a writer that does not move
the marker) is seen at the next full check, not at the next backup. A restore is never
affected: it checks signatures, chain and high-water marks.
"""

from __future__ import annotations

import contextlib
import hmac
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from keyvault.errors import BackendUnavailableError, KeyvaultError, UsageError
from keyvault.known import KnownVersions, Marker
from keyvault.stores.base import ChangeMarking

if TYPE_CHECKING:
    from keyvault.ops.session import Session

_EVERY = re.compile(r"([1-9][0-9]{0,6})([smhd])")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}
DEFAULT_EVERY = "24h"


@dataclass(frozen=True)
class MarkerSettings:
    on: bool
    every: float  # seconds between full listings


def marker_settings(settings: Mapping[str, Mapping[str, Any]]) -> MarkerSettings:
    """``[vault] change_marker`` and ``full_check_every`` ("30m", "24h", "7d")."""
    vault = settings.get("vault", {})
    text = vault.get("full_check_every", DEFAULT_EVERY)
    found = _EVERY.fullmatch(text) if isinstance(text, str) else None
    if found is None:
        raise UsageError(
            f"[vault] full_check_every must be a number and a unit (s, m, h, d): {text!r:.40}",
            hint=f'e.g. full_check_every = "{DEFAULT_EVERY}"',
        )
    return MarkerSettings(vault.get("change_marker") is True, int(found[1]) * _UNIT[found[2]])


def announce(store: ChangeMarking, known: KnownVersions | None, team: str, now: float) -> str:
    """A new marker version after a run's writes in ``team``; its tag. If it cannot be
    written, this machine's records say so (its next run writes it first), and the run
    fails with exit 6: changed, but not announced."""
    try:
        return store.mark_change(team)
    except KeyvaultError as exc:
        if known is not None:
            known.note_marker(team, "", now, pending=True)
            known.save()
        raise BackendUnavailableError(
            f"keys of team {team} were written but not announced: the change marker "
            f"could not be written ({exc.message}); other machines with [vault] "
            "change_marker see the change at their next full check",
            hint="run the backup again: it writes the marker first",
        ) from None


def announce_writes(session: Session, team: str) -> None:
    """After a run that wrote keys in ``team`` outside a backup (rewrap): move the marker,
    where it is on."""
    store = session.store()
    if marker_settings(session.config.settings).on and isinstance(store, ChangeMarking):
        announce(store, session.known(), team, time.time())


def _version(tag: str) -> int:
    """The marker version a tag names (0 for none)."""
    head = tag.partition("@")[0]
    return int(head) if head.isdigit() else 0


class TeamMarker:
    """One run's view of a team's change marker (a listing's, shared by its backups)."""

    def __init__(
        self,
        store: ChangeMarking,
        known: KnownVersions,
        team: str,
        every: float,
        *,
        full_check: bool,
        clock: Callable[[], float],
    ) -> None:
        self._store, self._known, self._team = store, known, team
        self._every, self._full_check, self._clock = every, full_check, clock
        self._read: tuple[str, float] | None = None  # the tag read before listing, and when
        self._recorded: Marker | None = None  # this machine's record, if the marker is at it
        self._doubt = False  # a key of this run was in doubt: record nothing
        self._made = False  # this run made the first marker

    def covered(self) -> frozenset[str]:
        """The folders whose records stand for a listing: those this machine listed last, if
        the marker is still at the tag it recorded then, within ``full_check_every``; none
        otherwise (the marker is read once per run)."""
        if self._read is None:
            now = self._clock()
            tag = self._store.marker_tag(self._team)
            self._read = (tag, now)
            marker = self._known.marker(self._team)
            if (
                not self._full_check
                and marker is not None
                and tag
                and not marker.pending
                and 0 <= now - marker.checked < self._every
                and hmac.compare_digest(marker.tag, tag)
            ):
                self._recorded = marker
        return frozenset(self._recorded.folders) if self._recorded is not None else frozenset()

    def finish(self, *, ok: bool, wrote: bool, dry_run: bool, listed: frozenset[str]) -> None:
        """After a backup: announce its writes (and any a failed run left unannounced), then
        record the tag read before the listing of ``listed`` (every folder listed so far),
        or nothing more this run if a key was in doubt."""
        known, team = self._known, self._team
        recorded = known.marker(team)
        new = ""
        if not dry_run and (wrote or (recorded is not None and recorded.pending)):
            new = announce(self._store, known, team, self._clock())
        elif not dry_run and self._read is not None and not self._read[0] and not self._made:
            self._made = True  # once per run, whatever the number of backups sharing it
            with contextlib.suppress(KeyvaultError):  # no marker yet: make one
                new = self._store.mark_change(team)
        if self._read is None:
            return
        tag, at = self._read
        if not ok or self._doubt:
            self._doubt = True
            known.note_marker(team, "", at)  # a key in doubt: list again next time
            return
        # our own announcement right on top of the tag read: nothing else moved in between
        ours = bool(new) and _version(new) == _version(tag) + 1
        if self._recorded is None:  # listed after ``tag`` was read
            known.note_marker(team, new if ours else tag, at, listed)
        elif ours or (not new and not listed <= set(self._recorded.folders)):
            before = self._recorded  # still stands, with what this run listed besides
            known.note_marker(team, new or tag, before.checked, listed | set(before.folders))
