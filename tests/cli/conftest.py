"""Fixtures for CLI tests: an isolated home, and the CLI run in-process."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from keyvault.cli.app import main
from keyvault.cli.schemas import command_schemas, schema_for

#: Global options that take a value, and the commands that have sub-commands.
_VALUED = frozenset(
    {"--config", "--trust-dir", "--store", "--wrapper", "--team", "--as", "--trust-sealer"}
)
_GROUPS = frozenset({"audit", "daemon", "hsm", "policy", "recovery", "sealer"})


@dataclass
class Run:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


KV = Callable[..., Run]


def command_of(argv: list[str]) -> str | None:
    """``audit show`` for ``--json audit show --last 3`` (None: no command named)."""
    words: list[str] = []
    skip = False
    for arg in argv:
        if arg == "--":
            break
        if skip:
            skip = False
        elif arg in _VALUED and not words:
            skip = True
        elif not arg.startswith("-"):
            words.append(arg)
            if words[0] not in _GROUPS or len(words) == 2:
                break
    return " ".join(words) or None


#: What every error document holds (error.json).
ERROR_FIELDS = {"error", "exit_code", "message", "hint", "not_attempted"}


def conforms(argv: list[str], code: int, out: str) -> None:
    """Every --json output of every CLI test must match the command's schema
    (keyvault/cli/schemas, docs/json.md); a failure's must match error.json."""
    from schemacheck import validate

    mine = argv[: argv.index("--")] if "--" in argv else argv
    if "--json" not in mine or "--help" in mine:
        return
    command = command_of(argv)  # restore's own --version is not the global one
    name = schema_for(command or ("version" if "--version" in mine else ""))
    if name not in command_schemas():
        return  # a command that writes no JSON (exec refuses --json; daemon run logs)
    if not out and code != 0:
        return  # refused by the option parser, before keyvault ran: usage on stderr
    doc = json.loads(out)
    if code != 0 and isinstance(doc, dict) and set(doc) == ERROR_FIELDS:
        name = "error"
    validate(doc, name)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private HOME with XDG dirs; no keyvault or docker variables leak in."""
    home = tmp_path / "home"
    home.mkdir()
    for key in list(os.environ):
        if key.startswith(("KEYVAULT_", "NOTARY_", "DOCKER_", "VAULT_")):
            monkeypatch.delenv(key)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(home / ".local" / "share"))
    monkeypatch.setenv("XDG_STATE_HOME", str(home / ".local" / "state"))
    return home


@pytest.fixture
def kv(home: Path, capsys: pytest.CaptureFixture[str]) -> KV:
    """Run ``keyvault ARGS...`` in-process; returns exit code, stdout, stderr."""

    def run(*args: str | Path) -> Run:
        capsys.readouterr()
        argv = [str(a) for a in args]
        code = main(argv)
        captured = capsys.readouterr()
        conforms(argv, code, captured.out)
        return Run(code, captured.out, captured.err)

    return run


@pytest.fixture
def ready(kv: KV, trust: tuple[Path, tuple[Any, ...]]) -> tuple[Path, tuple[Any, ...]]:
    """``keyvault init`` and ``backup`` of the ``trust`` fixture of the module asking."""
    assert kv("init").code == 0
    run = kv("backup")
    assert run.code == 0, run.err
    return trust
