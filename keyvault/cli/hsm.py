"""``keyvault hsm``: prepare a PKCS#11 token (list tokens and keys, create a wrapping key).

Thin over :mod:`keyvault.wrappers.pkcs11`, imported only when a command runs,
so ``keyvault --help`` never loads python-pkcs11.
"""

from __future__ import annotations

from typing import Annotated

import typer

from keyvault.cli.options import Json
from keyvault.cli.state import CliState, terminal_prompt

hsm_app = typer.Typer(
    name="hsm",
    help="Prepare a PKCS#11 token (HSM) for the pkcs11: wrapper: list tokens and keys, create "
    "a non-extractable wrapping key. The module comes from module-path= in the URI, "
    "KEYVAULT_PKCS11_MODULE or [pkcs11] module; the PIN from pin-source= in the URI, "
    "KEYVAULT_PKCS11_PIN, [pkcs11] pin_source, or a prompt.",
    no_args_is_help=True,
    rich_markup_mode=None,
)

Uri = Annotated[
    str,
    typer.Argument(
        metavar="URI",
        help="RFC 7512 URI, e.g. 'pkcs11:token=kv;object=team-a-kek"
        "?module-path=/usr/lib/softhsm/libsofthsm2.so'.",
    ),
]


def register(app: typer.Typer) -> None:
    """Add the ``hsm`` command group to the app."""
    app.add_typer(hsm_app, name="hsm")


def _state(ctx: typer.Context, json_out: bool) -> CliState:
    state: CliState = ctx.obj
    state.json = state.json or json_out
    return state


@hsm_app.command("list")
def list_cmd(
    ctx: typer.Context,
    uri: Annotated[
        str,
        typer.Argument(
            metavar="[URI]",
            show_default=False,
            help="pkcs11: URI; with token= the token's keys are listed too (asks for the PIN).",
        ),
    ] = "pkcs11:",
    json_out: Json = False,
) -> None:
    """List the tokens of the module, and the wrapping keys of the token the URI names."""
    state = _state(ctx, json_out)
    options = state.config().backend_options(terminal_prompt())
    from keyvault.cli.output import emit_json, table
    from keyvault.wrappers.pkcs11 import list_keys, list_tokens
    from keyvault.wrappers.pkcs11_uri import parse_pkcs11_uri

    tokens = list_tokens(uri, options)
    keys = list_keys(uri, options) if parse_pkcs11_uri(uri).names_token and tokens else []
    if state.json:
        emit_json({"tokens": [t.to_json() for t in tokens], "keys": [k.to_json() for k in keys]})
        return
    table(
        "PKCS#11 tokens",
        ["LABEL", "SERIAL", "SLOT", "MODEL", "STATE"],
        [
            [
                t.label or "-",
                t.serial or "-",
                str(t.slot_id),
                t.model or "-",
                "pin-locked" if t.pin_locked else "ready" if t.initialized else "not initialised",
            ]
            for t in tokens
        ],
    )
    if keys:
        table(
            "Wrapping keys",
            ["LABEL", "ID", "TYPE", "EXTRACTABLE", "MECHANISM", "URI"],
            [
                [
                    k.label or "-",
                    k.key_id or "-",
                    k.kind,
                    "yes" if k.extractable else "no",
                    k.mechanism or "none usable",
                    k.uri,
                ]
                for k in keys
            ],
        )


@hsm_app.command("create-key")
def create_key_cmd(
    ctx: typer.Context,
    uri: Uri,
    key_type: Annotated[
        str,
        typer.Option(
            "--type",
            metavar="TYPE",
            help="aes (AES-256, wraps with AES-GCM) or rsa (RSA-3072 pair, wraps with RSA-OAEP).",
        ),
    ] = "aes",
    json_out: Json = False,
) -> None:
    """Create a labelled, non-extractable wrapping key on a token; print its URI.

    The URI must name the token and the new key's label (object=). Without id=
    a random CKA_ID is assigned. Nothing is created if a key with that label
    or ID exists.
    """
    state = _state(ctx, json_out)
    options = state.config().backend_options(terminal_prompt())
    from keyvault.cli.output import emit_json, say
    from keyvault.wrappers.pkcs11 import create_key

    info = create_key(uri, options, kind=key_type.lower())
    if state.json:
        emit_json(info.to_json())
        return
    say(
        f"created {info.kind} key {info.label!r} (CKA_ID {info.key_id}, non-extractable) on "
        f"token {info.token!r}; it wraps with {info.mechanism or 'no mechanism this token offers'}"
    )
    say(f"wrapper URI: {info.uri}")
    say(
        f"use it with: keyvault init --wrapper '{info.uri}'  (module and PIN from "
        "KEYVAULT_PKCS11_MODULE / KEYVAULT_PKCS11_PIN or the [pkcs11] config section)"
    )
