"""The certificate files the notary client config pins, as keyvault carries them.

``~/.notary/config.json`` names trust anchors by file: ``trust_pinning.ca``
maps a GUN prefix to the CA a repository's root must chain to, and
``remote_server.root_ca`` is the CA of the trust server's TLS certificate. A
new laptop without them pins nothing (or reaches no server), so they travel
with the keys, each as one envelope (:class:`~keyvault.names.CertAddress`).

Paths come from the local config only, never from the store (a store writer
would choose them): notary reads a ``trust_pinning.ca`` path as written (a
relative one from the current directory, which keyvault refuses as ambiguous)
and a relative ``root_ca`` from the config's directory. A file is read
without following a symlink in its last component, size-limited, and must be
nothing but PEM ``CERTIFICATE`` blocks: a private key never travels this way.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from keyvault.errors import InvalidInputError, UsageError
from keyvault.names import (
    CertAddress,
    gun_matches,
    validate_gun_prefix,
    validate_server_host,
)
from keyvault.trust.model import KeyFile, Layout
from keyvault.trust.safefs import DIR_FLAGS, ReadRefused, read_regular
from keyvault.trust.tufmeta import MetadataProblem
from keyvault.trustserver.notaryconfig import NotaryConfig

#: A CA bundle is a few certificates; anything larger is not one.
MAX_CERT_FILE = 256 * 1024
#: notary's default trust server, when the config names none (cmd/notary/tuf.go).
DEFAULT_SERVER = "https://notary-server:4443"
#: Where a certificate goes when the local config names no file for it.
FALLBACK_DIR = "keyvault-certs"

_PEM_BLOCK = re.compile(
    rb"-----BEGIN ([A-Z0-9 ]+)-----\r?\n[A-Za-z0-9+/=\r\n]+"
    rb"-----END \1-----"
)


@dataclass(frozen=True)
class CertSource:
    """One certificate file the config pins: what it pins and where it is."""

    scope: str  # "ca" (a GUN prefix's CA) or "server" (the trust server's TLS CA)
    name: str  # the GUN prefix, or the server's host[:port]
    path: Path  # absolute, as notary reads it
    written: str  # the value the config holds, for messages and the header

    def address(self, team: str) -> CertAddress:
        return (
            CertAddress.server(team, self.name)
            if self.scope == "server"
            else CertAddress.ca(team, self.name)
        )


@dataclass(frozen=True)
class CertFile:
    """A pinned certificate file's bytes, exactly as found."""

    source: CertSource
    data: bytes

    def as_key_file(self) -> KeyFile:
        """The certificate in the shape backup seals: opaque bytes, its path for display."""
        address = self.source.address("default")
        return KeyFile(
            key_id=address.key_id,
            role="root",
            gun=address.gun,
            algorithm=None,
            relpath=str(self.source.path),
            mode=0o600,
            layout=Layout.CURRENT,
            encrypted=False,
            data=self.data,
        )


def server_host(url: str | None) -> str:
    """``host[:port]`` of a trust server URL, lower-case; UsageError if it has none."""
    try:
        parts = urlsplit(url or DEFAULT_SERVER)
        host = (parts.hostname or "").lower()
        port = parts.port
    except ValueError:
        host, port = "", None
    return validate_server_host(f"{host}:{port}" if port else host)


def config_sources(config: NotaryConfig) -> tuple[list[CertSource], list[MetadataProblem]]:
    """Every certificate file the config pins; a bad entry is reported, the others kept."""
    sources: list[CertSource] = []
    problems: list[MetadataProblem] = []
    for prefix, value in config.pinned_ca:
        where = f"trust_pinning.ca[{prefix[:80]!r}]"
        try:
            validate_gun_prefix(prefix)
            sources.append(CertSource("ca", prefix, _ca_path(value), str(value)))
        except UsageError as exc:
            problems.append(MetadataProblem(f"{config.path}: {where}", exc.message))
    if config.root_ca_text is not None:
        try:
            host = server_host(config.url)
            _checked_path(config.root_ca_text, "remote_server.root_ca")
            assert config.root_ca is not None  # resolved from the same text
            sources.append(
                CertSource(
                    "server", host, Path(os.path.normpath(config.root_ca)), str(config.root_ca_text)
                )
            )
        except UsageError as exc:
            problems.append(MetadataProblem(f"{config.path}: remote_server.root_ca", exc.message))
    return sources, problems


