"""``keyvault init``: the embedded default, or a configuration from given URIs.

The embedded default needs no server: a file store under the user's data
directory and an age recovery identity (0600) under the user's config
directory. Whoever holds that identity can open every backup it wraps, so
the user is told to move it offline once a restore has been checked.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from keyvault import fsutil
from keyvault.config import Config, Paths, render_config, same_init_settings
from keyvault.errors import ConflictError, InvalidInputError, LocalIOError, NotFoundError
from keyvault.names import validate_team
from keyvault.plugins import uri_scheme
from keyvault.redact import redact
from keyvault.stores import open_store

if TYPE_CHECKING:
    from keyvault.sealing import Sealer


@dataclass(frozen=True)
class InitResult:
    config_file: Path
    store: str
    wrappers: tuple[str, ...]
    team: str
    identity_file: Path | None
    identity_created: bool
    config_created: bool
    sealer_file: Path | None = None
    sealer: str = ""  # this machine's sealer fingerprint: the pin a new machine needs
    sealer_created: bool = False


def init(
    config: Config,
    *,
    store: str | None,
    wrappers: list[str],
    team: str | None,
    config_file: Path | None = None,
) -> InitResult:
    """Create the store, the sealing key and the recovery identity if needed, and the
    config file. The sealer's fingerprint is written into the identity file, so the
    identity alone is enough to know whose backups to trust on a new machine.

    Everything that can refuse is checked before anything is made: a config that
    conflicts, or a store the config names that is missing, leaves no store, key or
    identity behind. A missing store is created only when this init chooses it (the
    embedded default, or ``--store``), never for a config copied from another machine:
    an empty store there would look like a store that holds nothing.
    """
    from keyvault.wrappers.age import read_identity_file

    team = validate_team(team or config.team)
    target = config_file or config.source or config.paths.config_file
    store_uri = store or config.store or config.paths.default_store.as_uri()
    named_by_config = store is None and config.source is not None and config.store is not None
    identity = config.identity_files[0] if config.identity_files else config.paths.default_identity
    chosen = list(wrappers or config.wrappers)
    for uri in chosen:
        uri_scheme(uri)
    new_identity = not chosen and not identity.exists()
    if not chosen and not new_identity:  # the embedded default, with its identity in place
        found = read_identity_file(identity)
        if not found:
            raise InvalidInputError(f"identity file {identity} holds no age identity")
        chosen = [str(found[0].to_public())]
    if new_identity:
        _refuse_existing_config(
            target,
            f"names the recovery identity {identity}, which is "
            "missing here (copy it back, or rebuild it with 'keyvault "
            "recovery combine'); a new identity would not match it",
        )
    else:
        _check_config(
            target,
            render_config(
                team=team,
                store=store_uri,
                wrappers=chosen,
                identity_file=identity,
                defaults=config.paths,
            ),
            config.paths,
        )
    _open_or_create_store(config, store_uri, create=not named_by_config, source=target)

    sealer, sealer_created = _sealer(config)
    pin = sealer.key.fingerprint
    if new_identity:
        from keyvault.wrappers.age import generate_identity

        chosen = [generate_identity(identity, pins=[pin])]
    elif not (wrappers or config.wrappers):
        _pin_in_identity(identity, pin)
    text = render_config(
        team=team, store=store_uri, wrappers=chosen, identity_file=identity, defaults=config.paths
    )
    created_config = _write_config(target, text, config.paths)
    return InitResult(
        target,
        store_uri,
        tuple(chosen),
        team,
        identity,
        new_identity,
        created_config,
        _sealer_file(config),
        pin,
        sealer_created,
    )


def _open_or_create_store(config: Config, uri: str, *, create: bool, source: Path) -> None:
    try:
        open_store(uri, config.backend_options(None), create=create).close()
    except NotFoundError as exc:
        raise NotFoundError(
            f"the store {redact(uri)} that {source} names does not exist here; nothing was created",
            hint="on a new machine, point 'store' in that config (or "
            "KEYVAULT_STORE) at the store you kept: its removable disk, synced directory, "
            "S3 bucket or Vault; 'keyvault --store URI init' makes a new, empty one "
            "(docs/guides/restore-laptop.md)",
        ) from exc


def _sealer(config: Config) -> tuple[Sealer, bool]:
    """This machine's sealer: the configured one, or the default key file, made if absent."""
    from keyvault.sealers import open_sealer
    from keyvault.sealing import Ed25519FileSealer

    path = config.sealing_key_path
    if config.sealing_key is not None or path.exists():
        return open_sealer(config.sealing_key or str(path), config.backend_options(None)), False
    return Ed25519FileSealer.generate(path), True


def _sealer_file(config: Config) -> Path | None:
    from keyvault.sealers import is_backend_sealer

    spec = config.sealing_key
    return None if spec is not None and is_backend_sealer(spec) else config.sealing_key_path


def _pin_in_identity(path: Path, pin: str) -> None:
    """Add this machine's sealer pin to an existing identity file (kept otherwise as is)."""
    from keyvault.ops.pins import pins_in_file
    from keyvault.sealing import pin_lines

    if pin in pins_in_file(path):
        return
    text = fsutil.read_private_file(path, "identity file", 64 * 1024)
    fsutil.write_file_atomic(
        path.parent, path.name, pin_lines([pin]).encode() + text, mode=0o600, exclusive=False
    )


def _check_config(path: Path, text: str, paths: Paths) -> None:
    """ConflictError if ``path`` exists with other settings than ``text``."""
    if path.exists() and not same_init_settings(path, text, paths):
        _refuse_existing_config(path, "it has other settings")


def _refuse_existing_config(path: Path, why: str) -> None:
    if path.exists():
        raise ConflictError(
            f"config file {path} already exists and {why}; nothing was created",
            hint="edit it, or pass --config to write a new one elsewhere",
        )


def _write_config(path: Path, text: str, paths: Paths) -> bool:
    """Write once; an existing file with the same settings is fine, another is a conflict."""
    data = text.encode("utf-8")
    if path.exists():
        _check_config(path, text, paths)
        return False
    try:
        fsutil.make_private_dirs(path.parent)
    except OSError as exc:
        raise LocalIOError(
            f"cannot write config file {path}: {os.strerror(exc.errno or 0)}"
        ) from None
    # Whole or not at all: a full disk leaves no half-written config for the next init.
    fsutil.write_file_atomic(path.parent, path.name, data, mode=0o600, exclusive=True)
    return True
