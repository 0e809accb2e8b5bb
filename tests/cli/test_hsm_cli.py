"""pkcs11: through the CLI on SoftHSM2: hsm list, hsm create-key, backup, restore, rewrap."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from fixtures.host import tree
from fixtures.softhsm import SoftHsm

from cli.conftest import KV
from keyvault.trust.model import KeyFile
from keyvault.trust.sample import write_sample_trust_dir
from keyvault.wrappers.age import generate_identity

PASS = "correct horse"
WRONG_PIN = "wrong-pin-9999"


@pytest.fixture
def hsm_env(softhsm: SoftHsm, home: Path, monkeypatch: pytest.MonkeyPatch) -> SoftHsm:
    monkeypatch.setenv("KEYVAULT_PKCS11_MODULE", softhsm.module)
    monkeypatch.setenv("KEYVAULT_PKCS11_PIN", softhsm.pin)
    return softhsm


@pytest.fixture
def backed_up(kv: KV, hsm_env: SoftHsm, home: Path) -> tuple[Path, tuple[KeyFile, ...]]:
    trust = home / ".docker" / "trust"
    keys = write_sample_trust_dir(
        trust,
        dict.fromkeys(("root", "targets", "snapshot"), PASS),
        ("example.com/a/app", "example.com/a/web"),
    )
    init = kv(
        "--store",
        (home / "store").as_uri(),
        "--wrapper",
        hsm_env.key_uri("aes-kek"),
        "--json",
        "init",
    )
    assert init.code == 0, init.err
    assert init.json()["wrappers"] == [hsm_env.key_uri("aes-kek")]
    run = kv("--json", "backup")
    assert run.code == 0, run.err
    assert {k["action"] for k in run.json()["keys"]} == {"created"}
    return trust, keys


def wrapper_uris(home: Path) -> set[str]:
    uris = set()
    for obj in (home / "store" / "objects").rglob("*.json"):
        if "audit" in obj.parts:  # the audit log's checkpoints
            continue
        latest = max(p.name for p in obj.iterdir() if not p.name.startswith("."))
        doc = json.loads((obj / latest).read_bytes())
        uris |= {w["uri"] for w in doc["wrapped_keys"]}
    return uris


def test_backup_records_the_canonical_uri_and_no_pin(
    kv: KV, home: Path, backed_up: tuple[Path, tuple[KeyFile, ...]], hsm_env: SoftHsm
) -> None:
    assert wrapper_uris(home) == {hsm_env.key_uri("aes-kek")}
    for path in (home / "store").rglob("*"):
        if path.is_file():
            assert hsm_env.pin.encode() not in path.read_bytes()


def test_restore_round_trip(kv: KV, backed_up: tuple[Path, tuple[KeyFile, ...]]) -> None:
    trust, keys = backed_up
    shutil.rmtree(trust)
    run = kv("restore", "--all")
    assert run.code == 0, run.err
    for key in keys:
        assert (trust / "private" / key.relpath).read_bytes() == key.data


@pytest.mark.proves("B39")
def test_restore_with_wrong_pin_fails_cleanly_and_changes_nothing(
    kv: KV,
    backed_up: tuple[Path, tuple[KeyFile, ...]],
    hsm_env: SoftHsm,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    trust, keys = backed_up
    removed = trust / "private" / keys[0].relpath
    removed.unlink()
    before = tree(trust)
    monkeypatch.setenv("KEYVAULT_PKCS11_PIN", WRONG_PIN)
    run = kv("restore", "--all")
    assert run.code == 4, (run.out, run.err)
    assert "PIN" in run.err
    assert WRONG_PIN not in run.out + run.err and hsm_env.pin not in run.out + run.err
    assert tree(trust) == before
    assert not removed.exists()


def test_rewrap_between_pkcs11_and_age(
    kv: KV,
    home: Path,
    backed_up: tuple[Path, tuple[KeyFile, ...]],
    hsm_env: SoftHsm,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    trust, keys = backed_up
    hsm_uri = hsm_env.key_uri("aes-kek")
    identity = home / "recovery.txt"
    recipient = generate_identity(identity)
    moved = kv("--json", "rewrap", "--all", "--add", recipient, "--remove", hsm_uri)
    assert moved.code == 0, moved.err
    assert wrapper_uris(home) == {recipient}

    # Restore with the age identity alone: no module, no PIN.
    monkeypatch.delenv("KEYVAULT_PKCS11_MODULE")
    monkeypatch.delenv("KEYVAULT_PKCS11_PIN")
    monkeypatch.setenv("KEYVAULT_AGE_IDENTITY", str(identity))
    shutil.rmtree(trust)
    run = kv("--wrapper", recipient, "restore", "--all")
    assert run.code == 0, run.err
    assert all((trust / "private" / k.relpath).read_bytes() == k.data for k in keys)

    # And back onto the token (the RSA key this time), driven by the age identity.
    monkeypatch.setenv("KEYVAULT_PKCS11_MODULE", hsm_env.module)
    monkeypatch.setenv("KEYVAULT_PKCS11_PIN", hsm_env.pin)
    rsa_uri = hsm_env.key_uri("rsa-kek")
    back = kv(
        "--wrapper", recipient, "--json", "rewrap", "--all", "--add", rsa_uri, "--remove", recipient
    )
    assert back.code == 0, back.err
    assert wrapper_uris(home) == {rsa_uri}
    shutil.rmtree(trust)
    run = kv("--wrapper", rsa_uri, "restore", "--all")
    assert run.code == 0, run.err


def test_hsm_list_tokens_and_keys(kv: KV, hsm_env: SoftHsm) -> None:
    run = kv("--json", "hsm", "list")
    assert run.code == 0, run.err
    assert hsm_env.token in {t["label"] for t in run.json()["tokens"]}
    assert run.json()["keys"] == []
    run = kv("hsm", "list", f"pkcs11:token={hsm_env.token}", "--json")
    assert run.code == 0, run.err
    keys = {k["label"]: k for k in run.json()["keys"]}
    assert keys["aes-kek"]["type"] == "aes-256" and keys["aes-kek"]["extractable"] is False
    assert keys["aes-kek"]["mechanism"] == "CKM_AES_GCM"
    human = kv("hsm", "list", f"pkcs11:token={hsm_env.token}")
    assert human.code == 0 and "aes-kek" in human.out and "rsa-kek" in human.out
    assert hsm_env.pin not in human.out + human.err


def test_hsm_create_key_then_use_it(kv: KV, hsm_env: SoftHsm, home: Path) -> None:
    label = hsm_env.unique("cli")
    run = kv(
        "hsm",
        "create-key",
        f"pkcs11:token={hsm_env.token};object={label}",
        "--type",
        "rsa",
        "--json",
    )
    assert run.code == 0, run.err
    info = run.json()
    assert info["type"] == "rsa-3072" and info["extractable"] is False
    assert info["uri"].startswith(hsm_env.key_uri(label) + ";id=%")
    assert hsm_env.raw_key_attributes(label)["PRIVATE_KEY"]["extractable"] is False
    again = kv("hsm", "create-key", f"pkcs11:token={hsm_env.token};object={label}")
    assert again.code == 7, again.err
    human = kv("hsm", "create-key", f"pkcs11:token={hsm_env.token};object={label}-aes")
    assert human.code == 0 and "wrapper URI: pkcs11:" in human.out


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (("hsm", "create-key", "pkcs11:token=no-such-token;object=x"), 3),
        (("hsm", "create-key", "pkcs11:token=kv-test;object=x;bogus=1"), 2),
        (("hsm", "create-key", "pkcs11:token=kv-test;object=x", "--type", "dsa"), 2),
        (("hsm", "list", "pkcs11:?module-path=/nonexistent/lib.so"), 6),
        (("hsm", "list", "pkcs11:token=no-such-token"), 3),
    ],
)
def test_hsm_errors_exit_codes(kv: KV, hsm_env: SoftHsm, args: tuple[str, ...], code: int) -> None:
    run = kv(*args)
    assert run.code == code, (run.out, run.err)
    assert run.err.startswith("keyvault: error:")


def test_hsm_list_warns_about_pin_value(
    kv: KV, hsm_env: SoftHsm, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KEYVAULT_PKCS11_PIN")
    with pytest.warns(UserWarning, match="pin-value") as record:
        run = kv("--json", "hsm", "list", f"pkcs11:token={hsm_env.token}?pin-value={hsm_env.pin}")
    assert run.code == 0, run.err
    assert "aes-kek" in {k["label"] for k in run.json()["keys"]}
    assert hsm_env.pin not in run.out + run.err + "".join(str(r.message) for r in record)


def test_hsm_create_key_wrong_pin(
    kv: KV, hsm_env: SoftHsm, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KEYVAULT_PKCS11_PIN", WRONG_PIN)
    run = kv("hsm", "create-key", f"pkcs11:token={hsm_env.token};object=never-made")
    assert run.code == 4 and WRONG_PIN not in run.out + run.err
    monkeypatch.setenv("KEYVAULT_PKCS11_PIN", hsm_env.pin)
    listed = kv("--json", "hsm", "list", f"pkcs11:token={hsm_env.token};object=never-made")
    assert listed.code == 0 and listed.json()["keys"] == []


def test_a_uri_with_module_and_pin_is_drilled_and_its_pin_recorded_nowhere(
    kv: KV,
    home: Path,
    backed_up: tuple[Path, tuple[KeyFile, ...]],
    hsm_env: SoftHsm,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The drill looks for the form envelopes record (no module-path, no PIN), and audit
    records and reports show that form: a pin-value in the configured URI stays secret."""
    _, keys = backed_up
    monkeypatch.delenv("KEYVAULT_PKCS11_PIN")
    full = hsm_env.uri("aes-kek", query={"pin-value": hsm_env.pin})
    assert "module-path=" in full and hsm_env.pin in full
    drill = kv(
        "--wrapper",
        full,
        "--json",
        "drill",
        "--all",
        "--no-metadata",
        "--report-dir",
        tmp_path / "r",
    )
    assert drill.code == 0, drill.err
    checks = drill.json()["checks"]
    assert len(checks) == len(keys)
    assert {c["wrapper"] for c in checks} == {hsm_env.key_uri("aes-kek")}
    assert kv("--wrapper", full, "backup").code == 0
    written = [p.read_bytes() for p in (tmp_path / "r").iterdir()]
    written += [p.read_bytes() for p in home.rglob("audit*") if p.is_file()]
    assert written and all(hsm_env.pin.encode() not in data for data in written)


