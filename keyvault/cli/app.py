"""The ``keyvault`` command: global options, command groups, and the one place errors print.

Command modules parse arguments, call ``keyvault.ops`` and render. Library
code raises KeyvaultError subclasses; :func:`main` maps them to exit codes.
Nothing heavy is imported at start-up: ``keyvault --help`` loads neither
cryptography nor any backend SDK.
"""

from __future__ import annotations

import importlib
import os
import signal
import sys
import warnings
from pathlib import Path
from types import ModuleType
from typing import Annotated, Any

import typer

from keyvault import __version__
from keyvault.cli.state import CliState
from keyvault.signals import Terminated

EXIT_CODE_HELP = """Exit codes: 0 success; 1 local I/O failure or unexpected error; 2 usage
error or invalid input; 3 not found; 4 access denied; 5 integrity failure (tampered or corrupt
backup); 6 backend unavailable; 7 conflict (target exists with different content);
8 coverage gap (a published key is not backed up); 130 interrupted (Ctrl-C); 143 terminated
(SIGTERM)."""

#: The options of the invocation being run, so a failure can be audited with its config.
_INVOCATION: dict[str, CliState] = {}

_APP_SETTINGS: dict[str, Any] = {
    "name": "keyvault",
    "help": "Back up and restore Docker Content Trust (Notary) signing keys, encrypted under "
    "keys you control.",
    "epilog": EXIT_CODE_HELP,
    "no_args_is_help": True,
    "pretty_exceptions_enable": False,
    "pretty_exceptions_show_locals": False,
    "add_completion": True,
    "rich_markup_mode": None,
}
#: The root app; command groups are registered on it lazily (see :func:`_full_app`).
app = typer.Typer(**_APP_SETTINGS)


#: Whether the invocation being run asked for --json (before any ``--``): read by --version,
#: which runs before the other options are parsed.
_JSON_MODE: list[bool] = [False]


def version_info() -> dict[str, Any]:
    """What --version --json prints: keyvault's version and the envelope formats it handles."""
    from keyvault.envelope import UNSIGNED_VERSION, VERSION, VERSIONS

    return {
        "version": __version__,
        "envelope_formats": {
            "reads": list(VERSIONS),
            "writes": VERSION,
            "unsigned": UNSIGNED_VERSION,
        },
    }


def _version(value: bool) -> None:
    if not value:
        return
    info = version_info()
    if _JSON_MODE[0]:
        from keyvault.cli.output import emit_json

        emit_json(info)
        raise typer.Exit()
    formats = info["envelope_formats"]
    reads = " and ".join(
        f"v{v}" + (" (unsigned: only with --allow-unsigned)" if v == formats["unsigned"] else "")
        for v in formats["reads"]
    )
    sys.stdout.write(
        f"keyvault {info['version']}\nenvelope format: writes v{formats['writes']}; reads {reads}\n"
    )
    raise typer.Exit()


@app.callback()
def _global(
    ctx: typer.Context,
    config: Annotated[
        str | None,
        typer.Option(
            "--config",
            envvar="KEYVAULT_CONFIG",
            help="Config file (TOML).",
            metavar="FILE",
            show_default=False,
        ),
    ] = None,
    trust_dir: Annotated[
        str | None,
        typer.Option(
            "--trust-dir",
            metavar="DIR",
            show_default=False,
            help="Trust directory (default: $DOCKER_CONFIG/trust, else trust_dir in "
            "~/.notary/config.json, else ~/.docker/trust).",
        ),
    ] = None,
    json_out: Annotated[
        bool, typer.Option("--json", help="Machine-readable JSON on stdout.")
    ] = False,
    store: Annotated[
        str | None,
        typer.Option(
            "--store",
            metavar="URI",
            show_default=False,
            help="Store URI, e.g. file:///var/lib/keyvault.",
        ),
    ] = None,
    wrapper: Annotated[
        list[str] | None,
        typer.Option(
            "--wrapper",
            metavar="URI",
            show_default=False,
            help="Wrapper URI (repeatable), e.g. an age1... recipient.",
        ),
    ] = None,
    team: Annotated[
        str | None,
        typer.Option("--team", metavar="NAME", show_default=False, help="Team that owns the keys."),
    ] = None,
    acting_as: Annotated[
        str | None,
        typer.Option(
            "--as",
            metavar="PRINCIPAL",
            show_default=False,
            help="Act as this principal for the policy check (tests; file store only). The "
            "audit log records it beside the real user, as claimed_as.",
        ),
    ] = None,
    trust_sealer: Annotated[
        list[str] | None,
        typer.Option(
            "--trust-sealer",
            metavar="FINGERPRINT",
            show_default=False,
            help="Also accept envelopes sealed by this sealer (sha256:..., as 'keyvault init' "
            "printed it) for this run. Repeatable; warns loudly.",
        ),
    ] = None,
    allow_unsigned: Annotated[
        bool,
        typer.Option(
            "--allow-unsigned",
            help="Accept unsigned (format v1) envelopes for this run: "
            "anyone who could write the store could have sealed them.",
        ),
    ] = False,
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_version,
            is_eager=True,
            help="Show the version and the envelope formats it reads and writes, and exit "
            "(with --json: as JSON).",
        ),
    ] = False,
) -> None:
    # Paths are taken as plain strings: keyvault reports missing or unreadable ones itself,
    # with its own exit codes, instead of the option parser refusing them.
    ctx.obj = _INVOCATION["state"] = CliState(
        config_path=Path(config) if config else None,
        trust_dir=Path(trust_dir) if trust_dir else None,
        json=json_out,
        store=store,
        wrappers=list(wrapper or []),
        team=team,
        acting_as=acting_as,
        trust_sealers=list(trust_sealer or []),
        allow_unsigned=allow_unsigned,
    )


