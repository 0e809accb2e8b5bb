"""Commands on keys: scan, backup, list, restore, verify."""

from __future__ import annotations

import contextlib
import itertools
from collections import Counter
from collections.abc import Iterator
from typing import TYPE_CHECKING, Annotated, Any

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

if TYPE_CHECKING:
    from keyvault.ops.backup import BackupOutcome, BackupReport, Reported
    from keyvault.ops.certs import OpenedCert
    from keyvault.ops.listing import Listed
    from keyvault.ops.restore import RestoreEntry, RestoreReport
    from keyvault.trust.certwrite import PlannedCert
    from keyvault.trust.model import ScanResult


def register(app: typer.Typer) -> None:
    app.command("scan")(scan)
    app.command("backup")(backup)
    app.command("list")(list_cmd)
    app.command("versions")(versions)
    app.command("restore")(restore)
    app.command("verify")(verify)


def _state(ctx: typer.Context, json_out: bool) -> CliState:
    state: CliState = ctx.obj
    state.json = state.json or json_out
    return state


def _scan(state: CliState, *, keep_bytes: bool = True) -> ScanResult:
    from keyvault.trust.scan import scan_trust_dir

    return scan_trust_dir(state.config().trust_dir, keep_bytes=keep_bytes)


def _problems_json(result: ScanResult) -> list[dict[str, str]]:
    return [{"path": p.relpath, "code": p.code, "reason": p.reason} for p in result.problems]


def _warn_problems(result: ScanResult, width: int | None = None) -> None:
    """One warning per skipped file; wrapped to ``width`` (``warning: `` included) if given."""
    import textwrap

    from keyvault.cli.output import warn

    for p in result.problems:
        text = f"skipped private/{p.relpath}: {p.reason} [{p.code}]"
        if width is not None:
            text = "\n  ".join(
                textwrap.wrap(text, max(width - len("warning: ") - 2, 20), break_on_hyphens=False)
            )
        warn(text)


def _directory(relpath: str) -> str:
    """Where a key file sits, without its name (the name is the key ID, shown once)."""
    folder = relpath.rpartition("/")[0]
    return f"private/{folder}/" if folder else "private/"


def scan(ctx: typer.Context, json_out: Json = False) -> None:
    """List the key files in the trust directory (no store or wrapper needed).

    Each key ID is shown once, with the directory its file is in. The table fits
    COLUMNS (key IDs are then cut to a 12-digit prefix, which --key-id takes);
    a fact a key file does not say is marked (no role) or (no gun), and is null
    in --json.
    """
    state = _state(ctx, json_out)
    result = _scan(state)
    from keyvault.cli.output import emit_json, say, table

    if state.json:
        emit_json(
            {
                "trust_dir": result.trust_dir,
                "keys": [
                    {
                        "key_id": k.key_id,
                        "role": k.role,
                        "gun": k.gun,
                        "algorithm": k.algorithm,
                        "path": k.relpath,
                        "mode": f"{k.mode:04o}",
                        "layout": k.layout.value,
                        "encrypted": k.encrypted,
                        "size": k.size,
                    }
                    for k in result.keys
                ],
                "problems": _problems_json(result),
            }
        )
    else:
        from keyvault.cli.fit import fit_rows, shorten, terminal_width

        width = terminal_width()
        columns = ["ROLE", "GUN", "KEY ID", "DIRECTORY", "LAYOUT"]
        rows = [[*key_cells(k), _directory(k.relpath), k.layout.value] for k in result.keys]
        title = f"Keys in {result.trust_dir}"
        table(
            shorten(title, width) if width else title,
            columns,
            fit_rows(columns, rows, width, key_id="KEY ID", shrink=("GUN", "DIRECTORY")),
        )
        if not result.keys:
            say("No key files found.")
        _warn_problems(result, width)
    if result.problems:
        raise typer.Exit(2)


