"""keyvault's two JSON forms: the stored one must stay byte for byte what it always was
(every stored envelope is hashed into the chain of versions), the canonical one too."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keyvault.canonical import canonical_json, pretty_json

# Text that exercises every escape: quotes, backslashes, controls, non-ASCII, surrogates.
_TEXT = st.text(alphabet=st.characters(codec=None), max_size=12) | st.sampled_from(
    ['"', "\\", "\n\t\x00\x1f", "é☃", "\U0001f511", "\ud800", "</script>", ""]
)
_LEAF = st.none() | st.booleans() | st.integers() | _TEXT
_PLAIN = st.recursive(
    _LEAF,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.tuples(inner, inner)
        | st.dictionaries(_TEXT, inner, max_size=5)
    ),
    max_leaves=30,
)


def _dumps(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True)


@settings(max_examples=400, deadline=None)
@given(_PLAIN)
def test_pretty_json_is_exactly_the_json_modules_indented_form(value: Any) -> None:
    assert pretty_json(value) == _dumps(value)


@pytest.mark.parametrize(
    "value",
    [
        {"a": 1.5, "b": [1, 2]},  # a float: left to the json module
        {"nested": {"x": float("inf")}},
        {1: "int key", 2: "another"},  # keys json turns into text
        {"deep": [{"k": True}, [], {}, ()]},
        [],
        {},
        "just text",
        -(2**70),
    ],
)
def test_pretty_json_matches_for_values_it_leaves_to_the_json_module(value: Any) -> None:
    assert pretty_json(value) == _dumps(value)


def test_pretty_json_refuses_what_the_json_module_refuses() -> None:
    with pytest.raises(TypeError):
        pretty_json({"a": b"bytes"})
    with pytest.raises(TypeError):
        pretty_json({"a": 1, 2: "mixed keys cannot be sorted"})


def test_canonical_json_is_compact_sorted_utf8_and_refuses_nan() -> None:
    assert canonical_json({"b": "é", "a": [1, None]}) == '{"a":[1,null],"b":"é"}'.encode()
    with pytest.raises(ValueError):
        canonical_json({"x": float("nan")})