#: Each command group's module (keyvault.cli.<name>) and the top-level names it registers.
_GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("setup", ("init", "quickstart", "doctor")),
    ("keys", ("scan", "backup", "list", "versions", "restore", "verify")),
    ("rewrap", ("rewrap",)),
    ("hsm", ("hsm",)),
    ("daemon", ("daemon",)),
    ("audit", ("audit",)),
    ("recovery", ("recovery",)),
    ("compliance", ("coverage", "drill")),
    ("ci", ("exec", "fetch", "wipe")),
    ("policy", ("policy",)),
    ("sealer", ("sealer",)),
)
_REGISTERED: list[str] = []


def _register(target: typer.Typer, group: str) -> None:
    module: ModuleType = importlib.import_module(f"keyvault.cli.{group}")
    module.register(target)


def full_app() -> typer.Typer:
    """The root app with every command group (for --help, completion, the docs)."""
    if not _REGISTERED:
        for group, _ in _GROUPS:
            _register(app, group)
        _REGISTERED.append("all")
    return app


#: Global options that take a value (to find the command name in argv without parsing).
_VALUED_OPTIONS = frozenset(
    {"--config", "--trust-dir", "--store", "--wrapper", "--team", "--as", "--trust-sealer"}
)


def _app_for(args: list[str]) -> typer.Typer:
    """An app holding only the group the command belongs to (typer builds every command's
    parameters on each run: with all of them, `keyvault list` paid for ~30 commands)."""
    name, skip = None, False
    for arg in args:
        if skip:
            skip = False
        elif arg in _VALUED_OPTIONS:
            skip = True
        elif not arg.startswith("-"):
            name = arg
            break
        elif arg in ("--help", "--version") or arg.startswith(
            ("--install-completion", "--show-completion")
        ):
            return full_app()
    group = next((module for module, names in _GROUPS if name in names), None)
    if group is None:
        return full_app()
    lean = typer.Typer(**_APP_SETTINGS)
    lean.callback()(_global)
    _register(lean, group)
    return lean


_Terminated = Terminated  # SIGTERM, raised like Ctrl-C (keyvault.signals)


def _show_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: object = None,
    line: str | None = None,
) -> None:
    """Library warnings (a PIN in a URI, TLS checks off) as one plain line on stderr."""
    from keyvault.redact import redact

    sys.stderr.write(f"keyvault: warning: {redact(str(message))}\n")


def _on_sigterm(signum: int, frame: object) -> None:
    raise _Terminated()


#: Set by keyvault's SIGINT handler: typer turns the KeyboardInterrupt it raises into a
#: plain exit 130 before :func:`_run` sees it, and this is how _run still knows to say so.
_INTERRUPTED: list[bool] = [False]