def backup(
    ctx: typer.Context,
    gun: Guns = None,
    role: Roles = None,
    key_id: KeyIds = None,
    everything: All = False,
    dry_run: DryRun = False,
    jobs: Jobs = None,
    threshold: Annotated[
        int | None,
        typer.Option(
            "--threshold",
            metavar="M",
            min=2,
            show_default=False,
            help="Dual control: split each data key so that any M of the wrappers are "
            "needed to open it (e.g. --role root --threshold 2 with 3 wrappers). It "
            "sticks: later backups, the daemon's too, keep at least the M of a key's "
            "latest version; a key below M is sealed again, even unchanged.",
        ),
    ] = None,
    no_pins: Annotated[
        bool,
        typer.Option(
            "--no-pins",
            help="Leave out the selected GUNs' trust pins "
            "(tuf/<gun>/metadata/root.json) and the CA files the notary "
            "config pins; they are backed up by default.",
        ),
    ] = False,
    full_check: Annotated[
        bool,
        typer.Option(
            "--full-check",
            help="With [vault] change_marker: list the store's folders even though the "
            "team's change marker has not moved, so a version written outside keyvault "
            "is seen now, not at the next full check.",
        ),
    ] = False,
    json_out: Json = False,
) -> None:
    """Back up key files from the trust directory (all of them unless selected), the
    trust pins of their GUNs and the CA files the notary config pins for them."""
    state = _state(ctx, json_out)
    selection = build_selection(gun, role, key_id, everything)
    state.use_jobs(jobs)
    config = state.config()
    result = _scan(state, keep_bytes=False)  # each key is read again when it is sealed
    from keyvault.cli.output import progress, warn
    from keyvault.ops.backup import (
        BackupReport,
        TeamListing,
        backup_keys,
        select_certs,
        select_keys,
        select_pins,
    )

    keys = select_keys(result.keys, selection, f"trust directory {result.trust_dir}")
    pins, pin_problems = ([], []) if no_pins else select_pins(config.trust_dir, keys, selection)
    certs, cert_problems = ([], []) if no_pins else select_certs(config.env, keys, selection)
    with contextlib.closing(BackupReport()) as report:
        with (
            state.session() as session,
            progress(len(keys) + len(pins) + len(certs), "backing up", not state.json) as bar,
        ):

            def done(outcome: BackupOutcome) -> None:
                bar.advance(outcome.key.key_id[:12])
                report.note(outcome)

            backup_keys(
                session,
                keys,
                team=config.team,
                dry_run=dry_run,
                concurrency=config.concurrency,
                threshold=threshold,
                on_done=done,
                trust_dir=config.trust_dir,
                pins=pins,
                certs=certs,
                listing=TeamListing(full_check=True) if full_check else None,
                keep=False,
            )
        _backup_report(state, result, report, dry_run)
        for problem in pin_problems:  # a pin notary could not use either: said, not fatal
            warn(f"trust pin {problem.path} not backed up: {problem.reason}")
        for problem in cert_problems:  # the config names a file that is not a CA bundle
            warn(f"pinned certificate {problem.path} not backed up: {problem.reason}")
        for o in report.rows if report.warnings else ():
            if o.warning:
                warn(o.warning)
    codes = [*report.exit_codes, *([2] if result.problems or cert_problems else [])]
    raise typer.Exit(worst_exit_code(codes))


