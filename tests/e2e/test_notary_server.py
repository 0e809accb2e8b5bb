"""The notary-server fixture is the real thing: TLS under the fixture's CA only, real errors."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from urllib.parse import urlsplit

from fixtures.notary_server import HEALTH_PATH, NotaryServer
from notarykit import Notary

from e2e.machines import NotaryClient, fatal_line


def test_server_answers_under_the_fixture_ca_only(
    notary: Notary, notary_server: NotaryServer, tmp_path: Path
) -> None:
    assert json.loads(notary_server.get(HEALTH_PATH)) == {}
    gun = f"kv/{uuid.uuid4().hex[:8]}/absent"
    client = NotaryClient(notary, notary_server, tmp_path / "trusting")
    proc = client.run("list", gun, check=False)
    assert proc.returncode == 1
    host = urlsplit(notary_server.url).netloc
    assert fatal_line(proc) == f"{host} does not have trust data for {gun}"

    # The system CAs do not vouch for the fixture's server certificate.
    proc = notary.run(tmp_path / "untrusting", "-s", notary_server.url, "list", gun, check=False)
    assert proc.returncode == 1
    assert fatal_line(proc) == "client is offline"
