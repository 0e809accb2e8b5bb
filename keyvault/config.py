"""One typed configuration object, built once: defaults, then the TOML file, then env.

Command-line flags are applied on top by the CLI. Every key and variable is
listed in keyvault/settings.py (docs/configuration.md is generated from it).
A relative path in the file resolves against the file's own directory, and
``init`` leaves out the values that equal the defaults, which resolve against
this machine's XDG directories: a config copied to a new machine, whose home
is elsewhere, still finds the identity and store it names. Nothing else in keyvault
reads ``os.environ``: the environment is captured here and handed down
(``Config.env``), so tests and the daemon can run with an explicit one.

Example ``config.toml``::

    [keyvault]
    team = "default"
    store = "file:///media/usb/keyvault-store"   # default: <data dir>/store
    wrappers = ["age1..."]
    # trust_dir = "~/.docker/trust"

    [recovery]
    # identity_file = "recovery-identity.txt"   # default: in the config directory

    [passphrase]
    scrypt_n = 131072

    [sealing]
    # key = "sealer.key"   # the default, in the config directory
    trusted = ["sha256:..."]   # other machines' sealers this one accepts
    revoked = []               # refused even where trusted
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from keyvault import settings as settings_registry
from keyvault.bounded import toml_loads
from keyvault.breaker import DEFAULT_THRESHOLD
from keyvault.errors import InvalidInputError, NotFoundError, UsageError
from keyvault.names import validate_fingerprint, validate_team
from keyvault.plugins import BackendOptions, SecretPrompt

APP_NAME = "keyvault"
MAX_CONFIG_SIZE = 256 * 1024
DEFAULT_TEAM = settings_registry.DEFAULT_TEAM
DEFAULT_CONCURRENCY = settings_registry.DEFAULT_CONCURRENCY

#: Allowed keys per section; anything else is refused (B17), so typos do not pass silently.
_SCHEMA = settings_registry.schema()
#: Keys whose values are paths: relative ones resolve against the config file's directory.
_PATH_KEYS = settings_registry.path_keys()
BACKEND_SECTIONS = ("passphrase", "s3", "awskms", "vault", "transit", "pkcs11")
#: Sections kept in Config.settings for the commands that read them (``[drill]``: pacing).
COMMAND_SECTIONS = ("drill",)


@dataclass(frozen=True)
class Paths:
    """Where keyvault keeps its own files, per the platform's conventions."""

    config_dir: Path
    data_dir: Path
    state_dir: Path

    @property
    def config_file(self) -> Path:
        return self.config_dir / "config.toml"

    @property
    def default_store(self) -> Path:
        return self.data_dir / "store"

    @property
    def default_identity(self) -> Path:
        return self.config_dir / "recovery-identity.txt"

    @property
    def default_sealing_key(self) -> Path:
        return self.config_dir / "sealer.key"


@dataclass(frozen=True)
class Config:
    """Everything a command needs to know, resolved and validated."""

    source: Path | None
    paths: Paths
    team: str
    store: str | None
    wrappers: tuple[str, ...]
    trust_dir: Path
    identity_files: tuple[Path, ...]
    settings: Mapping[str, Mapping[str, Any]]
    concurrency: int
    audit_to_store: bool
    env: Mapping[str, str] = field(repr=False)
    #: The team policy file (docs/teams.md); None: single-user mode, no policy checks.
    policy: Path | None = None
    #: Backend-down failures in a row that stop a run from starting new keys (0: never).
    give_up_after: int = DEFAULT_THRESHOLD
    #: This machine's sealing key (docs/envelope.md): a key file path or a backend URI
    #: (``awskms:///alias/x``, ``transit://mount/key``); None: the default key file.
    sealing_key: str | None = None
    #: Sealer fingerprints trusted besides this machine's own, and those always refused.
    trusted_sealers: tuple[str, ...] = ()
    revoked_sealers: tuple[str, ...] = ()
    #: Open unsigned (format v1) envelopes: only ever set by an explicit --allow-unsigned.
    allow_unsigned: bool = False

    @property
    def sealing_key_path(self) -> Path:
        """The sealing key file (the default one when a backend URI is configured)."""
        if self.sealing_key is None or "://" in self.sealing_key:
            return self.paths.default_sealing_key
        return Path(self.sealing_key)

    def backend_options(self, prompt: SecretPrompt | None) -> BackendOptions:
        settings = {name: dict(values) for name, values in self.settings.items()}
        for name in ("s3", "awskms"):  # one pooled connection per worker thread, or more
            settings.setdefault(name, {}).setdefault(
                "max_pool_connections", max(10, self.concurrency + 2)
            )
        return BackendOptions(
            env=self.env, age_identity_files=self.identity_files, prompt=prompt, settings=settings
        )

    def require_store(self) -> str:
        if not self.store:
            raise NotFoundError(
                "no store is configured",
                hint="run 'keyvault init' for the embedded default, or pass --store URI",
            )
        return self.store

    def require_wrappers(self) -> tuple[str, ...]:
        if not self.wrappers:
            raise NotFoundError(
                "no wrapper is configured",
                hint="run 'keyvault init', or pass --wrapper URI (e.g. an age1... recipient)",
            )
        return self.wrappers


