"""Which pinned certificates a restore brings back, proven, and where they go.

Each certificate is read and proven exactly as a key or a trust pin is
(trusted sealer, chain, high-water mark: a swapped or rolled-back one is
refused, exit 5), then checked to be certificates only: a store writer's
"CA file" that holds anything else is refused too. Where it goes comes from
the local notary config, never from the store (:func:`restore_target`).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass

from keyvault.errors import (
    AccessDeniedError,
    IntegrityError,
    InvalidInputError,
    NotFoundError,
)
from keyvault.names import CertAddress, cert_prefix, gun_matches, parsed_names
from keyvault.ops.authentic import AuthenticReader
from keyvault.ops.selection import Selection
from keyvault.ops.session import Session
from keyvault.trust.certpins import check_certificates, config_line, restore_target
from keyvault.trust.certwrite import CertWrite
from keyvault.trustserver.notaryconfig import notary_config_file, read_notary_config


@dataclass(frozen=True)
class OpenedCert:
    """A proven certificate, where it goes, and whether the local config names that path."""

    address: CertAddress
    version: str
    sealer: str
    sequence: int | None
    write: CertWrite
    configured: bool

    @property
    def config_line(self) -> str:
        return config_line(self.address, self.write.path)


def cert_addresses(
    session: Session,
    team: str,
    selection: Selection,
    guns: set[str],
    listed: Collection[str] | None = None,
) -> list[CertAddress]:
    """The certificates that travel with the selection: every one when nothing narrows it
    (or ``--all``); else the CAs of the GUN prefixes the selected GUNs start with, and the
    trust servers' CAs. One listing of ``certs/`` (none if ``listed`` named them)."""
    prefix = cert_prefix(team)
    names = (
        [n for n in listed if n.startswith(prefix)]
        if listed is not None and not selection.guns
        else session.store().list(prefix)
    )
    narrowed = not selection.everything and bool(
        selection.guns or selection.roles or selection.key_ids
    )
    wanted = guns | set(selection.guns)
    found: list[CertAddress] = []
    for cert in parsed_names(names, CertAddress, team):
        prefix_of = str(cert.gun)
        if (
            not narrowed
            or cert.is_server
            or any(g.startswith(prefix_of) or gun_matches(prefix_of.rstrip("/"), g) for g in wanted)
        ):
            found.append(cert)
    return sorted(found)


def open_certs(
    session: Session,
    reader: AuthenticReader,
    addresses: list[CertAddress],
    env: Mapping[str, str],
    refused: list[str],
) -> list[OpenedCert]:
    """Read, prove and open each certificate; the local config says where it goes."""
    config = read_notary_config(env)
    config_file = notary_config_file(env)
    opened: list[OpenedCert] = []
    for address in addresses:
        try:
            entry = reader.latest(address)
        except NotFoundError:
            continue
        except AccessDeniedError as exc:  # the backend grants them to members only
            refused.append(exc.message)
            continue
        data = session.open(entry.envelope)
        try:
            check_certificates(data, address.shown)
        except InvalidInputError as exc:  # signed by a trusted sealer, yet not certificates
            raise IntegrityError(f"{exc.message}; refused") from None
        path, configured = restore_target(config, config_file, address)
        opened.append(
            OpenedCert(
                address,
                entry.version,
                entry.sealer or "",
                entry.envelope.chain.sequence if entry.envelope.chain else None,
                CertWrite(path, data, address.shown),
                configured,
            )
        )
    return opened
