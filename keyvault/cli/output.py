"""Rendering: JSON on stdout for machines, tables and progress for people.

Rich is imported only when something is drawn, and json only when JSON is
written, so ``--help`` and plain output stay fast. Progress goes to stderr and
only to a terminal. Everything written here passes through
:func:`keyvault.redact.redact`, so a URI's userinfo or a pkcs11: ``pin-value``
never reaches the screen or a JSON consumer, whichever command built the text.
"""

from __future__ import annotations

import itertools
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from keyvault.redact import redact


def emit_json(doc: Any) -> None:
    import json

    sys.stdout.write(redact(json.dumps(doc, indent=2, sort_keys=True, default=str)) + "\n")


def emit_json_stream(doc: dict[str, Any], field: str, items: Iterable[Any]) -> None:
    """``emit_json`` of ``doc`` with ``doc[field]`` the list of ``items``, the same text,
    written (and flushed) item by item as they come, so the list is never held whole.

    A failure part-way leaves the document cut off, never closed as if complete: the
    exit code and the error say what happened.
    """
    import json

    marker = f"<{field} streamed here>"
    text = json.dumps({**doc, field: marker}, indent=2, sort_keys=True, default=str)
    head, tail = text.split(json.dumps(marker), 1)
    out = sys.stdout
    out.write(redact(head) + "[")
    count = 0
    for item in items:
        body = json.dumps(item, indent=2, sort_keys=True, default=str).replace("\n", "\n    ")
        out.write(("," if count else "") + "\n    " + redact(body))
        out.flush()
        count += 1
    out.write(("\n  ]" if count else "]") + redact(tail) + "\n")


#: Rows ``stream_table`` takes before it prints: their widths set the columns'.
STREAM_FIRST = 1000


def stream_table(
    title: str, columns: Sequence[str], rows: Iterable[Sequence[str]], *, empty: str
) -> None:
    """``table`` for rows that arrive over time, never all held: up to STREAM_FIRST rows
    it is exactly ``table``; beyond, those rows set the widths and each later row is
    printed as it comes, plain (a longer value shifts its line, never wraps it).
    ``empty``: said instead of a table without rows."""
    source = iter(rows)
    first = [list(row) for _, row in zip(range(STREAM_FIRST), source, strict=False)]
    if len(first) < STREAM_FIRST:  # the listing ended: as it always was
        if first:
            table(title, columns, first)
        else:
            say(empty)
        return
    first = [[redact(v) for v in row] for row in first]
    widths = [max([len(c)] + [len(r[i]) for r in first]) for i, c in enumerate(columns)]

    def line(row: Sequence[str]) -> str:
        return "  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() + "\n"

    out = sys.stdout
    out.write(redact(title) + "\n" + "".join(line(r) for r in [list(columns), *first]))
    out.flush()
    for row in source:
        out.write(line([redact(v) for v in row]))
        out.flush()


def spooled_table(
    title: str, columns: Sequence[str], rows: Callable[[], Iterable[Sequence[str]]], count: int
) -> None:
    """``table`` for ``count`` rows that ``rows()`` reads again from a spool (keyvault.spool),
    never all held: in a pipe, the same bytes as ``table``, from one pass for the widths and
    one to print; in a terminal, ``table`` up to STREAM_FIRST rows, plain columns beyond."""
    if count <= STREAM_FIRST and sys.stdout.isatty():
        table(title, columns, list(rows()))
        return
    widths = [len(c) for c in columns]
    for row in rows():
        widths = [max(w, len(redact(v))) for w, v in zip(widths, row, strict=True)]
    out = sys.stdout
    if title:
        out.write(redact(title) + "\n")
    for row in itertools.chain([columns], rows()):
        out.write("  ".join(redact(v).ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())
        out.write("\n")


def table(title: str, columns: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """A rich table in a terminal; plain aligned columns (never wrapped) in a pipe."""
    title, rows = redact(title), [[redact(v) for v in row] for row in rows]
    if not sys.stdout.isatty():
        widths = [max([len(c)] + [len(r[i]) for r in rows]) for i, c in enumerate(columns)]
        lines = [title] if title else []
        for row in [list(columns), *rows]:
            lines.append("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())
        sys.stdout.write("\n".join(lines) + "\n")
        return
    from rich.console import Console
    from rich.table import Table

    t = Table(title=title, title_justify="left", show_lines=False)
    for column in columns:
        fold = column in ("DETAIL", "GUN", "PATH", "WRAPPERS")
        t.add_column(column, overflow="fold", no_wrap=not fold)
    for row in rows:
        t.add_row(*row)
    Console(soft_wrap=False).print(t)


def counted(actions: Iterable[str]) -> str:
    """How many of each action, e.g. ``2 created, 1 unchanged`` (sorted by action)."""
    from collections import Counter

    return ", ".join(f"{n} {a}" for a, n in sorted(Counter(actions).items()))


def tally(total: int, actions: Iterable[str]) -> str:
    """The one line a run ends with: ``3 keys: 2 created, 1 unchanged``."""
    parts = counted(actions)
    return f"{total} key{'s' if total != 1 else ''}" + (f": {parts}" if parts else "")


def say(message: str) -> None:
    sys.stdout.write(redact(message) + "\n")


def warn(message: str) -> None:
    sys.stderr.write(f"warning: {redact(message)}\n")


class Progress:
    """A progress bar on stderr when it is a terminal; silent otherwise."""

    def __init__(self, bar: Any, task: Any) -> None:
        self._bar, self._task = bar, task

    def advance(self, label: str = "") -> None:
        if self._bar is not None:
            self._bar.update(self._task, advance=1, description=label[:40])

    def set_total(self, total: int) -> None:
        """For work whose size is known only once it has started (what a store holds)."""
        if self._bar is not None:
            self._bar.update(self._task, total=total)


@contextmanager
def progress(total: int | None, description: str, enabled: bool = True) -> Iterator[Progress]:
    """A transient bar on stderr; ``total=None`` until ``set_total`` is called."""
    if not enabled or (total is not None and total < 2) or not sys.stderr.isatty():
        yield Progress(None, None)
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn
    from rich.progress import Progress as RichProgress

    with RichProgress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        console=Console(stderr=True),
        transient=True,
    ) as bar:
        yield Progress(bar, bar.add_task(description, total=total))
