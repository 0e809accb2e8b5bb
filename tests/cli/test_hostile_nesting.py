"""Deeply nested TOML or JSON is a clean refusal, never ``internal error (RecursionError)``.

Local config and policy files exit 2; a notary server's answer exits 6 (the
backend misbehaves). The server here is a hostile one on loopback: a plain
``http.server`` that answers every TUF request with nested brackets.
"""

from __future__ import annotations

import base64
import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from cli.conftest import KV
from keyvault import bounded
from keyvault.ops import ci

pytestmark = pytest.mark.proves("T10")

DEEP = 100_000
GUN = "example.com/hostile/app"


def nested_json() -> bytes:
    return b"[" * DEEP + b"]" * DEEP


def clean(run_err: str) -> bool:
    return "internal error" not in run_err and "RecursionError" not in run_err


def test_a_deeply_nested_config_exits_2(kv: KV, tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text("[keyvault]\nteam = " + "[" * DEEP + "]" * DEEP + "\n")
    run = kv("--config", config, "list")
    assert run.code == 2 and clean(run.err), run.err
    assert str(config) in run.err and "nested more than" in run.err


def test_a_deeply_nested_policy_exits_2(kv: KV, tmp_path: Path) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text("version = 1\nx = " + "{a = " * 2000 + "1" + "}" * 2000 + "\n")
    run = kv("policy", "validate", policy)
    assert run.code == 2 and clean(run.err), run.err
    assert "nested more than" in run.err


class _Hostile(http.server.BaseHTTPRequestHandler):
    """Answers ``root.json`` (and ``timestamp.key`` when asked to) with deep nesting."""

    key_too: bool = False

    def do_GET(self) -> None:
        if self.path.endswith("/root.json") or (self.key_too and self.path.endswith(".key")):
            body = nested_json()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        else:
            self.send_error(404)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(params=["root.json", "timestamp.key"])
def hostile_server(request: pytest.FixtureRequest) -> Iterator[str]:
    handler = type("Handler", (_Hostile,), {"key_too": request.param == "timestamp.key"})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_coverage_against_a_server_answering_deep_json_exits_6(kv: KV, hostile_server: str) -> None:
    assert kv("init").code == 0
    run = kv("coverage", "--gun", GUN, "--server", hostile_server)
    assert run.code == 6 and clean(run.err), run.err
    assert "nested more than" in run.err and "notary server" in run.err


def test_a_ci_token_with_deeply_nested_claims_is_only_not_named() -> None:
    """The ``sub`` of an ID token is read for the audit log only; deep claims are ignored."""
    claims = base64.urlsafe_b64encode(b"[" * 3000 + b"]" * 3000).rstrip(b"=").decode()
    assert ci._jwt_subject(f"e30.{claims}.sig") is None
    good = base64.urlsafe_b64encode(json.dumps({"sub": "ci"}).encode()).rstrip(b"=").decode()
    assert ci._jwt_subject(f"e30.{good}.sig") == "ci"


@pytest.mark.parametrize(
    "text",
    [
        '{"a": "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["}',
        '["\\"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[\\""]',
        "[" * bounded.MAX_DEPTH + "]" * bounded.MAX_DEPTH,
        '["a\\\\", "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[\\\\"]',
    ],
)
def test_brackets_in_strings_and_the_maximum_depth_still_parse(text: str) -> None:
    assert bounded.json_loads(text) == json.loads(text)


@pytest.mark.parametrize("string", ['"\\\\"', '"a\\"b"', '""', '"\\u005b"'])
def test_brackets_after_a_string_count_however_it_ends(string: str) -> None:
    """A string ends at its first unescaped quote (an escaped backslash escapes nothing
    after it): the brackets after it count."""
    deep = f"[{string}, " + "[" * bounded.MAX_DEPTH + "]" * bounded.MAX_DEPTH + "]"
    with pytest.raises(bounded.TooDeep):
        bounded.json_loads(deep)
    assert bounded.json_loads(f"[{string}]") == json.loads(f"[{string}]")


@pytest.mark.parametrize("opening", ["[", '{"a":'])
def test_one_level_too_deep_is_refused_however_few_brackets_there_are(opening: str) -> None:
    """A document with at most MAX_DEPTH opening brackets cannot nest deeper and is not
    scanned; one more level is at once one more bracket, so it is scanned and refused."""
    closing = "]" if opening == "[" else "}"
    at_limit = opening * bounded.MAX_DEPTH + "1" + closing * bounded.MAX_DEPTH
    assert bounded.json_loads(at_limit) == json.loads(at_limit)
    with pytest.raises(bounded.TooDeep):
        bounded.json_loads(opening + at_limit + closing)


def test_toml_strings_and_comments_do_not_count() -> None:
    text = (
        "a = '[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[['\n"
        "# [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[\n"
        'b = """\n[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["""\n[[t]]\nc = [[1], [2]]\n'
    )
    assert bounded.toml_loads(text)["t"] == [{"c": [[1], [2]]}]
