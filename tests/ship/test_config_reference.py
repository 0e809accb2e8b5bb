"""docs/configuration.md is generated from keyvault/settings.py, which lists every
KEYVAULT_ variable keyvault reads: the page stays current, the registry stays whole."""

from __future__ import annotations

import re
from pathlib import Path

from keyvault import config, settings
from ship.test_docs import _generator

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs"
VARIABLE = re.compile(r"(?<![A-Za-z0-9_])KEYVAULT_[A-Z0-9_]*[A-Z0-9]")


def read_in_code(root: Path = REPO / "keyvault") -> dict[str, str]:
    """Every KEYVAULT_ name in keyvault's code outside the registry: name -> first file."""
    found: dict[str, str] = {}
    for path in sorted(root.rglob("*.py")):
        if path == root / "settings.py":
            continue
        for name in VARIABLE.findall(path.read_text()):
            found.setdefault(name, str(path.relative_to(REPO)))
    return found


def test_configuration_page_is_up_to_date() -> None:
    assert (DOCS / "configuration.md").read_text() == _generator("gen_config_reference").render(), (
        "docs/configuration.md is out of date: run python docs/gen_config_reference.py"
    )


def test_every_variable_keyvault_reads_is_in_the_registry_and_no_other() -> None:
    used = read_in_code()
    missing = {name: where for name, where in used.items() if name not in settings.variable_names()}
    assert not missing, f"add these to keyvault/settings.py: {missing}"
    assert settings.variable_names() - set(used) == set(), "listed but never read"


def test_the_scan_finds_a_new_variable(tmp_path: Path) -> None:
    """The check above would catch a variable added without a registry entry."""
    package = tmp_path / "keyvault"
    package.mkdir()
    (package / "new.py").write_text('value = env.get("KEYVAULT_SHINY_NEW")  # and _KEYVAULT_X\n')
    found = {name for path in package.rglob("*.py") for name in VARIABLE.findall(path.read_text())}
    assert found == {"KEYVAULT_SHINY_NEW"}


def test_config_loading_uses_the_registry() -> None:
    assert settings.schema() == config._SCHEMA
    page = (DOCS / "configuration.md").read_text()
    for key in settings.KEYS:
        assert f"| `{key.name}` |" in page and f"### `[{key.section}]`" in page


def test_the_docs_that_name_variables_link_the_reference() -> None:
    for page in (
        REPO / "README.md",
        DOCS / "troubleshooting.md",
        DOCS / "guides" / "restore-laptop.md",
    ):
        assert "configuration.md" in page.read_text(), page