@pytest.mark.proves("T7")
def test_pin_value_is_shown_by_no_init_doctor_or_rewrap_output(
    kv: KV, home: Path, hsm_env: SoftHsm, monkeypatch: pytest.MonkeyPatch
) -> None:
    """T7: init, doctor (a working and a failing wrapper) and rewrap --remove name the URI
    without its pin-value, on stdout, stderr, in JSON and in the audit log."""
    monkeypatch.delenv("KEYVAULT_PKCS11_PIN")  # the URI's pin-value is the only PIN
    write_sample_trust_dir(
        home / ".docker" / "trust",
        dict.fromkeys(("root", "targets", "snapshot"), PASS),
        ("example.com/a/app",),
    )
    full = hsm_env.uri("aes-kek", query={"pin-value": hsm_env.pin})
    missing = hsm_env.uri("no-such-key", query={"pin-value": hsm_env.pin})
    store = (home / "store").as_uri()
    runs = [kv("--store", store, "--wrapper", full, "--json", "init")]
    assert runs[0].code == 0, runs[0].err
    assert runs[0].json()["wrappers"] == [full.replace(hsm_env.pin, "***")]
    runs.append(kv("--store", store, "--wrapper", full, "init"))
    assert runs[-1].code == 0 and "pin-value=***" in runs[-1].out, runs[-1].err
    runs += [kv("doctor"), kv("--json", "doctor")]
    assert runs[-1].code == 0 and any(
        f["detail"].startswith(full.replace(hsm_env.pin, "***") + ": wraps and unwraps")
        for f in runs[-1].json()["findings"]
    ), runs[-1].out
    runs += [kv("--wrapper", missing, "doctor"), kv("--json", "--wrapper", missing, "doctor")]
    assert runs[-1].code == 1 and "pin-value=***" in runs[-2].out
    assert kv("backup").code == 0
    # --remove takes the key's canonical URI: one with a PIN is refused, naming that form.
    runs += [
        kv("rewrap", "--all", "--add", "passphrase:", "--remove", missing),
        kv("--json", "rewrap", "--all", "--add", "passphrase:", "--remove", missing),
    ]
    assert runs[-1].code == 2 and hsm_env.key_uri("no-such-key") in runs[-1].json()["message"]
    log = (home / ".local" / "state" / "keyvault" / "audit.log").read_text()
    assert "pin-value=***" in log
    for text in [log, *(r.out + r.err for r in runs)]:
        assert hsm_env.pin not in text
