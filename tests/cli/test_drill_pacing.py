"""A drill paces itself against KMS (moto), behind a proxy that throttles as AWS KMS does.

The proxy (fixtures/throttling.py) answers the first N Decrypt calls with KMS's
real throttling answer (HTTP 400, ThrottlingException, "Rate exceeded") and
passes the rest through to moto. ``[awskms] max_attempts = 1`` leaves every
retry to the drill's pacing, so each throttling answer is one the drill saw.
"""

from __future__ import annotations

import dataclasses
import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fixtures.kms import MotoServer, _toml_section, kms_settings
from fixtures.s3 import WeedServer, s3_settings
from fixtures.servers import BackendSetup
from fixtures.throttling import ThrottlingProxy

from cli import test_aws_cli
from cli.conftest import KV
from cli.test_aws_cli import PASS, write_config
from cli.test_drill_cli import paused_drill
from keyvault.trust.model import KeyFile

RATE = 200
aws, trust = test_aws_cli.aws, test_aws_cli.trust  # the S3 + KMS fixtures of the CLI tests


@pytest.fixture
def proxy(moto_kms: MotoServer) -> Iterator[ThrottlingProxy]:
    p = ThrottlingProxy(int(moto_kms.host_port.rpartition(":")[2]))
    yield p
    p.close()


@pytest.fixture
def drill_config(
    kv: KV,
    aws: BackendSetup,
    home: Path,
    weed: WeedServer,
    moto_kms: MotoServer,
    proxy: ThrottlingProxy,
    trust: tuple[Path, tuple[KeyFile, ...]],
    monkeypatch: pytest.MonkeyPatch,
) -> Path:
    """The keys backed up through moto directly; a config whose KMS is the proxy."""
    for role in ("ROOT", "TARGETS", "SNAPSHOT"):
        monkeypatch.setenv(f"NOTARY_{role}_PASSPHRASE", PASS)
    backup = kv("--config", write_config(home, aws), "backup")
    assert backup.code == 0, backup.err
    through_proxy = dataclasses.replace(
        aws,
        config_toml=(
            _toml_section("s3", s3_settings(weed))
            + _toml_section(
                "awskms", kms_settings(moto_kms, endpoint_url=proxy.endpoint, max_attempts=1)
            )
        ),
    )
    return write_config(home, through_proxy, extra=f"[drill]\nrate = {RATE}\nmax_wait = 30\n")


def drill(
    kv: KV, config: Path, report: Path, *args: str | Path
) -> tuple[int, dict[str, object], str]:
    run = kv(
        "--config",
        config,
        "--json",
        "drill",
        "--all",
        "--no-metadata",
        "--report-dir",
        report,
        *args,
    )
    doc = json.loads((report / "report.json").read_bytes())
    return run.code, doc, run.err


def test_a_throttled_drill_backs_off_and_passes_every_key(
    kv: KV,
    drill_config: Path,
    proxy: ThrottlingProxy,
    trust: tuple[Path, tuple[KeyFile, ...]],
    tmp_path: Path,
) -> None:
    _, keys = trust
    refused = kv("--config", drill_config, "drill", "--all", "--rate", "0")
    assert refused.code == 2 and "--rate must be above 0" in refused.err
    proxy.reset(throttle=3)
    code, doc, err = drill(kv, drill_config, tmp_path / "r")
    assert code == 0, err
    assert doc["status"] == "passed"
    checks = doc["checks"]
    assert isinstance(checks, list) and len(checks) == len(keys)
    assert all(c["passed"] and c["restore"] == "passed" for c in checks)
    pacing = doc["pacing"]
    assert isinstance(pacing, dict)
    assert proxy.throttled == 3 and pacing["throttled"] == 3  # every one seen, none failed
    assert pacing["backoff_s"] > 0 and pacing["keys_throttled"] == 0
    # keyvault counted every request KMS received, the throttled ones too
    assert pacing["requests"] == proxy.calls == len(keys) + 3
    assert pacing["rate"] == RATE and pacing["achieved_rate"] <= RATE


def test_a_key_throttled_too_long_is_not_checked_never_failed_and_a_resume_checks_it(
    kv: KV,
    drill_config: Path,
    proxy: ThrottlingProxy,
    home: Path,
    trust: tuple[Path, tuple[KeyFile, ...]],
    tmp_path: Path,
) -> None:
    _, keys = trust
    config = drill_config.read_text().replace("max_wait = 30", "max_wait = 0.2")
    drill_config.write_text(config)
    proxy.reset(throttle=10**9)
    code, doc, err = drill(kv, drill_config, tmp_path / "first")
    assert code == 6, err
    assert doc["status"] == "incomplete" and not doc["passed"]
    checks = doc["checks"]
    assert isinstance(checks, list) and len(checks) == len(keys)
    for check in checks:
        assert (check["restore"], check["passed"], check["error"]) == (
            "not-checked (throttled)",
            False,
            None,
        ), check
        assert "still throttled after" in check["throttled"]
        assert "ThrottlingException" in check["throttled"]
    assert "not checked: their key service kept throttling" in err
    assert "--resume" in err
    markdown = (tmp_path / "first" / "report.md").read_text()
    assert "## Not checked: throttled" in markdown and "## Failures" not in markdown

    proxy.reset(throttle=0)  # the service recovered: the resumed drill checks them all
    code, doc, err = drill(kv, drill_config, tmp_path / "second", "--resume", tmp_path / "first")
    assert code == 0, err
    assert doc["status"] == "passed" and proxy.calls == len(keys)
    resumed = doc["resumed_from"]
    assert isinstance(resumed, dict) and resumed["carried_over"] == 0


