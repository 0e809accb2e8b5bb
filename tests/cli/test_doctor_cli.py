"""``keyvault doctor`` reports each check, with what to do."""

from __future__ import annotations

import datetime
import email.utils
import re
import shutil
from pathlib import Path

import pytest
from fixtures.answer_proxy import AnswerProxy
from fixtures.vault import BaoServer

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
    assert any(
        f["check"] == "recovery-identity" and f["status"] == "warn" and "chmod 600" in f["detail"]
        for f in loose
    )
    assert "AGE-SECRET-KEY" not in kv("doctor").out


def test_doctor_fails_on_a_missing_store(kv: KV, home: Path) -> None:
    init = kv("--json", "init")
    shutil.rmtree(init.json()["store"].removeprefix("file://"))
    run = kv("--json", "doctor")
    assert run.code == 1
    failed = [f for f in run.json()["findings"] if f["status"] == "fail"]
    assert [f["check"] for f in failed] == ["store"]
    assert "point it at the store you kept" in failed[0]["detail"]


def test_doctor_names_a_skewed_clock(
    kv: KV, home: Path, bao: BaoServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A proxy in front of the real OpenBao moves its ``Date`` an hour ahead: the clock
    check fails and says what to do; straight to the server it passes."""
    kv("init")
    ahead = email.utils.format_datetime(
        datetime.datetime.now(datetime.UTC) + datetime.timedelta(hours=1), usegmt=True
    )
    proxy = AnswerProxy(
        bao.port,
        lambda _: True,
        "rewrite",
        rewrite_head=lambda head: re.sub(rb"(?im)^Date: .*$", b"Date: " + ahead.encode(), head),
    )
    try:
        monkeypatch.setenv("VAULT_ADDR", proxy.endpoint)
        skewed = kv("--json", "doctor")
    finally:
        proxy.close()
    assert proxy.changed >= 1
    clock = [f for f in skewed.json()["findings"] if f["check"] == "clock"]
    assert [f["status"] for f in clock] == ["fail"], clock
    assert "clock differs by 3" in clock[0]["detail"] and "fix NTP" in clock[0]["detail"]
    assert skewed.code == 1
    monkeypatch.setenv("VAULT_ADDR", bao.address)
    straight = [f for f in kv("--json", "doctor").json()["findings"] if f["check"] == "clock"]
    assert [f["status"] for f in straight] == ["ok"], straight
