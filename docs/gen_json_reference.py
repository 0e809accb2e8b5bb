"""Generate docs/json.md from the JSON Schemas in keyvault/cli/schemas.

Run ``python docs/gen_json_reference.py``; tests/ship/test_json_reference.py
fails while the page differs from what this writes.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from keyvault.cli.schemas import SCHEMA_DIR, command_schemas  # noqa: E402

INTRO = """# JSON output

Every command that takes `--json` prints one JSON document on stdout, and
nothing else there (progress, warnings and hints go to stderr). Each document
has a JSON Schema (draft 2020-12) in the package, `keyvault/cli/schemas/<command>.json`
(a sub-command's words joined with `-`: `audit-show.json`); this page is generated
from them, and the tests validate every `--json` output against them.

The rules every document follows:

- **Every field is always present.** A field with no value is `null` (or an empty
  list), never left out; a field not listed here never appears. A new field, or a
  renamed one, is a change of this page and of the changelog.
- **Times are ISO-8601 in UTC**, `2026-01-31T12:00:00Z` (the audit log's `time`
  adds microseconds). Durations are numbers of seconds in fields ending in `_s`.
  The one exception is `daemon status`'s `metrics`: Prometheus samples as the
  daemon's `/metrics` serves them, where `*_timestamp_seconds` and
  `*_time_seconds` are Unix times.
- **Commands on stored keys name the store and the team**: `backup`, `restore`,
  `verify`, `list`, `versions`, `rewrap`, `coverage` and `drill` have `store` and
  `team` at the top.
- **One entry shape per thing**: `quickstart`'s `backed_up` entries are
  `backup`'s `keys` entries.
- **A failure** (exit code other than 0) prints the [error document](#error)
  instead, unless the command's own document carries the failure per key (for
  example `verify`, `backup`, `coverage`, `policy check`).
- `keyvault exec` writes no JSON: its output is COMMAND's own. `keyvault --json exec`
  is refused (exit 2, nothing fetched); use `keyvault --json fetch` for the keys as JSON.
- `keyvault --version --json` prints the [version document](#version).

Types: `string?` is a string or `null`; `[T]` a list of T; `{string: T}` an object
whose keys are names (not fixed fields) and whose values are T.
"""


def _load(name: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((SCHEMA_DIR / f"{name}.json").read_text())
    return doc


def _resolve(schema: dict[str, Any], current: str) -> tuple[dict[str, Any], str]:
    while "$ref" in schema:
        file, _, pointer = schema["$ref"].partition("#")
        current = Path(file).stem if file else current
        node: Any = _load(current)
        for part in [p for p in pointer.split("/") if p]:
            node = node[part]
        schema = {**node, **{k: v for k, v in schema.items() if k != "$ref"}}
    return schema, current


def _type(schema: dict[str, Any], current: str) -> str:
    schema, current = _resolve(schema, current)
    if "anyOf" in schema:
        nullable = any(_resolve(o, current)[0].get("type") == "null" for o in schema["anyOf"])
        rest = [
            _type(o, current)
            for o in schema["anyOf"]
            if _resolve(o, current)[0].get("type") != "null"
        ]
        return " or ".join(rest) + ("?" if nullable else "")
    if "const" in schema:
        return json.dumps(schema["const"])
    if "enum" in schema:
        return " \\| ".join(f"`{v}`" for v in schema["enum"])
    kinds = schema.get("type")
    options = [kinds] if isinstance(kinds, str) else list(kinds or [])
    nullable = "null" in options
    options = [k for k in options if k != "null"]
    text = options[0] if len(options) == 1 else " or ".join(options)
    if text == "array":
        text = f"[{_type(schema['items'], current)}]"
    elif text == "object" and "properties" not in schema:
        text = f"{{string: {_type(schema['additionalProperties'], current)}}}"
    elif text == "string" and schema.get("format") == "date-time":
        text = "ISO-8601 time"
    return text + ("?" if nullable else "")


def _rows(schema: dict[str, Any], current: str, prefix: str) -> list[str]:
    schema, current = _resolve(schema, current)
    rows: list[str] = []
    for name, field in schema.get("properties", {}).items():
        resolved, where = _resolve(field, current)
        options = [resolved] + [_resolve(o, where)[0] for o in resolved.get("anyOf", [])]
        description = next(
            (o["description"] for o in [field, *options] if o.get("description")), ""
        )
        rows.append(f"| `{prefix}{name}` | {_type(field, current)} | {description} |")
        for option in options:
            inner = option.get("items", option)
            inner, inner_where = _resolve(inner, where)
            if "properties" in inner:
                nested = f"{prefix}{name}[]." if "items" in option else f"{prefix}{name}."
                rows += _rows(inner, inner_where, nested)
                break
    return rows


def render() -> str:
    parts = [INTRO]
    for name in command_schemas():
        schema = _load(name)
        anchor = f'<a id="{name}"></a>\n' if name in ("error", "version") else ""
        parts.append(
            f"{anchor}## `{schema['title']}`\n\n{schema['description']} "
            f"Schema: `keyvault/cli/schemas/{name}.json`.\n"
        )
        # A command with two kinds of answer (e.g. quickstart --remove-sample): one table each.
        for variant in schema.get("anyOf", [schema]):
            resolved = _resolve(variant, name)[0]
            rows = _rows(variant, name, "")
            if variant is not schema and resolved.get("description"):
                parts.append(f"{resolved['description']}\n")
            if rows:
                parts.append("| field | type | meaning |\n|---|---|---|\n" + "\n".join(rows) + "\n")
    return "\n".join(parts)


if __name__ == "__main__":
    (REPO / "docs" / "json.md").write_text(render())