def _backup_report(
    state: CliState, result: ScanResult, report: BackupReport, dry_run: bool
) -> None:
    """The backup's table or ``--json`` document, read from its spooled outcomes (streamed:
    memory does not grow with the number of keys); the counts are the report's own."""
    from keyvault.cli.output import emit_json_stream, say, spooled_table, tally, warn
    from keyvault.ops.backup import FAILED, NOT_ATTEMPTED

    config = state.config()
    outcomes = report.rows
    if state.json:
        emit_json_stream(
            {
                "trust_dir": result.trust_dir,
                "store": config.store,
                "team": config.team,
                "dry_run": dry_run,
                "not_attempted": report.actions[NOT_ATTEMPTED],
                "problems": _problems_json(result),
            },
            "keys",
            (outcome_json(o) for o in outcomes),
        )
    else:
        spooled_table(
            f"Backup of {result.trust_dir} to {config.store}" + (" (dry run)" if dry_run else ""),
            ["ACTION", "ROLE", "GUN", "KEY ID", "VERSION"],
            lambda: ([o.action, *key_cells(o.address), o.version or "-"] for o in outcomes),
            len(outcomes),
        )
        failed = ((o.address, o.error) for o in outcomes if o.action == FAILED)
        for line in key_failure_lines(failed if report.actions[FAILED] else ()):
            warn(line)
        if report.first_skipped is not None:
            warn(not_attempted_line(report.skipped, report.first_skipped))
        _warn_problems(result)
        say(tally(len(outcomes), report.actions.elements()))


def outcome_json(o: BackupOutcome | Reported) -> dict[str, Any]:
    """One backed-up key, as backup --json and quickstart --json write it."""
    from keyvault.names import kind_of

    return {
        "kind": kind_of(o.address),
        "key_id": o.address.key_id,
        "role": o.address.role,
        "gun": o.address.gun,
        "object": o.address.object_name,
        "action": o.action,
        "version": o.version,
        "warning": o.warning,
        "error": o.error.to_dict() if o.error else None,
    }


def list_cmd(
    ctx: typer.Context,
    gun: Guns = None,
    role: Roles = None,
    key_id: KeyIds = None,
    long: Annotated[
        bool, typer.Option("--long", "-l", help="Read each envelope for details.")
    ] = False,
    json_out: Json = False,
) -> None:
    """List the keys the store holds for the team, and the trust pins that travel with
    them (KEY ID root.json: a GUN's tuf/<gun>/metadata/root.json)."""
    state = _state(ctx, json_out)
    config = state.config()
    from keyvault.cli.output import emit_json_stream, stream_table
    from keyvault.ops.listing import iter_listed

    failed = False

    def noted(items: Iterator[Listed]) -> Iterator[Listed]:
        nonlocal failed
        for item in items:
            failed = failed or item.error is not None
            yield item

    # Printed as the store lists (page by page): the first keys show while the rest are
    # still being listed, and memory does not grow with the number of keys.
    with state.session() as session:
        listed = noted(
            iter_listed(
                session,
                team=config.team,
                selection=build_selection(gun, role, key_id, False),
                long=long,
            )
        )
        if state.json:
            emit_json_stream(
                {"store": config.store, "team": config.team},
                "keys",
                (_listed_json(item) for item in listed),
            )
        else:
            columns = ["ROLE", "GUN", "KEY ID"] + (
                ["VERSION", "CREATED", "SEALER", "WRAPPERS"] if long else []
            )
            rows = (
                [*key_cells(i.address)]
                + (
                    [
                        i.version or "-",
                        i.created or "-",
                        _sealer_cell(i.sealer),
                        ", ".join(i.wrappers) or i.error or "-",
                    ]
                    if long
                    else []
                )
                for i in listed
            )
            stream_table(
                f"Keys of team {config.team} in {config.store}",
                columns,
                rows,
                empty=f"The store holds no keys for team {config.team}.",
            )
    if failed:
        raise typer.Exit(5)


def _listed_json(item: Listed) -> dict[str, Any]:
    from keyvault.names import kind_of

    return {
        "kind": kind_of(item.address),
        "key_id": item.address.key_id,
        "role": item.address.role,
        "gun": item.address.gun,
        "object": item.address.object_name,
        "version": item.version,
        "created": item.created,
        "source": item.source_name,
        "wrappers": list(item.wrappers),
        "error": item.error,
        "sealer": item.sealer or None,
        "signed": bool(item.sealer) and item.sealer != "unsigned",
        "sequence": item.sequence,
    }