def _on_sigint(signum: int, frame: object) -> None:
    _INTERRUPTED[0] = True
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; return (and, when run as a program, exit with) the exit code.

    As a program, core dumps are switched off before anything else happens
    (keyvault.coredumps): any command may come to hold key bytes, an identity,
    a PIN or a token. In-process callers (tests) keep their own process as it is.
    """
    if argv is None:  # as a program (in-process callers keep their own warning handling)
        from keyvault.coredumps import disable_core_dumps

        disable_core_dumps()
        warnings.showwarning = _show_warning
    signal.signal(signal.SIGTERM, _on_sigterm)
    # Only over Python's own Ctrl-C handler: a SIGINT ignored (a background job) stays so.
    sigint = signal.getsignal(signal.SIGINT)
    if sigint is signal.default_int_handler:
        signal.signal(signal.SIGINT, _on_sigint)
    try:
        code = _run(argv)
    finally:
        if sigint is signal.default_int_handler:
            signal.signal(signal.SIGINT, sigint)
    if argv is None:
        sys.exit(code)
    return code


def _run(argv: list[str] | None) -> int:
    from keyvault.errors import KeyvaultError

    click_exception = _click_exception_class()

    args = argv if argv is not None else sys.argv[1:]
    # A --json after '--' is COMMAND's (keyvault exec -- tool --json), not keyvault's.
    json_mode = _JSON_MODE[0] = "--json" in (args[: args.index("--")] if "--" in args else args)
    _INVOCATION.clear()
    _INTERRUPTED[0] = False
    try:
        result = _app_for(args)(args=args, prog_name="keyvault", standalone_mode=False)
    except KeyvaultError as exc:
        _audit_failure(argv if argv is not None else sys.argv[1:], exc)
        return _report(exc, json_mode)
    except typer.Exit as exc:
        return exc.exit_code
    except (typer.Abort, KeyboardInterrupt):
        return _interrupted()
    except _Terminated:
        sys.stderr.write("keyvault: terminated; nothing was left half-written\n")
        return 143
    except Exception as exc:  # a bug: say so without echoing values that may be secret
        if isinstance(exc, click_exception):
            exc.show()  # type: ignore[attr-defined]
            return int(exc.exit_code)  # type: ignore[attr-defined]
        if os.environ.get("KEYVAULT_DEBUG"):
            import traceback

            traceback.print_exc()
        sys.stderr.write(
            f"keyvault: internal error ({type(exc).__name__}); details are not "
            "shown because they may hold secrets. Run with KEYVAULT_DEBUG=1 for "
            "a traceback, and report it.\n"
        )
        return 1
    if result == 130 and _INTERRUPTED[0]:  # typer made keyvault's Ctrl-C a bare exit 130
        return _interrupted()
    # Without standalone mode, click returns a typer.Exit's code instead of raising it.
    return result if isinstance(result, int) else 0


def _interrupted() -> int:
    """Ctrl-C (SIGINT): the documented message, exit 130 (SIGTERM's twin prints 143's)."""
    sys.stderr.write("keyvault: interrupted; nothing was left half-written\n")
    return 130


def _report(exc: BaseException, json_mode: bool) -> int:
    from keyvault.cli.output import emit_json
    from keyvault.errors import KeyvaultError

    assert isinstance(exc, KeyvaultError)
    if json_mode:  # error.json: a run a backend ended says how many keys it never started
        emit_json({**exc.to_dict(), "not_attempted": getattr(exc, "not_attempted", None)})
    sys.stderr.write(f"keyvault: error: {exc.message}\n")
    if exc.hint:
        sys.stderr.write(f"keyvault: hint: {exc.hint}\n")
    return exc.exit_code


def _click_exception_class() -> type[Exception]:
    """click's ClickException, whether typer uses click or its own copy of it."""
    for cls in typer.BadParameter.__mro__:
        if cls.__name__ == "ClickException":
            return cls
    return typer.BadParameter


#: Commands whose failures and refusals are recorded in the audit log.
_AUDITED = ("backup", "restore", "rewrap", "verify", "versions", "list")


def _audit_failure(args: list[str], exc: BaseException) -> None:
    """Record a refused or failed key operation; never lets the audit itself hide the error."""
    from keyvault.errors import KeyvaultError

    command = next((a for a in args if a in _AUDITED), None)
    if command is None or not isinstance(exc, KeyvaultError) or exc.audited:
        return
    state = _INVOCATION.pop("state", None)
    if state is None:
        return
    try:
        from keyvault.ops.session import Session

        config = state.config()
        outcome = "refused" if exc.exit_code == 4 else "failed"
        with Session(config, acting_as=state.acting_as) as session:
            session.record(
                command, outcome, team=config.team, detail=f"{exc.kind}: {exc.message}"[:500]
            )
    except Exception:  # the original error is what the user must see
        return
