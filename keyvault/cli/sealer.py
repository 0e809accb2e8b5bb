"""``keyvault sealer``: this machine's sealing key and the sealers it trusts."""

from __future__ import annotations

import typer

from keyvault.cli.options import Json
from keyvault.cli.state import CliState

sealer_app = typer.Typer(
    help="This machine's sealing key and the sealers it trusts.", no_args_is_help=True
)


def register(app: typer.Typer) -> None:
    app.add_typer(sealer_app, name="sealer")


@sealer_app.command("show")
def show(ctx: typer.Context, json_out: Json = False) -> None:
    """Print this machine's sealer fingerprint and every trusted and revoked sealer.

    The fingerprint is what other machines pin ([sealing] trusted, or
    --trust-sealer) to accept the backups this machine writes.
    """
    state: CliState = ctx.obj
    config = state.config()
    from keyvault.cli.output import emit_json, say
    from keyvault.errors import NotFoundError
    from keyvault.sealers import is_backend_sealer

    with state.session() as session:
        path = config.sealing_key_path
        backend = config.sealing_key is not None and is_backend_sealer(config.sealing_key)
        if not backend and not path.exists():
            raise NotFoundError(
                f"this machine has no sealing key yet ({path})",
                hint="run 'keyvault init', or a backup, to create one",
            )
        own = session.sealer().key.fingerprint
        trust = session.sealers()
    if state.json or json_out:
        emit_json(
            {
                "sealer": own,
                "sealer_file": None if backend else str(path),
                "sealer_uri": config.sealing_key if backend else None,
                "trusted": sorted(trust.trusted),
                "revoked": sorted(trust.revoked),
                "sources": list(trust.sources),
            }
        )
        return
    say(f"This machine's sealer: {own} ({config.sealing_key if backend else path})")
    for fingerprint in sorted(trust.trusted):
        say(f"trusted: {fingerprint}")
    for fingerprint in sorted(trust.revoked):
        say(f"revoked: {fingerprint}")
    say(f"pins from: {', '.join(trust.sources) or 'nowhere'}")
