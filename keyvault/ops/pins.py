"""Which sealers a session trusts, gathered from everywhere a pin may live.

In order: this machine's own sealing key (what it sealed itself), the config
(``[sealing] trusted``, ``KEYVAULT_TRUSTED_SEALERS``, ``--trust-sealer``),
the recovery identity files (the pin lines ``init`` writes into them, so a
new laptop that has nothing but the identity still knows whom to trust), and
the team's ``sealers`` in the policy. Revocations come from the config and
the policy and win over every pin.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from keyvault.errors import KeyvaultError

if TYPE_CHECKING:
    from keyvault.ops.session import Session
    from keyvault.sealing import SealerTrust

#: Identity and share files are small; anything larger is not one of ours.
MAX_PIN_FILE = 64 * 1024


def trusted_sealers(session: Session) -> SealerTrust:
    from keyvault.sealing import SealerTrust

    config = session.config
    from keyvault.sealers import is_backend_sealer

    trust = SealerTrust.of((), config.revoked_sealers)
    backend = config.sealing_key is not None and is_backend_sealer(config.sealing_key)
    if backend or config.sealing_key_path.exists():
        trust = trust.with_trusted([session.sealer().key.fingerprint], "this machine's sealer")
    trust = trust.with_trusted(config.trusted_sealers, "config")
    for path in config.identity_files:
        trust = trust.with_trusted(pins_in_file(path), f"identity file {path}")
    policy = session.access().policy() if config.policy is not None else None
    if policy is not None and config.team in policy.teams:
        team = policy.teams[config.team]
        trust = trust.with_trusted(team.sealers, f"policy team {team.name}")
        trust = SealerTrust(trust.trusted, trust.revoked | set(team.revoked_sealers), trust.sources)
    return trust


def pins_in_file(path: Path) -> list[str]:
    """The sealer pins in an identity or share file; none if it cannot be read here."""
    from keyvault.fsutil import read_private_file
    from keyvault.sealing import pins_in_text

    try:
        data = read_private_file(path, "identity file", MAX_PIN_FILE)
    except KeyvaultError:
        return []  # the wrapper that needs this file reports what is wrong with it
    return pins_in_text(data.decode("utf-8", errors="replace"))
