"""CI jobs: one repository's signing keys, for one command, and nothing left behind.

``keyvault exec`` logs in with what the CI gives (the configured store and
wrappers do that: a Vault JWT/OIDC login, AWS web identity, a token), fetches
only the keys of one GUN, restores them into a fresh private directory on a
RAM-backed file system where there is one, runs the command with
``DOCKER_CONFIG`` and ``KEYVAULT_TRUST_DIR`` pointing at it, and wipes the
directory (key files overwritten with zeros, then removed) on every way out:
success, failure, SIGINT/SIGTERM/SIGHUP (forwarded to the command), and,
after a SIGKILL, at the start of the next run (stale directories are found
by their marker: the owner's PID and its start time, so a reused PID does
not keep a dead run's keys alive). The directories are keyvault/scratch.py's.

``keyvault fetch`` does the same into a named directory for tools that cannot
be wrapped, optionally with an expiry; ``keyvault wipe`` removes such
directories, and refuses any directory that does not carry keyvault's marker.

A root key is never fetched here, whatever any policy says: a selection that
names root is refused before any backend is opened (T4).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from keyvault import fsutil
from keyvault.bounded import json_loads
from keyvault.breaker import stopped_early
from keyvault.errors import (
    AccessDeniedError,
    BackendUnavailableError,
    KeyvaultError,
    NotFoundError,
    UsageError,
)
from keyvault.names import (
    KeyAddress,
    is_delegation_role,
    role_segment,
    role_shown,
    team_prefix,
    validate_gun,
    validate_role,
)
from keyvault.ops.authentic import restore_relpath
from keyvault.ops.parallel import bounded_map
from keyvault.ops.selection import Selection
from keyvault.ops.session import Session, key_ref, local_principal
from keyvault.ops.stored import list_addresses
from keyvault.redact import redact
from keyvault.scratch import WorkDir, read_marker, runtime_base, sweep, wipe_tree
from keyvault.secret_env import credentials_in, is_credential

#: The trust directory, for ``notary -d "$KEYVAULT_TRUST_DIR"`` (notary reads no variable).
TRUST_DIR_ENV = "KEYVAULT_TRUST_DIR"
#: Roles fetched when none is named (plus the GUN's delegation keys). Snapshot is in: a
#: repository made by ``notary init`` keeps its snapshot key on the client, and publishing
#: without it fails ("no snapshot was included in update and server does not hold current
#: snapshot key"); a repository whose snapshot is server-managed (docker's default, or
#: ``notary key rotate GUN snapshot -r``) simply has none to fetch. Timestamp keys are
#: always server-held; root is never fetched.
DEFAULT_ROLES = ("targets", "snapshot")
#: Seconds a command has to exit after a forwarded signal before it is killed.
KILL_GRACE = 10.0
MAX_TTL = 24 * 3600
_WIPE_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
_MAX_REGISTRY_ENTRY = 4096
_TTL = re.compile(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?")
#: Roles whose passphrase Notary reads from NOTARY_<ROLE>_PASSPHRASE; others use DELEGATION.
_NOTARY_PASSPHRASE = {
    "targets": "NOTARY_TARGETS_PASSPHRASE",
    "snapshot": "NOTARY_SNAPSHOT_PASSPHRASE",
    "timestamp": "NOTARY_TIMESTAMP_PASSPHRASE",
}
_DELEGATION_PASSPHRASE = "NOTARY_DELEGATION_PASSPHRASE"  # noqa: S105 - a variable name
_DOCKER_REPOSITORY_PASSPHRASE = "DOCKER_CONTENT_TRUST_REPOSITORY_PASSPHRASE"  # noqa: S105
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")


class CommandNotFoundError(NotFoundError):
    """The command to run does not exist (exit 127, as a shell says)."""

    exit_code = 127


class CommandNotExecutableError(AccessDeniedError):
    """The command to run exists but cannot be executed (exit 126, as a shell says)."""

    exit_code = 126


# -- what is asked for -------------------------------------------------------------------


@dataclass(frozen=True)
class FetchRequest:
    """One GUN and the roles wanted; no roles: its targets, snapshot and delegation keys."""

    gun: str
    roles: tuple[str, ...] = ()

    @classmethod
    def build(cls, gun: str | None, roles: Sequence[str] | None) -> FetchRequest:
        """Validate, and refuse root before anything else happens (exit 4)."""
        if not gun:
            raise UsageError("say which repository: --gun GUN (exactly one, no wildcards)")
        if any(c in gun for c in "*?["):
            raise UsageError(f"--gun {gun[:80]!r}: exec and fetch take one GUN, no wildcards")
        wanted = tuple(dict.fromkeys(validate_role(r) for r in roles or ()))
        if "root" in wanted:
            raise AccessDeniedError(
                "root keys are never fetched by 'keyvault exec' or 'keyvault fetch'",
                hint="a root key is restored by a key owner with 'keyvault restore', "
                "never by a CI job",
            )
        return cls(validate_gun(gun), wanted)


def resolve_addresses(session: Session, team: str, request: FetchRequest) -> list[KeyAddress]:
    """The keys to fetch: listed under the GUN's prefix (and, for a delegation named with
    --role, under the team's GUN-less delegation prefix); never a root key."""
    if request.roles:
        gun_keys = _list_gun(session, team, request.gun, request.roles)
        loose = [
            a
            for role in request.roles
            if is_delegation_role(role)
            for a in _list_delegation(session, team, role)
        ]
        found = sorted(set(gun_keys + loose))
        for role in request.roles:
            if not any(a.role == role for a in found):
                raise NotFoundError(
                    f"no {role} key of {request.gun} in the store for team {team!r}"
                )
    else:
        found = [
            a
            for a in _list_gun(session, team, request.gun, ())
            if a.role in DEFAULT_ROLES or is_delegation_role(a.role)
        ]
        if not any(a.role == "targets" for a in found):
            raise NotFoundError(
                f"no targets key of {request.gun} in the store for team {team!r}",
                hint="back it up first, or name the roles with --role",
            )
    if any(a.team_only for a in found):  # unreachable by construction; kept as a guard
        raise AccessDeniedError(
            "refusing a selection that resolves to a root key or "
            "another key of the team's (no GUN or no role)"
        )
    return found


