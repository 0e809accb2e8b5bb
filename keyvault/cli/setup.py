"""Commands that set keyvault up: init, quickstart."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from keyvault.cli.options import Json
from keyvault.cli.state import CliState

if TYPE_CHECKING:
    from keyvault.ops.setup import InitResult


def register(app: typer.Typer) -> None:
    app.command("init")(init)
    app.command("quickstart")(quickstart)
    app.command("doctor")(doctor)


STORE_WARNING = (
    "The store {path} is on the same disk as your home directory: unless that directory "
    "is synced or copied elsewhere, it is lost with this machine, and a new machine has "
    "nothing to restore from. Keep it elsewhere: removable media or a synced directory "
    "('keyvault --store file:///path/elsewhere init'), or S3 or Vault; see "
    "docs/guides/restore-laptop.md."
)
IDENTITY_WARNING = (
    "The recovery identity {path} can open every backup it wraps. Keep a copy offline "
    "(password manager, paper, safe) and remove it from this machine once you have "
    "checked a restore; keyvault asks for it only to restore."
)


def _init(state: CliState) -> InitResult:
    from keyvault.ops.setup import init as do_init

    config = state.config(missing_ok=True)
    return do_init(
        config,
        store=state.store,
        wrappers=state.wrappers,
        team=state.team,
        config_file=state.config_path,
    )


def _show_init(result: InitResult) -> None:
    from keyvault.cli.output import say, warn

    say(f"{'Wrote' if result.config_created else 'Kept'} config {result.config_file}")
    say(f"Store: {result.store}")
    say(f"Team: {result.team}")
    for uri in result.wrappers:
        say(f"Wrapper: {uri}")
    if result.sealer:
        where = result.sealer_file or "(the configured backend sealing key)"
        say(
            f"{'Created' if result.sealer_created else 'Sealing key'} {where}"
            + (" (0600)" if result.sealer_file else "")
            + ": every backup from this machine is signed with it"
        )
        say(f"Sealer fingerprint: {result.sealer}")
        say(
            "  Restores trust only backups signed by a pinned sealer. This fingerprint is "
            "written into your recovery identity; also note it down: on a new machine, "
            f"'--trust-sealer {result.sealer}' pins it."
        )
    if result.identity_created and result.identity_file is not None:
        say(f"Created recovery identity {result.identity_file} (0600)")
        warn(IDENTITY_WARNING.format(path=result.identity_file))
    warn_if_store_on_this_machine(result.store)


def warn_if_store_on_this_machine(store: str) -> None:
    """A file store on this machine's disk is lost with the machine: say so, and where else."""
    from pathlib import Path
    from urllib.parse import unquote, urlsplit

    from keyvault.cli.output import warn

    if not store.startswith("file:"):
        return
    path = Path(unquote(urlsplit(store).path))
    try:
        same_disk = path.stat().st_dev == Path.home().stat().st_dev
    except OSError:
        return
    if same_disk:
        warn(STORE_WARNING.format(path=path))


def _init_json(result: InitResult) -> dict[str, object]:
    return {
        "config_file": str(result.config_file),
        "store": result.store,
        "wrappers": list(result.wrappers),
        "team": result.team,
        "identity_file": str(result.identity_file) if result.identity_file else None,
        "identity_created": result.identity_created,
        "config_created": result.config_created,
        "sealer": result.sealer,
        "sealer_file": str(result.sealer_file) if result.sealer_file else None,
        "sealer_created": result.sealer_created,
    }


def init(ctx: typer.Context, json_out: Json = False) -> None:
    """Set up the embedded default (local file store + local age recovery identity).

    With the global --store, --wrapper or --team options, use those instead.
    """
    state: CliState = ctx.obj
    result = _init(state)
    if state.json or json_out:
        from keyvault.cli.output import emit_json

        emit_json(_init_json(result))
    else:
        _show_init(result)


RemoveSample = Annotated[
    bool,
    typer.Option(
        "--remove-sample",
        help="Remove the sample an earlier quickstart generated (its "
        "passphrase is public): its keys' envelopes under team 'sample', "
        "every version, then its trust directory, wiped; nothing else.",
    ),
]


