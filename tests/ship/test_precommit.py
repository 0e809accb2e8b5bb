"""pre-commit gives a contributor CI's verdict before pushing (issue 22).

``.pre-commit-config.yaml`` runs the project virtualenv's ``ruff check``,
``ruff format`` and ``mypy``; scripts/test.sh (CI) runs the same three over
the same paths. The hooks are run for real by pre-commit on a scratch git
repository that holds this project's configuration and a few files: a file
CI would refuse fails each hook, and the fixed file passes.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
from fixtures.components import find_tool, require_module

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / ".pre-commit-config.yaml"


def _hooks() -> dict[str, dict[str, Any]]:
    yaml = require_module("yaml", "pip package PyYAML, in the test extra")
    config = yaml.safe_load(CONFIG.read_text())
    (repo,) = config["repos"]
    assert repo["repo"] == "local"
    return {hook["id"]: hook for hook in repo["hooks"]}


def _ci_paths(check: str) -> list[str]:
    """The paths scripts/test.sh gives ``ruff check`` or ``ruff format --check``."""
    script = (REPO / "scripts" / "test.sh").read_text()
    found = re.search(rf'^"\$VENV/bin/ruff" {check} (.+)$', script, re.MULTILINE)
    assert found, f"scripts/test.sh does not run ruff {check}"
    return found.group(1).split()


def test_the_hooks_are_the_checks_ci_runs() -> None:
    hooks = _hooks()
    assert set(hooks) == {"ruff", "ruff-format", "mypy"}
    assert hooks["ruff"]["entry"].split()[:2] == [".venv/bin/ruff", "check"]
    assert hooks["ruff-format"]["entry"].split()[:2] == [".venv/bin/ruff", "format"]
    assert hooks["mypy"]["entry"] == ".venv/bin/mypy" and hooks["mypy"]["pass_filenames"] is False
    assert _ci_paths("check") == _ci_paths("format --check")
    for hook in ("ruff", "ruff-format"):
        files = re.fullmatch(r"\^\((.+)\)/", hooks[hook]["files"])
        assert files, hooks[hook]["files"]
        assert sorted(files.group(1).split("|")) == sorted(_ci_paths("check")), hook
    script = (REPO / "scripts" / "test.sh").read_text()
    # mypy with no paths: it checks the files pyproject.toml lists
    assert re.search(r'^"\$VENV/bin/mypy"\s*(#.*)?$', script, re.MULTILINE)
    mypy = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["mypy"]
    assert mypy["strict"] is True
    assert mypy["files"] == ["keyvault", "tests", "scripts"]  # the tests are type-checked too


@pytest.fixture
def scratch(tmp_path: Path) -> Path:
    """A git repository with this project's hook and tool configuration and its .venv."""
    require_module("pre_commit", "pip package pre-commit, in the test extra")
    git = find_tool("git")
    root = tmp_path / "repo"
    for part in ("keyvault", "tests", "scripts"):
        (root / part).mkdir(parents=True)
    shutil.copy(CONFIG, root / CONFIG.name)
    shutil.copy(REPO / "pyproject.toml", root / "pyproject.toml")
    (root / ".venv").symlink_to(Path(sys.prefix))  # the tools CI uses, by the hooks' paths
    (root / "keyvault" / "__init__.py").write_text('"""A package."""\n')
    (root / "tests" / "test_ok.py").write_text(
        '"""Tests."""\n\n\ndef test_ok() -> None:\n    assert True\n'
    )
    (root / "scripts" / "tool.py").write_text('"""A script."""\n')
    subprocess.run([git, "init", "-q", str(root)], check=True)
    return root


def _pre_commit(root: Path, home: Path) -> subprocess.CompletedProcess[str]:
    subprocess.run([find_tool("git"), "add", "-A"], cwd=root, check=True)
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(home),
        "PRE_COMMIT_HOME": str(home / "cache"),
        "LANG": "C.UTF-8",
    }
    return subprocess.run(
        [sys.executable, "-m", "pre_commit", "run", "--all-files", "--color", "never"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def _verdicts(output: str) -> dict[str, str]:
    return {
        m.group(1).strip(): m.group(2)
        for m in re.finditer(
            r"^(ruff check|ruff format|mypy[^.]*)\.+(Passed|Failed)$", output, re.MULTILINE
        )
    }


def test_the_hooks_refuse_what_ci_refuses_and_pass_the_fix(scratch: Path, tmp_path: Path) -> None:
    module = scratch / "keyvault" / "sloppy.py"
    module.write_text(
        '"""Untyped, unused import, unformatted."""\nimport os\n\n\n'
        "def double(x):\n    return x*2\n"
    )
    refused = _pre_commit(scratch, tmp_path)
    assert refused.returncode != 0
    verdicts = _verdicts(refused.stdout)
    assert verdicts == {
        "ruff check": "Failed",
        "ruff format": "Failed",
        "mypy (strict; the package, the tests and scripts/)": "Failed",
    }, refused.stdout
    assert "F401" in refused.stdout and "no-untyped-def" in refused.stdout
    assert "return x * 2" in module.read_text()  # ruff format fixed the file in place
    module.write_text('"""Typed, formatted."""\n\n\ndef double(x: int) -> int:\n    return x * 2\n')
    passed = _pre_commit(scratch, tmp_path)
    assert passed.returncode == 0, passed.stdout + passed.stderr
    assert set(_verdicts(passed.stdout).values()) == {"Passed"}
    assert len(_verdicts(passed.stdout)) == 3
