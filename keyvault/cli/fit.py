"""Fit a plain table into the terminal's width (``COLUMNS``) without losing what matters.

A table that is wider than the terminal wraps into an unreadable staircase.
Instead, cells are shortened in a fixed order: first the key ID (to a prefix
that ``--key-id`` still accepts), then the free-text columns, each keeping its
start and end around an ellipsis, so a GUN or a path stays recognisable.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping, Sequence

#: Column separator width of the plain table (cli.output.table).
GAP = 2
ELLIPSIS = "..."
#: A key ID shortened for a narrow terminal: long enough to stay unique, and
#: accepted by --key-id (6 to 64 hex digits).
SHORT_KEY_ID = 12
#: Shrunk cells keep at least this many characters: "(no gun)" is never cut.
MIN_CELL = 8


def terminal_width(env: Mapping[str, str] | None = None) -> int | None:
    """``COLUMNS`` when set to a number, else the terminal's width; None for a pipe."""
    value = (os.environ if env is None else env).get("COLUMNS", "")
    if value.isdigit() and int(value) > 0:
        return int(value)
    if os.isatty(1):
        return shutil.get_terminal_size().columns
    return None


def shorten(text: str, width: int) -> str:
    """``text`` in at most ``width`` characters: its start and end around an ellipsis."""
    if len(text) <= width:
        return text
    if width <= len(ELLIPSIS):
        return text[:width]
    room = width - len(ELLIPSIS)
    head = (room + 1) // 2
    tail = room - head
    return text[:head] + ELLIPSIS + (text[-tail:] if tail else "")


def fit_rows(
    columns: Sequence[str],
    rows: Sequence[Sequence[str]],
    width: int | None,
    *,
    key_id: str,
    shrink: Sequence[str],
) -> list[list[str]]:
    """The rows with cells shortened so that each plain line fits ``width``.

    ``key_id`` names the column cut to a prefix first; ``shrink`` the columns cut
    next, the widest first down to the next widest (so they end up alike), never
    below their header's width or MIN_CELL. Columns not named keep their cells (roles,
    layouts: short and exact). If even that is too wide, the lines stay as
    short as they can be.
    """
    table = [list(row) for row in rows]
    if width is None or not table:
        return table
    names = list(columns)
    sizes = [max(len(c), *(len(r[i]) for r in table)) for i, c in enumerate(names)]

    def overflow() -> int:
        return sum(sizes) + GAP * (len(names) - 1) - width

    if overflow() <= 0:
        return table
    k = names.index(key_id)
    sizes[k] = min(sizes[k], max(SHORT_KEY_ID, len(key_id)))
    order = [names.index(c) for c in shrink]
    floors = {i: max(len(names[i]), MIN_CELL) for i in order}
    while overflow() > 0:
        i = max(order, key=lambda j: sizes[j] - floors[j])
        if sizes[i] <= floors[i]:
            break
        others = [sizes[j] for j in order if j != i]
        target = max(floors[i], sizes[i] - overflow(), max(others, default=0))
        sizes[i] = target if target < sizes[i] else sizes[i] - 1
    for row in table:
        row[k] = row[k][: sizes[k]]
        for i in order:
            row[i] = shorten(row[i], sizes[i])
    return table
