"""Secrets that ride inside URIs, masked wherever a URI is shown, logged or recorded.

A store URI or ``VAULT_ADDR`` may carry ``user:secret@`` and a ``pkcs11:``
URI a ``pin-value``. keyvault refuses the first and warns about the second,
but the refusal, the warning, ``doctor``, JSON output, drill reports and the
audit log (which nobody can scrub later) must not repeat them. :func:`redact`
is the one rule for all of them: it works on a bare URI and on any text that
contains URIs, so an error message is safe whichever way it was built.
"""

from __future__ import annotations

import re

MASK = "***"
#: ``scheme://userinfo@``: everything between ``//`` and the last ``@`` of the authority.
_USERINFO = re.compile(r"\b([A-Za-z][A-Za-z0-9+.-]*://)[^/?#\s'\"]*@")
#: RFC 7512 ``pin-value=`` up to the next attribute separator (``&`` or ``;``), a space or a
#: quote; a ``:`` ends it only before a space (prose such as "URI: detail"), since a PIN
#: may hold ``:``, ``?`` or ``#``: masking too much is better than showing the rest.
_PIN_VALUE = re.compile(r"(pin-value=)(?:[^&;:\s'\"]|:(?=[^\s'\"]))*", re.IGNORECASE)


def redact(text: str) -> str:
    """``text`` with every URI's userinfo and every ``pin-value`` replaced by ``***``."""
    if "@" in text:
        text = _USERINFO.sub(rf"\g<1>{MASK}@", text)
    if "pin-value" in text.lower():
        text = _PIN_VALUE.sub(rf"\g<1>{MASK}", text)
    return text


def shown_uri(value: object, limit: int = 80) -> str:
    """A URI (or any value) for a message: redacted first, then quoted and cut to ``limit``.

    Redacting before cutting matters: a cut can fall between a password and
    its ``@``, and a masked text can no longer be recognised as userinfo.
    """
    text = redact(str(value))
    return repr(text if len(text) <= limit else text[: limit - 3] + "...")
