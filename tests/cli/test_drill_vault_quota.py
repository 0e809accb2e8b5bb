"""A drill against Transit under a real OpenBao rate limit quota: HTTP 429s are waited out.

The quota (``sys/quotas/rate-limit``: 1 request a second on this test's own
Transit mount, and a client over it blocked for 2 s) makes OpenBao itself
answer 429; keyvault's Vault client retries briefly, then the drill's pacing
pauses and tries again, and no key fails. The mount and the quota are this
test's alone and are removed at the end (the server is shared).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from fixtures.servers import BackendSetup
from fixtures.vault import BaoServer, unique

from cli import test_vault_cli
from cli.conftest import KV
from cli.test_vault_cli import PASS, write_config

vault = test_vault_cli.vault  # the vault store + transit wrapper fixture of the CLI tests
GUN = "example.com/team-a/app"


@pytest.fixture
def own_transit(bao: BaoServer) -> Iterator[tuple[str, str]]:
    """A Transit mount and derived key of this test's own; the quota's name."""
    root = bao.root()
    mount, quota = unique("transit-quota"), unique("drill-quota")
    root.sys.enable_secrets_engine("transit", path=mount)
    root.secrets.transit.create_key("k", key_type="aes256-gcm96", derived=True, mount_point=mount)
    yield mount, quota
    root.adapter.delete(f"/v1/sys/quotas/rate-limit/{quota}")
    root.sys.disable_secrets_engine(mount)


def test_a_drill_waits_out_vault_429s_and_passes_every_key(
    kv: KV,
    vault: BackendSetup,
    bao: BaoServer,
    own_transit: tuple[str, str],
    home: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    mount, quota = own_transit
    trust = home / ".docker" / "trust"
    test_vault_cli.sample(trust, (GUN,))
    for role in ("ROOT", "TARGETS", "SNAPSHOT"):
        monkeypatch.setenv(f"NOTARY_{role}_PASSPHRASE", PASS)
    config = write_config(
        home, vault, wrappers=(f"transit://{mount}/k",), extra="[drill]\nrate = 50\nmax_wait = 60\n"
    )
    assert kv("--config", config, "backup").code == 0
    bao.root().adapter.post(
        f"/v1/sys/quotas/rate-limit/{quota}",
        json={"path": f"{mount}/", "rate": 1, "interval": "1s", "block_interval": "2s"},
    )
    run = kv(
        "--config",
        config,
        "--json",
        "drill",
        "--gun",
        GUN,
        "--no-metadata",
        "--report-dir",
        tmp_path / "r",
    )
    assert run.code == 0, run.err
    doc = json.loads((tmp_path / "r" / "report.json").read_bytes())
    assert doc["status"] == "passed" and len(doc["checks"]) == 2
    assert all(c["passed"] and c["restore"] == "passed" for c in doc["checks"])
    pacing = doc["pacing"]
    assert pacing["throttled"] >= 1 and pacing["backoff_s"] > 0  # OpenBao did say 429
    assert pacing["keys_throttled"] == 0
    # every attempt was counted, the Vault client's own retries of a 429 too
    assert pacing["requests"] > len(doc["checks"]) + pacing["throttled"]
