"""A strict validator for the subset of JSON Schema (2020-12) that keyvault's --json schemas use.

No third-party validator is needed, and none would check what matters here: a
keyword this module does not know is an error (a schema cannot silently say less
than it seems to), ``format: date-time`` is always checked, and so is the
strictness rule of :func:`strictness_problems` (every object closes its fields).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from keyvault.cli.schemas import SCHEMA_DIR, schema_names

KEYWORDS = frozenset(
    {
        "$schema",
        "$id",
        "$defs",
        "$ref",
        "title",
        "description",
        "type",
        "properties",
        "required",
        "additionalProperties",
        "items",
        "enum",
        "const",
        "format",
        "anyOf",
        "pattern",
    }
)
TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,),
    "array": (list,),
    "string": (str,),
    "boolean": (bool,),
    "integer": (int,),
    "number": (int, float),
    "null": (type(None),),
}
#: ISO-8601 / RFC 3339 date-times as keyvault writes them: UTC, 'Z', optional fraction.
DATE_TIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?Z")


class SchemaError(AssertionError):
    """The instance does not conform, or the schema uses what this validator does not know."""


def load(name: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((SCHEMA_DIR / f"{name}.json").read_text())
    return doc


def validate(instance: Any, name: str) -> None:
    """Raise SchemaError naming the JSON path of the first thing that does not conform."""
    _check(instance, load(name), name, "$")


def _resolve(ref: str, current: str) -> tuple[dict[str, Any], str]:
    file, _, pointer = ref.partition("#")
    name = Path(file).stem if file else current
    node: Any = load(name)
    for part in [p for p in pointer.split("/") if p]:
        node = node[part]
    return node, name


def _is_type(value: Any, kind: str) -> bool:
    if kind in ("integer", "number") and isinstance(value, bool):
        return False
    return isinstance(value, TYPES[kind])


def _check(value: Any, schema: Mapping[str, Any], name: str, path: str) -> None:
    unknown = set(schema) - KEYWORDS
    if unknown:
        raise SchemaError(f"{name}: {path}: unsupported keywords {sorted(unknown)}")
    if "$ref" in schema:
        target, target_name = _resolve(schema["$ref"], name)
        _check(value, target, target_name, path)
    if "anyOf" in schema:
        failures = []
        for option in schema["anyOf"]:
            try:
                _check(value, option, name, path)
                break
            except SchemaError as exc:
                failures.append(str(exc))
        else:
            raise SchemaError(f"{path}: matches none of anyOf: {'; '.join(failures)}")
    kinds = schema.get("type")
    if kinds is not None:
        options = [kinds] if isinstance(kinds, str) else list(kinds)
        if not any(_is_type(value, k) for k in options):
            raise SchemaError(f"{path}: {json.dumps(value)[:80]} is not {' or '.join(options)}")
    if "const" in schema and value != schema["const"]:
        raise SchemaError(f"{path}: {value!r} is not {schema['const']!r}")
    if "enum" in schema and value not in schema["enum"]:
        raise SchemaError(f"{path}: {value!r} is not one of {schema['enum']}")
    if isinstance(value, str):
        if schema.get("format") == "date-time" and not _date_time(value):
            raise SchemaError(f"{path}: {value!r} is not an ISO-8601 UTC date-time")
        if "pattern" in schema and not re.search(schema["pattern"], value):
            raise SchemaError(f"{path}: {value!r} does not match {schema['pattern']}")
    if isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            _check(item, schema["items"], name, f"{path}[{i}]")
    if isinstance(value, dict):
        _check_object(value, schema, name, path)


def _check_object(value: dict[str, Any], schema: Mapping[str, Any], name: str, path: str) -> None:
    properties: Mapping[str, Any] = schema.get("properties", {})
    missing = [k for k in schema.get("required", []) if k not in value]
    if missing:
        raise SchemaError(f"{path}: missing {missing}")
    extra = schema.get("additionalProperties", True)
    for key, item in value.items():
        if key in properties:
            _check(item, properties[key], name, f"{path}.{key}")
        elif extra is False:
            raise SchemaError(f"{path}: unexpected field {key!r} (not in the schema)")
        elif isinstance(extra, dict):
            _check(item, extra, name, f"{path}.{key}")


def _date_time(text: str) -> bool:
    if not DATE_TIME.fullmatch(text):
        return False
    try:
        datetime.fromisoformat(text[:19])
    except ValueError:
        return False
    return True


def _objects(node: Any, path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    if isinstance(node, dict):
        if node.get("type") == "object" or (
            isinstance(node.get("type"), list) and "object" in node["type"]
        ):
            yield path, node
        for key, child in node.items():
            if key not in ("enum", "const"):
                yield from _objects(child, f"{path}/{key}")
    elif isinstance(node, list):
        for i, child in enumerate(node):
            yield from _objects(child, f"{path}/{i}")


def strictness_problems() -> list[str]:
    """Every object schema either closes its fields (additionalProperties false, each
    field required: keyvault always writes every field, null when it has no value) or is
    a map whose values have a schema; so a renamed, added or dropped field fails."""
    problems = []
    for name in schema_names():
        for path, node in _objects(load(name), name):
            if "properties" in node:
                if node.get("additionalProperties") is not False:
                    problems.append(f"{path}: additionalProperties is not false")
                if sorted(node.get("required", [])) != sorted(node["properties"]):
                    problems.append(f"{path}: not every field is required")
            elif not isinstance(node.get("additionalProperties"), dict):
                problems.append(f"{path}: an object with neither fields nor a value schema")
    return problems
