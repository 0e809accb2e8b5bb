"""Every threat, fault and bad input SECURITY.md lists is proved by a tagged test.

SECURITY.md is the reference: its tables list the IDs (``T6``, ``F03``,
``B22``) keyvault promises to handle. A test names the IDs it proves with
``@pytest.mark.proves(...)`` (on the test, on its class, in a module's
``pytestmark`` or in a ``pytest.param``'s ``marks``); docs/testing.md says how.
The tags are read from the source, so this runs without importing the suite.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TESTS = REPO / "tests"
ID = re.compile(r"[TFB]\d{1,2}")
#: A row of one of SECURITY.md's ID tables: ``| T6 | ...`` or ``| B22 | ...``.
ROW = re.compile(r"^\|\s*([TFB]\d{1,2})\s*\|", re.MULTILINE)


@dataclass(frozen=True)
class Tag:
    """One ``proves(...)`` marker: where it is and what it names."""

    where: str
    ids: tuple[str, ...]
    on_a_test: bool


def listed_ids(text: str) -> list[str]:
    """The IDs of SECURITY.md's tables, in order of appearance."""
    return ROW.findall(text)


def _is_proves(node: ast.AST) -> bool:
    """``pytest.mark.proves(...)``."""
    return (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "proves"
        and isinstance(node.func.value, ast.Attribute)
        and node.func.value.attr == "mark"
    )


def _ids(call: ast.Call, where: str) -> tuple[str, ...]:
    found = []
    for arg in call.args:
        if not isinstance(arg, ast.Constant) or not isinstance(arg.value, str):
            raise AssertionError(f'{where}: proves() takes string literals such as "T6"')
        if not ID.fullmatch(arg.value):
            raise AssertionError(f"{where}: {arg.value!r} is not an ID like T6, F03 or B22")
        found.append(arg.value)
    if not found or call.keywords:
        raise AssertionError(f"{where}: proves() takes one or more IDs and no keywords")
    return tuple(found)


def _placed(tree: ast.Module) -> set[int]:
    """The ids of proves() calls that sit on a test: its decorators, a pytest.param's marks,
    a module's pytestmark."""
    placed: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(
            node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
        ) and node.name.startswith(("test", "Test")):
            for decorator in node.decorator_list:
                placed |= {id(n) for n in ast.walk(decorator) if _is_proves(n)}
    for node in ast.walk(tree):  # pytest.param(..., marks=...) only ever parametrizes a test
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "param"
        ):
            for keyword in node.keywords:
                if keyword.arg == "marks":
                    placed |= {id(n) for n in ast.walk(keyword.value) if _is_proves(n)}
    for stmt in tree.body:
        if isinstance(stmt, (ast.Assign, ast.AnnAssign)):
            targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
            if any(isinstance(t, ast.Name) and t.id == "pytestmark" for t in targets):
                placed |= {id(n) for n in ast.walk(stmt) if _is_proves(n)}
    return placed


def tags_in(path: Path, root: Path = REPO) -> Iterator[Tag]:
    """Every proves() marker in one file of the suite, in line order."""
    tree = ast.parse(path.read_text(), str(path))
    placed = _placed(tree)
    calls = sorted(
        (n for n in ast.walk(tree) if isinstance(n, ast.Call) and _is_proves(n)),
        key=lambda n: n.lineno,
    )
    for node in calls:
        where = f"{path.relative_to(root)}:{node.lineno}"
        yield Tag(where, _ids(node, where), id(node) in placed)


def all_tags() -> list[Tag]:
    return [tag for path in sorted(TESTS.rglob("*.py")) for tag in tags_in(path)]


def test_security_md_lists_threats_faults_and_bad_inputs_once_each() -> None:
    ids = listed_ids((REPO / "SECURITY.md").read_text())
    assert len(ids) == len(set(ids)), sorted(i for i in ids if ids.count(i) > 1)
    for kind in "TFB":
        assert any(i.startswith(kind) for i in ids), f"SECURITY.md lists no {kind} ID"


def test_every_listed_id_has_a_test_that_proves_it() -> None:
    tagged = {i for tag in all_tags() if tag.on_a_test for i in tag.ids}
    missing = [i for i in listed_ids((REPO / "SECURITY.md").read_text()) if i not in tagged]
    assert not missing, (
        f"SECURITY.md lists {', '.join(missing)}, but no test carries "
        "@pytest.mark.proves(...) for it"
    )


def test_every_tag_names_a_listed_id_and_sits_on_a_test() -> None:
    listed = set(listed_ids((REPO / "SECURITY.md").read_text()))
    problems = [
        f"{tag.where}: {i} is not listed in SECURITY.md"
        for tag in all_tags()
        for i in tag.ids
        if i not in listed
    ]
    problems += [
        f"{tag.where}: proves() is not on a test, a test class or pytestmark"
        for tag in all_tags()
        if not tag.on_a_test
    ]
    assert not problems, "\n".join(problems)


def test_the_checks_above_can_fail(tmp_path: Path) -> None:
    """The parser sees what a real table and real tags look like, and what they lack."""
    assert listed_ids("| id | x |\n|---|---|\n| T1 | a |\n| B07 | b |\ntext F09 |\n") == [
        "T1",
        "B07",
    ]
    source = tmp_path / "test_sample.py"
    source.write_text(
        "import pytest\n"
        "pytestmark = pytest.mark.proves('T9')\n"
        "@pytest.mark.proves('B01', 'F02')\n"
        "def test_a() -> None: ...\n"
        "@pytest.mark.parametrize('x', [pytest.param(1, marks=pytest.mark.proves('B03'))])\n"
        "def test_b(x: int) -> None: ...\n"
        "@pytest.mark.proves('T2')\n"
        "def helper() -> None: ...\n"
        "CASES = [pytest.param(2, marks=[pytest.mark.proves('F13')])]\n"
        "EXTRA = pytest.mark.proves('T5')\n"
    )
    tags = list(tags_in(source, tmp_path))
    assert [(t.ids, t.on_a_test) for t in tags] == [
        (("T9",), True),
        (("B01", "F02"), True),
        (("B03",), True),
        (("T2",), False),
        (("F13",), True),
        (("T5",), False),
    ]
    source.write_text("import pytest\n@pytest.mark.proves('T6x')\ndef test_c() -> None: ...\n")
    try:
        list(tags_in(source, tmp_path))
    except AssertionError as exc:
        assert "not an ID" in str(exc)
    else:
        raise AssertionError("a malformed ID was accepted")