def _sealer_cell(sealer: str) -> str:
    """A fingerprint, shortened, or UNSIGNED in capitals: v1 envelopes must stand out."""
    if sealer == "unsigned":
        return "UNSIGNED (v1)"
    return sealer[:19] + "…" if sealer else "-"


def versions(
    ctx: typer.Context,
    gun: Guns = None,
    role: Roles = None,
    key_id: KeyIds = None,
    everything: All = False,
    json_out: Json = False,
) -> None:
    """List every stored version of the selected keys (restore one with --version NUMBER),
    and of their GUNs' trust pins (KEY ID root.json).

    NUMBER is a version's place in the key's signed chain (1 is its first backup);
    VERSION is the store's own ID for it. 'restore --version' takes either.
    """
    state = _state(ctx, json_out)
    config = state.config()
    from keyvault.cli.output import emit_json, say, table
    from keyvault.ops.listing import chain_of, list_versions

    with state.session() as session:
        found = list_versions(
            session, team=config.team, selection=build_selection(gun, role, key_id, everything)
        )
        chains = [(a, chain_of(session, a, vs)) for a, vs in found]
    if state.json:
        from keyvault.names import kind_of

        emit_json(
            {
                "store": config.store,
                "team": config.team,
                "keys": [
                    {
                        "kind": kind_of(a),
                        "key_id": a.key_id,
                        "role": a.role,
                        "gun": a.gun,
                        "object": a.object_name,
                        "versions": [
                            {
                                "version": c.version.version,
                                "size": c.version.size,
                                "created": c.version.created,
                                "latest": c.version.latest,
                                "sequence": c.sequence,
                                "sealer": c.sealer or None,
                                "chain": c.status,
                            }
                            for c in links
                        ],
                    }
                    for a, links in chains
                ],
            }
        )
        return
    table(
        f"Versions in {config.store}",
        ["ROLE", "GUN", "KEY ID", "VERSION", "CREATED", "LATEST", "NUMBER", "SEALER", "CHAIN"],
        [
            [
                *key_cells(a),
                c.version.version,
                c.version.created or "-",
                "yes" if c.version.latest else "",
                str(c.sequence or "-"),
                _sealer_cell(c.sealer),
                c.status,
            ]
            for a, links in chains
            for c in links
        ],
    )
    if chains:
        say(
            "NUMBER is a version's place in the key's signed chain (1 is its first backup); "
            f"restore one with: keyvault restore --key-id {chains[0][0].key_id[:12]} "
            "--version NUMBER"
        )


def restore(
    ctx: typer.Context,
    gun: Guns = None,
    role: Roles = None,
    key_id: KeyIds = None,
    everything: All = False,
    force: Annotated[
        bool,
        typer.Option("--force", help="Replace files that differ (the old ones are kept aside)."),
    ] = False,
    dry_run: DryRun = False,
    version: Annotated[
        str | None,
        typer.Option(
            "--version",
            metavar="NUMBER",
            help="Restore this version of a single key: its NUMBER in 'keyvault "
            "versions' (1 is its first backup), or the store's ID from the "
            "VERSION column. Trust pins and the notary config's CA files always "
            "come back at their latest version, never with --version.",
            show_default=False,
        ),
    ] = None,
    jobs: Jobs = None,
    no_pins: Annotated[
        bool,
        typer.Option(
            "--no-pins",
            help="Leave out the selected GUNs' trust pins (restored by "
            "default to tuf/<gun>/metadata/root.json; a newer pin on "
            "disk is always kept) and the CA files the notary config "
            "pins (restored to the paths it names).",
        ),
    ] = False,
    json_out: Json = False,
) -> None:
    """Restore keys, and their GUNs' trust pins, from the store into the trust directory,
    all or nothing."""
    state = _state(ctx, json_out)
    state.use_jobs(jobs)
    config = state.config()
    from keyvault.cli.output import progress
    from keyvault.ops.restore import restore_keys

    selection = build_selection(gun, role, key_id, everything)
    selection.require_explicit("restore")
    with state.session() as session, progress(None, "restoring", not state.json) as bar:
        report = restore_keys(
            session,
            team=config.team,
            selection=selection,
            trust_dir=config.trust_dir,
            force=force,
            dry_run=dry_run,
            version=version,
            concurrency=config.concurrency,
            on_total=bar.set_total,
            on_opened=lambda s: bar.advance(s.address.key_id[:12]),
            pins=not no_pins,
            env=config.env,
        )
    try:
        _restore_report(state, report, version, dry_run)
    finally:
        report.close()


