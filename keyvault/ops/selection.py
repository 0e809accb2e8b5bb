"""Which keys a command acts on: ``--gun``, ``--role``, ``--key-id``, ``--all``."""

from __future__ import annotations

import re
from dataclasses import dataclass

from keyvault.errors import NotFoundError, UsageError
from keyvault.names import gun_matches, validate_gun_glob, validate_role

_KEY_ID_PREFIX = re.compile(r"[0-9a-f]{6,64}")


@dataclass(frozen=True)
class Selection:
    guns: tuple[str, ...] = ()
    roles: tuple[str, ...] = ()
    key_ids: tuple[str, ...] = ()
    everything: bool = False

    @classmethod
    def build(
        cls,
        *,
        guns: list[str] | None = None,
        roles: list[str] | None = None,
        key_ids: list[str] | None = None,
        everything: bool = False,
    ) -> Selection:
        ids = tuple(k.lower() for k in key_ids or ())
        for key_id in ids:
            if not _KEY_ID_PREFIX.fullmatch(key_id):
                raise UsageError(f"invalid --key-id {key_id[:80]!r}: expected 6 to 64 hex digits")
        return cls(
            guns=tuple(validate_gun_glob(g) for g in guns or ()),
            roles=tuple(validate_role(r) for r in roles or ()),
            key_ids=ids,
            everything=everything,
        )

    @property
    def is_empty(self) -> bool:
        return not (self.guns or self.roles or self.key_ids or self.everything)

    def require_explicit(self, verb: str) -> None:
        if self.is_empty:
            raise UsageError(f"say which keys to {verb}: --gun, --role, --key-id, or --all")

    def matches(self, gun: str | None, role: str | None, key_id: str) -> bool:
        """Whether the selection picks this key.

        ``--gun`` never picks a key without a role: its ``gun:`` header files it under
        the team's ``norole/`` section, not the GUN's prefix (which is all an exact
        ``--gun`` lists), so ``--key-id`` or ``--all`` select it, alike everywhere.
        """
        if self.guns and (role is None or not any(gun_matches(gun, g) for g in self.guns)):
            return False
        if self.roles and role not in self.roles:
            return False
        return not self.key_ids or any(key_id.startswith(k) for k in self.key_ids)

    def check_found(self, found: list[tuple[str | None, str | None, str]], where: str) -> None:
        """Every selector must select something, so a typo is an error (B32, B33)."""
        for pattern in self.guns:
            if not any(gun_matches(g, pattern) for g, _, _ in found):
                raise NotFoundError(f"--gun {pattern!r} matches no key in {where}")
        for key_id in self.key_ids:
            if not any(k.startswith(key_id) for _, _, k in found):
                raise NotFoundError(f"--key-id {key_id} matches no key in {where}")
        if not found and not self.is_empty and not self.everything:
            raise NotFoundError(f"the selection matches no key in {where}")

    def describe(self) -> str:
        parts = [f"gun={g}" for g in self.guns] + [f"role={r}" for r in self.roles]
        parts += [f"key-id={k}" for k in self.key_ids]
        return ", ".join(parts) or "all keys"
