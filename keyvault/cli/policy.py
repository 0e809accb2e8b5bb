"""``keyvault policy``: lint, show and render the team policy; check a live Vault for drift."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from keyvault.cli.options import Json
from keyvault.cli.state import CliState

if TYPE_CHECKING:
    from keyvault.policy import Policy

#: ``keyvault policy check``: the live backend's policies differ from the rendered ones.
DRIFT_EXIT = 5

policy_app = typer.Typer(
    name="policy",
    no_args_is_help=True,
    help="Teams and access control: lint, show, render, check (teams.md).",
)

PolicyFile = Annotated[
    str | None,
    typer.Argument(
        metavar="[FILE]",
        show_default=False,
        help="Policy file (default: [keyvault] policy or KEYVAULT_POLICY).",
    ),
]
Target = Annotated[
    str, typer.Option("--target", metavar="vault|aws", help="Which backend's policies.")
]


def register(app: typer.Typer) -> None:
    app.add_typer(policy_app)


def _load(state: CliState, file: str | None) -> Policy:
    from keyvault.errors import UsageError
    from keyvault.policy import load_policy
    from keyvault.wrappers import check_wrapper_uri

    path = Path(file) if file else state.config().policy
    if path is None:
        raise UsageError("no policy file: name one, or set [keyvault] policy / KEYVAULT_POLICY")
    return load_policy(path, check_wrapper_uri)


@policy_app.command("validate")
def validate(ctx: typer.Context, file: PolicyFile = None, json_out: Json = False) -> None:
    """Check a policy file: syntax, names, principals, wrapper URIs, GUN patterns that overlap."""
    state: CliState = ctx.obj
    from keyvault.cli.output import emit_json, say

    policy = _load(state, file)
    if state.json or json_out:
        emit_json(
            {
                "valid": True,
                "source": str(policy.source),
                "teams": sorted(policy.teams),
                "default_team": policy.default_team,
            }
        )
    else:
        say(
            f"{policy.source}: valid; {len(policy.teams)} team(s): "
            f"{', '.join(sorted(policy.teams))}"
        )


@policy_app.command("show")
def show(ctx: typer.Context, file: PolicyFile = None, json_out: Json = False) -> None:
    """Print each team: its GUN patterns, members, CI principals, store and wrappers."""
    state: CliState = ctx.obj
    from keyvault.cli.output import emit_json, table

    policy = _load(state, file)
    teams = [policy.teams[name] for name in sorted(policy.teams)]
    if state.json or json_out:
        emit_json(
            {
                "source": str(policy.source),
                "default_team": policy.default_team,
                "teams": [
                    {
                        "name": t.name,
                        "guns": list(t.guns),
                        "members": [r.text for r in t.members],
                        "ci": [r.text for r in t.ci],
                        "store": t.store,
                        "wrappers": list(t.wrappers),
                        "shared_with": list(t.shared_with),
                    }
                    for t in teams
                ],
            }
        )
        return
    table(
        f"Policy {policy.source}"
        + (f" (default team: {policy.default_team})" if policy.default_team else ""),
        ["TEAM", "GUN", "MEMBERS", "CI", "STORE", "WRAPPERS"],
        [
            [
                t.name,
                ", ".join(t.guns) or "-",
                ", ".join(r.text for r in t.members) or "-",
                ", ".join(r.text for r in t.ci) or "-",
                t.store or "-",
                ", ".join(t.wrappers) or "-",
            ]
            for t in teams
        ],
    )


@policy_app.command("render")
def render(
    ctx: typer.Context,
    file: PolicyFile = None,
    target: Target = "vault",
    out: Annotated[
        str | None,
        typer.Option(
            "--out",
            metavar="DIR",
            show_default=False,
            help="Write one file per policy into DIR (replacing older renders).",
        ),
    ] = None,
    json_out: Json = False,
) -> None:
    """Render the backend policies that enforce the same rules (Vault ACL, AWS IAM/KMS)."""
    state: CliState = ctx.obj
    from keyvault import fsutil
    from keyvault.cli.output import emit_json, say
    from keyvault.policy import render_files

    files = render_files(_load(state, file), target)
    if out is not None:
        directory = Path(out)
        fsutil.ensure_private_dir(directory)
        for name, text in files.items():
            fsutil.write_file_atomic(directory, name, text.encode(), mode=0o644, exclusive=False)
    if state.json or json_out:
        emit_json({"target": target, "out": out, "files": files})
    elif out is not None:
        say(f"wrote {len(files)} {target} policies into {out}: {', '.join(sorted(files))}")
    else:
        for name in sorted(files):
            say(f"# ==> {name} <==\n{files[name].rstrip()}\n")


@policy_app.command("check")
def check(
    ctx: typer.Context,
    file: PolicyFile = None,
    target: Target = "vault",
    json_out: Json = False,
) -> None:
    """Compare a live Vault's ACL policies with the rendered ones; exit 5 on drift.

    Needs VAULT_ADDR and a token that may read sys/policies/acl. Comments and
    spacing do not count; missing, changed and unexpected keyvault-* policies do.
    """
    state: CliState = ctx.obj
    from keyvault.cli.output import emit_json, say, table
    from keyvault.errors import UsageError
    from keyvault.ops.access import live_vault_policies
    from keyvault.policy import normalize_hcl, render_vault

    if target != "vault":
        raise UsageError(
            "policy check supports --target vault only (AWS policies live in IAM "
            "and KMS: compare them with 'policy render --target aws')"
        )
    expected = render_vault(_load(state, file))
    config = state.config()
    live, extra = live_vault_policies(config.backend_options(None), sorted(expected))
    rows: list[tuple[str, str]] = []
    for name, text in sorted(expected.items()):
        current = live.get(name)
        status = (
            "missing"
            if current is None
            else "in sync"
            if normalize_hcl(current) == normalize_hcl(text)
            else "differs"
        )
        rows.append((name, status))
    rows += [(name, "unexpected") for name in extra]
    drift = any(status != "in sync" for _, status in rows)
    if state.json or json_out:
        emit_json(
            {
                "target": target,
                "drift": drift,
                "policies": [{"name": n, "status": s} for n, s in rows],
            }
        )
    else:
        table("Vault ACL policies", ["POLICY", "STATUS"], [list(r) for r in rows])
        say(
            "drift: re-run 'keyvault policy render --target vault' and load the result"
            if drift
            else "no drift"
        )
    raise typer.Exit(DRIFT_EXIT if drift else 0)


@policy_app.command("whoami")
def whoami(ctx: typer.Context, file: PolicyFile = None, json_out: Json = False) -> None:
    """Who the store's backend says you are, and what you are to each team (with no policy
    file: who you are, and that keyvault checks nothing)."""
    state: CliState = ctx.obj
    from keyvault.cli.output import emit_json, say
    from keyvault.policy import role_of

    path = Path(file) if file else state.config().policy
    policy = _load(state, file) if path is not None else None
    with state.session() as session:
        principal = session.access().principal()
    roles = (
        {name: role_of(policy, principal, name) for name in sorted(policy.teams)}
        if policy is not None
        else {}
    )
    teams = {k: v for k, v in roles.items() if v}
    if state.json or json_out:
        emit_json(
            {
                "principal": principal.name,
                "claimed": principal.claimed,
                "teams": teams,
                "policy": str(policy.source) if policy is not None else None,
            }
        )
        return
    say(f"{principal}")
    if policy is None:
        say("  no policy file: keyvault's own checks allow everything; the backends decide")
    elif not teams:
        say(f"  not in any team of {policy.source}")
    for name, role in teams.items():
        say(f"  {role} of team {name}")
