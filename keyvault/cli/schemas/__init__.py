"""JSON Schemas (2020-12) of what each command prints with --json: one file per command.

``<command>.json`` (a sub-command's name joined with '-': ``audit-show.json``);
``error.json`` for any command's failure, ``version.json`` for ``--version --json``,
``common.json`` for the definitions they share. docs/json.md is generated from them
(docs/gen_json_reference.py) and the CLI tests validate every --json output against
them, so the documented shapes are the ones keyvault writes.
"""

from __future__ import annotations

from pathlib import Path

SCHEMA_DIR = Path(__file__).resolve().parent
#: Files that describe no one command's output.
SHARED = ("common",)


def schema_names() -> list[str]:
    """Every schema file's name without .json, sorted."""
    return sorted(p.stem for p in SCHEMA_DIR.glob("*.json"))


def command_schemas() -> list[str]:
    """The schemas of command outputs (error and version included, the shared ones not)."""
    return [name for name in schema_names() if name not in SHARED]


def schema_for(command: str) -> str:
    """The schema name of a command path: ``audit show`` -> ``audit-show``."""
    return command.replace(" ", "-")