def quickstart(
    ctx: typer.Context, json_out: Json = False, remove_sample: RemoveSample = False
) -> None:
    """Back up your trust directory (or a generated sample), restore it into a fresh
    directory and check every byte: the whole job, on the embedded default."""
    state: CliState = ctx.obj
    as_json = state.json or json_out
    if remove_sample:
        _remove_sample(state, as_json)
        return
    config = state.config(missing_ok=True)
    init_result = None
    if not config.store:
        init_result = _init(state)
        state._config = None
        config = state.config()
    from keyvault.cli.keys import outcome_json
    from keyvault.cli.output import counted, emit_json, say, warn
    from keyvault.ops.quickstart import REMOVE_SAMPLE, sample_dir
    from keyvault.ops.quickstart import quickstart as run

    report = run(config, sample_dir(config))
    restored = report.restored
    if as_json:
        emit_json(
            {
                "init": _init_json(init_result) if init_result else None,
                "trust_dir": str(report.trust_dir),
                "sample": report.used_sample,
                "team": report.team,
                "store": config.store,
                "backed_up": [outcome_json(o) for o in report.backed_up],
                "restored": len(restored.entries),
                "verified_identical": report.verified,
            }
        )
        return
    if init_result:
        _show_init(init_result)
    if report.used_sample:
        say(
            f"No keys in {config.trust_dir}: generated a sample trust directory at "
            f"{report.trust_dir} (passphrase 'keyvault-sample'), backed up as team 'sample'."
        )
    say(
        f"Backed up {len(report.backed_up)} key(s) from {report.trust_dir} to {config.store} "
        f"({counted([o.action for o in report.backed_up])})."
    )
    say(
        f"Restored {len(restored.entries)} key(s) into a fresh directory and verified "
        f"{report.verified} byte-identical, 0600 files in 0700 directories; then wiped it."
    )
    say(
        "Next: 'keyvault list', 'keyvault verify --all', and on a new machine "
        "'keyvault restore --all'."
    )
    if report.used_sample:
        warn(
            "these were sample keys; run again once your trust directory has keys. Remove "
            f"the sample trust directory with '{REMOVE_SAMPLE}'"
        )
    elif not init_result:
        warn_if_store_on_this_machine(config.store or "")


def _remove_sample(state: CliState, as_json: bool) -> None:
    from keyvault.cli.output import emit_json, say, warn
    from keyvault.ops.quickstart import SAMPLE_TEAM, remove_sample

    config = state.config(missing_ok=True)
    removal = remove_sample(config)
    if as_json:
        emit_json(
            {
                "removed": str(removal.trust_dir) if removal.trust_dir else None,
                "envelopes_removed": len(removal.envelopes_removed),
                "left_in_store": list(removal.left_in_store),
            }
        )
        return
    if removal.envelopes_removed:
        say(
            f"Deleted the envelopes of the {len(removal.envelopes_removed)} sample key(s), "
            f"every version, from {config.store} (team {SAMPLE_TEAM!r}; nothing else)."
        )
    if removal.left_in_store:
        warn(
            f"store {config.store} cannot delete objects; delete these "
            f"{len(removal.left_in_store)} sample envelope(s), every version, by hand:\n  "
            + "\n  ".join(removal.left_in_store)
        )
    say(
        f"Wiped the sample trust directory {removal.trust_dir}."
        if removal.trust_dir
        else "No sample trust directory to remove."
    )


def doctor(ctx: typer.Context, json_out: Json = False) -> None:
    """Check the setup: config, trust directory, recovery identity, store, each wrapper
    (a test key is wrapped and unwrapped), clock skew. Exit 1 if any check fails."""
    state: CliState = ctx.obj
    from keyvault.cli.output import emit_json, table
    from keyvault.ops.doctor import FAIL, run_checks

    findings = run_checks(state.config(), None)
    if state.json or json_out:
        emit_json(
            {
                "findings": [
                    {"check": f.check, "status": f.status, "detail": f.detail} for f in findings
                ],
                "healthy": all(f.status != FAIL for f in findings),
            }
        )
    else:
        table(
            "keyvault doctor",
            ["CHECK", "STATUS", "DETAIL"],
            [[f.check, f.status, f.detail] for f in findings],
        )
    if any(f.status == FAIL for f in findings):
        raise typer.Exit(1)
