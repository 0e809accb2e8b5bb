"""Parse JSON and TOML that keyvault did not write itself, with size and depth bounded first.

Python's parsers recurse once per nesting level: ``[[[[…`` a few thousand deep
ends in RecursionError, which the CLI can only report as an internal error
(exit 1), and any code walking the result would recurse as deep (T10). Every
JSON or TOML document from outside (a store, a server, a token, a local file)
goes through :func:`json_loads` or :func:`toml_loads`: the size, then the
nesting depth of the raw text (strings and comments skipped) are checked
before the parser runs, and a RecursionError that slips through anyway is
turned into the same refusal. Both raise ``ValueError`` (for TOML
``tomllib.TOMLDecodeError``), which the caller already maps to its own error
and exit code: 2 for a local file, 5 for an envelope, 6 for a server's answer.

``json`` and ``tomllib`` are imported on first use (``keyvault --help`` loads
neither).
"""

from __future__ import annotations

import itertools
import re
from typing import Any

#: Deeper than anything keyvault reads (TUF metadata and envelopes nest about 6 deep).
MAX_DEPTH = 32
#: Every caller reads less than this; a default bound for the parser's own cost.
MAX_SIZE = 64 * 1024 * 1024

# A string skipped whole, possessively: an unterminated one runs to the end, never rescanned.
# Runs of plain characters are taken at once (a character at a time cost 5x as much).
_JSON_STRING = re.compile(rb'"[^"\\]*+(?:\\.[^"\\]*+)*+(?:"|\\?\Z)', re.DOTALL)
_TOML_SKIPPED = re.compile(
    rb'"""(?:[^"\\]|\\.|"(?!""))*+(?:"""|\\?\Z)'  # multi-line basic string
    rb"|'''(?:[^']|'(?!''))*+(?:'''|\Z)"  # multi-line literal string
    rb'|"(?:[^"\\]|\\.)*+(?:"|\\?\Z)'  # basic string
    rb"|'[^']*+(?:'|\Z)"  # literal string
    rb"|#[^\n]*+",  # comment
    re.DOTALL,
)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_SIGNED = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")  # as signed chars: +1, -1
_CHUNK = 64 * 1024


class TooDeep(ValueError):  # noqa: N818 - reads as the refusal it is
    """The document is nested deeper, or is larger, than keyvault reads."""


def json_loads(
    data: bytes | str, *, max_depth: int = MAX_DEPTH, max_size: int = MAX_SIZE, **options: Any
) -> Any:
    """``json.loads(data, **options)``, refusing (TooDeep) a document too deep or too large."""
    import json

    raw = _sized(data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data, max_size)
    # Nesting needs an opening bracket per level: with few of them, none to look for.
    if raw.count(b"[") + raw.count(b"{") > max_depth:
        _check(_JSON_STRING.sub(b"", raw), max_depth)
    try:
        return json.loads(data, **options)
    except RecursionError:
        raise TooDeep(f"nested more than {max_depth} levels deep") from None


def toml_loads(
    text: str, *, max_depth: int = MAX_DEPTH, max_size: int = MAX_SIZE
) -> dict[str, Any]:
    """``tomllib.loads(text)``; too deep or too large is a ``tomllib.TOMLDecodeError``."""
    import tomllib

    try:
        raw = _sized(text.encode("utf-8", "surrogatepass"), max_size)
        _check(_TOML_SKIPPED.sub(b"", raw), max_depth)
        try:
            return tomllib.loads(text)
        except RecursionError:
            raise TooDeep(f"nested more than {max_depth} levels deep") from None
    except TooDeep as exc:
        raise tomllib.TOMLDecodeError(str(exc)) from None


def _sized(raw: bytes, max_size: int) -> bytes:
    if len(raw) > max_size:
        raise TooDeep(f"larger than {max_size} bytes")
    return raw


def _check(skeleton: bytes, max_depth: int) -> None:
    """Refuse ``skeleton`` (strings removed) if its brackets nest deeper than ``max_depth``.

    A running sum of +1/-1 per bracket, a chunk at a time: ``[[[[…`` stops at the
    first chunk, and a flat 4 MiB of brackets takes well under a second.
    """
    steps = memoryview(skeleton.translate(_SIGNED, _NOT_BRACKETS)).cast("b")
    level = 0
    for start in range(0, len(steps), _CHUNK):
        levels = list(itertools.accumulate(steps[start : start + _CHUNK], initial=level))
        if max(levels) > max_depth:
            raise TooDeep(f"nested more than {max_depth} levels deep")
        level = levels[-1]