def _list_gun(session: Session, team: str, gun: str, roles: tuple[str, ...]) -> list[KeyAddress]:
    return sorted(list_addresses(session.store(), team, Selection(guns=(gun,), roles=roles)))


def _list_delegation(session: Session, team: str, role: str) -> list[KeyAddress]:
    prefix = f"{team_prefix(team)}delegations/{role_segment(role)}/"
    found: list[KeyAddress] = []
    for name in session.store().list(prefix):
        with contextlib.suppress(KeyvaultError):
            address = KeyAddress.from_object_name(name)
            if address.team == team and address.role == role and address.gun is None:
                found.append(address)
    return found


# -- fetching into a directory -----------------------------------------------------------


def fetch_keys(
    session: Session, team: str, request: FetchRequest, trust_dir: Path, *, purpose: str
) -> list[KeyAddress]:
    """Fetch, open and restore the request's keys into ``trust_dir``; audited."""
    from keyvault.trust.restore import RestoreItem, apply_restore

    session.wrappers()  # a bad wrapper URI fails before anything is read
    access = session.access()
    access.precheck("fetch", team)  # teams policy: wrong team or a non-CI role, no request yet
    addresses = resolve_addresses(session, team, request)
    access.require("fetch", addresses)  # teams policy, per key, before any envelope is read
    reader = session.reader()
    reader.prefetch(addresses)

    started: list[KeyAddress] = []

    def read_and_open(address: KeyAddress) -> RestoreItem:
        session.breaker.check()  # a backend is down: start no new key
        started.append(address)
        entry = reader.latest(address)  # the sealer and the chain, before any unwrap
        header = entry.envelope.header
        if header.address.team_only:
            raise AccessDeniedError(
                f"{address.object_name} holds a root key or another key "
                "of the team's (no GUN or no role); refused"
            )
        return RestoreItem(
            restore_relpath(header),
            session.open(entry.envelope),
            f"{header.role} key {header.key_id[:12]}",
            header.key_id,
        )

    try:
        with contextlib.closing(
            bounded_map(read_and_open, addresses, session.config.concurrency)
        ) as items:
            apply_restore(trust_dir, items, force=False).planned.close()  # staged as opened
    except BackendUnavailableError as exc:  # all or nothing: say how many never started
        raise stopped_early(exc, len(addresses) - len(started), len(addresses)) from None
    reader.highwater.save()
    roles = sorted({role_shown(a.role) for a in addresses})
    session.record(
        "fetch",
        "ok",
        team=team,
        keys=[key_ref(a) for a in addresses],
        detail=f"{purpose}: gun={request.gun} roles={','.join(roles)} "
        f"principal={describe_principal(session)}",
    )
    return addresses


