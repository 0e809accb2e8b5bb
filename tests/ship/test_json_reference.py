"""docs/json.md is generated from the JSON Schemas in keyvault/cli/schemas, and current."""

from __future__ import annotations

import importlib.util
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_json_reference_is_up_to_date() -> None:
    spec = importlib.util.spec_from_file_location(
        "gen_json_reference", REPO / "docs" / "gen_json_reference.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert (REPO / "docs" / "json.md").read_text() == module.render(), (
        "docs/json.md is out of date: run python docs/gen_json_reference.py"
    )


def test_json_reference_is_in_the_site_navigation() -> None:
    assert "JSON output: json.md" in (REPO / "mkdocs.yml").read_text()
