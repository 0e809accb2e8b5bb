"""``keyvault rewrap``: add, remove or rotate the wrappers of stored envelopes."""

from __future__ import annotations

from typing import Annotated

import typer

from keyvault.cli.failures import key_failure_lines, not_attempted_line
from keyvault.cli.options import (
    All,
    DryRun,
    Guns,
    Jobs,
    Json,
    KeyIds,
    Roles,
    build_selection,
    worst_exit_code,
)
from keyvault.cli.state import CliState
from keyvault.names import key_cells


def register(app: typer.Typer) -> None:
    app.command("rewrap")(rewrap)


def rewrap(
    ctx: typer.Context,
    gun: Guns = None,
    role: Roles = None,
    key_id: KeyIds = None,
    everything: All = False,
    add: Annotated[
        list[str] | None,
        typer.Option(
            "--add",
            metavar="URI",
            show_default=False,
            help="Wrap each DEK for this wrapper too (repeatable).",
        ),
    ] = None,
    remove: Annotated[
        list[str] | None,
        typer.Option(
            "--remove",
            metavar="URI",
            show_default=False,
            help="Drop this wrapper's copy of each DEK (repeatable).",
        ),
    ] = None,
    rotate: Annotated[
        bool,
        typer.Option(
            "--rotate",
            help="Re-encrypt under the newest key version server-side (Transit, "
            "KMS); the DEK is never seen.",
        ),
    ] = False,
    reseal: Annotated[
        bool,
        typer.Option(
            "--reseal",
            help="Sign each envelope again with this machine's sealer, as a new "
            "version (after a sealer rotation); unsigned v1 envelopes (with "
            "--allow-unsigned) are sealed anew as v2.",
        ),
    ] = False,
    dry_run: DryRun = False,
    jobs: Jobs = None,
    json_out: Json = False,
) -> None:
    """Move envelopes (the keys' and their GUNs' trust pins') to other wrappers without
    touching the sealed keys.

    The DEK is unwrapped with the configured wrappers (--wrapper or the config)
    and wrapped again; each envelope is written as a new version. To retire a
    KMS key: --add the new key's URI and --remove the old one.
    """
    state: CliState = ctx.obj
    state.json = state.json or json_out
    state.use_jobs(jobs)
    config = state.config()
    from keyvault.cli.output import emit_json, progress, table, warn
    from keyvault.errors import AccessDeniedError
    from keyvault.ops.rewrap import FAILED, NOT_ATTEMPTED, RewrapOutcome, rewrap_keys

    selection = build_selection(gun, role, key_id, everything)
    refused: list[AccessDeniedError] = []
    with state.session() as session, progress(2, "rewrapping", not state.json) as bar:

        def done(outcome: RewrapOutcome) -> None:
            bar.advance(outcome.address.key_id[:12])

        outcomes = rewrap_keys(
            session,
            team=config.team,
            selection=selection,
            add=add or [],
            remove=remove or [],
            rotate=rotate,
            reseal=reseal,
            dry_run=dry_run,
            concurrency=config.concurrency,
            on_done=done,
            pins_refused=refused,
        )
    unused = [uri for uri in remove or [] if not any(uri in o.before for o in outcomes)]
    codes = [o.error.exit_code for o in outcomes if o.error is not None]
    codes += [e.exit_code for e in refused]  # pins left out are not moved: a failure
    if state.json:
        from keyvault.names import kind_of

        emit_json(
            {
                "store": config.store,
                "team": config.team,
                "dry_run": dry_run,
                "unused_remove": unused,
                "pins_refused": refused[0].message if refused else None,
                "keys": [
                    {
                        "kind": kind_of(o.address),
                        "key_id": o.address.key_id,
                        "role": o.address.role,
                        "gun": o.address.gun,
                        "action": o.action,
                        "version": o.version,
                        "before": list(o.before),
                        "after": list(o.after),
                        "error": o.error.to_dict() if o.error else None,
                    }
                    for o in outcomes
                ],
                "not_attempted": sum(o.action == NOT_ATTEMPTED for o in outcomes),
            }
        )
    else:
        table(
            f"Rewrap of team {config.team} in {config.store}" + (" (dry run)" if dry_run else ""),
            ["ACTION", "ROLE", "GUN", "KEY ID", "WRAPPERS"],
            [[o.action, *key_cells(o.address), ", ".join(o.after or o.before)] for o in outcomes],
        )
        for line in key_failure_lines((o.address, o.error) for o in outcomes if o.action == FAILED):
            warn(line)
        skipped = [o.error for o in outcomes if o.action == NOT_ATTEMPTED and o.error]
        if skipped:
            warn(not_attempted_line(len(skipped), skipped[0]))
    for refusal in refused:
        warn(
            f"trust pins not rewrapped: {refusal.message} (the store grants them to the "
            "team's members; rewrap them as a member)"
        )
    for uri in unused:
        warn(f"--remove {uri}: no selected envelope is wrapped by it")
    raise typer.Exit(worst_exit_code(codes) or (2 if unused else 0))