def _restore_report(
    state: CliState, report: RestoreReport, version: str | None, dry_run: bool
) -> None:
    """The restore's table or ``--json`` document, read from its spooled entries (streamed:
    memory does not grow with the number of keys), its notes and its exit code."""
    from keyvault.cli.output import emit_json_stream, say, spooled_table, tally
    from keyvault.trust.restore import shown_path

    config = state.config()

    def entries() -> Iterator[RestoreEntry]:
        yield from report.entries
        yield from (_cert_entry(c, p) for c, p in report.certs)

    count = len(report.entries) + len(report.certs)
    actions: Counter[str] = Counter()
    unsigned = 0
    for e in report.entries:  # one pass for every count said below
        actions[e.action.value] += 1
        unsigned += e.key.sealer == "unsigned"
    if state.json:
        emit_json_stream(
            {
                "trust_dir": str(report.trust_dir),
                "store": config.store,
                "team": config.team,
                "dry_run": report.dry_run,
                "kept_aside": list(report.kept_aside),
            },
            "keys",
            (restore_entry_json(e, on_purpose=version is not None) for e in entries()),
        )
    else:
        title = f"Restore into {report.trust_dir}" + (" (dry run)" if dry_run else "")
        spooled_table(
            title,
            ["ACTION", "ROLE", "GUN", "KEY ID", "PATH"],
            lambda: (
                [
                    e.action.value,
                    *key_cells(e.key.address),
                    e.key.path if e.key.path.startswith("/") else shown_path(e.key.path),
                ]
                for e in entries()
            ),
            count,
        )
        for aside in report.kept_aside:  # a pin's under tuf/, a certificate's absolute
            shown = aside if aside.startswith(("tuf/", "/")) else f"private/{aside}"
            say(f"kept the replaced file as {shown}")
        for entry in (
            (e for e in report.entries if e.action.value == "kept") if actions["kept"] else ()
        ):
            say(f"kept {shown_path(entry.key.path)}: {entry.reason}")
        for cert, _ in report.certs:
            if not cert.configured:
                say(
                    f"{cert.address.shown} restored to {cert.write.path}; the notary config "
                    f"names no file for it: add {cert.config_line} to it"
                )
        certs = (p.action.value for _, p in report.certs)
        say(tally(count, itertools.chain(actions.elements(), certs)))
    if report.pins_refused:
        from keyvault.cli.output import warn

        warn(
            f"trust pins not restored: {report.pins_refused} (the store grants them to the "
            "team's members)"
        )
    if unsigned:
        from keyvault.cli.output import warn

        warn(
            f"{unsigned} key(s) came from UNSIGNED (format v1) envelopes, accepted "
            "because of --allow-unsigned; re-seal them: 'keyvault rewrap --all --reseal "
            "--allow-unsigned'"
        )
    if version is not None:
        from keyvault.cli.output import warn

        warn(
            f"restored version {version} on purpose, not the latest; the high-water mark "
            "of this machine still names the newest version it has seen"
        )
    if dry_run and actions["conflict"]:
        raise typer.Exit(7)


def restore_entry_json(e: RestoreEntry, *, on_purpose: bool) -> dict[str, Any]:
    """One restored key, pin or certificate, as restore --json writes it."""
    from keyvault.names import kind_of

    return {
        "kind": kind_of(e.key.address),
        "key_id": e.key.address.key_id,
        "role": e.key.address.role,
        "gun": e.key.address.gun,
        "version": e.key.version,
        "path": e.key.path,
        "sealer": e.key.sealer or None,
        "signed": e.key.sealer not in ("", "unsigned"),
        "sequence": e.key.sequence,
        "on_purpose": on_purpose,
        "action": e.action.value,
        "reason": e.reason,
    }


