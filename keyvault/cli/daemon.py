"""``keyvault daemon``: back up every new key the moment it is written; ``daemon status``.

Nothing heavy is imported here: watchfiles, prometheus-client and the backup
code load only when the daemon runs (``keyvault --help`` stays fast).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from keyvault.cli.options import Json
from keyvault.cli.state import CliState

if TYPE_CHECKING:
    from keyvault.config import Config

DEFAULT_LISTEN = "127.0.0.1:9498"  # keyvault.daemon.health.DEFAULT_LISTEN (not imported: lazy)

TrustDirs = Annotated[
    list[str] | None,
    typer.Option(
        "--trust-dir",
        metavar="DIR",
        show_default=False,
        help="Trust directory to watch (repeatable; default: the global --trust-dir, else the "
        "config's, else $DOCKER_CONFIG/trust, the notary config's trust_dir or "
        "~/.docker/trust).",
    ),
]
Listen = Annotated[
    str,
    typer.Option(
        "--listen",
        metavar="HOST:PORT",
        help="Loopback address of /healthz and /metrics (port 0: any free port).",
    ),
]
ReconcileEvery = Annotated[
    float,
    typer.Option(
        "--reconcile-every",
        metavar="SECONDS",
        min=1.0,
        help="Compare the trust directories with the store this often (and at start).",
    ),
]
Debounce = Annotated[
    int,
    typer.Option(
        "--debounce",
        metavar="MS",
        min=0,
        max=60_000,
        help="Wait until a key file has been quiet this long before reading it.",
    ),
]
RetryMax = Annotated[
    float,
    typer.Option(
        "--retry-max",
        metavar="SECONDS",
        min=0.1,
        help="Longest wait between two attempts while a backend is down (backoff cap).",
    ),
]
StallAfter = Annotated[
    float,
    typer.Option(
        "--stall-after",
        metavar="SECONDS",
        min=1.0,
        help="Report 'stalled' (/healthz 503, 'daemon status' exit 1) once the loop has not "
        "turned for this long; an idle loop turns twice a second.",
    ),
]

daemon_app = typer.Typer(
    help="Watch trust directories and back up every new or changed key at once. "
    "'keyvault daemon' runs it in the foreground (JSON logs on stderr; SIGTERM stops it "
    "after the backup in flight, exit 0; exit 7 if another daemon runs on the same "
    "state directory); 'keyvault daemon status' reads its /healthz and /metrics (exit 6 "
    "if none runs).",
    invoke_without_command=True,
    no_args_is_help=False,
    rich_markup_mode=None,
)


def register(app: typer.Typer) -> None:
    """Add this module's commands to the app."""
    app.add_typer(daemon_app, name="daemon")


@daemon_app.callback()
def daemon(
    ctx: typer.Context,
    trust_dir: TrustDirs = None,
    listen: Listen = DEFAULT_LISTEN,
    reconcile_every: ReconcileEvery = 600.0,
    debounce: Debounce = 250,
    retry_max: RetryMax = 300.0,
    stall_after: StallAfter = 120.0,
) -> None:
    """Run the backup daemon in the foreground (JSON logs on stderr; stop with SIGTERM).

    Key files are backed up through the configured store and wrappers as soon
    as they are complete; pending backups are journaled in the state
    directory and retried with backoff while a backend is down. Exit codes: 0
    after SIGTERM/SIGINT, 7 if another daemon runs on the same state directory.
    """
    if ctx.invoked_subcommand is not None:
        return
    _run(ctx.obj, trust_dir, listen, reconcile_every, debounce, retry_max, stall_after)


@daemon_app.command("run")
def run(
    ctx: typer.Context,
    trust_dir: TrustDirs = None,
    listen: Listen = DEFAULT_LISTEN,
    reconcile_every: ReconcileEvery = 600.0,
    debounce: Debounce = 250,
    retry_max: RetryMax = 300.0,
    stall_after: StallAfter = 120.0,
) -> None:
    """Run the backup daemon (the same as 'keyvault daemon')."""
    _run(ctx.find_root().obj, trust_dir, listen, reconcile_every, debounce, retry_max, stall_after)


def _run(
    state: CliState,
    trust_dirs: list[str] | None,
    listen: str,
    reconcile_every: float,
    debounce_ms: int,
    retry_max: float,
    stall_after: float,
) -> None:
    from keyvault.daemon.service import Daemon, DaemonOptions

    config = state.config()
    dirs = tuple(Path(d).expanduser() for d in trust_dirs) if trust_dirs else (config.trust_dir,)
    options = DaemonOptions(
        trust_dirs=dirs,
        listen=listen,
        reconcile_every=reconcile_every,
        debounce=debounce_ms / 1000.0,
        retry_base=min(1.0, retry_max),
        retry_max=retry_max,
        stall_after=stall_after,
    )
    raise typer.Exit(Daemon(config, options).run())


