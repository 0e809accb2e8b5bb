"""The GUNs' trust pins in the store, as a source of published metadata.

``coverage --pinned`` and ``drill --pinned`` check the keys against the
root.json each GUN's signing machine pinned and keyvault backed up, not
against what a trust server answers today: offline, and on a machine whose
TUF cache is gone. Each pin is read as ``restore`` reads it (signed by a
trusted sealer, chained, never older than this machine has seen), so a pin a
store writer swapped is refused (exit 5), never believed. A pin holds
root.json only: the root, targets, snapshot and timestamp keys; delegation
keys (listed in targets documents) are not in it.
"""

from __future__ import annotations

from keyvault.errors import IntegrityError, KeyvaultError, NotFoundError, UsageError
from keyvault.names import PinAddress, pin_prefix
from keyvault.ops.session import Session


class PinnedSource:
    """Reads ``root.json`` from the team's pins in the store; nothing else."""

    unreadable: type[KeyvaultError] = IntegrityError  # a sealer signed it, yet it is no root

    def __init__(self, session: Session, team: str) -> None:
        self.session = session
        self.team = team

    def document(self, gun: str, role: str) -> bytes | None:
        if role != "root":
            return None
        address = PinAddress.of(self.team, gun)
        self.session.access().require("restore", [address])  # a member's, as a restore
        try:
            entry = self.session.reader().latest(address)
        except NotFoundError:
            return None
        return self.session.open(entry.envelope)

    def server_key_id(self, gun: str, role: str) -> str | None:
        return None  # a pin cannot say which keys the server holds

    def known_guns(self) -> list[str]:
        guns = []
        for name in self.session.store().list(pin_prefix(self.team)):
            try:
                guns.append(str(PinAddress.from_object_name(name).gun))
            except UsageError:
                continue  # foreign objects in a shared bucket are not ours to judge
        return sorted(guns)

    def save(self) -> None:
        """Keep the high-water marks of the pins read (as a restore does)."""
        self.session.reader().highwater.save()
