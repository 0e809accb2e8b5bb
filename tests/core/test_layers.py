"""The import direction of docs/concepts.md, and a start-up that loads no backend SDK."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "keyvault"
PROTOCOLS = ("keyvault.wrappers.base", "keyvault.stores.base")
SDKS = ("boto3", "botocore", "hvac", "pkcs11")
CORE = (
    "keyvault.trust",
    "keyvault.envelope",
    "keyvault.names",
    "keyvault.canonical",
    "keyvault.errors",
    "keyvault.policy",
    "keyvault.audit",
)


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def imports_of(path: Path) -> list[tuple[str, bool]]:
    """(imported module, at top level?) for every import in a file."""
    tree = ast.parse(path.read_text())
    top = {id(node) for node in tree.body}
    found: list[tuple[str, bool]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, id(node) in top) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.module, id(node) in top))
    return found


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


@pytest.mark.parametrize("name", sorted(MODULES))
def test_imports_flow_downward(name: str) -> None:
    for imported, _ in imports_of(MODULES[name]):
        if imported.startswith(("keyvault.cli", "keyvault.daemon")):
            assert name.startswith(("keyvault.cli", "keyvault.daemon", "keyvault.__main__")), (
                name,
                imported,
            )
        if name.startswith(CORE) and imported not in PROTOCOLS:
            assert not imported.startswith(
                (
                    "keyvault.ops",
                    "keyvault.cli",
                    "keyvault.daemon",
                    "keyvault.stores",
                    "keyvault.wrappers",
                )
            ), (name, imported)


@pytest.mark.parametrize("name", sorted(MODULES))
def test_only_backends_import_sdks_and_only_lazily(name: str) -> None:
    for imported, at_top in imports_of(MODULES[name]):
        if imported.split(".")[0] in SDKS:
            assert name.startswith(("keyvault.wrappers.", "keyvault.stores.")), (name, imported)
            assert not at_top, f"{name} imports {imported} at module level"


def test_help_loads_no_sdk_no_cryptography_no_rich_no_json() -> None:
    code = (
        "import sys\nfrom keyvault.cli.app import main\nrc = main(['--help'])\n"
        "loaded = sorted(sys.modules)\nimport json\nprint(json.dumps([rc, loaded]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    rc, modules = json.loads(out.splitlines()[-1])
    assert rc == 0
    loaded = {m.split(".")[0] for m in modules}
    heavy = {*SDKS, "cryptography", "rich", "pyrage", "json"}
    assert not loaded & heavy, loaded & heavy
