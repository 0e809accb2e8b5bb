"""``keyvault exec`` / ``fetch`` / ``wipe``: a CI job's keys, for one command, then gone."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from keyvault.cli.options import Json
from keyvault.cli.state import CliState

if TYPE_CHECKING:
    from keyvault.ops.ci import FetchRequest

Gun = Annotated[
    str | None,
    typer.Option(
        "--gun", metavar="GUN", show_default=False, help="The one repository (GUN) to sign."
    ),
]
Roles = Annotated[
    list[str] | None,
    typer.Option(
        "--role",
        metavar="ROLE",
        show_default=False,
        help="Role to fetch (repeatable): targets, snapshot, targets/<name>... "
        "Default: the GUN's targets, snapshot and delegation keys. Never root.",
    ),
]


def register(app: typer.Typer) -> None:
    app.command("exec", context_settings={"allow_interspersed_args": False})(exec_command)
    app.command("fetch")(fetch)
    app.command("wipe")(wipe)


def _request(state: CliState, gun: str | None, roles: list[str] | None) -> FetchRequest:
    """The validated request; a root request is refused (and logged locally) right here."""
    from keyvault.errors import AccessDeniedError
    from keyvault.ops.ci import FetchRequest, record_refusal

    try:
        return FetchRequest.build(gun, roles)
    except AccessDeniedError as exc:
        record_refusal(state.session(), state.config().team, gun, roles or [], exc.message)
        raise


def exec_command(
    ctx: typer.Context,
    command: Annotated[
        list[str] | None,
        typer.Argument(
            metavar="-- COMMAND [ARGS]...",
            show_default=False,
            help="The command to run with the keys (an argument list; no shell).",
        ),
    ] = None,
    gun: Gun = None,
    role: Roles = None,
    pass_env: Annotated[
        list[str] | None,
        typer.Option(
            "--pass-env",
            metavar="NAME",
            show_default=False,
            help="Also give COMMAND this credential variable of keyvault's (repeatable), e.g. "
            "AWS_PROFILE for a job that pushes with the same AWS identity. Without it, "
            "keyvault's credentials (AWS_*, VAULT_TOKEN, the CI ID token, PINs...) are "
            "withheld, and their names are listed on stderr.",
        ),
    ] = None,
) -> None:
    """Fetch one GUN's signing keys into a private throw-away trust directory, run COMMAND
    with DOCKER_CONFIG and KEYVAULT_TRUST_DIR pointing at it, and wipe it on every exit.

    Use 'notary -d "$KEYVAULT_TRUST_DIR" ...' (notary reads no variable for its trust
    directory); docker reads DOCKER_CONFIG. The exit code is COMMAND's (128+N after
    signal N). Passphrases come from the environment: NOTARY_TARGETS_PASSPHRASE and
    NOTARY_SNAPSHOT_PASSPHRASE (the snapshot key is fetched too), NOTARY_DELEGATION_PASSPHRASE,
    or DOCKER_CONTENT_TRUST_REPOSITORY_PASSPHRASE.
    keyvault's own credentials are not passed to COMMAND unless named with --pass-env.
    The global --json is refused (exit 2): exec's output is COMMAND's own.
    """
    state: CliState = ctx.obj
    from keyvault.ops.ci import Prepared, check_pass_env, exec_with_keys

    if state.json:
        from keyvault.errors import UsageError

        raise UsageError(
            "exec writes no JSON: its output is COMMAND's own, and JSON would be mixed into it",
            hint="drop --json; for the fetched keys as JSON use 'keyvault --json "
            "fetch --gun GUN --into DIR', then 'keyvault wipe DIR'",
        )

    passed = check_pass_env(pass_env or [])
    request = _request(state, gun, role)
    argv = list(command or [])
    if argv and argv[0] == "--":
        argv = argv[1:]

    def ready(prepared: Prepared) -> None:
        for path in prepared.swept:
            sys.stderr.write(f"keyvault: wiped the directory of an earlier run that died: {path}\n")
        sys.stderr.write(
            f"keyvault: {len(prepared.keys)} key(s) of {request.gun} in "
            f"{prepared.work.trust_dir}; running {argv[0]}\n"
        )
        for name in prepared.missing:
            sys.stderr.write(
                f"keyvault: warning: {name} is not set: notary will not find "
                "the key without it in a non-interactive job\n"
            )
        if prepared.withheld:
            sys.stderr.write(
                f"keyvault: not passed to {argv[0]} (keyvault's credentials): "
                f"{', '.join(prepared.withheld)}; name one with --pass-env NAME "
                "if the command needs it\n"
            )
        for name in prepared.unset:
            sys.stderr.write(f"keyvault: warning: --pass-env {name}: not set, nothing passed\n")
        sys.stderr.flush()

    config = state.config()
    with state.session() as session:
        code = exec_with_keys(session, config.team, request, argv, on_ready=ready, pass_env=passed)
    raise typer.Exit(code)


def fetch(
    ctx: typer.Context,
    into: Annotated[
        str,
        typer.Option(
            "--into",
            metavar="DIR",
            help="New directory for the keys (made 0700); its trust/ "
            "is the trust directory, DIR itself a DOCKER_CONFIG.",
        ),
    ],
    gun: Gun = None,
    role: Roles = None,
    ttl: Annotated[
        str | None,
        typer.Option(
            "--ttl",
            metavar="DURATION",
            show_default=False,
            help="Expiry recorded in the directory (e.g. 15m); 'keyvault wipe --expired' "
            "removes it after that.",
        ),
    ] = None,
    json_out: Json = False,
) -> None:
    """Fetch one GUN's signing keys into DIR, for tools that cannot be wrapped by
    'keyvault exec'. Run 'keyvault wipe DIR' when done."""
    state: CliState = ctx.obj
    from keyvault.cli.output import emit_json, say
    from keyvault.ops.ci import fetch_to_directory, parse_ttl
    from keyvault.timefmt import iso_utc_or_none

    request = _request(state, gun, role)
    seconds = parse_ttl(ttl) if ttl else None
    config = state.config()
    with state.session() as session:
        result = fetch_to_directory(session, config.team, request, Path(into), seconds)
    work = result.work
    if state.json or json_out:
        emit_json(
            {
                "trust_dir": str(work.trust_dir),
                "docker_config": str(work.path),
                "expires": iso_utc_or_none(work.marker.expires),
                "missing_passphrases": list(result.missing),
                "keys": [{"key_id": k.key_id, "role": k.role, "gun": k.gun} for k in result.keys],
            }
        )
    else:
        say(str(work.trust_dir))
    sys.stderr.write(
        f"keyvault: {len(result.keys)} key(s) of {request.gun} fetched; use "
        f"'notary -d {work.trust_dir}' or DOCKER_CONFIG={work.path}\n"
    )
    for name in result.missing:
        sys.stderr.write(
            f"keyvault: warning: {name} is not set: notary will not find the key "
            "without it in a non-interactive job\n"
        )
    when = " (or 'keyvault wipe --expired' once it expires)" if seconds else ""
    sys.stderr.write(f"keyvault: when done, run 'keyvault wipe {work.path}'{when}\n")


def wipe(
    ctx: typer.Context,
    directory: Annotated[
        str | None,
        typer.Argument(
            metavar="[DIR]",
            show_default=False,
            help="A directory made by 'keyvault fetch', 'exec', 'drill' or 'quickstart'.",
        ),
    ] = None,
    expired: Annotated[
        bool, typer.Option("--expired", help="Wipe every fetch directory whose --ttl has passed.")
    ] = False,
    stale: Annotated[
        bool,
        typer.Option(
            "--stale",
            help="Wipe every exec, drill or quickstart directory whose keyvault process has died.",
        ),
    ] = False,
    json_out: Json = False,
) -> None:
    """Overwrite the key files with zeros and remove the directory. Only directories that
    carry keyvault's marker are touched; anything else is refused (exit 2). A DIR that
    does not exist is nothing to wipe (exit 0), so an always-run cleanup step passes."""
    state: CliState = ctx.obj
    from keyvault.cli.output import emit_json, say
    from keyvault.errors import UsageError
    from keyvault.ops.ci import wipe_expired
    from keyvault.scratch import find_workdir, runtime_base, sweep, wipe_tree

    if sum((directory is not None, expired, stale)) != 1:
        raise UsageError("say what to wipe: DIR, --expired or --stale (one of them)")
    config = state.config()
    wiped: list[Path] = []
    if directory is not None:
        if not os.path.lexists(directory):
            pass  # nothing to wipe (a failed fetch made nothing): an always-run cleanup passes
        else:
            target = find_workdir(Path(directory))
            wipe_tree(target)
            wiped.append(target)
    else:
        base = runtime_base(config.env, config.paths.state_dir)
        wiped = wipe_expired(config.paths.state_dir, base) if expired else sweep(base)
    if state.json or json_out:
        emit_json({"wiped": [str(p) for p in wiped]})
        return
    for path in wiped:
        say(f"wiped {path}")
    if not wiped:
        say("nothing to wipe")
