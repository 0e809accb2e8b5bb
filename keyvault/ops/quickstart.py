"""The first thing a new user runs: back up, restore into a fresh directory, compare.

It works on the user's own trust directory when it holds keys, and otherwise
on a sample trust directory of Notary-format keys that keyvault generates
(backed up under the team ``sample`` so it never mixes with real keys). The
restore goes to a fresh private directory (keyvault/scratch.py: on RAM where
there is one, marked) whose files are overwritten with zeros and removed at
the end; one left by a SIGKILL is wiped by ``keyvault wipe --stale``.

The sample's passphrase is public, so ``keyvault quickstart --remove-sample``
removes the sample (:func:`remove_sample`): the envelopes of exactly the keys
in the sample trust directory, under team ``sample``, from the store (every
version; the only deletion keyvault makes, where the store can delete), then
the directory itself, wiped. A real team named ``sample`` loses nothing else.
"""

from __future__ import annotations

import hmac
import stat
from dataclasses import dataclass
from pathlib import Path

from keyvault.config import Config
from keyvault.errors import IntegrityError
from keyvault.names import KeyAddress
from keyvault.ops.backup import BackupOutcome, backup_keys
from keyvault.ops.restore import RestoreReport, restore_keys
from keyvault.ops.selection import Selection
from keyvault.ops.session import Session, key_ref
from keyvault.scratch import private_scratch
from keyvault.trust.model import KeyFile
from keyvault.trust.scan import scan_trust_dir

SAMPLE_TEAM = "sample"
SAMPLE_PASSPHRASE = "keyvault-sample"  # noqa: S105 - documented, protects sample keys only
SAMPLE_DIR = "sample-trust"  # under the data directory
REMOVE_SAMPLE = "keyvault quickstart --remove-sample"


@dataclass(frozen=True)
class QuickstartReport:
    trust_dir: Path
    used_sample: bool
    team: str
    backed_up: tuple[BackupOutcome, ...]
    restored: RestoreReport
    verified: int


def quickstart(config: Config, sample_dir: Path) -> QuickstartReport:
    """Back up ``config.trust_dir`` (or a generated sample), restore and compare."""
    from keyvault.trust.sample import write_sample_trust_dir

    scan = scan_trust_dir(config.trust_dir) if config.trust_dir.is_dir() else None
    used_sample = scan is None or not scan.keys
    team = config.team
    if used_sample:
        if not (sample_dir / "private").exists():
            write_sample_trust_dir(sample_dir, _sample_passphrases())
        scan = scan_trust_dir(sample_dir)
        team = SAMPLE_TEAM
    assert scan is not None
    with Session(config) as session:
        outcomes = backup_keys(session, scan.keys, team=team)
        failed = [o for o in outcomes if o.error is not None]
        if failed and failed[0].error is not None:
            raise failed[0].error
        with private_scratch(config.env, config.paths.state_dir, "quickstart") as fresh:
            report = restore_keys(
                session, team=team, selection=Selection(everything=True), trust_dir=fresh.trust_dir
            )
            verified = _compare(scan.keys, fresh.trust_dir)
    return QuickstartReport(
        Path(scan.trust_dir), used_sample, team, tuple(outcomes), report, verified
    )


def sample_dir(config: Config) -> Path:
    """Where quickstart generates its sample trust directory."""
    return config.paths.data_dir / SAMPLE_DIR


@dataclass(frozen=True)
class SampleRemoval:
    """What ``--remove-sample`` removed, and what the store could not remove."""

    trust_dir: Path | None  # the sample trust directory wiped, None if there was none
    envelopes_removed: tuple[str, ...] = ()  # object names, every version deleted
    left_in_store: tuple[str, ...] = ()  # the store cannot delete: remove these by hand


def remove_sample(config: Config) -> SampleRemoval:
    """Delete the sample keys' envelopes from the store, then overwrite the sample's key
    files with zeros and remove its directory.

    Only the object names of the sample's own keys found in the sample trust directory
    (the root and the sample GUNs' keys that the public passphrase opens), under team
    ``sample``, are deleted: never a name listed by prefix, so a real team that is called
    ``sample`` keeps its own keys, even one whose key file was copied into the sample.
    The store goes first: if it fails, the directory is still there to scan again.
    Nothing else is touched: not the user's trust directory, config or identity.
    """
    from keyvault.scratch import wipe_tree

    path = sample_dir(config)
    if not path.is_dir() or path.is_symlink():
        return SampleRemoval(None)
    addresses = {
        KeyAddress(SAMPLE_TEAM, k.gun, k.role, k.key_id)
        for k in scan_trust_dir(path).keys
        if _is_sample_key(k)
    }
    removed: tuple[str, ...] = ()
    left: tuple[str, ...] = ()
    if addresses and config.store:
        removed, left = _remove_envelopes(config, sorted(addresses))
    wipe_tree(path)
    return SampleRemoval(path, removed, left)


def _is_sample_key(key: KeyFile) -> bool:
    """A key quickstart generated: the sample's root or a sample GUN's key, which the public
    sample passphrase opens. Any other key file found in the sample directory (copied
    there by hand) is never a reason to delete an envelope."""
    from keyvault.errors import KeyvaultError
    from keyvault.trust.deep import verify_key_id
    from keyvault.trust.sample import DEFAULT_GUNS

    if key.role != "root" and key.gun not in DEFAULT_GUNS:
        return False
    try:
        verify_key_id(key, SAMPLE_PASSPHRASE)
    except KeyvaultError:
        return False
    return True


def _remove_envelopes(
    config: Config, addresses: list[KeyAddress]
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(names deleted, names the store cannot delete) among those the store holds."""
    from keyvault.names import team_prefix
    from keyvault.stores.base import Deleting

    with Session(config) as session:
        store = session.store()
        held = set(store.list(team_prefix(SAMPLE_TEAM)))
        present = [a for a in addresses if a.object_name in held]
        names = tuple(a.object_name for a in present)
        if not isinstance(store, Deleting):
            return (), names
        for name in names:
            store.delete_all_versions(name)
        if names:
            session.record(
                "quickstart",
                "ok",
                team=SAMPLE_TEAM,
                keys=[key_ref(a) for a in present],
                detail=f"removed the sample's envelopes ({len(names)}), every "
                "version: their passphrase is public",
            )
    return names, ()


def _sample_passphrases() -> dict[str, str]:
    return {role: SAMPLE_PASSPHRASE for role in ("root", "targets", "snapshot")}


def _compare(originals: tuple[KeyFile, ...], restored_trust: Path) -> int:
    """Every original key file must be back, byte for byte, 0600 in 0700 directories."""
    for key in originals:
        path = restored_trust / "private" / key.relpath
        st = path.lstat()
        if not stat.S_ISREG(st.st_mode) or stat.S_IMODE(st.st_mode) != 0o600:
            raise IntegrityError(f"restored private/{key.relpath} is not a 0600 regular file")
        if stat.S_IMODE(path.parent.stat().st_mode) != 0o700:
            raise IntegrityError(f"restored directory of private/{key.relpath} is not 0700")
        if not hmac.compare_digest(path.read_bytes(), key.data):
            raise IntegrityError(f"restored private/{key.relpath} differs from the original")
    return len(originals)
