"""The documentation site builds with --strict, and the generated pages are current."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
from fixtures.components import require_component

from keyvault.errors import EXIT_CODES

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs"


def _generator(name: str = "gen_cli_reference") -> ModuleType:
    """One of the scripts in docs/ that generate a page, loaded as a module."""
    spec = importlib.util.spec_from_file_location(name, DOCS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cli_reference_is_up_to_date() -> None:
    expected = _generator().render()
    assert (DOCS / "cli.md").read_text() == expected, (
        "docs/cli.md is out of date: run python docs/gen_cli_reference.py"
    )


def test_cli_reference_covers_every_command() -> None:
    import typer.main

    from keyvault.cli.app import full_app

    text = (DOCS / "cli.md").read_text()
    root = typer.main.get_group(full_app())
    ctx = root.context_class(root, info_name="keyvault")
    for name in root.list_commands(ctx):
        assert f"## `keyvault {name}`" in text, name
    assert "`--install-completion`" in text and "`--show-completion`" in text


def test_troubleshooting_has_a_section_per_exit_code() -> None:
    text = (DOCS / "troubleshooting.md").read_text()
    headings = re.findall(r"^## (\d+)(?: / (\d+))?:", text, re.MULTILINE)
    codes = {int(c) for pair in headings for c in pair if c}
    assert codes == set(EXIT_CODES) | {130, 143}


def _mkdocs() -> list[str]:
    for module in ("mkdocs", "material"):
        if importlib.util.find_spec(module) is None:
            require_component(module, "pip package mkdocs-material, in the test extra")
    return [sys.executable, "-m", "mkdocs"]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("site")
    run = subprocess.run(
        [*_mkdocs(), "build", "--strict", "--site-dir", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert run.returncode == 0, run.stdout + run.stderr
    return out


def test_docs_build_strict(site: Path) -> None:
    """No broken link or anchor, no page left out of the nav (strict turns each into an error)."""
    for page in (
        "index.html",
        "quickstart/index.html",
        "concepts/index.html",
        "cli/index.html",
        "troubleshooting/index.html",
        "envelope/index.html",
        "guides/restore-laptop/index.html",
        "guides/drills/index.html",
        "operations/index.html",
        "security/index.html",
    ):
        assert (site / page).is_file(), page
    assert (site / "recover.py").is_file()  # linked from the envelope spec
    assert not (site / "gen_cli_reference.py").exists() and not (site / "_hooks.py").exists()


@pytest.mark.parametrize(
    ("page", "source"),
    [
        ("security", "SECURITY.md"),
        ("changelog", "CHANGELOG.md"),
        ("contributing", "CONTRIBUTING.md"),
    ],
)
def test_top_level_pages_are_published(site: Path, page: str, source: str) -> None:
    """The site's page is the top-level file (docs/_hooks.py), not its placeholder."""
    html = (site / page / "index.html").read_text()
    headings = re.findall(r"^## (.+)$", (REPO / source).read_text(), re.MULTILINE)
    assert headings
    for heading in headings:
        text = re.sub(r"`", "", heading.split("(")[0]).strip()[:20]
        assert text in html, heading
    assert "included here when the site is" not in html


def test_strict_build_catches_a_broken_link(tmp_path: Path) -> None:
    """The check can fail: a copy of the docs with one dead link does not build."""
    _mkdocs()
    copy = tmp_path / "repo"
    shutil.copytree(DOCS, copy / "docs", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "mkdocs.yml", copy / "mkdocs.yml")
    for page in REPO.glob("*.md"):  # SECURITY.md, CHANGELOG.md...: published by docs/_hooks.py
        shutil.copy(page, copy / page.name)
    page = copy / "docs" / "quickstart.md"
    page.write_text(page.read_text() + "\nSee [nothing](no-such-page.md).\n")
    run = subprocess.run(
        [*_mkdocs(), "build", "--strict", "--site-dir", str(tmp_path / "s")],
        cwd=copy,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert run.returncode != 0
    assert "no-such-page.md" in run.stdout + run.stderr


def test_the_help_footer_names_every_exit_code_the_readme_lists() -> None:
    """The README's table and ``keyvault --help`` give the same codes (143 was missing)."""
    from keyvault.cli.app import EXIT_CODE_HELP

    readme = (REPO / "README.md").read_text()
    table = readme.split("## Exit codes", 1)[1].split("\n## ", 1)[0]
    listed = {
        int(c) for row in re.findall(r"^\| ([0-9 /]+) \|", table, re.M) for c in row.split("/")
    }
    in_help = {int(c) for c in re.findall(r"(?<![0-9])([0-9]+) [a-z(]", EXIT_CODE_HELP)}
    assert listed == in_help == {0, 1, 2, 3, 4, 5, 6, 7, 8, 130, 143}
