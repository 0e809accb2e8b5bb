"""A small, strict DER reader and writer for the few structures Notary keys use.

Key files are untrusted input: every length is checked against the bytes that
are really there, only definite minimal lengths and low tag numbers are
accepted, and every malformation is a ``DerError`` (an ``InvalidInputError``),
never an ``IndexError`` or a ``ValueError`` from deep inside a parser. The
writer is just enough to build PKCS#8 structures that pyca/cryptography cannot
emit in Notary's flavour.
"""

from __future__ import annotations

from keyvault.errors import InvalidInputError

INTEGER = 0x02
BIT_STRING = 0x03
OCTET_STRING = 0x04
NULL = 0x05
OID = 0x06
SEQUENCE = 0x30
CONTEXT_0 = 0xA0  # [0] constructed (explicit or IMPLICIT SET)
CONTEXT_1 = 0xA1  # [1] constructed (explicit)
CONTEXT_1_PRIMITIVE = 0x81  # [1] IMPLICIT BIT STRING (PKCS#8 v2 publicKey)

_MAX_INT_BYTES = 1040  # an RSA-8192 modulus plus its sign byte; bounds int() work


class DerError(InvalidInputError):
    """Malformed DER: raised with a short description, never with the bytes."""


class DerReader:
    """Reads consecutive TLVs from one buffer; nested structures get their own reader."""

    def __init__(self, data: bytes, what: str = "DER data") -> None:
        self._data = bytes(data)
        self._pos = 0
        self._what = what

    def at_end(self) -> bool:
        return self._pos >= len(self._data)

    def peek_tag(self) -> int | None:
        return None if self.at_end() else self._data[self._pos]

    def read_any(self) -> tuple[int, bytes]:
        """The next element's tag and contents."""
        data, pos = self._data, self._pos
        if pos + 2 > len(data):
            raise DerError(f"{self._what}: truncated element header")
        tag = data[pos]
        if tag & 0x1F == 0x1F:
            raise DerError(f"{self._what}: multi-byte tags are not used here")
        first = data[pos + 1]
        pos += 2
        if first < 0x80:
            length = first
        else:
            count = first & 0x7F
            if count == 0:
                raise DerError(f"{self._what}: indefinite length is not DER")
            if count > 4 or pos + count > len(data):
                raise DerError(f"{self._what}: bad length field")
            length = int.from_bytes(data[pos : pos + count], "big")
            if data[pos] == 0 or length < 0x80:
                raise DerError(f"{self._what}: length is not minimally encoded")
            pos += count
        if length > len(data) - pos:
            raise DerError(f"{self._what}: element longer than the data")
        self._pos = pos + length
        return tag, data[pos : pos + length]

    def read(self, tag: int) -> bytes:
        got, value = self.read_any()
        if got != tag:
            raise DerError(f"{self._what}: expected tag 0x{tag:02x}, found 0x{got:02x}")
        return value

    def read_optional(self, tag: int) -> bytes | None:
        return self.read(tag) if self.peek_tag() == tag else None

    def sequence(self) -> DerReader:
        return DerReader(self.read(SEQUENCE), self._what)

    def integer(self) -> int:
        value = self.read(INTEGER)
        if not value or len(value) > _MAX_INT_BYTES:
            raise DerError(f"{self._what}: bad INTEGER")
        if len(value) > 1 and (
            (value[0] == 0 and value[1] < 0x80) or (value[0] == 0xFF and value[1] >= 0x80)
        ):
            raise DerError(f"{self._what}: INTEGER is not minimally encoded")
        return int.from_bytes(value, "big", signed=True)

    def small_uint(self, maximum: int) -> int:
        value = self.integer()
        if not 0 <= value <= maximum:
            raise DerError(f"{self._what}: number out of range")
        return value

    def octet_string(self) -> bytes:
        return self.read(OCTET_STRING)

    def oid(self) -> str:
        return decode_oid(self.read(OID), self._what)

    def null(self) -> None:
        if self.read(NULL):
            raise DerError(f"{self._what}: NULL with contents")

    def finish(self) -> None:
        """Refuse trailing bytes: a strict parser consumes exactly what it was given."""
        if not self.at_end():
            raise DerError(f"{self._what}: unexpected trailing data")


def parse_single(data: bytes, tag: int, what: str) -> bytes:
    """The contents of the one element ``data`` must consist of."""
    reader = DerReader(data, what)
    value = reader.read(tag)
    reader.finish()
    return value


def decode_oid(value: bytes, what: str = "DER data") -> str:
    if not value or value[-1] & 0x80:
        raise DerError(f"{what}: bad OBJECT IDENTIFIER")
    arcs: list[int] = []
    current = 0
    starting = True
    for byte in value:
        if starting and byte == 0x80:
            raise DerError(f"{what}: OBJECT IDENTIFIER is not minimally encoded")
        current = (current << 7) | (byte & 0x7F)
        starting = not byte & 0x80
        if starting:
            arcs.append(current)
            current = 0
        if len(arcs) > 64:
            raise DerError(f"{what}: OBJECT IDENTIFIER too long")
    first = arcs[0]
    head = [0, first] if first < 40 else [1, first - 40] if first < 80 else [2, first - 80]
    return ".".join(str(a) for a in head + arcs[1:])


# --- writer -----------------------------------------------------------------


def encode(tag: int, contents: bytes) -> bytes:
    n = len(contents)
    if n < 0x80:
        return bytes([tag, n]) + contents
    size = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(size)]) + size + contents


def sequence(*items: bytes) -> bytes:
    return encode(SEQUENCE, b"".join(items))


def integer(value: int) -> bytes:
    size = value.bit_length() // 8 + 1  # room for the sign bit
    return encode(INTEGER, value.to_bytes(size, "big", signed=True))


def octet_string(value: bytes) -> bytes:
    return encode(OCTET_STRING, value)


def null() -> bytes:
    return encode(NULL, b"")


def oid(dotted: str) -> bytes:
    arcs = [int(a) for a in dotted.split(".")]
    body = bytearray()
    for arc in [arcs[0] * 40 + arcs[1], *arcs[2:]]:
        chunk = [arc & 0x7F]
        arc >>= 7
        while arc:
            chunk.append(0x80 | (arc & 0x7F))
            arc >>= 7
        body.extend(reversed(chunk))
    return encode(OID, bytes(body))
