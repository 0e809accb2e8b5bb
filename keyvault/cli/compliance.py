"""Compliance commands: coverage and recovery drills."""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from keyvault.cli.options import All, Guns, Json, KeyIds, Roles, build_selection
from keyvault.cli.state import CliState
from keyvault.errors import KeyvaultError
from keyvault.names import role_shown

if TYPE_CHECKING:
    from keyvault.ops.coverage import MetadataSource
    from keyvault.ops.drill import Check, CheckKey, DrillReport
    from keyvault.ops.session import Session


def register(app: typer.Typer) -> None:
    app.command("coverage")(coverage)
    app.command("drill")(drill)


def coverage(
    ctx: typer.Context,
    gun: Annotated[
        list[str],
        typer.Option(
            "--gun", metavar="GUN", help="GUN whose published keys to check (repeatable)."
        ),
    ],
    server: Annotated[
        str | None,
        typer.Option(
            "--server",
            metavar="URL",
            show_default=False,
            help="Trust server (https://...). Default: $DOCKER_CONTENT_TRUST_SERVER, then "
            "~/.notary/config.json, else the trust directory's TUF cache.",
        ),
    ] = None,
    tls_ca: Annotated[
        str | None,
        typer.Option(
            "--tls-ca",
            metavar="FILE",
            show_default=False,
            help="CA certificate for the trust server (default: the notary config's "
            "root_ca, else the system store).",
        ),
    ] = None,
    pinned: Annotated[bool, typer.Option("--pinned", help=PINNED_HELP)] = False,
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

    source, label = _source(server, tls_ca, config.trust_dir, config.env, pinned)
    with state.session() as session:
        if pinned:
            source, label = _pinned(session, config.team)
        rows = run(session, source, team=config.team, guns=gun)
        _save_pins(session, pinned)
    missing = [r for r in rows if r.status == MISSING]
    if state.json or json_out:
        emit_json(
            {
                "team": config.team,
                "store": config.store,
                "source": label,
                "complete": not missing,
                "keys": [
                    {
                        "gun": r.gun,
                        "role": r.role,
                        "key_id": r.key_id,
                        "listed_id": r.listed_id,
                        "status": r.status,
                    }
                    for r in rows
                ],
            }
        )
    else:
        table(
            f"Coverage of {', '.join(gun)} (team {config.team})",
            ["STATUS", "GUN", "ROLE", "KEY ID", "LISTED AS"],
            [
                [
                    r.status,
                    r.gun,
                    role_shown(r.role),
                    r.key_id,
                    r.listed_id if r.listed_id != r.key_id else "-",
                ]
                for r in rows
            ],
        )
        for r in missing:
            warn(f"{r.gun}: {role_shown(r.role)} key {r.key_id[:12]} is not backed up")
    if missing:
        raise typer.Exit(COVERAGE_GAP_EXIT)


PINNED_HELP = (
    "Check against each GUN's trust pin in the store (its root.json as backed "
    "up: signed, never rolled back), offline: no trust server or TUF cache needed. "
    "Root, targets, snapshot and timestamp keys; delegation keys are not in it."
)


def _pinned(session: Session, team: str) -> tuple[MetadataSource, str]:
    from keyvault.names import pin_prefix
    from keyvault.ops.pinned import PinnedSource

    return PinnedSource(session, team), f"trust pins in the store ({pin_prefix(team)})"


def _save_pins(session: Session, pinned: bool) -> None:
    """The high-water marks of the pins read, kept as a restore keeps them."""
    if pinned:
        session.reader().highwater.save()


def _source(
    server: str | None,
    tls_ca: str | None,
    trust_dir: Path,
    env: Mapping[str, str],
    pinned: bool = False,
) -> tuple[MetadataSource, str]:
    """The trust server (--server, DOCKER_CONTENT_TRUST_SERVER, ~/.notary/config.json),
    else the trust directory's TUF cache (--pinned: replaced by the pins in the store)."""
    from keyvault.errors import UsageError
    from keyvault.ops.coverage import LocalCache, NotaryServer
    from keyvault.trustserver.client import TrustClient
    from keyvault.trustserver.endpoint import select_endpoint

    if pinned and server:
        raise UsageError("--pinned and --server are two sources of metadata: give one")
    endpoint = None if pinned else select_endpoint(server, tls_ca, env)
    if endpoint is not None:
        client = TrustClient(endpoint, env)
        return NotaryServer(client), client.base
    return LocalCache(trust_dir), str(trust_dir / "tuf")


def skipped(checks: list[Check]) -> list[str]:
    """What the drill did not check, counted by reason (the report has every key's)."""
    from keyvault.ops.drill import NOT_CHECKED, NOT_PUBLISHED

    unpublished = sorted({c.gun for c in checks if c.signature == NOT_PUBLISHED and c.gun})
    loose = sorted(
        {
            f"{role_shown(c.role)} {c.key_id[:12]}"
            for c in checks
            if c.signature == NOT_PUBLISHED and not c.gun
        }
    )
    lines = []
    if unpublished:
        lines.append(
            f"Not checked: the signatures of {len(unpublished)} GUN(s) with no "
            f"published metadata ({', '.join(unpublished[:5])}"
            f"{', ...' if len(unpublished) > 5 else ''}); --require-published "
            "makes that a failure"
        )
    if loose:
        lines.append(
            f"Not checked: the signatures of {len(loose)} key(s) without a GUN that "
            f"no published metadata lists ({', '.join(loose[:5])}"
            f"{', ...' if len(loose) > 5 else ''}); --require-published makes that "
            "a failure"
        )
    no_id = sorted(
        {role_shown(c.role) for c in checks if c.passed and c.key_id_check == NOT_CHECKED}
    )
    if no_id:
        lines.append(
            "Not checked: key IDs and signatures of the "
            f"{', '.join(no_id)} keys (no passphrase: set NOTARY_<ROLE>_PASSPHRASE)"
        )
    return lines


def drill(
    ctx: typer.Context,
    gun: Guns = None,
    role: Roles = None,
    key_id: KeyIds = None,
    everything: All = False,
    server: Annotated[
        str | None,
        typer.Option(
            "--server",
            metavar="URL",
            show_default=False,
            help="Notary server whose published keys the signatures must match.",
        ),
    ] = None,
    tls_ca: Annotated[
        str | None, typer.Option("--tls-ca", metavar="FILE", show_default=False)
    ] = None,
    no_metadata: Annotated[
        bool,
        typer.Option("--no-metadata", help="Skip the signature check against published metadata."),
    ] = False,
    pinned: Annotated[bool, typer.Option("--pinned", help=PINNED_HELP)] = False,
    require_published: Annotated[
        bool,
        typer.Option(
            "--require-published",
            help="Fail the keys of a GUN that has no published metadata "
            "(by default they are 'not-checked (not published)').",
        ),
    ] = False,
    report_dir: Annotated[
        str | None,
        typer.Option(
            "--report-dir",
            metavar="DIR",
            show_default=False,
            help="Where to write report.json and report.md (default: the state directory).",
        ),
    ] = None,
    rate: Annotated[
        float | None,
        typer.Option(
            "--rate",
            metavar="N",
            show_default=False,
            help="At most N requests a second to each KMS, Transit or HSM wrapper (default: "
            "[drill] rate, else 100).",
        ),
    ] = None,
    resume: Annotated[
        str | None,
        typer.Option(
            "--resume",
            metavar="REPORT",
            show_default=False,
            help="Take over the keys an interrupted drill passed (its report.json or report "
            "directory): they are not unwrapped again.",
        ),
    ] = None,
    json_out: Json = False,
) -> None:
    """Restore the selected keys through each wrapper alone into a throw-away directory,
    check digests, key IDs and signatures (with NOTARY_*_PASSPHRASE), wipe, and report."""
    state: CliState = ctx.obj
    config = state.config()
    from keyvault.cli.output import emit_json, say, warn
    from keyvault.ops.drill import new_report, run_drill
    from keyvault.ops.pacing import configured_pacer
    from keyvault.signals import held

    selection = build_selection(gun, role, key_id, everything)
    wrappers = config.require_wrappers()
    pacer = configured_pacer(config.settings, rate)
    source: MetadataSource | None = None
    label: str | None = None
    if not no_metadata:
        source, label = _source(server, tls_ca, config.trust_dir, config.env, pinned)
    with state.session() as session:
        if pinned and not no_metadata:
            source, label = _pinned(session, config.team)
        report = new_report(
            session, team=config.team, selection=selection, wrappers=wrappers, metadata_label=label
        )
        carried = _resumed(session, report, resume)
        try:
            run_drill(
                session,
                report,
                selection=selection,
                wrappers=wrappers,
                source=source,
                env=config.env,
                require_published=require_published,
                pacer=pacer,
                carried=carried,
            )
        except BaseException as exc:  # a report and a record also for a drill cut short
            _stopped(report, exc)
            with held():
                try:
                    json_path, md_path, digest = _written(session, report, report_dir)
                except KeyvaultError as failure:  # the error that stopped it comes first
                    warn(f"the drill's report could not be written: {failure.message}")
                    raise exc from None
            if isinstance(exc, KeyvaultError):
                exc.audited = True
            warn(
                f"drill {report.status}: {len(report.checks)} checks made; reports: "
                f"{json_path} and {md_path} (sha256 {digest[:16]}, in the audit log)"
            )
            raise
        _save_pins(session, pinned and not no_metadata)
        with held():
            json_path, md_path, digest = _written(session, report, report_dir)
    failed = [c for c in report.checks if c.failed]
    throttled = [c for c in report.checks if c.throttled is not None]
    if state.json or json_out:
        emit_json(
            {
                **report.to_json(),
                "report_json": str(json_path),
                "report_markdown": str(md_path),
                "sha256": digest,
            }
        )
    else:
        say(
            f"Drill {report.status.upper()}: {len(report.checks)} checks "
            f"through {len(report.wrappers)} wrapper(s), {len(failed)} failed."
        )
        for c in failed:
            warn(f"{c.wrapper}: {role_shown(c.role)} key {c.key_id[:12]}: {c.error}")
        for line in [*pace_lines(report), *skipped(report.checks)]:
            say(line)
        say(f"Reports: {json_path} and {md_path} (sha256 {digest[:16]}, in the audit log)")
    not_attempted = [c.not_attempted for c in report.checks if c.not_attempted is not None]
    if not_attempted:
        from keyvault.breaker import BackendDownError
        from keyvault.cli.failures import not_attempted_line

        warn(
            not_attempted_line(
                len(not_attempted),
                BackendDownError(
                    not_attempted[0],
                    hint=f"re-run when the backend is back: keyvault drill ... --resume "
                    f"{json_path} checks them and takes over the ones that passed",
                ),
            )
        )
    if failed:
        from keyvault.cli.options import worst_exit_code

        raise typer.Exit(worst_exit_code([c.error_code or 1 for c in failed]))
    if not_attempted:
        raise typer.Exit(6)
    if throttled:
        warn(
            f"{len(throttled)} key(s) not checked: their key service kept throttling; "
            f"check them with: keyvault drill ... --resume {json_path}"
        )
        raise typer.Exit(6)
    if not report.checks:
        raise typer.Exit(3)


def _resumed(session: Session, report: DrillReport, resume: str | None) -> dict[CheckKey, Check]:
    """The checks --resume takes over (none without it); the report says where from."""
    if resume is None:
        return {}
    from keyvault.ops.drill_resume import load_resume

    earlier = load_resume(session, Path(resume), report)
    report.resumed_from = {"sha256": earlier.sha256, "started": earlier.started}
    return earlier.carried


def pace_lines(report: DrillReport) -> list[str]:
    """The drill's pace and what it took over, for the console."""
    lines = []
    pace = report.pacing
    if pace is not None and pace.requests:
        achieved = f"{pace.achieved_rate:.1f}/s" if pace.achieved_rate is not None else "n/a"
        lines.append(
            f"Key services: {pace.requests} requests, {achieved} achieved "
            f"(--rate {pace.rate:g}/s); {pace.throttled} throttled, "
            f"{pace.backoff_s:.1f} s of backoff"
        )
    carried = sum(c.carried_over for c in report.checks)
    if report.resumed_from is not None:
        lines.append(
            f"Resumed: {carried} check(s) taken over from the drill started "
            f"{report.resumed_from['started']} (not unwrapped again)"
        )
    return lines


def _stopped(report: DrillReport, exc: BaseException) -> None:
    """Note in the report why the drill ended early."""
    from keyvault.signals import Terminated

    if isinstance(exc, KeyboardInterrupt):
        report.stopped("interrupted by SIGINT", signal="SIGINT", code=130)
    elif isinstance(exc, Terminated):
        report.stopped("interrupted by SIGTERM", signal="SIGTERM", code=143)
    elif isinstance(exc, KeyvaultError):
        report.stopped(exc.message, code=exc.exit_code)
    else:
        report.stopped(f"internal error ({type(exc).__name__})", code=1)


def _written(
    session: Session, report: DrillReport, report_dir: str | None
) -> tuple[Path, Path, str]:
    """Write the report (its own directory: two drills in the same second get two) and
    record its SHA-256 in the audit log."""
    from datetime import UTC, datetime

    from keyvault.ops.drill import audit_drill, write_reports

    stamp = f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"
    directory = (
        Path(report_dir) if report_dir else session.config.paths.state_dir / "drills" / stamp
    )
    json_path, md_path, digest = write_reports(report, directory)
    audit_drill(session, report, digest)
    return json_path, md_path, digest
