"""Recovery drills: each wrapper alone, digests, key IDs, signatures, reports, audit."""

from __future__ import annotations

import hashlib
import json
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from fixtures.softhsm import SoftHsm
from tufdocs import root_json, targets_json, write_cache

from cli.conftest import KV
from keyvault.canonical import canonical_json
from keyvault.trust.deep import load_private_key
from keyvault.trust.model import KeyFile
from keyvault.trust.sample import write_sample_trust_dir

GUN = "example.com/drill/app"
PASS = "notary pass"
ROLES = ("root", "targets", "snapshot")


@pytest.fixture
def drilled(
    kv: KV, home: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[Path, tuple[KeyFile, ...]]:
    trust = home / ".docker" / "trust"
    keys = write_sample_trust_dir(trust, dict.fromkeys(ROLES, PASS), (GUN,))
    private = {k.role: load_private_key(k, PASS) for k in keys}
    root_doc, _ = root_json(
        GUN,
        private["root"],
        {
            "targets": private["targets"],
            "snapshot": private["snapshot"],
            "timestamp": ec.generate_private_key(ec.SECP256R1()),
        },
    )
    write_cache(trust, GUN, {"root": root_doc, "targets": targets_json({})})
    for role in ROLES:
        monkeypatch.setenv(f"NOTARY_{role.upper()}_PASSPHRASE", PASS)
    assert kv("init").code == 0
    assert kv("backup").code == 0
    return trust, keys


def test_a_drill_proves_every_key_and_writes_reports(
    kv: KV,
    drilled: tuple[Path, tuple[KeyFile, ...]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _, keys = drilled
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setenv("KEYVAULT_TMPDIR", str(scratch))
    run = kv("--json", "drill", "--all", "--report-dir", tmp_path / "report")
    assert run.code == 0, run.err
    doc = run.json()
    assert doc["passed"] and len(doc["checks"]) == len(keys)
    for check in doc["checks"]:
        assert (check["restore"], check["digest"], check["key_id_check"], check["signature"]) == (
            "passed",
        ) * 4, check
    report = json.loads((tmp_path / "report" / "report.json").read_bytes())
    assert hashlib.sha256(canonical_json(report)).hexdigest() == doc["sha256"]
    assert stat.S_IMODE((tmp_path / "report" / "report.json").stat().st_mode) == 0o600
    markdown = (tmp_path / "report" / "report.md").read_text()
    assert "PASSED" in markdown and "NIST SP 800-57" in markdown
    assert PASS not in markdown + json.dumps(report)
    audit = kv("--json", "audit", "show", "--action", "drill").json()["records"]
    assert audit[-1]["outcome"] == "ok" and doc["sha256"] in audit[-1]["detail"]
    verified = kv("--json", "audit", "verify").json()  # the drill's record is anchored
    assert verified["checkpoints"]["anchored_up_to"] == audit[-1]["seq"], verified
    assert list(scratch.iterdir()) == []  # the throw-away restore directory was wiped


@pytest.mark.proves("T5")
def test_a_broken_wrapper_is_named_and_the_others_pass(
    kv: KV,
    home: Path,
    drilled: tuple[Path, tuple[KeyFile, ...]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _, keys = drilled
    monkeypatch.setenv("KEYVAULT_PASSPHRASE", "wrapper pass")
    config = home / ".config" / "keyvault" / "config.toml"
    config.write_text(config.read_text() + "\n[passphrase]\nscrypt_n = 16384\n")
    assert kv("rewrap", "--all", "--add", "passphrase:").code == 0
    identity = home / ".config" / "keyvault" / "recovery-identity.txt"
    age_uri = kv("--json", "list", "--long").json()["keys"][0]["wrappers"][0]
    identity.rename(tmp_path / "lost-identity.txt")  # the offline identity is not here
    run = kv(
        "--wrapper",
        age_uri,
        "--wrapper",
        "passphrase:",
        "--json",
        "drill",
        "--all",
        "--report-dir",
        tmp_path / "r",
    )
    assert run.code == 3, run.err  # the configured identity file is gone: not found
    checks = run.json()["checks"]
    failed = {(c["wrapper"], c["key_id"]) for c in checks if not c["passed"]}
    assert failed == {(age_uri, k.key_id) for k in keys}
    passed = [c for c in checks if c["passed"]]
    assert {c["wrapper"] for c in passed} == {"passphrase:"} and len(passed) == len(keys)
    assert all(
        "identity file" in c["error"] and "lost" not in c["error"]
        for c in checks
        if not c["passed"]
    )
    assert "FAILED" in (tmp_path / "r" / "report.md").read_text()


def test_without_passphrases_only_restore_and_digest_are_checked(
    kv: KV,
    drilled: tuple[Path, tuple[KeyFile, ...]],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    for role in ROLES:
        monkeypatch.delenv(f"NOTARY_{role.upper()}_PASSPHRASE")
    run = kv("--json", "drill", "--gun", GUN, "--report-dir", tmp_path / "r")
    assert run.code == 0, run.err
    assert {(c["digest"], c["key_id_check"], c["signature"]) for c in run.json()["checks"]} == {
        ("passed", "not-checked", "not-checked")
    }


def test_a_misnamed_key_fails_its_id_check(
    kv: KV, drilled: tuple[Path, tuple[KeyFile, ...]], tmp_path: Path
) -> None:
    """A backup whose file name is not the key's ID would restore a key notary cannot use."""
    trust, keys = drilled
    root = next(k for k in keys if k.role == "root")
    wrong = trust / "private" / ("f" * 64 + ".key")
    wrong.write_bytes(root.data)
    wrong.chmod(0o600)
    assert kv("backup").code == 0
    run = kv("--json", "drill", "--key-id", "f" * 64, "--report-dir", tmp_path / "r")
    assert run.code == 5
    (check,) = run.json()["checks"]
    assert check["key_id_check"] == "failed" and "not the key's ID" in check["error"]


@pytest.mark.proves("T5")
def test_a_wrong_hsm_pin_fails_that_wrapper_only(
    kv: KV,
    home: Path,
    drilled: tuple[Path, tuple[KeyFile, ...]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    softhsm: SoftHsm,
) -> None:
    """Each wrapper is drilled alone: the HSM's wrong PIN shows up while age still works."""
    _, keys = drilled
    for name, value in softhsm.env().items():
        monkeypatch.setenv(name, value)
    hsm_uri = softhsm.key_uri("aes-kek")
    assert kv("rewrap", "--all", "--add", hsm_uri).code == 0
    age_uri = kv("--json", "list", "--long").json()["keys"][0]["wrappers"][0]
    monkeypatch.setenv("KEYVAULT_PKCS11_PIN", "not-the-pin-0000")
    run = kv(
        "--wrapper",
        age_uri,
        "--wrapper",
        hsm_uri,
        "--json",
        "drill",
        "--all",
        "--report-dir",
        tmp_path / "r",
    )
    assert run.code == 4, run.err
    checks = run.json()["checks"]
    assert {(c["wrapper"], c["passed"]) for c in checks} == {(age_uri, True), (hsm_uri, False)}
    assert {c["key_id"] for c in checks if not c["passed"]} == {k.key_id for k in keys}
    assert all(
        "PIN" in c["error"] and "not-the-pin" not in c["error"] for c in checks if not c["passed"]
    )


def test_two_drills_in_the_same_second_each_write_their_own_report(
    kv: KV, drilled: tuple[Path, tuple[KeyFile, ...]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: the default report directory was named by the second alone, so the second
    drill of a second found it taken and exited 7 with no report."""
    import datetime as real

    class Frozen(real.datetime):
        @classmethod
        def now(cls, tz: real.tzinfo | None = None) -> Frozen:
            return cls(2026, 12, 5, 3, 0, 0, tzinfo=tz)

    monkeypatch.setattr(real, "datetime", Frozen)
    runs = [kv("--json", "drill", "--all") for _ in range(2)]
    assert [r.code for r in runs] == [0, 0], [r.err for r in runs]
    reports = [Path(r.json()["report_json"]) for r in runs]
    assert reports[0] != reports[1] and all(p.is_file() for p in reports)
    assert all(p.parent.name.startswith("20261205T030000Z-") for p in reports)


def test_a_gun_without_published_metadata_is_not_checked_and_the_drill_goes_on(
    kv: KV, drilled: tuple[Path, tuple[KeyFile, ...]], tmp_path: Path
) -> None:
    """A freshly restored machine has no tuf/ cache. Before: exit 3, no report, no audit
    record, and a hint naming a server URL that was never given."""
    import shutil

    trust, keys = drilled
    shutil.rmtree(trust / "tuf")
    run = kv("--json", "drill", "--all", "--report-dir", tmp_path / "r")
    assert run.code == 0, run.err
    checks = run.json()["checks"]
    assert len(checks) == len(keys) and all(c["passed"] for c in checks)
    gun_keys = [c for c in checks if c["gun"] == GUN]
    assert gun_keys and {c["signature"] for c in gun_keys} == {"not-checked (not published)"}
    assert (tmp_path / "r" / "report.json").is_file()
    text = kv("drill", "--all", "--report-dir", tmp_path / "r2")
    assert text.code == 0, text.err
    assert f"Not checked: the signatures of 1 GUN(s) with no published metadata ({GUN})" in text.out
    strict = kv("--json", "drill", "--all", "--require-published", "--report-dir", tmp_path / "r3")
    assert strict.code == 3, strict.err
    assert {c["passed"] for c in strict.json()["checks"] if c["gun"] == GUN} == {False}
    assert (tmp_path / "r3" / "report.json").is_file()
    audit = kv("--json", "audit", "show", "--action", "drill").json()["records"]
    assert len(audit) == 3


def test_the_report_claims_only_the_controls_this_drill_showed(
    kv: KV, home: Path, drilled: tuple[Path, tuple[KeyFile, ...]], tmp_path: Path
) -> None:
    """Before: PCI DSS dual control and SOC 2 logical access were listed for one age
    wrapper with no policy. Dual control appears once the keys are under 2-of-2 wrappers."""
    run = kv("--json", "drill", "--all", "--report-dir", tmp_path / "single")
    assert run.code == 0, run.err
    controls = run.json()["controls"]
    assert controls and not any("PCI DSS" in c or "SOC 2" in c for c in controls)
    assert "PCI DSS" not in (tmp_path / "single" / "report.md").read_text()
    import pyrage

    (mine,) = {w for k in kv("--json", "list", "--long").json()["keys"] for w in k["wrappers"]}
    second = str(pyrage.x25519.Identity.generate().to_public())
    both = ("--wrapper", mine, "--wrapper", second)
    assert kv(*both, "backup", "--role", "root", "--threshold", "2").code == 0
    run = kv("--json", *both, "drill", "--role", "root", "--report-dir", tmp_path / "dual")
    doc = run.json()
    assert any("PCI DSS" in c and "dual control" in c for c in doc["controls"]), (
        run.err,
        doc["controls"],
    )
    assert not any(c["passed"] for c in doc["checks"])  # no wrapper alone opens 2-of-2


#: Runs the CLI as a program, pausing (until a signal comes) when the drill is about to
#: check its key number argv[1] + 1: the signal lands mid-drill at a point known in advance.
PAUSING_DRILL = """
import signal, sys, time
from keyvault.cli.app import main
from keyvault.ops import drill

signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal
after, verified = int(sys.argv[1]), []
real = drill._verify_restored

def pausing(check, *args):
    if len(verified) == after:
        sys.stderr.write("drill paused\\n")
        sys.stderr.flush()
        while True:
            time.sleep(0.05)
    real(check, *args)
    verified.append(check.key_id)

drill._verify_restored = pausing
sys.argv = ["keyvault", *sys.argv[2:]]
main()
"""


def paused_drill(after: int, *argv: str | Path) -> subprocess.Popen[str]:
    """``keyvault ARGV...`` as a program, once it has paused before checking key
    ``after + 1`` (PAUSING_DRILL): ready for the signal."""
    proc = subprocess.Popen(
        [sys.executable, "-c", PAUSING_DRILL, str(after), *map(str, argv)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    seen = []
    for line in proc.stderr:  # no timing: the drill says when it is where the signal goes
        seen.append(line)
        if line == "drill paused\n":
            return proc
    raise AssertionError(f"the drill never paused: {''.join(seen)}")


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupted_drill_writes_and_audits_its_report(
    kv: KV,
    drilled: tuple[Path, tuple[KeyFile, ...]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    signum: signal.Signals,
) -> None:
    """Ctrl-C or SIGTERM mid-drill: exit 130/143, and a report saying 'interrupted' with
    the checks made so far, its SHA-256 in the audit log (before: neither)."""
    _, keys = drilled
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setenv("KEYVAULT_TMPDIR", str(scratch))
    proc = paused_drill(2, "--json", "drill", "--all", "--report-dir", tmp_path / "r")
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signum, err
    name = signum.name
    report = json.loads((tmp_path / "r" / "report.json").read_bytes())
    assert (report["status"], report["interrupted"], report["passed"]) == (
        "interrupted",
        name,
        False,
    )
    checks = report["checks"]
    assert len(checks) == len(keys)  # one wrapper: every key restored, two of them checked
    done = [c for c in checks if c["passed"]]
    assert len(done) == 2 and all(c["signature"] == "passed" for c in done)
    (cut,) = [c for c in checks if not c["passed"]]
    assert cut["error"] == f"not finished: interrupted by {name}"
    assert cut["error_code"] == 128 + signum and cut["signature"] == "not-checked"
    markdown = (tmp_path / "r" / "report.md").read_text()
    assert "recovery drill: INTERRUPTED" in markdown and f"Interrupted by {name}" in markdown
    digest = hashlib.sha256(canonical_json(report)).hexdigest()
    assert f"drill interrupted: {len(keys)} checks made" in err and digest[:16] in err
    record = kv("--json", "audit", "show", "--action", "drill").json()["records"][-1]
    assert record["outcome"] == "interrupted" and digest in record["detail"]
    assert f"interrupted by {name}" in record["detail"]
    assert kv("--json", "audit", "verify").json()["intact"]
    assert list(scratch.iterdir()) == []  # the throw-away restore directory was wiped
    assert out == ""


def test_a_drill_stopped_by_an_error_writes_and_audits_its_report(
    kv: KV, drilled: tuple[Path, tuple[KeyFile, ...]], tmp_path: Path
) -> None:
    run = kv(
        "--json", "drill", "--gun", "example.com/drill/nothing-here", "--report-dir", tmp_path / "r"
    )
    assert run.code == 3, run.err
    report = json.loads((tmp_path / "r" / "report.json").read_bytes())
    assert report["status"] == "failed" and report["checks"] == []
    assert "matches no key" in report["error"]
    assert "Stopped:" in (tmp_path / "r" / "report.md").read_text()
    records = kv("--json", "audit", "show", "--action", "drill").json()["records"]
    assert len(records) == 1 and records[0]["outcome"] == "failed"
    assert hashlib.sha256(canonical_json(report)).hexdigest() in records[0]["detail"]


def test_a_drill_checks_signatures_against_the_pin_in_the_store_offline(
    kv: KV, drilled: tuple[Path, tuple[KeyFile, ...]], tmp_path: Path
) -> None:
    """No TUF cache, no server: --pinned checks each restored key's signature against the
    root.json the GUN's signing machine pinned (backed up with its keys)."""
    import shutil

    trust, keys = drilled
    shutil.rmtree(trust / "tuf")
    run = kv("--json", "drill", "--all", "--pinned", "--report-dir", tmp_path / "r")
    assert run.code == 0, run.err
    checks = run.json()["checks"]
    assert len(checks) == len(keys)
    assert {c["signature"] for c in checks} == {"passed"}, checks