def select_sources(sources: list[CertSource], guns: list[str] | None) -> list[CertSource]:
    """The sources that travel with the GUNs ``guns`` (all of them when None): a prefix's
    CA when one of the GUNs starts with it (notary's rule), and the server's CA."""
    if guns is None:
        return sources
    return [
        s
        for s in sources
        if s.scope == "server"
        or any(g.startswith(s.name) or gun_matches(s.name.rstrip("/"), g) for g in guns)
    ]


def read_cert_files(sources: list[CertSource]) -> tuple[list[CertFile], list[MetadataProblem]]:
    found: list[CertFile] = []
    problems: list[MetadataProblem] = []
    for source in sources:
        try:
            found.append(CertFile(source, read_cert_file(source.path)))
        except (UsageError, InvalidInputError) as exc:
            problems.append(MetadataProblem(str(source.path), exc.message))
    return found, problems


def read_cert_file(path: Path) -> bytes:
    """The bytes of a CA file, refused unless they are PEM certificates only."""
    try:
        dir_fd = os.open(path.parent, DIR_FLAGS & ~os.O_NOFOLLOW)
    except OSError as exc:
        raise InvalidInputError(f"{path}: {exc.strerror or type(exc).__name__}") from None
    try:
        data = read_regular(dir_fd, path.name, MAX_CERT_FILE + 1)
    except ReadRefused as exc:
        raise InvalidInputError(f"{path}: {exc.reason}") from None
    finally:
        os.close(dir_fd)
    check_certificates(data, str(path))
    return data


def check_certificates(data: bytes, shown: str) -> None:
    """Nothing but one or more PEM CERTIFICATE blocks (a private key is refused by name)."""
    from cryptography import x509

    if len(data) > MAX_CERT_FILE:
        raise InvalidInputError(f"{shown} is larger than {MAX_CERT_FILE} bytes")
    blocks = list(_PEM_BLOCK.finditer(data))
    if any(b"PRIVATE KEY" in b.group(1) for b in blocks) or b"PRIVATE KEY" in data:
        raise InvalidInputError(
            f"{shown} holds a private key; only CA certificates travel with the trust pins"
        )
    rest = _PEM_BLOCK.sub(b"", data)
    if not blocks or rest.strip() or any(b.group(1) != b"CERTIFICATE" for b in blocks):
        raise InvalidInputError(f"{shown} is not a PEM file of certificates only")
    for block in blocks:
        try:
            x509.load_pem_x509_certificate(block.group(0))
        except ValueError:
            raise InvalidInputError(f"{shown} holds a certificate that does not parse") from None


def restore_target(
    config: NotaryConfig | None, config_file: Path, address: CertAddress
) -> tuple[Path, bool]:
    """Where a restored certificate goes, and whether the config names it there.

    The local config's own entry for the same prefix (or, for the server's CA,
    its ``root_ca`` when its URL names the same server) wins; otherwise a path
    under the config's directory built from the validated address alone.
    """
    if config is not None:
        sources, _ = config_sources(config)
        for source in sources:
            if source.address(address.team) == address:
                return source.path, True
    base = config_file.parent / FALLBACK_DIR
    scope = "server" if address.is_server else "ca"
    return base / scope / address.segment / address.key_id, False


def config_line(address: CertAddress, path: Path) -> str:
    """The config.json member that makes notary use a restored certificate."""
    if address.is_server:
        return f'"remote_server": {{"root_ca": "{path}"}}'
    return f'"trust_pinning": {{"ca": {{"{address.gun}": "{path}"}}}}'


def _ca_path(value: object) -> Path:
    path = _checked_path(value, "trust_pinning.ca")
    if not path.is_absolute():
        raise UsageError(
            f"trust_pinning.ca path {str(value)[:80]!r} is relative: notary reads "
            "it from whatever directory it runs in; write an absolute path"
        )
    return Path(os.path.normpath(path))


def _checked_path(value: object, where: str) -> Path:
    if not isinstance(value, str) or not value or len(value) > 4096:
        raise UsageError(f"{where} is not a file path")
    if not value.isprintable():
        raise UsageError(f"{where} path {value[:80]!r} holds control characters")
    if value.endswith("/"):
        raise UsageError(f"{where} path {value[:80]!r} names a directory, not a file")
    return Path(value)
