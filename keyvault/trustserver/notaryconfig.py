"""The notary client's own config, ``~/.notary/config.json``, as the notary CLI reads it.

``remote_server.url`` is its default trust server, ``remote_server.root_ca``
the CA it trusts for it (a relative path is relative to the config file's
directory) and ``trust_dir`` its trust directory (relative likewise; ``~``
expanded). ``trust_pinning`` (notary's ``cmd/notary/tuf.go``: ``ca`` maps a
GUN prefix to a CA file, used as written, so a relative one is read from the
current directory; ``certs`` maps a GUN to certificate IDs; ``disable_tofu``)
is kept raw: its CA files travel with the keys (:mod:`keyvault.trust.certpins`),
which judges each entry. Like notary's config library, map keys are lower-cased.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from keyvault.errors import InvalidInputError

MAX_CONFIG = 1024 * 1024


@dataclass(frozen=True)
class NotaryConfig:
    path: Path
    url: str | None
    root_ca: Path | None
    trust_dir: Path | None
    #: ``remote_server.root_ca`` exactly as written (restore and backup judge it).
    root_ca_text: object = None
    #: ``trust_pinning.ca`` (GUN prefix -> CA file), values as written.
    pinned_ca: tuple[tuple[str, object], ...] = ()
    #: ``trust_pinning.certs`` (GUN -> certificate IDs), as written.
    pinned_certs: tuple[tuple[str, object], ...] = ()


def notary_config_file(env: Mapping[str, str]) -> Path:
    home = env.get("HOME") or str(Path.home())
    return Path(home) / ".notary" / "config.json"


def read_notary_config(env: Mapping[str, str]) -> NotaryConfig | None:
    """The config, or None when there is none."""
    path = notary_config_file(env)
    try:
        if path.stat().st_size > MAX_CONFIG:
            raise InvalidInputError(f"{path} is larger than {MAX_CONFIG} bytes")
        data = json.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise InvalidInputError(
            f"the notary config {path} is unreadable ({type(exc).__name__})"
        ) from None
    if not isinstance(data, dict):
        raise InvalidInputError(f"the notary config {path} is not a JSON object")
    remote = data.get("remote_server")
    remote = remote if isinstance(remote, dict) else {}
    home = env.get("HOME") or str(Path.home())
    url = remote.get("url")
    pinning = data.get("trust_pinning")
    pinning = pinning if isinstance(pinning, dict) else {}
    return NotaryConfig(
        path,
        url if isinstance(url, str) and url else None,
        _resolved(remote.get("root_ca"), path.parent, home),
        _resolved(data.get("trust_dir"), path.parent, home),
        remote.get("root_ca"),
        _entries(pinning.get("ca")),
        _entries(pinning.get("certs")),
    )


def _entries(value: object) -> tuple[tuple[str, object], ...]:
    """A JSON object's members, keys lower-cased as notary's config library reads them."""
    if not isinstance(value, dict):
        return ()
    return tuple(sorted((str(k).lower(), v) for k, v in value.items()))


def _resolved(value: object, base: Path, home: str) -> Path | None:
    if not isinstance(value, str) or not value:
        return None
    if value == "~" or value.startswith("~/"):
        return Path(home) / value[2:]
    path = Path(value)
    return path if path.is_absolute() else base / path