@daemon_app.command("status")
def status(
    ctx: typer.Context,
    listen: Annotated[
        str | None,
        typer.Option(
            "--listen",
            metavar="HOST:PORT",
            show_default=False,
            help="Where the daemon listens (default: what the running daemon recorded in the "
            "state directory, else 127.0.0.1:9498).",
        ),
    ] = None,
    json_out: Json = False,
) -> None:
    """Show what the running daemon reports (/healthz and /metrics); exit 6 if none runs."""
    state: CliState = ctx.find_root().obj
    as_json = state.json or json_out
    address = listen or _recorded_listen(state.config()) or DEFAULT_LISTEN
    health, metrics = _fetch(address)
    summary = {"address": address, "health": health, "metrics": metrics}
    if as_json:
        from keyvault.cli.output import emit_json

        emit_json(summary)
    else:
        _print_status(health, metrics, address)
    if health.get("status") == "stalled":
        raise typer.Exit(1)


def _recorded_listen(config: Config) -> str | None:
    from keyvault.bounded import json_loads
    from keyvault.daemon.lock import holder

    state_dir = config.paths.state_dir
    if holder(state_dir) is None:
        return None
    try:
        doc = json_loads((state_dir / "daemon.json").read_text())
    except (OSError, ValueError):
        return None
    value = doc.get("listen") if isinstance(doc, dict) else None
    return value if isinstance(value, str) else None


def _fetch(address: str) -> tuple[dict[str, Any], dict[str, float]]:
    import urllib.error
    import urllib.request

    from keyvault.bounded import json_loads
    from keyvault.daemon.health import parse_listen
    from keyvault.errors import BackendUnavailableError

    host, port = parse_listen(address)
    base = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
    try:
        try:
            with urllib.request.urlopen(f"{base}/healthz", timeout=3) as resp:  # noqa: S310
                health = json_loads(resp.read(1 << 20))
        except urllib.error.HTTPError as exc:  # 503: stalled, the body still says why
            health = json_loads(exc.read(1 << 20))
        with urllib.request.urlopen(f"{base}/metrics", timeout=3) as resp:  # noqa: S310
            text = resp.read(4 << 20).decode("utf-8", "replace")
    except (OSError, ValueError) as exc:
        raise BackendUnavailableError(
            f"the keyvault daemon is not running (nothing answers on {address}: "
            f"{type(exc).__name__})",
            hint="start it with 'keyvault daemon' or 'systemctl --user start keyvault-daemon'"
            ", or pass --listen HOST:PORT",
        ) from None
    if not isinstance(health, dict):
        raise BackendUnavailableError(f"{address} does not answer like a keyvault daemon")
    return health, _parse_metrics(text)


def _parse_metrics(text: str) -> dict[str, float]:
    """``name{labels}`` -> value for the daemon's own samples."""
    from prometheus_client.parser import text_string_to_metric_families

    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if not sample.name.startswith("keyvault_daemon_"):
                continue
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            values[sample.name + (f"{{{labels}}}" if labels else "")] = sample.value
    return values


def _sum(metrics: dict[str, float], name: str, **labels: str) -> int:
    total = 0.0
    for key, value in metrics.items():
        same = key == name or key.startswith(name + "{")
        if same and all(f'{k}="{v}"' in key for k, v in labels.items()):
            total += value
    return int(total)


def _parse_time(value: Any) -> float | None:
    """An ISO-8601 time of /healthz (as every JSON document writes times) as Unix time."""
    from datetime import datetime

    try:
        return datetime.fromisoformat(value).timestamp() if isinstance(value, str) else None
    except ValueError:
        return None


def _print_status(health: dict[str, Any], metrics: dict[str, float], address: str) -> None:
    from keyvault.cli.output import say

    last = _parse_time(health.get("last_success"))
    last_text = (
        (
            f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(last))} "
            f"({int(time.time() - last)} s ago)"
        )
        if last is not None
        else "none yet"
    )
    oldest = health.get("oldest_pending_age_s")
    written = _sum(metrics, "keyvault_daemon_backups_total", action="created") + _sum(
        metrics, "keyvault_daemon_backups_total", action="updated"
    )
    lines = [
        f"keyvault daemon: {health.get('status')} (pid {health.get('pid')}, "
        f"up {int(health.get('uptime_s') or 0)} s, {address})",
        f"  trust dirs:   {', '.join(health.get('trust_dirs') or []) or '-'}",
        f"  store:        {health.get('store') or '-'} (team {health.get('team')})",
        f"  keys watched: {health.get('keys_watched')}",
        f"  pending:      {health.get('keys_pending')}"
        + (f" (oldest {oldest} s, {health.get('keys_failing')} failing)" if oldest else ""),
        f"  backed up:    {health.get('keys_backed_up', '-')} of "
        f"{health.get('keys_watched')} keys in the store ({written} written since start, "
        f"{_sum(metrics, 'keyvault_daemon_backups_total', action='unchanged')} found "
        "unchanged when an event came)",
        f"  failures:     {_sum(metrics, 'keyvault_daemon_failures_total')}"
        + (f" (last: {health.get('last_error')})" if health.get("last_error") else ""),
        f"  refused:      {_sum(metrics, 'keyvault_daemon_refused_total')}",
        f"  last success: {last_text}",
    ]
    say("\n".join(lines))
    sys.stdout.flush()
