"""PEM as Notary reads and writes it (Go's ``encoding/pem``), not as OpenSSL does.

Notary 0.7 looks only at the *first* PEM block of a key file
(``pem.Decode``). Its ``role:``/``gun:`` headers are ``Key: Value`` lines
straight after the BEGIN line, up to the first line without a colon; key and
value are trimmed and a repeated key silently replaces the earlier one.
OpenSSL and pyca/cryptography treat those lines as RFC 1421 headers and refuse
the file, so keyvault decodes PEM itself, following Go's rules: a block whose
END line or base64 is broken is skipped and the search goes on. Writing uses
Go's ``pem.Encode`` layout (``Proc-Type`` first, other headers sorted, a blank
line, 64-column base64, a trailing newline), which is what Notary writes.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass, field

_START = b"-----BEGIN "
_END = b"\n-----END "
_DASHES = b"-----"
_LINE = 64
_B64 = re.compile(rb"[A-Za-z0-9+/=\r\n]*")


@dataclass(frozen=True)
class PemBlock:
    """One decoded block; ``duplicates`` names headers given twice with different values."""

    type: str
    headers: dict[str, str]
    data: bytes = field(repr=False)
    duplicates: frozenset[str] = frozenset()


def _get_line(data: bytes) -> tuple[bytes, bytes]:
    """Go's getLine: one line without trailing spaces/tabs/CR, and the rest."""
    i = data.find(b"\n")
    if i < 0:
        return data.rstrip(b" \t"), b""
    line = data[:i]
    if line.endswith(b"\r"):
        line = line[:-1]
    return line.rstrip(b" \t"), data[i + 1 :]


def _go_trim(value: bytes) -> str:
    return value.decode("utf-8", "replace").strip()


def _b64decode(body: bytes) -> bytes | None:
    compact = body.replace(b" ", b"").replace(b"\t", b"")
    if not _B64.fullmatch(compact):
        return None
    compact = compact.replace(b"\r", b"").replace(b"\n", b"")
    try:
        return base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError):
        return None


def _next_start(rest: bytes) -> bytes | None:
    if rest.startswith(_START):
        return rest[len(_START) :]
    i = rest.find(b"\n" + _START)
    return None if i < 0 else rest[i + 1 + len(_START) :]


def decode_first(data: bytes) -> PemBlock | None:
    """The first well-formed PEM block in ``data``, or None: what Notary reads."""
    return decode(data)[0]


def decode(data: bytes) -> tuple[PemBlock | None, bytes]:
    """Go's ``pem.Decode``: the next well-formed block and the bytes after it."""
    rest = data
    while True:
        after = _next_start(rest)
        if after is None:
            return None, data
        type_line, rest = _get_line(after)
        if not type_line.endswith(_DASHES):
            continue
        block_type = type_line[: -len(_DASHES)]
        headers: dict[str, str] = {}
        duplicates: set[str] = set()
        while True:
            if not rest:
                return None, data
            line, following = _get_line(rest)
            key, colon, value = line.partition(b":")
            if not colon:
                break
            name, text = _go_trim(key), _go_trim(value)
            if name in headers and headers[name] != text:
                duplicates.add(name)
            headers[name] = text
            rest = following
        if not headers and rest.startswith(_END[1:]):
            end_index, trailer_index = 0, len(_END) - 1
        else:
            end_index = rest.find(_END)
            trailer_index = end_index + len(_END)
        if end_index < 0:
            continue
        trailer = rest[trailer_index:]
        want = block_type + _DASHES
        if not trailer.startswith(want) or _get_line(trailer[len(want) :])[0]:
            continue
        decoded = _b64decode(rest[:end_index])
        if decoded is None:
            continue
        block = PemBlock(
            block_type.decode("utf-8", "replace"), headers, decoded, frozenset(duplicates)
        )
        return block, _get_line(rest[end_index + len(_END) - 1 :])[1]


def encode(block_type: str, data: bytes, headers: dict[str, str] | None = None) -> bytes:
    """Go's ``pem.EncodeToMemory`` layout, byte for byte."""
    out = [f"-----BEGIN {block_type}-----\n"]
    if headers:
        names = sorted(k for k in headers if k != "Proc-Type")
        if "Proc-Type" in headers:
            names.insert(0, "Proc-Type")
        out.extend(f"{k}: {headers[k]}\n" for k in names)
        out.append("\n")
    text = base64.b64encode(data).decode("ascii")
    out.extend(text[i : i + _LINE] + "\n" for i in range(0, len(text), _LINE))
    out.append(f"-----END {block_type}-----\n")
    return "".join(out).encode("utf-8")