def record_refusal(
    session: Session, team: str, gun: str | None, roles: Sequence[str], reason: str
) -> None:
    """A refused request, in the local audit log only (no backend is contacted)."""
    with contextlib.suppress(KeyvaultError):
        detail = redact(f"gun={gun} roles={','.join(roles)}: {reason}")[:500]
        session.audit().append("fetch", "refused", team=team, detail=detail)


def describe_principal(session: Session) -> str:
    """Who fetched, as far as keyvault can tell without a secret: never a token."""
    config = session.config
    vault = config.settings.get("vault", {})
    auth = vault.get("auth")
    if auth == "jwt":
        subject = _jwt_subject(
            config.env.get(str(vault.get("jwt_env") or "KEYVAULT_VAULT_JWT"), "")
        )
        who = f"vault-jwt:{vault.get('jwt_role')}"
        return who + (f"/{subject}" if subject else "")
    if auth == "approle":
        return "vault-approle"
    if config.env.get("AWS_ROLE_ARN") and config.env.get("AWS_WEB_IDENTITY_TOKEN_FILE"):
        return _safe(f"aws-web-identity:{config.env['AWS_ROLE_ARN']}")
    return local_principal()


def _jwt_subject(token: str) -> str | None:
    """The ``sub`` claim of an ID token (already verified by Vault at login), for the log."""
    parts = token.split(".")
    if len(parts) != 3 or len(parts[1]) > 8192:
        return None
    try:
        claims = json_loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except ValueError:
        return None
    sub = claims.get("sub") if isinstance(claims, dict) else None
    return _safe(sub) if isinstance(sub, str) else None


def _safe(text: str) -> str:
    return "".join(c if c.isprintable() and c not in " ;" else "?" for c in text)[:160]


# -- fetch directories that outlive the run ---------------------------------------------


def _registry(state_dir: Path) -> Path:
    return state_dir / "ci-fetches"


def remember_fetch(state_dir: Path, work: WorkDir) -> None:
    """Note a fetch directory so ``keyvault wipe --expired`` finds it wherever it is."""
    registry = _registry(state_dir)
    fsutil.make_private_dirs(registry)
    doc = {"path": str(work.path.resolve()), "id": work.marker.ident}
    fsutil.write_file_atomic(
        registry, f"{work.marker.ident}.json", json.dumps(doc).encode(), mode=0o600, exclusive=False
    )


def wipe_expired(state_dir: Path, base: Path) -> list[Path]:
    """Expired fetch directories (registered, or under the runtime base); stale registry
    entries are dropped."""
    wiped = sweep(base, stale=False, expired=True)
    registry = _registry(state_dir)
    if not registry.is_dir():
        return wiped
    for entry in registry.glob("*.json"):
        try:
            doc = json_loads(entry.read_bytes()[:_MAX_REGISTRY_ENTRY])
            path = Path(str(doc["path"]))
            marker = read_marker(path)
        except (OSError, ValueError, KeyError, TypeError, UsageError):
            entry.unlink(missing_ok=True)  # gone, or no longer ours
            continue
        if marker.ident != doc.get("id"):
            entry.unlink(missing_ok=True)
        elif marker.expired():
            wipe_tree(path)
            wiped.append(path)
            entry.unlink(missing_ok=True)
    return wiped


