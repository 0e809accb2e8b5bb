"""A restore whose KMS Decrypt answer is cut off exits 6 with a backend message, not 5 (#21).

Before, the cut answer (arriving as ``{}``) was read as "KMS decrypted with
another key" and troubleshooting told the operator to treat it as tampering.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fixtures.answer_proxy import AnswerProxy
from fixtures.kms import MotoServer
from fixtures.servers import BackendSetup

from cli.conftest import KV
from cli.test_aws_cli import aws, trust, write_config  # noqa: F401 - fixtures
from keyvault.trust.model import KeyFile


@pytest.mark.parametrize("mode", ["headers", "empty"])
def test_restore_with_a_cut_kms_answer_exits_6(
    kv: KV,
    aws: BackendSetup,  # noqa: F811
    home: Path,
    moto_kms: MotoServer,
    tmp_path: Path,
    trust: tuple[Path, tuple[KeyFile, ...]],  # noqa: F811
    mode: str,
) -> None:
    config = write_config(home, aws)
    assert kv("--config", config, "backup").code == 0
    port = int(moto_kms.endpoint.rsplit(":", 1)[1])
    proxy = AnswerProxy(port, lambda r: b"TrentService.Decrypt" in r, mode)
    try:
        cut = write_config(
            home,
            BackendSetup(
                aws.name,
                aws.store,
                aws.wrappers,
                aws.env,
                aws.config_toml.replace(json.dumps(moto_kms.endpoint), json.dumps(proxy.endpoint)),
            ),
        )
        fresh = tmp_path / "laptop" / "trust"
        run = kv("--config", cut, "--trust-dir", fresh, "restore", "--all")
    finally:
        proxy.close()
    assert proxy.changed >= 1
    assert run.code == 6, run.err
    assert "cut off" in run.err and "another KMS key" not in run.err
    assert not (fresh / "private").exists() or not any((fresh / "private").iterdir())
