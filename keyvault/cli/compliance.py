"""Compliance commands: coverage and recovery drills."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from keyvault.cli.options import All, Guns, Json, KeyIds, Roles, build_selection
from keyvault.cli.state import CliState
from keyvault.names import role_shown

if TYPE_CHECKING:
    from keyvault.ops.coverage import MetadataSource
    from keyvault.ops.drill import Check


def register(app: typer.Typer) -> None:
    app.command("coverage")(coverage)
    app.command("drill")(drill)


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
    from keyvault.ops.coverage import MISSING
    from keyvault.ops.coverage import coverage as run

    source, label = _source(server, tls_ca, config.trust_dir)
    with state.session() as session:
        rows = run(session, source, team=config.team, guns=gun)
    missing = [r for r in rows if r.status == MISSING]
    if state.json or json_out:
        emit_json({"team": config.team, "store": config.store, "source": label,
                   "complete": not missing, "keys": [
            {"gun": r.gun, "role": r.role, "key_id": r.key_id, "listed_id": r.listed_id,
             "status": r.status} for r in rows]})
    else:
        table(f"Coverage of {', '.join(gun)} (team {config.team})",
              ["STATUS", "GUN", "ROLE", "KEY ID", "LISTED AS"],
              [[r.status, r.gun, role_shown(r.role), r.key_id,
                r.listed_id if r.listed_id != r.key_id else "-"] for r in rows])
        for r in missing:
            warn(f"{r.gun}: {role_shown(r.role)} key {r.key_id[:12]} is not backed up")
    if missing:
        raise typer.Exit(COVERAGE_GAP_EXIT)


def _source(server: str | None, tls_ca: str | None, trust_dir: Path
            ) -> tuple[MetadataSource, str]:
    from keyvault.ops.coverage import LocalCache, NotaryServer

    if server:
        return NotaryServer(server, Path(tls_ca) if tls_ca else None), server
    return LocalCache(trust_dir), str(trust_dir / "tuf")


def skipped(checks: list[Check]) -> list[str]:
    """What the drill did not check, counted by reason (the report has every key's)."""
    from keyvault.ops.drill import NOT_CHECKED, NOT_PUBLISHED

    unpublished = sorted({c.gun or "-" for c in checks if c.signature == NOT_PUBLISHED})
    lines = []
    if unpublished:
        lines.append(f"Not checked: the signatures of {len(unpublished)} GUN(s) with no "
                     f"published metadata ({', '.join(unpublished[:5])}"
                     f"{', ...' if len(unpublished) > 5 else ''}); --require-published "
                     "makes that a failure")
    no_id = sorted({role_shown(c.role) for c in checks
                    if c.passed and c.key_id_check == NOT_CHECKED})
    if no_id:
        lines.append("Not checked: key IDs and signatures of the "
                     f"{', '.join(no_id)} keys (no passphrase: set NOTARY_<ROLE>_PASSPHRASE)")
    return lines


def drill(
    ctx: typer.Context,
    gun: Guns = None,
    role: Roles = None,
    key_id: KeyIds = None,
    everything: All = False,
    server: Annotated[str | None, typer.Option(
        "--server", metavar="URL", show_default=False,
        help="Notary server whose published keys the signatures must match.")] = None,
    tls_ca: Annotated[str | None, typer.Option("--tls-ca", metavar="FILE",
                                               show_default=False)] = None,
    no_metadata: Annotated[bool, typer.Option(
        "--no-metadata", help="Skip the signature check against published metadata.")] = False,
    require_published: Annotated[bool, typer.Option(
        "--require-published", help="Fail the keys of a GUN that has no published metadata "
                                    "(by default they are 'not-checked (not published)').")
    ] = False,
    report_dir: Annotated[str | None, typer.Option(
        "--report-dir", metavar="DIR", show_default=False,
        help="Where to write report.json and report.md (default: the state directory).")
    ] = None,
    json_out: Json = False,
) -> None:
    """Restore the selected keys through each wrapper alone into a throw-away directory,
    check digests, key IDs and signatures (with NOTARY_*_PASSPHRASE), wipe, and report."""
    state: CliState = ctx.obj
    config = state.config()
    from datetime import UTC, datetime

    from keyvault.cli.output import emit_json, say, warn
    from keyvault.ops.drill import audit_drill, run_drill, write_reports

    selection = build_selection(gun, role, key_id, everything)
    source: MetadataSource | None = None
    label: str | None = None
    if not no_metadata:
        source, label = _source(server, tls_ca, config.trust_dir)
    with state.session() as session:
        report = run_drill(session, team=config.team, selection=selection,
                           wrappers=config.require_wrappers(), source=source,
                           env=config.env, metadata_label=label,
                           require_published=require_published)
        # A random tail: two drills in the same second each get their own report.
        stamp = f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"
        directory = Path(report_dir) if report_dir else config.paths.state_dir / "drills" / stamp
        json_path, md_path, digest = write_reports(report, directory)
        audit_drill(session, report, digest)
    failed = [c for c in report.checks if not c.passed]
    if state.json or json_out:
        emit_json({**report.to_json(), "report_json": str(json_path),
                   "report_markdown": str(md_path), "sha256": digest})
    else:
        say(f"Drill {'PASSED' if report.passed else 'FAILED'}: {len(report.checks)} checks "
            f"through {len(report.wrappers)} wrapper(s), {len(failed)} failed.")
        for c in failed:
            warn(f"{c.wrapper}: {role_shown(c.role)} key {c.key_id[:12]}: {c.error}")
        for line in skipped(report.checks):
            say(line)
        say(f"Reports: {json_path} and {md_path} (sha256 {digest[:16]}, in the audit log)")
    if failed:
        from keyvault.cli.options import worst_exit_code

        raise typer.Exit(worst_exit_code([c.error_code or 1 for c in failed]))
    if not report.checks:
        raise typer.Exit(3)