def parse_ttl(text: str) -> float:
    """``15m``, ``1h30m``, ``90s``: at least 1 s, at most 24 h."""
    match = _TTL.fullmatch(text.strip().lower())
    if not text.strip() or match is None or not any(match.groups()):
        raise UsageError(f"--ttl {text[:20]!r}: expected e.g. 15m, 1h, 90s or 1h30m")
    h, m, s = (int(g or 0) for g in match.groups())
    seconds = h * 3600 + m * 60 + s
    if not 1 <= seconds <= MAX_TTL:
        raise UsageError("--ttl must be between 1 second and 24 hours")
    return float(seconds)


# -- running the command -----------------------------------------------------------------


def command_environment(
    env: Mapping[str, str],
    settings: Mapping[str, Mapping[str, object]],
    work: WorkDir,
    *,
    pass_env: Collection[str] = (),
) -> dict[str, str]:
    """keyvault's environment for the command, pointed at the work directory.

    The key passphrases Notary and docker read pass through untouched (never
    on argv, never printed); a ``DOCKER_CONTENT_TRUST_REPOSITORY_PASSPHRASE``
    alone also serves Notary's targets, snapshot and delegation variables.
    Every credential keyvault reads or could use (:mod:`keyvault.secret_env`:
    AWS keys, web identity, profiles and container credentials, ``VAULT_TOKEN``,
    the CI ID token, AppRole IDs, its passphrase, the HSM PIN, where its
    identities and sealer are) and root passphrases are withheld, whatever
    keyvault used this time: with them the command could read every envelope
    keyvault may read, root keys included. ``pass_env`` names the ones the
    command really needs (``--pass-env``).
    """
    child = {
        name: value
        for name, value in env.items()
        if name in pass_env or not is_credential(name, value, extra=_config_credentials(settings))
    }
    repository = env.get(_DOCKER_REPOSITORY_PASSPHRASE)
    if repository:
        for name in (*_NOTARY_PASSPHRASE.values(), _DELEGATION_PASSPHRASE):
            child.setdefault(name, repository)
    child["DOCKER_CONFIG"] = str(work.path)
    child[TRUST_DIR_ENV] = str(work.trust_dir)
    return child


def withheld_variables(
    env: Mapping[str, str],
    settings: Mapping[str, Mapping[str, object]],
    pass_env: Collection[str] = (),
) -> list[str]:
    """The names ``command_environment`` leaves out (said on stderr: nothing silently)."""
    found = credentials_in(env, extra=_config_credentials(settings))
    return [name for name in found if name not in pass_env]


def check_pass_env(names: Sequence[str]) -> tuple[str, ...]:
    """``--pass-env`` values: environment variable names, nothing else (exit 2)."""
    for name in names:
        if not _ENV_NAME.fullmatch(name):
            raise UsageError(
                f"--pass-env {name[:60]!r} is not an environment variable name",
                hint="give a name such as AWS_PROFILE, without '=' or a value",
            )
    return tuple(dict.fromkeys(names))


def _config_credentials(settings: Mapping[str, Mapping[str, object]]) -> frozenset[str]:
    """Credential variables the config names: the one a CI ID token is read from."""
    jwt_env = settings.get("vault", {}).get("jwt_env")
    return frozenset({str(jwt_env)} if jwt_env else ())


def link_docker_config(work: WorkDir, env: Mapping[str, str]) -> None:
    """Let docker in the command keep its registry logins: link the usual config.json."""
    home = env.get("HOME")
    source = (
        Path(env["DOCKER_CONFIG"])
        if env.get("DOCKER_CONFIG")
        else (Path(home) / ".docker" if home else None)
    )
    if source is not None and (source / "config.json").is_file():
        with contextlib.suppress(OSError):
            (work.path / "config.json").symlink_to((source / "config.json").resolve())


def missing_passphrases(env: Mapping[str, str], roles: Sequence[str | None]) -> list[str]:
    """Passphrase variables Notary will look for and not find (names only)."""
    if env.get(_DOCKER_REPOSITORY_PASSPHRASE):
        return []
    wanted = {_NOTARY_PASSPHRASE.get(r or "", _DELEGATION_PASSPHRASE) for r in roles}
    return sorted(name for name in wanted if not env.get(name))