def _cert_entry(cert: OpenedCert, planned: PlannedCert) -> RestoreEntry:
    """A restored certificate as a row of the restore report (its path is absolute)."""
    from keyvault.ops.restore import Restored, RestoreEntry

    reason = planned.reason or (
        "" if cert.configured else f"the notary config names no file for it; add {cert.config_line}"
    )
    return RestoreEntry(
        Restored(cert.address, cert.version, str(cert.write.path), cert.sealer, cert.sequence),
        planned.action,
        reason,
    )


def verify(
    ctx: typer.Context,
    gun: Guns = None,
    role: Roles = None,
    key_id: KeyIds = None,
    everything: All = False,
    deep: Annotated[
        bool,
        typer.Option(
            "--deep",
            help="Also decrypt each key with its Notary passphrase (from the "
            "environment) and check its key ID.",
        ),
    ] = False,
    json_out: Json = False,
) -> None:
    """Check that backups open and match the key files in the trust directory, and that
    the GUNs' trust pins (tuf/<gun>/metadata/root.json) are signed, chained and current."""
    state = _state(ctx, json_out)
    config = state.config()
    from keyvault.cli.output import emit_json, progress, table, warn
    from keyvault.errors import NotFoundError
    from keyvault.ops.verify import NOT_LOCAL, OK, Verified, verify_backups

    selection = build_selection(gun, role, key_id, everything)
    try:
        local = _scan(state).keys
    except NotFoundError:
        local = ()
    deep_check = None
    if deep:
        from keyvault.cli.state import terminal_prompt
        from keyvault.ops.deep import deep_checker

        deep_check = deep_checker(config.env, config.trust_dir, terminal_prompt())
    with state.session() as session, progress(len(local), "verifying", not state.json) as bar:

        def done(v: Verified) -> None:
            bar.advance(v.address.key_id[:12])

        from keyvault.ops.backup import select_pins

        pins, _ = select_pins(
            config.trust_dir,
            [k for k in local if selection.matches(k.gun, k.role, k.key_id)],
            selection,
        )  # a bad pin on disk: backup reports it
        results = verify_backups(
            session,
            team=config.team,
            selection=selection,
            local_keys=local,
            deep=deep_check,
            on_done=done,
            local_pins=pins,
        )
    codes = [r.error.exit_code for r in results if r.error is not None]
    if state.json:
        from keyvault.names import PinAddress

        emit_json(
            {
                "store": config.store,
                "team": config.team,
                "trust_dir": str(config.trust_dir),
                "deep": deep,
                "keys": [
                    {
                        "kind": "pin" if isinstance(r.address, PinAddress) else "key",
                        "key_id": r.address.key_id,
                        "role": r.address.role,
                        "gun": r.address.gun,
                        "root_version": r.root_version,
                        "status": r.status,
                        "detail": r.detail,
                        "deep": r.deep,
                        "sealer": r.sealer or None,
                        "error": r.error.to_dict() if r.error else None,
                    }
                    for r in results
                ],
            }
        )
    else:
        table(
            f"Verification of team {config.team} in {config.store}",
            ["STATUS", "ROLE", "GUN", "KEY ID", "DETAIL"],
            [
                [
                    r.status,
                    *key_cells(r.address),
                    r.detail
                    + (f"; {r.deep}" if r.deep else "")
                    + ("; UNSIGNED (format v1)" if r.sealer == "unsigned" else ""),
                ]
                for r in results
            ],
        )
        for line in key_failure_lines(
            (r.address, r.error) for r in results if r.status not in (OK, NOT_LOCAL)
        ):
            warn(line)
    raise typer.Exit(worst_exit_code(codes))
