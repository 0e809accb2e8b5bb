"""Option types shared by several commands (selection, --json, --dry-run)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from keyvault.ops.selection import Selection

Guns = Annotated[
    list[str] | None,
    typer.Option(
        "--gun",
        metavar="GUN",
        show_default=False,
        help="GUN to select (repeatable; * and ? wildcards).",
    ),
]
Roles = Annotated[
    list[str] | None,
    typer.Option(
        "--role",
        metavar="ROLE",
        show_default=False,
        help="Role to select: root, targets, snapshot, targets/<name>... (repeatable).",
    ),
]
KeyIds = Annotated[
    list[str] | None,
    typer.Option(
        "--key-id",
        metavar="ID",
        show_default=False,
        help="Key ID or a prefix of at least 6 hex digits (repeatable).",
    ),
]
All = Annotated[bool, typer.Option("--all", help="Select every key.")]
Json = Annotated[bool, typer.Option("--json", help="Machine-readable JSON on stdout.")]
DryRun = Annotated[bool, typer.Option("--dry-run", help="Show what would change; change nothing.")]
Jobs = Annotated[
    int | None,
    typer.Option(
        "--jobs",
        "-j",
        metavar="N",
        show_default=False,
        min=1,
        max=64,
        help="Keys handled at once against remote backends (default: config, else 8).",
    ),
]


def build_selection(
    guns: list[str] | None, roles: list[str] | None, key_ids: list[str] | None, everything: bool
) -> Selection:
    """The Selection the --gun/--role/--key-id/--all options describe (validated)."""
    from keyvault.ops.selection import Selection

    return Selection.build(guns=guns, roles=roles, key_ids=key_ids, everything=everything)


def worst_exit_code(codes: list[int]) -> int:
    """The exit code of a bulk run: integrity first, then the most specific failure."""
    if not codes:
        return 0
    for preferred in (5, 4, 6, 3, 7, 2, 1):
        if preferred in codes:
            return preferred
    return max(codes)
