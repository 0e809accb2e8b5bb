"""The one check of a backend endpoint URL (S3, KMS, Vault), before any client is made.

An endpoint carries no credentials, path, query or fragment: a URL with
``user:secret@`` would put a secret where URIs are shown, and a path would
send keyvault's requests somewhere the operator did not mean.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from keyvault.errors import UsageError
from keyvault.redact import shown_uri


def check_endpoint_url(
    url: str, *, what: str, hint: str = "no credentials, path or query in an endpoint URL"
) -> str:
    """``url`` without a trailing slash, if it is http(s)://host[:port]; else UsageError
    naming ``what`` (the setting it came from)."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise UsageError(f"{what} {shown_uri(url)} is not a valid URL") from None
    if (
        parts.scheme not in ("http", "https")
        or not parts.hostname
        or parts.username
        or parts.password
        or parts.query
        or parts.fragment
        or parts.path not in ("", "/")
        or not url.isprintable()
    ):
        raise UsageError(f"{what} {shown_uri(url)} must be http(s)://host[:port]", hint=hint)
    return url.rstrip("/")
