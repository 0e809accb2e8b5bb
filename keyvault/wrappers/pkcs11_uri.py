"""RFC 7512 ``pkcs11:`` URIs: parsing, validation and the canonical key URI.

Pure standard library: used to check a URI recorded in an envelope without
loading python-pkcs11 or any PKCS#11 module.

Accepted attributes (each at most once, names in lower case)::

    pkcs11:token=<label>;serial=<serial>;slot-id=<n>;object=<label>;id=<%XX bytes>;type=<t>
           ?module-path=<abs path>&pin-source=<file: URI or abs path>&pin-value=<pin>

Anything else is refused (B20): a typo must not silently select another key.
The *key URI* (what a wrapped entry records and what strict unwrapping
matches on) keeps the path attributes only, in the order above, with every
byte outside RFC 3986's unreserved set percent-encoded (``id`` is always
fully encoded): the module's location and the PIN's source belong to one
machine, not to the key, and a ``pin-value`` is never recorded or echoed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import quote, unquote_to_bytes

from keyvault.errors import UsageError

SCHEME = "pkcs11"
PATH_ATTRIBUTES = ("token", "serial", "slot-id", "object", "id", "type")
QUERY_ATTRIBUTES = ("module-path", "pin-source", "pin-value")
OBJECT_TYPES = ("secret-key", "private", "public")
MAX_TOKEN_LABEL = 32  # CK_TOKEN_INFO.label is 32 bytes
MAX_SERIAL = 16
MAX_OBJECT_LABEL = 128
MAX_ID = 64
MAX_PATH = 4096
MAX_PIN = 255

_HINT = (
    "expected pkcs11:token=<label>;object=<key label>[;id=%XX...]"
    "[?module-path=/path/to/module.so&pin-source=/path/to/pin-file] (RFC 7512)"
)
# RFC 7512 pk11-pchar / pk11-qchar: unreserved, pct-encoded and a few sub-delims.
_PATH_CHARS = re.compile(r"(?:[A-Za-z0-9\-._~:\[\]@!$'()*+,=&]|%[0-9A-Fa-f]{2})*")
_NAME = re.compile(r"[a-z][a-z-]{0,19}")
_QUERY_CHARS = re.compile(r"(?:[A-Za-z0-9\-._~:\[\]@!$'()*+,=/?|]|%[0-9A-Fa-f]{2})*")


@dataclass(frozen=True)
class Pkcs11Uri:
    """A parsed ``pkcs11:`` URI. ``pin_value`` is never shown by a repr."""

    token: str | None = None
    serial: str | None = None
    slot_id: int | None = None
    object: str | None = None
    id: bytes | None = None
    type: str | None = None
    module_path: str | None = None
    pin_source: str | None = None
    pin_value: str | None = field(default=None, repr=False)

    @property
    def key_uri(self) -> str:
        """The canonical URI of the key: path attributes only, nothing secret."""
        parts: list[str] = []
        if self.token is not None:
            parts.append(f"token={_quote(self.token)}")
        if self.serial is not None:
            parts.append(f"serial={_quote(self.serial)}")
        if self.slot_id is not None:
            parts.append(f"slot-id={self.slot_id}")
        if self.object is not None:
            parts.append(f"object={_quote(self.object)}")
        if self.id is not None:
            parts.append("id=" + "".join(f"%{b:02X}" for b in self.id))
        if self.type is not None:
            parts.append(f"type={self.type}")
        return f"{SCHEME}:" + ";".join(parts)

    @property
    def names_token(self) -> bool:
        return self.token is not None or self.serial is not None or self.slot_id is not None

    @property
    def names_key(self) -> bool:
        return self.object is not None or self.id is not None

    def token_description(self) -> str:
        """Which token, in words, for messages."""
        said = []
        if self.token is not None:
            said.append(f"label {self.token!r}")
        if self.serial is not None:
            said.append(f"serial {self.serial!r}")
        if self.slot_id is not None:
            said.append(f"slot {self.slot_id}")
        return "token with " + " and ".join(said) if said else "any token"


def parse_pkcs11_uri(uri: str) -> Pkcs11Uri:
    """Parse and validate; UsageError naming the attribute at fault (never the PIN)."""
    if not isinstance(uri, str) or len(uri) > 2048 or not uri.isprintable():
        raise UsageError(
            "invalid pkcs11: URI: too long or containing control characters", hint=_HINT
        )
    scheme, sep, rest = uri.partition(":")
    if scheme.lower() != SCHEME or not sep:
        raise UsageError("not a pkcs11: URI", hint=_HINT)
    path, _, query = rest.partition("?")
    values: dict[str, bytes] = {}
    _split(path, ";", PATH_ATTRIBUTES, _PATH_CHARS, values, "path")
    _split(query, "&", QUERY_ATTRIBUTES, _QUERY_CHARS, values, "query")
    return Pkcs11Uri(
        token=_text(values, "token", MAX_TOKEN_LABEL),
        serial=_text(values, "serial", MAX_SERIAL),
        slot_id=_slot_id(values),
        object=_text(values, "object", MAX_OBJECT_LABEL),
        id=_id(values),
        type=_type(values),
        module_path=_abs_path(values, "module-path"),
        pin_source=_pin_source(values),
        pin_value=_pin_value(values),
    )


def canonical_key_uri(uri: str) -> str:
    """The canonical key URI for any accepted spelling of ``uri``."""
    return parse_pkcs11_uri(uri).key_uri


def check_key_uri(uri: str) -> None:
    """UsageError unless ``uri`` is a canonical key URI naming one token and one key."""
    parsed = parse_pkcs11_uri(uri)
    if parsed.key_uri != uri:
        raise UsageError(
            "pkcs11: key URI is not in its canonical form (as recorded in "
            f"envelopes): {parsed.key_uri}",
            hint="module-path, pin-source and pin-value are not part of a key's "
            "URI; attributes go in a fixed order",
        )
    require_key(parsed)


def require_key(parsed: Pkcs11Uri) -> None:
    if not parsed.names_token:
        raise UsageError(
            "a pkcs11: wrapper URI must name its token (token=, serial= or slot-id=)", hint=_HINT
        )
    if not parsed.names_key:
        raise UsageError("a pkcs11: wrapper URI must name its key (object= or id=)", hint=_HINT)
    if parsed.type == "public":
        raise UsageError(
            "type=public cannot unwrap; name the key pair (type=private) or omit type", hint=_HINT
        )


def _split(
    part: str,
    sep: str,
    allowed: tuple[str, ...],
    chars: re.Pattern[str],
    values: dict[str, bytes],
    where: str,
) -> None:
    if not part:
        return
    for item in part.split(sep):
        name, eq, raw = item.partition("=")
        if not eq or name not in allowed:
            # A query attribute's name is never echoed: a misplaced PIN may sit there.
            shown = f" {name!r}" if where == "path" and _NAME.fullmatch(name) else ""
            raise UsageError(
                f"pkcs11: URI has an unsupported {where} attribute{shown}; "
                f"known: {', '.join(allowed)}",
                hint=_HINT,
            )
        if name in values:
            raise UsageError(f"pkcs11: URI gives attribute {name!r} more than once", hint=_HINT)
        if not chars.fullmatch(raw):
            raise UsageError(
                f"pkcs11: URI attribute {name!r} has characters that must be "
                "percent-encoded, or a bad %XX escape",
                hint=_HINT,
            )
        values[name] = unquote_to_bytes(raw)


def _text(values: dict[str, bytes], name: str, limit: int) -> str | None:
    raw = values.get(name)
    if raw is None:
        return None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise UsageError(f"pkcs11: URI attribute {name!r} is not UTF-8", hint=_HINT) from None
    if not text or len(raw) > limit or not text.isprintable():
        raise UsageError(
            f"pkcs11: URI attribute {name!r} must be 1 to {limit} bytes of printable text",
            hint=_HINT,
        )
    return text


def _slot_id(values: dict[str, bytes]) -> int | None:
    raw = values.get("slot-id")
    if raw is None:
        return None
    if not raw.isdigit() or len(raw) > 20 or int(raw) >= 2**64:
        raise UsageError("pkcs11: URI attribute 'slot-id' must be a decimal number", hint=_HINT)
    return int(raw)


def _id(values: dict[str, bytes]) -> bytes | None:
    raw = values.get("id")
    if raw is None:
        return None
    if not 0 < len(raw) <= MAX_ID:
        raise UsageError(f"pkcs11: URI attribute 'id' must be 1 to {MAX_ID} bytes", hint=_HINT)
    return raw


def _type(values: dict[str, bytes]) -> str | None:
    raw = values.get("type")
    if raw is None:
        return None
    text = raw.decode("ascii", "replace")
    if text not in OBJECT_TYPES:
        raise UsageError(
            f"pkcs11: URI attribute 'type' must be one of {', '.join(OBJECT_TYPES)}", hint=_HINT
        )
    return text


def _abs_path(values: dict[str, bytes], name: str) -> str | None:
    path = _text(values, name, MAX_PATH)
    if path is not None and not path.startswith("/"):
        raise UsageError(f"pkcs11: URI attribute {name!r} must be an absolute path", hint=_HINT)
    return path


def _pin_source(values: dict[str, bytes]) -> str | None:
    source = _text(values, "pin-source", MAX_PATH)
    if source is None:
        return None
    if source.startswith("file:"):
        source = source[len("file:") :]
        if source.startswith("//"):
            host, slash, rest = source[2:].partition("/")
            if host not in ("", "localhost") or not slash:
                raise UsageError(
                    "pkcs11: URI attribute 'pin-source' must be a local file", hint=_HINT
                )
            source = "/" + rest
    if not source.startswith("/"):
        raise UsageError(
            "pkcs11: URI attribute 'pin-source' must be an absolute path or a file: URI", hint=_HINT
        )
    return source


def _pin_value(values: dict[str, bytes]) -> str | None:
    raw = values.get("pin-value")
    if raw is None:
        return None
    try:
        pin = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise UsageError("pkcs11: URI attribute 'pin-value' is not UTF-8", hint=_HINT) from None
    if not pin or len(raw) > MAX_PIN:
        raise UsageError(
            f"pkcs11: URI attribute 'pin-value' must be 1 to {MAX_PIN} bytes", hint=_HINT
        )
    return pin


def _quote(text: str) -> str:
    return quote(text, safe="")
