"""F13: a machine whose clock is off is named by ``keyvault doctor`` before signatures fail.

S3 and KMS refuse requests signed more than a few minutes off, and Vault and
CI tokens expire by the clock: the doctor compares this machine's clock with
the ``Date`` each configured endpoint sends, and fails beyond 120 s.
"""

from __future__ import annotations

import email.utils
import re
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from cli.conftest import KV

SKEW = 3600.0


def _server(offset: float) -> ThreadingHTTPServer:
    """An endpoint on 127.0.0.1 whose clock runs ``offset`` seconds from this machine's."""

    class Handler(BaseHTTPRequestHandler):
        def date_time_string(self, timestamp: float | None = None) -> str:
            return email.utils.formatdate(time.time() + offset, usegmt=True)

        def do_HEAD(self) -> None:
            self.send_response(403)  # what S3 answers an unsigned HEAD; it still has a Date
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture
def endpoints() -> Iterator[tuple[str, str]]:
    """(an endpoint an hour ahead, an endpoint on time)."""
    ahead, on_time = _server(SKEW), _server(0.0)
    try:
        yield (
            f"http://127.0.0.1:{ahead.server_address[1]}",
            f"http://127.0.0.1:{on_time.server_address[1]}",
        )
    finally:
        for server in (ahead, on_time):
            server.shutdown()
            server.server_close()


def _clock_findings(kv: KV, config: Path, s3: str, kms: str) -> dict[str, str]:
    with config.open("a") as f:
        f.write(f'\n[s3]\nendpoint_url = "{s3}"\n\n[awskms]\nendpoint_url = "{kms}"\n')
    run = kv("--json", "doctor")
    clock = {
        f["detail"].split(": ", 1)[0]: f for f in run.json()["findings"] if f["check"] == "clock"
    }
    assert set(clock) == {s3, kms}, run.out
    assert run.code == (1 if any(f["status"] == "fail" for f in clock.values()) else 0), run.out
    return {url: f"{f['status']}: {f['detail']}" for url, f in clock.items()}


@pytest.mark.proves("F13")
def test_doctor_fails_on_an_endpoint_an_hour_off_and_names_it(
    kv: KV, home: Path, endpoints: tuple[str, str]
) -> None:
    ahead, on_time = endpoints
    config = Path(kv("--json", "init").json()["config_file"])
    found = _clock_findings(kv, config, ahead, on_time)
    assert found[ahead].startswith("fail: ") and "fix NTP" in found[ahead], found
    (seconds,) = re.findall(r"clock differs by (\d+) s", found[ahead])
    assert abs(int(seconds) - SKEW) < 60, found  # the skew measured, whatever the load
    assert found[on_time].startswith("ok: "), found
    assert not kv("--json", "doctor").json()["healthy"]
