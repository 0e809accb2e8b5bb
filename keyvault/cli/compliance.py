"""Compliance commands: coverage (and, later, drills)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from keyvault.cli.options import Json
from keyvault.cli.state import CliState


def register(app: typer.Typer) -> None:
    app.command("coverage")(coverage)


def coverage(
    ctx: typer.Context,
    gun: Annotated[list[str], typer.Option("--gun", metavar="GUN",
                                           help="GUN whose published keys to check "
                                                "(repeatable).")],
    server: Annotated[str | None, typer.Option(
        "--server", metavar="URL", show_default=False,
        help="Notary server (https://...). Default: the trust directory's TUF cache.")] = None,
    tls_ca: Annotated[str | None, typer.Option(
        "--tls-ca", metavar="FILE", show_default=False,
        help="CA certificate for the notary server.")] = None,
    json_out: Json = False,
) -> None:
    """List every key the trust server relies on: backed up, missing (exit 8), held by the
    server, or stale (in the store but no longer used)."""
    state: CliState = ctx.obj
    config = state.config()
    from keyvault.cli.output import emit_json, table, warn
    from keyvault.errors import COVERAGE_GAP_EXIT
    from keyvault.ops.coverage import MISSING, LocalCache, MetadataSource, NotaryServer
    from keyvault.ops.coverage import coverage as run

    source: MetadataSource = (NotaryServer(server, Path(tls_ca) if tls_ca else None) if server
                              else LocalCache(config.trust_dir))
    with state.session() as session:
        rows = run(session, source, team=config.team, guns=gun)
    missing = [r for r in rows if r.status == MISSING]
    if state.json or json_out:
        emit_json({"team": config.team, "store": config.store, "source": server or str(
            config.trust_dir / "tuf"), "complete": not missing, "keys": [
            {"gun": r.gun, "role": r.role, "key_id": r.key_id, "listed_id": r.listed_id,
             "status": r.status} for r in rows]})
    else:
        table(f"Coverage of {', '.join(gun)} (team {config.team})",
              ["STATUS", "GUN", "ROLE", "KEY ID", "LISTED AS"],
              [[r.status, r.gun, r.role, r.key_id,
                r.listed_id if r.listed_id != r.key_id else "-"] for r in rows])
        for r in missing:
            warn(f"{r.gun}: {r.role} key {r.key_id[:12]} is not backed up")
    if missing:
        raise typer.Exit(COVERAGE_GAP_EXIT)