def platform_paths() -> Paths:
    """The platform's per-user directories (platformdirs; XDG variables on Linux)."""
    import platformdirs

    return Paths(
        config_dir=Path(platformdirs.user_config_dir(APP_NAME)),
        data_dir=Path(platformdirs.user_data_dir(APP_NAME)),
        state_dir=Path(platformdirs.user_state_dir(APP_NAME)),
    )


def default_trust_dir(env: Mapping[str, str]) -> Path:
    """Docker's rule: ``$DOCKER_CONFIG/trust``, else ``~/.docker/trust``."""
    docker_config = env.get("DOCKER_CONFIG")
    if docker_config:
        return Path(docker_config) / "trust"
    home = env.get("HOME") or str(Path.home())
    return Path(home) / ".docker" / "trust"


def trust_dir_default(env: Mapping[str, str]) -> Path:
    """The trust directory when none is configured: docker's with ``$DOCKER_CONFIG``
    set; else the notary client's ``trust_dir`` when ``~/.notary/config.json`` names one
    (a notary CLI user's keys are there); else ``~/.docker/trust``."""
    if not env.get("DOCKER_CONFIG"):
        from keyvault.trustserver.notaryconfig import read_notary_config

        notary = read_notary_config(env)
        if notary is not None and notary.trust_dir is not None:
            return notary.trust_dir
    return default_trust_dir(env)


