"""``keyvault recovery split`` / ``combine``: SLIP-39 shares of the age recovery identity."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from keyvault.cli.options import Json
from keyvault.cli.state import CliState

recovery_app = typer.Typer(
    name="recovery",
    no_args_is_help=True,
    help="Break-glass: split the recovery identity into M-of-N shares, and rebuild it.",
)


def register(app: typer.Typer) -> None:
    app.add_typer(recovery_app)


@recovery_app.command("split")
def split(
    ctx: typer.Context,
    shares: Annotated[int, typer.Option("--shares", metavar="N", help="How many shares.")],
    threshold: Annotated[
        int, typer.Option("--threshold", metavar="M", help="How many shares rebuild the identity.")
    ],
    out: Annotated[
        str, typer.Option("--out", metavar="DIR", help="New directory for the share pages (0700).")
    ],
    identity: Annotated[
        str | None,
        typer.Option(
            "--identity",
            metavar="FILE",
            show_default=False,
            help="Identity file (default: the configured recovery identity).",
        ),
    ] = None,
    json_out: Json = False,
) -> None:
    """Write one printable page per SLIP-39 share of the recovery identity."""
    state: CliState = ctx.obj
    from keyvault.cli.output import emit_json, say, warn
    from keyvault.errors import NotFoundError
    from keyvault.ops.recovery import split_identity, write_share_pages

    config = state.config()
    source = (
        Path(identity)
        if identity
        else (config.identity_files[0] if config.identity_files else None)
    )
    if source is None:
        raise NotFoundError("no recovery identity is configured", hint="pass --identity FILE")
    from keyvault.ops.pins import pins_in_file

    recipient, parts = split_identity(source, shares=shares, threshold=threshold)
    pages = write_share_pages(Path(out), recipient, parts, pins_in_file(source))
    if state.json or json_out:
        emit_json(
            {
                "recipient": recipient,
                "shares": shares,
                "threshold": threshold,
                "pages": [str(p) for p in pages],
            }
        )
        return
    say(
        f"Wrote {len(pages)} share pages for {recipient} into {out}; any {threshold} "
        "rebuild the identity."
    )
    warn("print each page, give them to different people, then delete the directory")


@recovery_app.command("combine")
def combine(
    ctx: typer.Context,
    out: Annotated[
        str,
        typer.Option("--out", metavar="FILE", help="Where to write the rebuilt identity (0600)."),
    ],
    expect: Annotated[
        str | None,
        typer.Option(
            "--expect",
            metavar="AGE1...",
            show_default=False,
            help="Refuse unless the rebuilt identity has this recipient.",
        ),
    ] = None,
    trust_sealer: Annotated[
        list[str] | None,
        typer.Option(
            "--trust-sealer",
            metavar="FINGERPRINT",
            show_default=False,
            help="The sealer pin printed on the share pages; written into the identity file so "
            "restores trust it (repeatable).",
        ),
    ] = None,
    json_out: Json = False,
) -> None:
    """Rebuild the recovery identity from M shares, typed at a prompt (or one per line on
    standard input); never from the command line."""
    state: CliState = ctx.obj
    from keyvault.cli.output import emit_json, say
    from keyvault.errors import IntegrityError
    from keyvault.names import validate_fingerprint
    from keyvault.ops.recovery import combine_shares, write_identity

    pins = [validate_fingerprint(f) for f in trust_sealer or []]
    identity = combine_shares(_read_shares())
    import pyrage

    recipient = str(pyrage.x25519.Identity.from_str(identity).to_public())
    if expect is not None and recipient != expect:
        raise IntegrityError(f"the shares rebuild the identity of {recipient}, not {expect}")
    write_identity(Path(out), identity, pins)
    if state.json or json_out:
        emit_json({"recipient": recipient, "identity_file": out, "trusted_sealers": pins})
    else:
        say(f"Rebuilt the identity of {recipient} into {out} (0600).")


def _read_shares() -> list[str]:
    if not sys.stdin.isatty():
        return [line for line in sys.stdin.read().splitlines() if line.strip()]
    import getpass

    from keyvault.ops.recovery import shares_needed

    shares: list[str] = []
    needed: int | None = None
    while needed is None or len(shares) < needed:
        left = f"{needed - len(shares)} more needed" if needed else "empty line when done"
        entry = getpass.getpass(f"Share {len(shares) + 1} (33 words; {left}): ")
        if not entry.strip():
            return shares
        shares.append(entry)
        needed = needed or shares_needed(entry)  # the first share says how many
    return shares
