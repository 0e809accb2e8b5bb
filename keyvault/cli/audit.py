"""``keyvault audit show`` and ``keyvault audit verify``: read and check the audit log."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from keyvault.cli.options import Json
from keyvault.cli.state import CliState

if TYPE_CHECKING:
    from keyvault.ops.anchor import AnchorReport

audit_app = typer.Typer(
    name="audit", help="Read and check the hash-chained audit log.", no_args_is_help=True
)


def register(app: typer.Typer) -> None:
    app.add_typer(audit_app)


@audit_app.command("show")
def show(
    ctx: typer.Context,
    action: Annotated[
        str | None,
        typer.Option(
            "--action",
            metavar="ACTION",
            help="Only this action (backup, restore...).",
            show_default=False,
        ),
    ] = None,
    key_id: Annotated[
        str | None,
        typer.Option(
            "--key-id",
            metavar="ID",
            show_default=False,
            help="Only records naming this key (prefix).",
        ),
    ] = None,
    last: Annotated[
        int,
        typer.Option("--last", metavar="N", min=1, help="At most the N newest matching records."),
    ] = 50,
    json_out: Json = False,
) -> None:
    """Print audit records, newest last."""
    state: CliState = ctx.obj
    from keyvault.cli.output import emit_json, say, table

    log = state.session().audit()
    records = [
        r
        for r in log.records()
        if (action is None or r["action"] == action)
        and (key_id is None or any(k["key_id"].startswith(key_id.lower()) for k in r["keys"]))
    ][-last:]
    if state.json or json_out:
        emit_json({"log": str(log.path), "records": records})
    elif not records:
        say(f"No matching records in {log.path}.")
    else:
        table(
            f"Audit log {log.path}",
            ["SEQ", "TIME", "ACTOR", "ACTION", "OUTCOME", "KEYS", "DETAIL"],
            [
                [
                    str(r["seq"]),
                    r["time"],
                    r["actor"] + (f" (--as {r['claimed_as']})" if r["claimed_as"] else ""),
                    r["action"],
                    r["outcome"],
                    str(len(r["keys"])),
                    r["detail"],
                ]
                for r in records
            ],
        )


@audit_app.command("verify")
def verify(
    ctx: typer.Context,
    against_store: Annotated[
        bool,
        typer.Option(
            "--against-store",
            help="Also compare with the record copies in the store "
            "(audit_to_store). Default: when audit_to_store is set.",
        ),
    ] = False,
    json_out: Json = False,
) -> None:
    """Check the hash chain, and the store's signed checkpoints of it: a removed,
    reordered, edited or rewritten record is named (exit 5)."""
    state: CliState = ctx.obj
    from keyvault.audit import compare_with_store, verify_records
    from keyvault.cli.output import emit_json, say, warn
    from keyvault.names import team_prefix
    from keyvault.ops.anchor import check_checkpoints

    config = state.config()
    anchor = None
    with state.session() as session:
        log = session.audit()
        lines = log.lines()
        count, head, problems = verify_records(lines)
        if config.store:
            anchor = check_checkpoints(session, lines)
            problems += anchor.problems
        if against_store or config.audit_to_store:
            names = session.store().list(team_prefix(config.team) + "audit/")
            problems += compare_with_store(list(log.records()), names)
    if state.json or json_out:
        emit_json(
            {
                "log": str(log.path),
                "records": count,
                "head": head,
                "intact": not problems,
                "checkpoints": anchor.to_json(count) if anchor else None,
                "problems": [{"seq": p.seq, "line": p.line, "reason": p.reason} for p in problems],
            }
        )
    elif problems:
        for p in problems:
            where = [f"line {p.line}"] if p.line else []
            where += [f"record {p.seq}"] if p.seq is not None else []
            warn(", ".join(where) + ": " + p.reason if where else p.reason)
    else:
        say(f"{log.path}: {count} records, chain intact (head {head[:16]})")
        say(_anchored(anchor, count))
    if problems:
        raise typer.Exit(5)


def _anchored(anchor: AnchorReport | None, count: int) -> str:
    if anchor is None:
        return "No store is configured: nothing outside this machine anchors the log."
    if not anchor.checkpoints:
        return (
            f"No checkpoint of this log in {anchor.store} yet: a local rewrite would go "
            "unnoticed until the next command anchors it."
        )
    tail = count - anchor.anchored
    many = "checkpoint" if anchor.checkpoints == 1 else "checkpoints"
    newer = "1 newer record is" if tail == 1 else f"{tail} newer records are"
    return (
        f"Anchored in {anchor.store} up to record {anchor.anchored} by {anchor.checkpoints} "
        f"signed {many}" + (f"; {newer} not anchored yet" if tail else "") + "."
    )