def load_config(path: Path | None, env: Mapping[str, str], *, missing_ok: bool = False) -> Config:
    """Build the Config: defaults < file < environment. Flags come later (CLI).

    ``missing_ok`` is for ``init``: an explicit config file that does not exist
    yet is the one it is about to write.
    """
    paths = platform_paths()
    if path is None and env.get("KEYVAULT_CONFIG"):
        path = Path(env["KEYVAULT_CONFIG"])
    source: Path | None = path
    doc: dict[str, Any] | None = None
    if path is not None and not (missing_ok and not path.exists()):
        doc = _read_toml(path)
    elif paths.config_file.exists():
        source = paths.config_file
        doc = _read_toml(source)
    read_file = doc is not None
    doc = _resolve_paths(doc or {}, (source or paths.config_file).expanduser().absolute().parent)
    section = doc.get("keyvault", {})
    recovery = doc.get("recovery", {})
    team = env.get("KEYVAULT_TEAM") or section.get("team") or DEFAULT_TEAM
    store = env.get("KEYVAULT_STORE") or section.get("store")
    if store is None and read_file:  # a config file without 'store': the embedded default's
        store = paths.default_store.as_uri()
    wrappers = tuple(
        _split(env["KEYVAULT_WRAPPERS"])
        if env.get("KEYVAULT_WRAPPERS")
        else section.get("wrappers", ())
    )
    trust = env.get("KEYVAULT_TRUST_DIR") or section.get("trust_dir")
    identities = list(recovery.get("identity_files", []))
    if "identity_file" in recovery:
        identities.insert(0, recovery["identity_file"])
    if env.get("KEYVAULT_AGE_IDENTITY"):
        identities = _split(env["KEYVAULT_AGE_IDENTITY"]) + identities
    elif not identities and (
        paths.default_identity.exists()
        or (read_file and any(isinstance(w, str) and w.startswith("age1") for w in wrappers))
    ):
        # The default, as init leaves it out: named even when missing (kept offline, or
        # not yet copied back), so an age restore says which file it needs.
        identities = [str(paths.default_identity)]
    if not all(isinstance(w, str) for w in wrappers) or not all(
        isinstance(i, str) for i in identities
    ):
        raise InvalidInputError(f"{source}: wrappers and identity files must be lists of strings")
    settings = {name: dict(doc.get(name, {})) for name in (*BACKEND_SECTIONS, *COMMAND_SECTIONS)}
    concurrency = _concurrency(
        env.get("KEYVAULT_CONCURRENCY") or section.get("concurrency", DEFAULT_CONCURRENCY)
    )
    policy = env.get("KEYVAULT_POLICY") or section.get("policy")
    sealing = doc.get("sealing", {})
    sealing_key = env.get("KEYVAULT_SEALING_KEY") or sealing.get("key")
    trusted = list(sealing.get("trusted", []))
    if env.get("KEYVAULT_TRUSTED_SEALERS"):
        trusted += _split(env["KEYVAULT_TRUSTED_SEALERS"])
    revoked = list(sealing.get("revoked", []))
    return Config(
        source=source,
        paths=paths,
        team=validate_team(team),
        store=store,
        wrappers=wrappers,
        trust_dir=Path(trust).expanduser() if trust else trust_dir_default(env),
        identity_files=tuple(Path(i).expanduser() for i in identities),
        settings=settings,
        concurrency=concurrency,
        give_up_after=_give_up_after(section.get("give_up_after", DEFAULT_THRESHOLD)),
        audit_to_store=bool(section.get("audit_to_store", False)),
        env=dict(env),
        policy=Path(policy).expanduser() if policy else None,
        sealing_key=(
            sealing_key
            if not sealing_key or "://" in sealing_key
            else str(Path(sealing_key).expanduser())
        ),
        trusted_sealers=_fingerprints(source, "trusted", trusted),
        revoked_sealers=_fingerprints(source, "revoked", revoked),
    )


def _resolve_paths(doc: Mapping[str, Any], base: Path) -> dict[str, Any]:
    """The document with every relative path value (keyvault/settings.py: ``path``) made
    absolute against ``base``, the config file's directory; ``~`` is expanded, URIs
    (``awskms:///...``) and absolute paths are kept as given."""

    def resolve(value: Any) -> Any:
        if isinstance(value, list):
            return [resolve(item) for item in value]
        if not isinstance(value, str) or not value or "://" in value:
            return value
        return str(base / Path(value).expanduser())  # an absolute right side wins

    return {
        section: (
            {
                key: resolve(value) if (section, key) in _PATH_KEYS else value
                for key, value in body.items()
            }
            if isinstance(body, dict)
            else body
        )
        for section, body in doc.items()
    }


def render_config(
    *,
    team: str,
    store: str,
    wrappers: list[str],
    identity_file: Path,
    defaults: Paths | None = None,
) -> str:
    """The TOML that ``keyvault init`` writes (values are validated URIs and paths).

    A store or identity file that is ``defaults``' own is left out: it then resolves
    against the XDG directories of whichever machine reads the file, so the config
    still works when copied to a new machine whose home is at another path.
    """
    import json

    default_store = defaults is not None and store == defaults.default_store.as_uri()
    default_identity = defaults is not None and identity_file == defaults.default_identity
    lines = [
        "# keyvault configuration (written by 'keyvault init'; docs/configuration.md)",
        "[keyvault]",
        f"team = {json.dumps(team)}",
        (
            "# store: the default, a file store in this machine's data directory "
            "($XDG_DATA_HOME/keyvault/store)"
            if default_store
            else f"store = {json.dumps(store)}"
        ),
        f"wrappers = [{', '.join(json.dumps(w) for w in wrappers)}]",
        "",
        "[recovery]",
        "# Move this identity offline (a password manager, paper, a safe) once you have",
        "# checked a restore: whoever holds it can open every backup it wraps.",
        (
            "# identity_file: the default, recovery-identity.txt in this machine's config "
            "directory ($XDG_CONFIG_HOME/keyvault)"
            if default_identity
            else f"identity_file = {json.dumps(str(identity_file))}"
        ),
        "",
    ]
    return "\n".join(lines)