def run_command(argv: Sequence[str], env: Mapping[str, str], *, grace: float = KILL_GRACE) -> int:
    """Run ``argv`` (no shell); its exit code, or 128+N if it or keyvault got signal N.

    SIGINT, SIGTERM and SIGHUP sent to keyvault are forwarded to the command;
    a command still running ``grace`` seconds later is killed.
    """
    if not argv:
        raise UsageError("say which command to run after '--'")
    received: list[int] = []
    child: list[subprocess.Popen[bytes]] = []

    def forward(signum: int, frame: object) -> None:
        received.append(signum)
        if child:
            with contextlib.suppress(ProcessLookupError):
                child[0].send_signal(signum)

    previous = {s: signal.signal(s, forward) for s in _WIPE_SIGNALS}
    try:
        if received:
            return 128 + received[0]
        try:
            child.append(subprocess.Popen(list(argv), env=dict(env), close_fds=True))
        except FileNotFoundError:
            raise CommandNotFoundError(f"command not found: {argv[0][:200]!r}") from None
        except PermissionError:
            raise CommandNotExecutableError(f"cannot execute {argv[0][:200]!r}") from None
        except OSError as exc:
            raise CommandNotExecutableError(
                f"cannot execute {argv[0][:200]!r}: {os.strerror(exc.errno or 0)}"
            ) from None
        proc = child[0]
        for sig in received:  # arrived while the command was being started
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(sig)
        first_signal: float | None = None
        while True:
            try:
                code = proc.wait(timeout=0.1)
                break
            except subprocess.TimeoutExpired:
                if received and first_signal is None:
                    first_signal = time.monotonic()
                if first_signal is not None and time.monotonic() - first_signal > grace:
                    proc.kill()
        if received:
            return 128 + received[0]
        return 128 - code if code < 0 else code
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@dataclass(frozen=True)
class Prepared:
    """What the CLI shows before the command starts (no secret)."""

    work: WorkDir
    keys: tuple[KeyAddress, ...]
    missing: tuple[str, ...]
    swept: tuple[Path, ...]
    #: Credential variables set here and not passed to the command (names only).
    withheld: tuple[str, ...] = ()
    #: ``--pass-env`` names that are not set, so nothing was passed for them.
    unset: tuple[str, ...] = ()


def exec_with_keys(
    session: Session,
    team: str,
    request: FetchRequest,
    argv: Sequence[str],
    *,
    on_ready: Callable[[Prepared], None] | None = None,
    pass_env: Sequence[str] = (),
) -> int:
    """Fetch into a fresh private directory, run ``argv``, wipe on every way out."""
    if not argv:
        raise UsageError("say which command to run after '--'")
    config = session.config
    base = runtime_base(config.env, config.paths.state_dir)
    swept = sweep(base)
    work = WorkDir.create_in(base, "exec")
    try:
        keys = fetch_keys(session, team, request, work.trust_dir, purpose=f"exec {argv[0][:60]}")
        session.close()  # no backend connection stays open while the command runs
        link_docker_config(work, config.env)
        env = command_environment(config.env, config.settings, work, pass_env=pass_env)
        if on_ready:
            on_ready(
                Prepared(
                    work,
                    tuple(keys),
                    tuple(missing_passphrases(env, [k.role for k in keys])),
                    tuple(swept),
                    tuple(withheld_variables(config.env, config.settings, pass_env)),
                    tuple(n for n in pass_env if n not in config.env),
                )
            )
        return run_command(argv, env)
    finally:
        work.wipe()


@dataclass(frozen=True)
class FetchResult:
    work: WorkDir
    keys: tuple[KeyAddress, ...]
    missing: tuple[str, ...]


def fetch_to_directory(
    session: Session, team: str, request: FetchRequest, into: Path, ttl: float | None
) -> FetchResult:
    """``keyvault fetch``: the same keys into ``into`` (made 0700), left for the caller."""
    config = session.config
    work = WorkDir.create_at(into, ttl)
    try:
        keys = fetch_keys(session, team, request, work.trust_dir, purpose=f"fetch into {into}")
        remember_fetch(config.paths.state_dir, work)
    except BaseException:
        work.wipe()
        raise
    return FetchResult(
        work, tuple(keys), tuple(missing_passphrases(config.env, [k.role for k in keys]))
    )
