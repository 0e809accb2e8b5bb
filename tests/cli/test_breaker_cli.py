"""A dead backend ends a run in a few requests, not a wait per key (#21, keyvault.breaker).

Counts, not times: a backup against a sealed OpenBao (real, sealed with
``sys/seal``) starts at most ``--jobs`` + ``give_up_after`` keys and sends fewer
requests than it has keys; the rest are reported as not attempted (exit 6).
A Vault that dies mid-backup leaves each key either backed up whole or not at
all, and a re-run backs up the rest, the done ones unchanged. A drill counts the
keys it did not start (neither passed nor failed), per wrapper; restore, fetch and
exec, all or nothing, say how many of their keys they never started.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from fixtures.answer_proxy import AnswerProxy
from fixtures.kms import KMS_CREDS, KmsKey, MotoServer
from fixtures.proxy import CuttingProxy
from fixtures.vault import ROOT_TOKEN, TRANSIT_MOUNT, BaoServer

from cli.conftest import KV
from keyvault.plugins import BackendOptions
from keyvault.stores.file import MARKER_NAME, FileStore
from keyvault.trust.sample import write_sample_trust_dir

GUNS = tuple(f"example.com/fleet/app{i}" for i in range(10))
JOBS = 4
GIVE_UP_AFTER = 3
KMS_ENV = {
    "AWS_ACCESS_KEY_ID": KMS_CREDS[0],
    "AWS_SECRET_ACCESS_KEY": KMS_CREDS[1],
    "AWS_EC2_METADATA_DISABLED": "true",
}


@pytest.fixture
def fleet(home: Path) -> int:
    keys = write_sample_trust_dir(
        home / ".docker" / "trust", dict.fromkeys(("root", "targets", "snapshot"), "p"), GUNS
    )
    return len(keys)


def config_for(home: Path, key: str, address: str) -> Path:
    return config_with(
        home,
        f"transit://{TRANSIT_MOUNT}/{key}",
        ["[vault]", f'address = "{address}"', "timeout = 5"],
    )


def config_with(home: Path, wrapper: str, sections: list[str]) -> Path:
    path = home / "kv-breaker.toml"
    if not (home / "store").exists():
        FileStore.from_uri(f"file://{home / 'store'}", BackendOptions(), create=True).close()
    path.write_text(
        "\n".join(
            [
                "[keyvault]",
                'team = "team-a"',
                f'store = "file://{home / "store"}"',
                f"wrappers = [{json.dumps(wrapper)}]",
                f"give_up_after = {GIVE_UP_AFTER}",
                "",
                *sections,
                "",
            ]
        )
    )
    return path


def envelopes(home: Path) -> list[Path]:
    return sorted(
        p
        for p in (home / "store").rglob("*")
        if p.is_file() and "audit" not in p.parts and p.name != MARKER_NAME
    )


@pytest.fixture
def sealed(
    make_bao: Callable[[], BaoServer], monkeypatch: pytest.MonkeyPatch
) -> tuple[BaoServer, str]:
    """A private OpenBao with a Transit key, then sealed (sys/seal): every request is a 503."""
    bao = make_bao()
    key = bao.transit_key(team="team-a")
    monkeypatch.setenv("VAULT_TOKEN", ROOT_TOKEN)
    bao.root().sys.seal()
    return bao, key


def test_a_sealed_vault_stops_the_backup_after_a_few_requests(
    kv: KV, home: Path, fleet: int, sealed: tuple[BaoServer, str]
) -> None:
    bao, key = sealed
    counter = AnswerProxy(bao.port, lambda _: False, "empty")  # passes every request through
    try:
        run = kv(
            "--config",
            config_for(home, key, counter.endpoint),
            "--json",
            "backup",
            "--jobs",
            str(JOBS),
            "--no-pins",
        )
    finally:
        counter.close()
    assert run.code == 6, run.err
    assert counter.requests < fleet  # before the breaker: 4 attempts for every key
    doc = run.json()
    attempted = [k for k in doc["keys"] if k["action"] != "not-attempted"]
    assert doc["not_attempted"] == fleet - len(attempted) > 0
    assert len(attempted) <= JOBS + GIVE_UP_AFTER
    skipped = next(k for k in doc["keys"] if k["action"] == "not-attempted")
    assert skipped["error"]["exit_code"] == 6
    assert "not attempted: a backend is down" in skipped["error"]["message"]
    assert "sealed" in skipped["error"]["message"] or "503" in skipped["error"]["message"]
    assert envelopes(home) == []


def test_the_console_says_how_many_keys_were_not_attempted(
    kv: KV, home: Path, fleet: int, sealed: tuple[BaoServer, str]
) -> None:
    bao, key = sealed
    run = kv(
        "--config", config_for(home, key, bao.address), "backup", "--jobs", str(JOBS), "--no-pins"
    )
    assert run.code == 6
    lines = [line for line in run.err.splitlines() if "not attempted" in line]
    assert len(lines) == 1, run.err  # one line, not one per key
    count = lines[0].split()[1]
    assert count.isdigit() and int(count) >= fleet - JOBS - GIVE_UP_AFTER


def test_a_vault_dying_mid_backup_leaves_nothing_half_written_and_a_rerun_goes_on(
    kv: KV, home: Path, fleet: int, bao: BaoServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = bao.transit_key(team="team-a")
    monkeypatch.setenv("VAULT_TOKEN", ROOT_TOKEN)
    proxy = CuttingProxy(
        bao.port, cut_at=6, refuse_after=True, is_write=lambda data: b"/encrypt/" in data
    )
    try:
        first = kv(
            "--config",
            config_for(home, key, f"http://127.0.0.1:{proxy.port}"),
            "--json",
            "backup",
            "--jobs",
            "1",
            "--no-pins",
        )
    finally:
        proxy.close()
    assert proxy.cut.is_set(), first.err + first.out[:2000]
    assert first.code == 6, first.err
    done = {k["key_id"] for k in first.json()["keys"] if k["action"] == "created"}
    assert len(done) == 5  # the five encrypts before the cut one
    assert first.json()["not_attempted"] >= fleet - len(done) - 1 - GIVE_UP_AFTER
    assert len(envelopes(home)) == len(done)  # the cut key: nothing written
    again = kv("--config", config_for(home, key, bao.address), "--json", "backup", "--no-pins")
    assert again.code == 0, again.err
    actions = {k["key_id"]: k["action"] for k in again.json()["keys"]}
    assert {actions[k] for k in done} == {"unchanged"}
    assert set(actions.values()) == {"unchanged", "created"}
    assert len(envelopes(home)) == fleet
    assert json.loads(envelopes(home)[0].read_text())  # whole envelopes


def test_a_hung_kms_stops_the_backup_after_the_first_keys_time_out(
    kv: KV,
    home: Path,
    fleet: int,
    moto_kms: MotoServer,
    kms_key: KmsKey,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A KMS that accepts connections and never answers: the first keys' requests time
    out, their retries are not sent, and no further key is started."""
    for name, value in KMS_ENV.items():
        monkeypatch.setenv(name, value)
    hung = AnswerProxy(
        int(moto_kms.endpoint.rsplit(":", 1)[1]), lambda r: b"TrentService.Encrypt" in r, "hang"
    )
    try:
        run = kv(
            "--config",
            config_with(
                home,
                kms_key.alias_uri,
                [
                    "[awskms]",
                    f'endpoint_url = "{hung.endpoint}"',
                    'region = "us-east-1"',
                    "connect_timeout = 1",
                    "read_timeout = 1",
                ],
            ),
            "--json",
            "backup",
            "--jobs",
            str(JOBS),
            "--no-pins",
        )
    finally:
        hung.close()
    assert run.code == 6, run.err
    assert hung.changed <= JOBS + GIVE_UP_AFTER  # before: every key, 4 attempts each
    doc = run.json()
    assert doc["not_attempted"] >= fleet - JOBS - GIVE_UP_AFTER
    assert envelopes(home) == []


