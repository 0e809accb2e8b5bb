"""Option types shared by several commands (selection, --json, --dry-run)."""

from __future__ import annotations

from typing import Annotated

import typer

Guns = Annotated[list[str] | None, typer.Option(
    "--gun", metavar="GUN", show_default=False,
    help="GUN to select (repeatable; * and ? wildcards).")]
Roles = Annotated[list[str] | None, typer.Option(
    "--role", metavar="ROLE", show_default=False,
    help="Role to select: root, targets, snapshot, targets/<name>... (repeatable).")]
KeyIds = Annotated[list[str] | None, typer.Option(
    "--key-id", metavar="ID", show_default=False,
    help="Key ID or a prefix of at least 6 hex digits (repeatable).")]
All = Annotated[bool, typer.Option("--all", help="Select every key.")]
Json = Annotated[bool, typer.Option("--json", help="Machine-readable JSON on stdout.")]
DryRun = Annotated[bool, typer.Option("--dry-run", help="Show what would change; change nothing.")]
