"""Which environment variable holds the passphrase of a key, as notary and docker read them.

notary (``cmd/notary/main.go``, ``getPassphraseRetriever``) reads
``NOTARY_{ROOT,TARGETS,SNAPSHOT}_PASSPHRASE`` for those roles and
``NOTARY_DELEGATION_PASSPHRASE`` for any role that is not a base role (also for a
key without a ``role:`` header: notary asks for role ``""``), so a
local timestamp key has no variable at all. The docker CLI
(``cli/trust/trust.go``) reads ``DOCKER_CONTENT_TRUST_ROOT_PASSPHRASE`` for
root and ``DOCKER_CONTENT_TRUST_REPOSITORY_PASSPHRASE`` for every other role.
Both tools treat an empty variable as unset and fall back to a prompt; keyvault
has no prompt here, and an empty variable is nearly always a mistake
(``export X=$TYPO``), so it is refused with the variable's name (B15).

The environment is passed in, never read from ``os.environ`` here.
"""

from __future__ import annotations

from collections.abc import Mapping

from keyvault.errors import UsageError
from keyvault.names import CANONICAL_ROLES, role_shown

NOTARY_ROLE_VARIABLES = {
    "root": "NOTARY_ROOT_PASSPHRASE",
    "targets": "NOTARY_TARGETS_PASSPHRASE",
    "snapshot": "NOTARY_SNAPSHOT_PASSPHRASE",
}
NOTARY_DELEGATION_VARIABLE = "NOTARY_DELEGATION_PASSPHRASE"
DOCKER_ROOT_VARIABLE = "DOCKER_CONTENT_TRUST_ROOT_PASSPHRASE"
DOCKER_REPOSITORY_VARIABLE = "DOCKER_CONTENT_TRUST_REPOSITORY_PASSPHRASE"


def variables_for(role: str | None) -> tuple[str, ...]:
    """The variables consulted for ``role``, most specific first (notary's, then docker's)."""
    names: list[str] = []
    if role is not None and role in NOTARY_ROLE_VARIABLES:
        names.append(NOTARY_ROLE_VARIABLES[role])
    elif role not in CANONICAL_ROLES:
        names.append(NOTARY_DELEGATION_VARIABLE)
    names.append(DOCKER_ROOT_VARIABLE if role == "root" else DOCKER_REPOSITORY_VARIABLE)
    return tuple(names)


def passphrase_for(role: str | None, env: Mapping[str, str]) -> str | None:
    """The passphrase for a key of ``role``, or None when no variable is set.

    The first variable that is set wins; one that is set but empty raises
    UsageError naming it. The value never appears in any message.
    """
    for name in variables_for(role):
        if name in env:
            value = env[name]
            if value == "":
                raise UsageError(
                    f"{name} is set but empty",
                    hint=f"unset it or set it to the passphrase of the {role_shown(role)} key",
                )
            return value
    return None


def passphrase_hint(role: str | None) -> str:
    """A hint naming where the passphrase of a ``role`` key is expected."""
    return "set " + " or ".join(variables_for(role))
