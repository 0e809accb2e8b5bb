"""Which trust server to ask, and which CA to trust for it.

The server is ``--server``, then ``DOCKER_CONTENT_TRUST_SERVER`` (what users
export after ``docker login`` to a registry with its own trust server), then
``remote_server.url`` in ``~/.notary/config.json``. The CA is ``--tls-ca``,
then the notary config's ``root_ca`` (only for the server that config names),
then the system store, as the docker and notary clients accept.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from keyvault.trustserver.notaryconfig import read_notary_config

SERVER_ENV = "DOCKER_CONTENT_TRUST_SERVER"


@dataclass(frozen=True)
class Endpoint:
    """A trust server, the CA to trust for it, and where the choice came from."""

    url: str
    ca_file: Path | None
    origin: str  # "--server", "DOCKER_CONTENT_TRUST_SERVER", "~/.notary/config.json"


def select_endpoint(
    server: str | None, tls_ca: str | None, env: Mapping[str, str]
) -> Endpoint | None:
    """The trust server this run talks to; None when nothing names one (the caller then
    reads the local TUF cache)."""
    ca = Path(tls_ca).expanduser() if tls_ca else None
    if server:
        return Endpoint(server, ca, "--server")
    if env.get(SERVER_ENV):
        return Endpoint(env[SERVER_ENV], ca, SERVER_ENV)
    config = read_notary_config(env)
    if config is not None and config.url:
        return Endpoint(config.url, ca or config.root_ca, str(config.path))
    return None
