"""``verify --deep``: decrypt each key with its Notary passphrase and check its ID.

Passphrases come from the variables Notary and docker read
(``NOTARY_<ROLE>_PASSPHRASE``, ``DOCKER_CONTENT_TRUST_*_PASSPHRASE``) or, in a
terminal, a no-echo prompt; never argv. For root keys the report also says
which GUNs' root.json rely on the key (their certificate IDs differ from the
file name: see docs/concepts.md).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

from keyvault.plugins import SecretPrompt
from keyvault.trust.deep import key_label, verify_key_id
from keyvault.trust.model import KeyFile
from keyvault.trust.passphrases import passphrase_for
from keyvault.trust.tufmeta import read_trust_metadata


def deep_checker(
    env: Mapping[str, str], trust_dir: Path, prompt: SecretPrompt | None
) -> Callable[[KeyFile], str]:
    """A check for one key: returns a one-line finding, raises KeyvaultError on failure."""
    metadata = read_trust_metadata(trust_dir) if trust_dir.is_dir() else None
    asked: dict[str | None, str] = {}

    def check(key: KeyFile) -> str:
        passphrase = passphrase_for(key.role, env)
        if passphrase is None and prompt is not None:
            if key.role not in asked:
                asked[key.role] = prompt(f"Passphrase for {key_label(key)}")
            passphrase = asked[key.role]
        verify_key_id(key, passphrase)
        finding = "key ID verified"
        uses = metadata.uses_of(key.key_id) if metadata else ()
        if uses:
            finding += "; used by " + ", ".join(
                f"{u.gun} ({u.role}"
                + (f", listed as {u.listed_id[:12]})" if u.listed_id != u.key_id else ")")
                for u in uses
            )
        return finding

    return check
