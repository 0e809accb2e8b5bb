"""Per-key failures on the console, a wrapper that fails for many keys said once.

A disabled KMS key, a missing age identity or an unreachable Vault fails every
key a command touches, each with the same error: one line per key buries the
one fact that matters. Failures that name the same wrapper (``error.wrapper``,
set by keyvault.envelope.through) and the same kind of error become one line
naming the wrapper, the kind and how many keys; the rest stay one line per key.
``--json`` output keeps every key's own error.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from keyvault.errors import KeyvaultError
from keyvault.names import KeyAddress, PinAddress, role_shown


def key_failure_lines(failed: Iterable[tuple[KeyAddress, KeyvaultError | None]]) -> list[str]:
    """failure_lines for keys named by address (those without an error are left out)."""
    return failure_lines(
        [
            (
                f"trust pin of {address.gun}"
                if isinstance(address, PinAddress)
                else f"{role_shown(address.role)} key {address.key_id[:12]}",
                error,
            )
            for address, error in failed
            if error is not None
        ]
    )


def failure_lines(failed: Sequence[tuple[str, KeyvaultError]]) -> list[str]:
    """Warning lines for ``(key label, error)`` pairs, grouped by failing wrapper."""
    groups: dict[tuple[str, str], list[KeyvaultError]] = {}
    for _, error in failed:
        if error.wrapper is not None:
            groups.setdefault((error.wrapper, error.kind), []).append(error)
    lines: list[str] = []
    said: set[tuple[str, str]] = set()
    for label, error in failed:
        group = (error.wrapper or "", error.kind)
        errors = groups.get(group, [])
        if len(errors) < 2:
            lines.append(f"{label}: {error}")
        elif group not in said:
            said.add(group)
            lines.append(
                f"wrapper {group[0]} failed for {len(errors)} keys ({error.kind}; "
                f"the first: {error}); --json lists each key's error"
            )
    return lines


def not_attempted_line(count: int, error: KeyvaultError) -> str:
    """The one line for the keys a run did not start once a backend was down (keyvault.breaker)."""
    return f"{count} key{'s' if count != 1 else ''} {error}"
