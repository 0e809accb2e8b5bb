"""HTTPS GETs for the trust server and its token realm: TLS verified against one CA
bundle, no redirects (an ``Authorization`` header must never follow one to
another host), and failures that say how to fix TLS."""

from __future__ import annotations

import ssl
import urllib.error
import urllib.parse
import urllib.request
from email.message import Message
from pathlib import Path

from keyvault.errors import BackendUnavailableError, InvalidInputError
from keyvault.redact import shown_uri

LOOPBACK = ("127.0.0.1", "localhost", "::1")
TLS_HINT = (
    "if the server's certificate comes from a private CA, pass --tls-ca FILE "
    "(or set remote_server.root_ca in ~/.notary/config.json)"
)


def checked_url(url: str, what: str) -> str:
    """``url`` if it is https:// (http:// only on loopback), else InvalidInputError."""
    parts = urllib.parse.urlsplit(url)
    loopback = parts.hostname in LOOPBACK
    if (
        parts.scheme not in ("https", "http")
        or (parts.scheme == "http" and not loopback)
        or not parts.hostname
    ):
        raise InvalidInputError(
            f"{what} URL {shown_uri(url)} must be https:// (http:// only on loopback)"
        )
    if "@" in parts.netloc:
        raise InvalidInputError(
            f"{what} URL {shown_uri(url)} must not carry credentials: "
            "keyvault takes them from 'docker login' or NOTARY_AUTH"
        )
    return url


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: object,
        code: int,
        msg: str,
        headers: Message,
        newurl: str,
    ) -> None:
        return None  # the 3xx reaches the caller as an HTTPError


class Transport:
    """One TLS context for every request of a run."""

    def __init__(self, ca_file: Path | None, timeout: float = 10.0) -> None:
        if ca_file is not None and not ca_file.is_file():
            raise InvalidInputError(f"the CA file {ca_file} does not exist")
        self.ca_file = ca_file
        self.timeout = timeout
        try:
            context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
        except (ssl.SSLError, OSError, ValueError):
            raise InvalidInputError(
                f"the CA file {ca_file} is not a PEM certificate bundle"
            ) from None
        self._opener = urllib.request.build_opener(
            urllib.request.HTTPSHandler(context=context), _NoRedirect()
        )

    def get(
        self, url: str, headers: dict[str, str], *, limit: int, form: bytes | None = None
    ) -> tuple[int, Message, bytes]:
        """(status, headers, body up to ``limit`` + 1 bytes), a POST when ``form`` is given;
        BackendUnavailableError if the server cannot be reached or its certificate is not
        trusted."""
        if form is not None:
            headers = {**headers, "Content-Type": "application/x-www-form-urlencoded"}
        request = urllib.request.Request(  # noqa: S310 - scheme checked
            url, data=form, headers=headers
        )
        try:
            with self._opener.open(request, timeout=self.timeout) as response:
                return int(response.status), response.headers, response.read(limit + 1)
        except urllib.error.HTTPError as exc:
            with exc:
                return int(exc.code), exc.headers, exc.read(limit + 1)
        except (urllib.error.URLError, OSError) as exc:
            raise _unreachable(url, exc) from None


def _unreachable(url: str, exc: BaseException) -> BackendUnavailableError:
    reason = getattr(exc, "reason", exc)
    parts = urllib.parse.urlsplit(url)
    where = f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"
    if isinstance(reason, ssl.SSLError):
        detail = str(getattr(reason, "verify_message", "") or reason)[:120]
        return BackendUnavailableError(f"TLS with {where} failed: {detail}", hint=TLS_HINT)
    return BackendUnavailableError(
        f"cannot reach {where}: {str(reason)[:120]}", hint=f"check the server URL; {TLS_HINT}"
    )