def same_init_settings(path: Path, text: str, paths: Paths) -> bool:
    """Whether the config file at ``path`` names the team, store, wrappers and identity
    file that ``text`` (from :func:`render_config`) names, as load_config resolves
    them: an old file with absolute default paths, or a hand-edited one, still matches."""
    from keyvault.errors import KeyvaultError

    try:
        existing = _read_toml(path)
    except KeyvaultError:
        return False
    return _init_settings(existing, path, paths) == _init_settings(toml_loads(text), path, paths)


def _init_settings(doc: Mapping[str, Any], path: Path, paths: Paths) -> tuple[object, ...]:
    doc = _resolve_paths(doc, path.expanduser().absolute().parent)
    section, recovery = doc.get("keyvault", {}), doc.get("recovery", {})
    identity = recovery.get("identity_file", str(paths.default_identity))
    return (
        section.get("team", DEFAULT_TEAM),
        section.get("store", paths.default_store.as_uri()),
        list(section.get("wrappers", [])),
        Path(identity).expanduser(),
    )


def _fingerprints(source: Path | None, what: str, values: list[Any]) -> tuple[str, ...]:
    if not all(isinstance(v, str) for v in values):
        raise InvalidInputError(f"{source}: [sealing] {what} must be a list of fingerprints")
    try:
        return tuple(dict.fromkeys(validate_fingerprint(v) for v in values))
    except UsageError as exc:
        raise InvalidInputError(f"{source}: [sealing] {what}: {exc.message}") from None


def _concurrency(value: object) -> int:
    """How many keys bulk commands handle at once: 1 to 64."""
    try:
        number = int(str(value))
    except ValueError:
        raise UsageError(f"concurrency must be a whole number, not {str(value)[:20]!r}") from None
    if not 1 <= number <= 64:
        raise UsageError(f"concurrency must be between 1 and 64, not {number}")
    return number


def _give_up_after(value: object) -> int:
    """Backend-down failures in a row that end a run's new work: 0 (never) to 1000."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 1000:
        raise UsageError("give_up_after must be a whole number between 0 (never) and 1000")
    return value


def _split(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


def _read_toml(path: Path) -> dict[str, Any]:
    from keyvault.fsutil import read_small_text

    text = read_small_text(
        path, "config file", MAX_CONFIG_SIZE, "run 'keyvault init' or fix --config/KEYVAULT_CONFIG"
    )
    try:
        doc = toml_loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InvalidInputError(f"config file {path}: TOML syntax error: {exc}") from None
    _check_schema(path, doc)
    return doc


def _check_schema(path: Path, doc: Mapping[str, Any]) -> None:
    for section, body in doc.items():
        allowed = _SCHEMA.get(section)
        if allowed is None:
            raise InvalidInputError(
                f"config file {path}: unknown section [{section[:40]}]",
                hint=f"known sections: {', '.join(sorted(_SCHEMA))}",
            )
        if not isinstance(body, dict):
            raise InvalidInputError(f"config file {path}: [{section}] must be a table")
        for key, value in body.items():
            if key not in allowed:
                raise InvalidInputError(
                    f"config file {path}: unknown key {key[:40]!r} in [{section}]",
                    hint=f"known keys: {', '.join(sorted(allowed))}",
                )
            expected = allowed[key]
            bad_bool = isinstance(value, bool) and expected is not bool
            if not isinstance(value, expected) or bad_bool:
                raise InvalidInputError(f"config file {path}: [{section}] {key} has the wrong type")