def test_a_resumed_drill_skips_the_keys_the_interrupted_one_checked(
    kv: KV,
    drill_config: Path,
    proxy: ThrottlingProxy,
    trust: tuple[Path, tuple[KeyFile, ...]],
    tmp_path: Path,
) -> None:
    """Interrupted after checking 2 keys; the resumed drill unwraps only the others, and its
    report covers every key, saying which were carried over."""
    _, keys = trust
    proc = paused_drill(
        2,
        "--config",
        drill_config,
        "--json",
        "drill",
        "--all",
        "--no-metadata",
        "--report-dir",
        tmp_path / "cut",
    )
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=60)
    cut = json.loads((tmp_path / "cut" / "report.json").read_bytes())
    assert cut["status"] == "interrupted"
    passed = {(c["key_id"], c["role"]) for c in cut["checks"] if c["passed"]}
    assert len(passed) == 2

    proxy.reset()
    run = kv(
        "--config",
        drill_config,
        "drill",
        "--all",
        "--no-metadata",
        "--report-dir",
        tmp_path / "resumed",
        "--resume",
        tmp_path / "cut",
    )
    assert run.code == 0, run.err
    assert proxy.calls == len(keys) - 2  # the two checked keys were not unwrapped again
    # the console says what was taken over, and the pace
    assert "Resumed: 2 check(s) taken over from the drill started" in run.out
    assert f"Key services: {len(keys) - 2} requests" in run.out and "achieved" in run.out
    doc = json.loads((tmp_path / "resumed" / "report.json").read_bytes())
    checks = doc["checks"]
    assert isinstance(checks, list) and len(checks) == len(keys) and doc["passed"]
    assert {(c["key_id"], c["role"]) for c in checks if c["carried_over"]} == passed
    resumed = doc["resumed_from"]
    assert isinstance(resumed, dict) and resumed["carried_over"] == 2
    assert resumed["started"] == cut["started"]
    assert "(carried over)" in (tmp_path / "resumed" / "report.md").read_text()
    record = kv("--json", "audit", "show", "--action", "drill").json()["records"][-1]
    assert f"{len(keys)} checks, 0 failed, 2 carried over;" in record["detail"]


def test_a_report_changed_after_the_drill_is_not_resumed_from(
    kv: KV, drill_config: Path, proxy: ThrottlingProxy, tmp_path: Path
) -> None:
    """A report whose failed or throttled keys were edited to 'passed' is refused (exit 5):
    its SHA-256 is not the one the audit log recorded, so nothing is skipped on its word."""
    proxy.reset(throttle=10**9)
    drill_config.write_text(drill_config.read_text().replace("max_wait = 30", "max_wait = 0"))
    code, doc, _ = drill(kv, drill_config, tmp_path / "first")
    assert code == 6
    forged = dict(
        doc,
        checks=[dict(c, passed=True, throttled=None, restore="passed") for c in doc["checks"]],  # type: ignore[attr-defined]
    )
    (tmp_path / "first" / "report.json").write_text(json.dumps(forged))
    proxy.reset()
    run = kv(
        "--config",
        drill_config,
        "drill",
        "--all",
        "--no-metadata",
        "--report-dir",
        tmp_path / "second",
        "--resume",
        tmp_path / "first",
    )
    assert run.code == 5, run.err
    assert "audit log recorded" in run.err and proxy.calls == 0


def test_a_drill_stopped_during_a_throttling_pause_ends_at_once_and_says_so(
    drill_config: Path, proxy: ThrottlingProxy, tmp_path: Path
) -> None:
    """SIGTERM while 4 workers wait out KMS's throttling (max_wait 600 s): the pauses
    are given up, the drill ends with 143 and a report whose keys are 'not finished',
    none failed and none given up as throttled."""
    four_workers = drill_config.read_text().replace("concurrency = 1", "concurrency = 4")
    drill_config.write_text(four_workers.replace("max_wait = 30", "max_wait = 600"))
    proxy.reset(throttle=10**9)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "keyvault",
            "--config",
            str(drill_config),
            "drill",
            "--all",
            "--no-metadata",
            "--report-dir",
            str(tmp_path / "r"),
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    while proxy.throttled < 3 and proc.poll() is None:  # the drill is in its pauses
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    try:
        _, err = proc.communicate(timeout=120)  # not the 600 s the pauses could last
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 143, err
    report = json.loads((tmp_path / "r" / "report.json").read_bytes())
    assert report["status"] == "interrupted"
    assert all(
        c["error"] == "not finished: interrupted by SIGTERM" and c["throttled"] is None
        for c in report["checks"]
    ), report["checks"]
