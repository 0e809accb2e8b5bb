"""Every config key and every ``KEYVAULT_*`` environment variable: the one registry.

config.py builds its schema from :data:`KEYS` (a key that is not here is
refused) and resolves the keys marked ``path`` against the config file's
directory. docs/gen_config_reference.py writes docs/configuration.md from
this module, and tests/ship/test_config_reference.py fails when keyvault
reads a ``KEYVAULT_`` variable that is missing here, or lists one it no
longer reads: what a user looks up is what the code does.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Where a relative path in a config file points: the file's own directory.
RELATIVE_PATHS = (
    "a relative path resolves against the config file's own directory, and `~` "
    "is the home directory"
)
DEFAULT_TEAM = "default"
DEFAULT_CONCURRENCY = 8


@dataclass(frozen=True)
class Key:
    """One config key: ``[section] name``, its TOML type, and what it means."""

    section: str
    name: str
    kind: type | tuple[type, ...]
    meaning: str
    default: str = ""
    #: The environment variable that overrides (or adds to) it, if any.
    env: str = ""
    #: A file or directory path (or a list of them): resolved per RELATIVE_PATHS.
    path: bool = False


@dataclass(frozen=True)
class Variable:
    """A ``KEYVAULT_*`` variable that no config key stands for."""

    name: str
    meaning: str
    default: str = ""


_DATA = "the data directory ($XDG_DATA_HOME/keyvault, ~/.local/share/keyvault)"
_CONFIG = "the config directory ($XDG_CONFIG_HOME/keyvault, ~/.config/keyvault)"

KEYS: tuple[Key, ...] = (
    Key(
        "keyvault",
        "team",
        str,
        "the team whose keys commands read and write",
        f"`{DEFAULT_TEAM}`",
        env="KEYVAULT_TEAM",
    ),
    Key(
        "keyvault",
        "store",
        str,
        "where envelopes are kept: `file:///path`, `s3://bucket/prefix`"
        " or `vault://mount/path`; keep it off the machine whose keys it backs up",
        f"with a config file: `store` in {_DATA}; without one: none (`keyvault init`)",
        env="KEYVAULT_STORE",
    ),
    Key(
        "keyvault",
        "wrappers",
        list,
        "who can open the envelopes: age recipients (`age1...`), "
        "`passphrase:`, `awskms:///...`, `transit://...`, `pkcs11:...` (comma-separated in "
        "the variable)",
        "none (`keyvault init` adds a new age recovery identity)",
        env="KEYVAULT_WRAPPERS",
    ),
    Key(
        "keyvault",
        "trust_dir",
        str,
        "the Notary/Docker trust directory backed up and restored into (also `--trust-dir`)",
        "`$DOCKER_CONFIG/trust`, else the notary client's "
        "`trust_dir` in `~/.notary/config.json`, else `~/.docker/trust`",
        env="KEYVAULT_TRUST_DIR",
        path=True,
    ),
    Key(
        "keyvault",
        "concurrency",
        int,
        "how many keys bulk commands handle at once (1-64)",
        f"`{DEFAULT_CONCURRENCY}`",
        env="KEYVAULT_CONCURRENCY",
    ),
    Key(
        "keyvault",
        "give_up_after",
        int,
        "backend-down failures in a row (connection refused, "
        "timeouts, a sealed Vault; never throttling) after which a run starts no new key and "
        "reports the rest as not attempted, exit 6 (0: never; docs/troubleshooting.md)",
        "`5`",
    ),
    Key(
        "keyvault", "audit_to_store", bool, "also copy each audit record into the store", "`false`"
    ),
    Key(
        "keyvault",
        "policy",
        str,
        "the team policy file (docs/teams.md); unset: single-user mode, no policy checks",
        "none",
        env="KEYVAULT_POLICY",
        path=True,
    ),
    Key(
        "recovery",
        "identity_file",
        str,
        "the age identity that opens envelopes wrapped for "
        "its recipient (the variable's comma-separated files come first)",
        f"`recovery-identity.txt` in {_CONFIG}: if it exists, or if the config file has an "
        "age wrapper",
        env="KEYVAULT_AGE_IDENTITY",
        path=True,
    ),
    Key(
        "recovery",
        "identity_files",
        list,
        "more age identity files, tried after `identity_file`",
        "none",
        path=True,
    ),
    Key(
        "passphrase",
        "scrypt_n",
        int,
        "scrypt cost of new `passphrase:` envelopes (a power of two, 16384-1048576)",
        "`131072`",
    ),
    Key(
        "sealing",
        "key",
        str,
        "this machine's sealing key: a key file, or `awskms:///...` / `transit://...`",
        f"`sealer.key` in {_CONFIG}",
        env="KEYVAULT_SEALING_KEY",
        path=True,
    ),
    Key(
        "sealing",
        "trusted",
        list,
        "other machines' sealer fingerprints whose envelopes this "
        "one accepts (the variable's comma-separated ones are added)",
        "none",
        env="KEYVAULT_TRUSTED_SEALERS",
    ),
    Key("sealing", "revoked", list, "sealer fingerprints refused even where trusted", "none"),
    Key(
        "s3",
        "endpoint_url",
        str,
        "an S3-compatible service (MinIO, SeaweedFS, Ceph)",
        "`AWS_ENDPOINT_URL_S3`, `AWS_ENDPOINT_URL`, else AWS",
    ),
    Key("s3", "region", str, "the bucket's region", "`AWS_REGION`, `AWS_DEFAULT_REGION`"),
    Key("s3", "profile", str, "the AWS profile", "`AWS_PROFILE`"),
    Key(
        "s3",
        "addressing_style",
        str,
        "`path` or `virtual` (most S3-compatible services need `path`)",
        "botocore's",
    ),
    Key(
        "s3",
        "sse",
        str,
        "server-side encryption on top of the envelope's: `AES256` or `aws:kms`",
        "none",
    ),
    Key("s3", "sse_kms_key_id", str, 'the KMS key of `sse = "aws:kms"`', "the bucket's"),
    Key("s3", "connect_timeout", (int, float), "seconds to connect", "`5`"),
    Key("s3", "read_timeout", (int, float), "seconds to wait for an answer", "`15`"),
    Key("s3", "max_attempts", int, "total attempts per request (1-10)", "`4`"),
    Key(
        "s3",
        "max_pool_connections",
        int,
        "pooled connections (1-256)",
        "`concurrency` + 2, at least 10",
    ),
    Key(
        "s3",
        "allow_unversioned",
        bool,
        "accept a bucket without versioning (docs/aws.md)",
        "`false`",
    ),
    Key(
        "s3",
        "conditional_writes",
        bool,
        "`false`: a service without If-None-Match (needs versioning)",
        "`true`",
    ),
    Key(
        "awskms",
        "endpoint_url",
        str,
        "a KMS-compatible endpoint",
        "`AWS_ENDPOINT_URL_KMS`, `AWS_ENDPOINT_URL`, else AWS",
    ),
    Key("awskms", "region", str, "the key's region", "`AWS_REGION`, `AWS_DEFAULT_REGION`"),
    Key("awskms", "profile", str, "the AWS profile", "`AWS_PROFILE`"),
    Key("awskms", "connect_timeout", (int, float), "seconds to connect", "`5`"),
    Key("awskms", "read_timeout", (int, float), "seconds to wait for an answer", "`5`"),
    Key("awskms", "max_attempts", int, "total attempts per request (1-10)", "`4`"),
    Key(
        "awskms",
        "max_pool_connections",
        int,
        "pooled connections (1-256)",
        "`concurrency` + 2, at least 10",
    ),
    Key(
        "vault",
        "address",
        str,
        "the Vault / OpenBao server",
        "`VAULT_ADDR`, else `https://127.0.0.1:8200`",
    ),
    Key("vault", "namespace", str, "Vault Enterprise / OpenBao namespace", "`VAULT_NAMESPACE`"),
    Key(
        "vault",
        "cacert",
        str,
        "CA bundle that signed Vault's certificate",
        "`VAULT_CACERT`",
        path=True,
    ),
    Key(
        "vault",
        "skip_verify",
        bool,
        "TLS verification off (test setups only)",
        "`VAULT_SKIP_VERIFY`, else `false`",
    ),
    Key("vault", "auth", str, "`token`, `approle` or `jwt`", "`token`"),
    Key(
        "vault",
        "token_file",
        str,
        'token file for `auth = "token"`, after `VAULT_TOKEN`',
        "`~/.vault-token`",
        path=True,
    ),
    Key("vault", "approle_mount", str, "AppRole auth mount", "`approle`"),
    Key("vault", "role_id", str, "AppRole role ID", "`role_id_file`, `KEYVAULT_VAULT_ROLE_ID`"),
    Key("vault", "role_id_file", str, "file holding the AppRole role ID", "none", path=True),
    Key(
        "vault",
        "secret_id_file",
        str,
        "file holding the AppRole secret ID, after `KEYVAULT_VAULT_SECRET_ID`",
        "none",
        path=True,
    ),
    Key("vault", "jwt_mount", str, "JWT/OIDC auth mount", "`jwt`"),
    Key("vault", "jwt_role", str, "JWT/OIDC role", "none"),
    Key("vault", "jwt_file", str, "file holding the CI's ID token", "none", path=True),
    Key("vault", "jwt_env", str, "the variable holding the CI's ID token", "`KEYVAULT_VAULT_JWT`"),
    Key("vault", "timeout", (int, float), "seconds per request (at most 600)", "`10`"),
    Key(
        "vault",
        "max_attempts",
        int,
        "total attempts per request while Vault is sealed, in "
        "standby, unreachable or throttling (1-10), 0.25 s apart, doubling up to 2 s",
        "`4`",
    ),
    Key(
        "vault",
        "change_marker",
        bool,
        "a per-team change marker: an unchanged backup of a Vault KV store costs one "
        "request, not a LIST per folder; a version written outside keyvault is then seen "
        "at the next full check (docs/envelope.md 11.2)",
        "`false`",
    ),
    Key(
        "vault",
        "full_check_every",
        str,
        "with `change_marker`: how long the folder listing stands, a number and a unit "
        "(`s`, `m`, `h`, `d`)",
        '`"24h"`',
    ),
    Key(
        "transit",
        "address",
        str,
        "a different Vault for the Transit wrapper and sealer",
        "the `[vault]` one",
    ),
    Key(
        "pkcs11",
        "module",
        str,
        "the PKCS#11 module (shared library) after `module-path=` in the URI",
        "`KEYVAULT_PKCS11_MODULE`",
    ),
    Key(
        "pkcs11",
        "pin_source",
        str,
        "a file holding the user PIN (0600), after "
        "`pin-source=` in the URI and `KEYVAULT_PKCS11_PIN`",
        "the PIN pad, else a prompt",
        path=True,
    ),
    Key(
        "drill",
        "rate",
        (int, float),
        "requests a second a drill sends at most to each KMS, "
        "Transit or HSM wrapper (also `--rate`); AWS KMS's smallest shared quota for "
        "symmetric operations is 5,500 a second per account and Region",
        "`100`",
    ),
    Key(
        "drill",
        "max_wait",
        (int, float),
        "seconds one key may wait in pauses for a "
        "throttling service before the drill gives it up as `not-checked (throttled)`",
        "`120`",
    ),
    Key(
        "pkcs11",
        "mechanism",
        str,
        "force one mechanism for new wraps: `aes-gcm`, `aes-kwp` or `rsa-oaep`",
        "chosen from the key and the token",
    ),
)

VARIABLES: tuple[Variable, ...] = (
    Variable("KEYVAULT_CONFIG", "the config file (also `--config`)", f"`config.toml` in {_CONFIG}"),
    Variable(
        "KEYVAULT_PASSPHRASE",
        "the passphrase of `passphrase:` wrappers (else a prompt; the daemon never prompts)",
    ),
    Variable(
        "KEYVAULT_PKCS11_MODULE",
        "the PKCS#11 module, after `module-path=` in the URI",
        "`[pkcs11] module`",
    ),
    Variable(
        "KEYVAULT_PKCS11_PIN",
        "the HSM user PIN (set but empty is refused)",
        "`[pkcs11] pin_source`, the PIN pad, a prompt",
    ),
    Variable(
        "KEYVAULT_VAULT_JWT",
        'the CI\'s ID token for `[vault] auth = "jwt"` (the name `[vault] jwt_env` gives)',
    ),
    Variable(
        "KEYVAULT_VAULT_ROLE_ID", "the AppRole role ID, after `[vault] role_id` and `role_id_file`"
    ),
    Variable("KEYVAULT_VAULT_SECRET_ID", "the AppRole secret ID", "`[vault] secret_id_file`"),
    Variable(
        "KEYVAULT_TMPDIR",
        "where private scratch directories go (restores for exec, quickstart, drills)",
        "`/dev/shm`, `$XDG_RUNTIME_DIR`, else the state directory",
    ),
    Variable("KEYVAULT_DEBUG", "`1`: print the traceback of an internal error"),
    Variable(
        "KEYVAULT_UNSAFE_SKIP_POLICY_CHECK",
        "`1` turns keyvault's own policy check off, "
        "leaving only the backends' access control: tests only",
    ),
)


def schema() -> dict[str, dict[str, type | tuple[type, ...]]]:
    """Allowed keys per section and their TOML types, for config.py's check."""
    sections: dict[str, dict[str, type | tuple[type, ...]]] = {}
    for key in KEYS:
        sections.setdefault(key.section, {})[key.name] = key.kind
    return sections


def path_keys() -> frozenset[tuple[str, str]]:
    """(section, name) of the keys whose values are paths."""
    return frozenset((key.section, key.name) for key in KEYS if key.path)


def variable_names() -> frozenset[str]:
    """Every ``KEYVAULT_*`` variable keyvault reads."""
    return frozenset({key.env for key in KEYS if key.env} | {v.name for v in VARIABLES})