@pytest.fixture
def backed_up_then_sealed(
    kv: KV,
    home: Path,
    fleet: int,
    make_bao: Callable[[], BaoServer],
    monkeypatch: pytest.MonkeyPatch,
) -> Path:
    """The fleet backed up through a private OpenBao's Transit, then the OpenBao sealed:
    every unwrap is a 503. The config to read it back with."""
    bao = make_bao()
    key = bao.transit_key(team="team-a")
    monkeypatch.setenv("VAULT_TOKEN", ROOT_TOKEN)
    config = config_for(home, key, bao.address)
    assert kv("--config", config, "backup", "--no-pins").code == 0
    assert len(envelopes(home)) == fleet
    bao.root().sys.seal()
    return config


NOT_ATTEMPTED = "not-checked (not attempted: backend down)"


def test_a_drill_reports_the_keys_a_sealed_vault_left_not_attempted(
    kv: KV,
    home: Path,
    fleet: int,
    backed_up_then_sealed: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Keys the drill did not start are neither passed nor failed: the JSON, report.json,
    report.md and one console line count them, and the drill exits 6."""
    monkeypatch.setenv("KEYVAULT_CONCURRENCY", str(JOBS))
    reports = tmp_path / "reports"
    run = kv(
        "--config",
        backed_up_then_sealed,
        "--json",
        "drill",
        "--all",
        "--no-metadata",
        "--report-dir",
        reports,
    )
    assert run.code == 6, run.err
    doc = run.json()
    skipped = [c for c in doc["checks"] if c["restore"] == NOT_ATTEMPTED]
    assert doc["not_attempted"] == len(skipped) >= fleet - JOBS - GIVE_UP_AFTER > 0
    assert len(doc["checks"]) == fleet
    for check in skipped:
        assert check["passed"] is False and check["error"] is None
        assert "not attempted: a backend is down" in check["not_attempted"]
    attempted = [c for c in doc["checks"] if c["not_attempted"] is None]
    assert all(c["error_code"] == 6 for c in attempted)  # the keys that found it down
    saved = json.loads(Path(doc["report_json"]).read_text())
    assert saved["not_attempted"] == len(skipped)
    assert sum(c["restore"] == NOT_ATTEMPTED for c in saved["checks"]) == len(skipped)
    markdown = Path(doc["report_markdown"]).read_text()
    assert f"## Not checked: {len(skipped)} not attempted" in markdown
    assert markdown.count(f"| {NOT_ATTEMPTED} |") == len(skipped)
    lines = [line for line in run.err.splitlines() if "not attempted" in line]
    assert len(lines) == 1, run.err  # one line, not one per key
    assert lines[0].startswith(f"warning: {len(skipped)} keys not attempted"), lines[0]


def test_fetch_says_how_many_keys_a_sealed_vault_left_not_attempted(
    kv: KV, home: Path, backed_up_then_sealed: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """All or nothing: the first key finds the Vault sealed, the GUN's other key is never
    started, and nothing is left in the directory."""
    monkeypatch.setenv("KEYVAULT_CONCURRENCY", "1")  # one key at a time: the count is exact
    into = home / "ci-keys"
    run = kv("--config", backed_up_then_sealed, "--json", "fetch", "--gun", GUNS[0], "--into", into)
    assert run.code == 6, run.err
    doc = run.json()
    assert doc["error"] == "unavailable"
    assert doc["not_attempted"] == 1  # of its targets and snapshot keys
    assert "1 of 2 keys were not attempted and nothing was written" in run.err
    assert not list(into.rglob("*.key"))


def test_exec_says_how_many_keys_a_sealed_vault_left_not_attempted(
    kv: KV, home: Path, backed_up_then_sealed: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KEYVAULT_CONCURRENCY", "1")
    ran = home / "ran"
    run = kv(
        "--config",
        backed_up_then_sealed,
        "exec",
        "--gun",
        GUNS[0],
        "--",
        sys.executable,
        "-c",
        f"open({str(ran)!r}, 'w')",
    )
    assert run.code == 6, run.err
    assert "1 of 2 keys were not attempted and nothing was written" in run.err
    assert not ran.exists()  # the command never ran


def test_restore_json_says_how_many_keys_a_sealed_vault_left_not_attempted(
    kv: KV,
    fleet: int,
    backed_up_then_sealed: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KEYVAULT_CONCURRENCY", "1")
    target = tmp_path / "laptop" / "trust"
    run = kv("--config", backed_up_then_sealed, "--json", "--trust-dir", target, "restore", "--all")
    assert run.code == 6, run.err
    assert run.json()["not_attempted"] == fleet - 1  # the first key found the Vault sealed
    assert f"{fleet - 1} of {fleet} keys were not attempted" in run.err
    assert not list(target.rglob("*.key"))


def test_a_drill_goes_on_with_the_next_wrapper_after_one_whose_backend_is_down(
    kv: KV,
    home: Path,
    fleet: int,
    make_bao: Callable[[], BaoServer],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each wrapper is drilled alone: a sealed Vault's Transit stops its own keys, and the
    passphrase wrapper drilled after it checks every key."""
    bao = make_bao()
    key = bao.transit_key(team="team-a")
    monkeypatch.setenv("VAULT_TOKEN", ROOT_TOKEN)
    monkeypatch.setenv("KEYVAULT_PASSPHRASE", "wrapper pass")
    monkeypatch.setenv("KEYVAULT_CONCURRENCY", str(JOBS))
    config = config_for(home, key, bao.address)
    transit = f"transit://{TRANSIT_MOUNT}/{key}"
    text = config.read_text().replace(
        f"wrappers = [{json.dumps(transit)}]", f'wrappers = [{json.dumps(transit)}, "passphrase:"]'
    )
    config.write_text(text + "\n[passphrase]\nscrypt_n = 16384\n")
    assert kv("--config", config, "backup", "--no-pins").code == 0
    bao.root().sys.seal()
    run = kv(
        "--config", config, "--json", "drill", "--all", "--no-metadata", "--report-dir", tmp_path
    )
    assert run.code == 6, run.err
    doc = run.json()
    by_wrapper = {
        w: [c for c in doc["checks"] if c["wrapper"] == w] for w in (transit, "passphrase:")
    }
    assert len(by_wrapper["passphrase:"]) == fleet
    assert all(c["passed"] for c in by_wrapper["passphrase:"])
    assert doc["not_attempted"] == sum(c["not_attempted"] is not None for c in by_wrapper[transit])
    assert doc["not_attempted"] >= fleet - JOBS - GIVE_UP_AFTER
