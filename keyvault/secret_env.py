"""The environment variables that carry keyvault's own credentials: the one list.

``keyvault exec`` hands its environment to a CI job's command. With any of
these the command could do what keyvault may do (read every envelope of the
team, unwrap through KMS or Transit, sign as this machine's sealer), so none
of them is passed on unless the job names it (``--pass-env NAME``).

The list is what keyvault's code reads (config.py, stores/_awsclient.py,
stores/_vault_client.py, wrappers/, sealers/) and what the SDKs it drives
read for credentials on their own (boto3's chain: keys, web identity,
profiles and their files, container credentials; hvac: ``VAULT_TOKEN``).
Files such as ``~/.aws/credentials`` or ``~/.vault-token`` cannot be taken
away from a command run as the same user: SECURITY.md says so.
"""

from __future__ import annotations

from collections.abc import Mapping

from keyvault.redact import redact

#: Named one by one: a credential, or where one is found.
CREDENTIAL_VARIABLES = frozenset(
    {
        # AWS: keyvault's S3 store, KMS wrapper and sealer (boto3's credential chain)
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_SECURITY_TOKEN",
        "AWS_CREDENTIAL_EXPIRATION",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_ROLE_ARN",
        "AWS_ROLE_SESSION_NAME",
        "AWS_PROFILE",
        "AWS_DEFAULT_PROFILE",
        "AWS_SHARED_CREDENTIALS_FILE",
        "AWS_CREDENTIAL_FILE",
        "AWS_CONFIG_FILE",
        # Vault / OpenBao: keyvault's KV store, Transit wrapper and sealer
        "VAULT_TOKEN",
        "KEYVAULT_VAULT_JWT",
        "KEYVAULT_VAULT_ROLE_ID",
        "KEYVAULT_VAULT_SECRET_ID",
        # keyvault's own secrets, and where its private keys are
        "KEYVAULT_PASSPHRASE",
        "KEYVAULT_PKCS11_PIN",
        "KEYVAULT_AGE_IDENTITY",
        "KEYVAULT_SEALING_KEY",
        # root passphrases: no root key is ever in an exec directory to use them
        "NOTARY_ROOT_PASSPHRASE",
        "DOCKER_CONTENT_TRUST_ROOT_PASSPHRASE",
    }
)
#: Named by prefix: ECS/EKS container credentials (URIs and authorization tokens).
CREDENTIAL_PREFIXES = ("AWS_CONTAINER_",)
#: keyvault's settings whose value may embed a secret (a pin-value, ``user:secret@``).
_SETTING_PREFIX = "KEYVAULT_"


def is_credential(name: str, value: str, *, extra: frozenset[str] = frozenset()) -> bool:
    """``name`` holds one of keyvault's credentials (``extra``: names the config adds,
    such as the variable a CI ID token is read from)."""
    return (
        name in CREDENTIAL_VARIABLES
        or name in extra
        or name.startswith(CREDENTIAL_PREFIXES)
        or (name.startswith(_SETTING_PREFIX) and redact(value) != value)
    )


def credentials_in(env: Mapping[str, str], *, extra: frozenset[str] = frozenset()) -> list[str]:
    """The names in ``env`` that hold keyvault's credentials, sorted (names only)."""
    return sorted(name for name, value in env.items() if is_credential(name, value, extra=extra))
