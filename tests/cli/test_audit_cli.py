"""Every backup, restore, rewrap and refusal lands in the audit log; ``audit verify`` checks it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cli.conftest import KV
from keyvault.trust.sample import write_sample_trust_dir

PASS = "correct horse"


@pytest.mark.proves("T12", "T13")
def test_operations_and_refusals_are_recorded(kv: KV, home: Path, tmp_path: Path) -> None:
    trust = home / ".docker" / "trust"
    keys = write_sample_trust_dir(
        trust, dict.fromkeys(("root", "targets", "snapshot"), PASS), ("example.com/a/app",)
    )
    assert kv("init").code == 0
    assert kv("backup").code == 0
    assert kv("backup").code == 0  # unchanged: recorded, no keys named
    assert kv("--trust-dir", tmp_path / "t", "restore", "--all").code == 0
    assert kv("--trust-dir", tmp_path / "t2", "restore", "--key-id", "000000").code == 3

    run = kv("--json", "audit", "show")
    assert run.code == 0, run.err
    records = run.json()["records"]
    assert [(r["action"], r["outcome"]) for r in records] == [
        ("backup", "ok"),
        ("backup", "ok"),
        ("restore", "ok"),
        ("restore", "failed"),
    ]
    assert {k["key_id"] for k in records[0]["keys"]} == {k.key_id for k in keys}
    assert records[1]["keys"] == [] and "0 written" in records[1]["detail"]
    assert len(records[2]["keys"]) == len(keys)
    assert "not-found" in records[3]["detail"]
    log_text = Path(run.json()["log"]).read_text()
    for key in keys:
        assert key.data.decode() not in log_text
    assert PASS not in log_text

    ok = kv("--json", "audit", "verify")
    assert ok.code == 0 and ok.json()["intact"] and ok.json()["records"] == 4

    log = Path(run.json()["log"])
    lines = log.read_bytes().splitlines()
    edited = json.loads(lines[0])
    edited["outcome"] = "failed"
    lines[0] = json.dumps(edited).encode()
    log.write_bytes(b"\n".join(lines) + b"\n")
    bad = kv("audit", "verify")
    assert bad.code == 5 and "record 1: was edited" in bad.err
    filtered = kv("--json", "audit", "show", "--action", "restore")
    assert {r["action"] for r in filtered.json()["records"]} == {"restore"}


@pytest.mark.proves("T13")
def test_store_copies_reveal_a_truncated_log(kv: KV, home: Path, tmp_path: Path) -> None:
    write_sample_trust_dir(
        home / ".docker" / "trust",
        dict.fromkeys(("root", "targets", "snapshot"), PASS),
        ("example.com/a/app",),
    )
    init = kv("--json", "init")
    config = Path(init.json()["config_file"])
    config.write_text(
        config.read_text().replace("[keyvault]\n", "[keyvault]\naudit_to_store = true\n")
    )
    assert kv("backup").code == 0
    assert kv("--trust-dir", tmp_path / "t", "restore", "--all").code == 0
    store = home / ".local" / "share" / "keyvault" / "store" / "objects"
    copies = sorted(
        p
        for p in (store / "v1" / "teams" / "default" / "audit").iterdir()
        if p.name != "checkpoints"
    )
    assert len(copies) == 2
    assert kv("audit", "verify").code == 0
    log = Path(kv("--json", "audit", "show").json()["log"])
    log.write_bytes(log.read_bytes().splitlines(keepends=True)[0])  # drop the last record
    assert kv("audit", "verify", "--against-store").code == 5
    run = kv("audit", "verify")
    assert run.code == 5 and "record 2: is in the store but not in the local log" in run.err
