"""F05: a sealed OpenBao (HTTP 503) is named as such, nothing is written, and once it is
unsealed a re-run completes. A private server, sealed and unsealed for real."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from fixtures.host import tree
from fixtures.servers import BackendSetup
from fixtures.vault import KV_MOUNT, TRANSIT_MOUNT, BaoServer, unique, vault_env

from cli.conftest import KV
from keyvault.trust.sample import write_sample_trust_dir

GUN = "example.com/team-a/app"


def _unseal(bao: BaoServer) -> None:
    """A dev server prints its one unseal key at start-up."""
    (key,) = re.findall(r"Unseal Key: (\S+)", (bao.workdir / "bao.log").read_text())
    bao.root().sys.submit_unseal_key(key)
    assert not bao.root().sys.is_sealed()


@pytest.mark.proves("F05")
def test_a_sealed_vault_is_named_nothing_is_written_and_a_rerun_completes(
    kv: KV, home: Path, make_bao: object, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    own: BaoServer = make_bao()  # type: ignore[operator]
    setup = BackendSetup(
        "vault",
        f"vault://{KV_MOUNT}/{unique('kv')}",
        (f"transit://{TRANSIT_MOUNT}/{own.transit_key()}",),
        vault_env(own),
        "",
    )
    for name, value in setup.env.items():
        monkeypatch.setenv(name, value)
    config = home / "vault.toml"
    config.write_text(
        f'[keyvault]\nteam = "team-a"\nstore = "{setup.store}"\n'
        f'wrappers = ["{setup.wrappers[0]}"]\n\n[vault]\ntimeout = 5\n'
    )
    trust = home / ".docker" / "trust"
    keys = write_sample_trust_dir(
        trust, dict.fromkeys(("root", "targets", "snapshot"), "pw"), (GUN,)
    )
    own.root().sys.seal()
    before = tree(trust)
    run = kv("--config", config, "backup")
    assert run.code == 6, run.out + run.err
    assert "sealed, in standby or unavailable (HTTP 503)" in run.err and own.address in run.err
    assert tree(trust) == before

    _unseal(own)
    rerun = kv("--config", config, "--json", "backup")
    assert rerun.code == 0, rerun.err
    assert sorted(k["action"] for k in rerun.json()["keys"]) == ["created"] * len(keys)
    fresh = tmp_path / "restored"
    assert kv("--config", config, "--trust-dir", fresh, "restore", "--all").code == 0
    assert all((fresh / "private" / k.relpath).read_bytes() == k.data for k in keys)
