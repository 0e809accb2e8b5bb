"""T7: a secret inside a URI (``user:secret@``, a pkcs11: ``pin-value``) is shown nowhere.

Each case hands keyvault a URI that carries a real-looking secret and reads
every place it could come back out: stdout, stderr, the ``--json`` error
document, and the audit log file (which nobody can scrub later). The
pkcs11: cases on SoftHSM2 (doctor, init, rewrap --remove) are in
test_hsm_cli.py, beside their fixtures.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cli.conftest import KV
from keyvault.redact import redact, shown_uri

pytestmark = pytest.mark.proves("T7")

SECRET = "Sup3rS3cretValue-9f2a"


def audit_text(home: Path) -> str:
    log = home / ".local" / "state" / "keyvault" / "audit.log"
    return log.read_text() if log.exists() else ""


@pytest.fixture
def ready(kv: KV, home: Path) -> Path:
    """An initialised machine with a trust directory, so a backup reaches the store."""
    assert kv("init").code == 0
    (home / ".docker" / "trust" / "private").mkdir(parents=True)
    return home


@pytest.mark.parametrize(
    "store",
    [
        f"s3://AKIAEXAMPLEUSER:{SECRET}@bucket/keys",
        f"vault://approle:{SECRET}@secret/keyvault",
        f"file://admin:{SECRET}@localhost/var/lib/keyvault",
        f"s3://{'A' * 70}:{SECRET}@bucket/keys",
    ],
)
def test_store_uri_credentials_appear_in_no_output_and_no_audit_record(
    kv: KV, ready: Path, store: str
) -> None:
    human = kv("--store", store, "backup")
    machine = kv("--json", "--store", store, "backup")
    assert human.code == machine.code == 2, human.err
    error = machine.json()
    assert error["exit_code"] == 2 and "***@" in error["message"]  # still says what is wrong
    assert "***@" in human.err
    records = [json.loads(line) for line in audit_text(ready).splitlines()]
    assert [r["outcome"] for r in records[-2:]] == ["failed", "failed"]
    assert all("***@" in r["backend"]["store"] for r in records[-2:])
    for text in (human.out, human.err, machine.out, machine.err, audit_text(ready)):
        assert SECRET not in text and SECRET[:8] not in text


def test_vault_addr_credentials_appear_in_no_error_doctor_finding_or_audit_record(
    kv: KV, ready: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VAULT_ADDR", f"http://ops:{SECRET}@127.0.0.1:1")
    backup = kv("--json", "--store", "vault://secret/keyvault", "backup")
    assert backup.code == 2 and "http://***@127.0.0.1:1" in backup.json()["message"]
    doctor = kv("--store", "vault://secret/keyvault", "doctor")
    doctor_json = kv("--json", "--store", "vault://secret/keyvault", "doctor")
    assert doctor.code == doctor_json.code == 1
    details = {
        f["check"]: f["detail"] for f in doctor_json.json()["findings"] if f["status"] != "ok"
    }
    assert "***@127.0.0.1:1" in details["store"] and "***@127.0.0.1:1" in details["clock"]
    assert '"store"' in audit_text(ready)
    for text in (
        backup.out,
        backup.err,
        doctor.out,
        doctor.err,
        doctor_json.out,
        doctor_json.err,
        audit_text(ready),
    ):
        assert SECRET not in text


def test_redact_masks_userinfo_and_pin_values_and_nothing_else() -> None:
    assert redact(f"s3://key:{SECRET}@bucket/x") == "s3://***@bucket/x"
    assert redact(f"s3://key:p@ss@{SECRET}@bucket/x") == "s3://***@bucket/x"
    assert redact(f"error: 'http://u:{SECRET}@h:8200' must be") == (
        "error: 'http://***@h:8200' must be"
    )
    assert (
        redact(f"pkcs11:token=t;object=k?module-path=/m.so&pin-value={SECRET}")
        == "pkcs11:token=t;object=k?module-path=/m.so&pin-value=***"
    )
    assert redact(f"pkcs11:token=t;PIN-VALUE={SECRET};object=k") == (
        "pkcs11:token=t;PIN-VALUE=***;object=k"
    )
    for plain in (
        "file:///srv/a@b/store",
        "root@vm restored 3 keys",
        "https://h:8200",
        "awskms:///alias/keyvault",
        "pkcs11:token=t;object=k?pin-source=/run/pin",
        "vault://secret/kv",
        "age1qyqszqgpqyqszqgpqyqszqgpqyqszqgpqyqszqgpqyqszqgpqyqs",
    ):
        assert redact(plain) == plain
    long = f"s3://{'A' * 90}:{SECRET}@bucket/x"  # cut after redaction, never before
    assert SECRET[:4] not in shown_uri(long) and shown_uri(long) == repr("s3://***@bucket/x")


class _BuggyStore:
    """A store plugin with a bug: its listing raises a plain exception holding a secret."""

    @classmethod
    def from_uri(cls, uri: str, options: object, *, create: bool = False) -> _BuggyStore:
        return cls()

    def list(self, prefix: str, *, after: str = "") -> object:
        raise RuntimeError(f"token={SECRET}")

    def close(self) -> None:
        pass


@pytest.mark.parametrize("debug", [False, True], ids=["default", "KEYVAULT_DEBUG=1"])
def test_an_internal_error_shows_details_only_with_keyvault_debug(
    kv: KV, home: Path, monkeypatch: pytest.MonkeyPatch, debug: bool
) -> None:
    """An unexpected exception exits 1 and names only its type; its message (which may hold
    a secret) and the traceback appear only when KEYVAULT_DEBUG is set."""
    from keyvault.stores import STORE_FOR_SCHEME

    assert kv("init").code == 0
    monkeypatch.setitem(STORE_FOR_SCHEME, "file", f"{__name__}:{_BuggyStore.__name__}")
    if debug:
        monkeypatch.setenv("KEYVAULT_DEBUG", "1")
    else:
        monkeypatch.delenv("KEYVAULT_DEBUG", raising=False)
    run = kv("list")
    assert run.code == 1
    assert "keyvault: internal error (RuntimeError); details are not shown" in run.err
    assert ("Traceback (most recent call last)" in run.err) is debug
    assert (SECRET in run.err) is debug
    assert SECRET not in run.out and SECRET not in audit_text(home)
