"""``keyvault doctor`` reports each check, with what to do."""

from __future__ import annotations

import shutil
from pathlib import Path

from cli.conftest import KV


def test_doctor_on_a_fresh_embedded_default(kv: KV, home: Path) -> None:
    init = kv("--json", "init")
    run = kv("--json", "doctor")
    assert run.code == 0, run.out
    findings = {(f["check"], f["status"]) for f in run.json()["findings"]}
    assert ("config", "ok") in findings and ("store", "ok") in findings
    assert ("wrapper", "ok") in findings and ("recovery-identity", "ok") in findings
    assert ("trust-dir", "warn") in findings  # no trust directory yet
    assert run.json()["healthy"]
    Path(init.json()["identity_file"]).chmod(0o644)
    loose = kv("--json", "doctor").json()["findings"]
    assert any(f["check"] == "recovery-identity" and f["status"] == "warn"
               and "chmod 600" in f["detail"] for f in loose)
    assert "AGE-SECRET-KEY" not in kv("doctor").out


def test_doctor_fails_on_a_missing_store(kv: KV, home: Path) -> None:
    init = kv("--json", "init")
    shutil.rmtree(init.json()["store"].removeprefix("file://"))
    run = kv("--json", "doctor")
    assert run.code == 1
    failed = [f for f in run.json()["findings"] if f["status"] == "fail"]
    assert [f["check"] for f in failed] == ["store"]
    assert "point it at the store you kept" in failed[0]["detail"]
