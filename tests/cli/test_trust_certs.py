"""The CA files the notary client config pins travel with the keys: ``trust_pinning.ca``
(a GUN prefix's CA) and ``remote_server.root_ca`` (the trust server's TLS CA) are backed up
signed and chained, restored byte for byte to the paths the local config names, never over
a different file silently, and refused when a store writer swapped one."""

from __future__ import annotations

import datetime
import hashlib
import json
import stat
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import NameOID

from cli.conftest import KV
from cli.test_trust_pins import PASSPHRASES, backend, tree
from keyvault import envelope as ev
from keyvault.names import CertAddress
from keyvault.sealing import Ed25519FileSealer
from keyvault.trust.sample import write_sample_trust_dir

TEAM_A = "example.com/team-a/"
APP = "example.com/team-a/app"
OTHER = "example.org/other/svc"
SERVER = "https://notary.example.com:4443"
CA_OBJECT = "v1/teams/default/certs/ca/example.com/team-a~/ca.pem"
SERVER_OBJECT = "v1/teams/default/certs/server/notary.example.com~4443/root_ca.pem"


def ca_pem(name: str) -> bytes:
    """A real self-signed CA certificate, PEM."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


def write_config(home: Path, ca: dict[str, str], root_ca: str | None = "server-ca.pem") -> Path:
    config = home / ".notary" / "config.json"
    config.parent.mkdir(exist_ok=True)
    remote: dict[str, str] = {"url": SERVER}
    if root_ca is not None:
        remote["root_ca"] = root_ca
    config.write_text(json.dumps({"remote_server": remote, "trust_pinning": {"ca": ca}}))
    return config


@pytest.fixture
def certs(home: Path) -> dict[str, Path]:
    """Keys of two GUNs, and a notary config pinning a CA for team-a and the server's CA
    (a relative root_ca: relative to the config's directory, as notary reads it)."""
    write_sample_trust_dir(home / ".docker" / "trust", PASSPHRASES, (APP, OTHER))
    pinned = home / "pki" / "team-a-ca.pem"
    pinned.parent.mkdir()
    pinned.write_bytes(ca_pem("team-a CA") + ca_pem("team-a CA 2"))
    write_config(home, {TEAM_A: str(pinned)})
    server = home / ".notary" / "server-ca.pem"
    server.write_bytes(ca_pem("server CA"))
    return {"ca": pinned, "server": server}


@pytest.fixture
def backed(kv: KV, certs: dict[str, Path]) -> dict[str, Path]:
    assert kv("init").code == 0
    run = kv("backup")
    assert run.code == 0, run.err
    return certs


def cert_rows(run_json: dict[str, object]) -> list[dict[str, Any]]:
    keys = run_json["keys"]
    assert isinstance(keys, list)
    return [k for k in keys if k["kind"] == "cert"]


def test_backup_stores_each_pinned_ca_file_beside_the_keys(kv: KV, certs: dict[str, Path]) -> None:
    assert kv("init").code == 0
    run = kv("--json", "backup")
    assert run.code == 0, run.err
    rows = cert_rows(run.json())
    assert {(r["key_id"], r["gun"], r["object"], r["action"]) for r in rows} == {
        ("ca.pem", TEAM_A, CA_OBJECT, "created"),
        ("root_ca.pem", "notary.example.com:4443", SERVER_OBJECT, "created"),
    }
    again = kv("--json", "backup")
    assert {r["action"] for r in cert_rows(again.json())} == {"unchanged"}


def test_a_new_laptop_gets_them_back_byte_for_byte_where_the_config_names_them(
    kv: KV, home: Path, backed: dict[str, Path]
) -> None:
    wanted = {name: path.read_bytes() for name, path in backed.items()}
    for path in backed.values():
        path.unlink()
    run = kv("--json", "--trust-dir", home / "laptop", "restore", "--all")
    assert run.code == 0, run.err
    rows = cert_rows(run.json())
    assert {(r["path"], r["action"]) for r in rows} == {
        (str(backed["ca"]), "create"),
        (str(backed["server"]), "create"),
    }
    assert all(r["signed"] for r in rows)
    for name, path in backed.items():
        assert path.read_bytes() == wanted[name]
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = kv("--json", "--trust-dir", home / "laptop", "restore", "--all")
    assert {r["action"] for r in cert_rows(again.json())} == {"unchanged"}


def test_without_a_config_entry_they_go_under_keyvault_certs_and_the_line_is_said(
    kv: KV, home: Path, backed: dict[str, Path]
) -> None:
    wanted = backed["ca"].read_bytes()
    (home / ".notary" / "config.json").unlink()
    run = kv("--trust-dir", home / "laptop", "restore", "--all")
    assert run.code == 0, run.err
    placed = home / ".notary" / "keyvault-certs" / "ca" / "example.com" / "team-a~" / "ca.pem"
    assert placed.read_bytes() == wanted
    assert f'add "trust_pinning": {{"ca": {{"{TEAM_A}": "{placed}"}}}}' in run.out


def test_a_different_file_on_disk_is_a_conflict_then_kept_aside_with_force(
    kv: KV, home: Path, backed: dict[str, Path]
) -> None:
    ours = backed["ca"].read_bytes()
    theirs = ca_pem("someone else's CA")
    backed["ca"].write_bytes(theirs)
    laptop = home / "laptop"
    run = kv("--trust-dir", laptop, "restore", "--all")
    assert run.code == 7, run.err
    assert str(backed["ca"]) in run.err
    assert backed["ca"].read_bytes() == theirs
    assert tree(laptop) == {}  # nothing restored: not the keys either
    forced = kv("--json", "--trust-dir", laptop, "restore", "--all", "--force")
    assert forced.code == 0, forced.err
    assert backed["ca"].read_bytes() == ours
    (aside,) = [a for a in forced.json()["kept_aside"] if a.startswith(str(backed["ca"]))]
    assert Path(aside).read_bytes() == theirs


def test_a_certificate_a_store_writer_swapped_is_refused_and_nothing_is_written(
    kv: KV, home: Path, backed: dict[str, Path]
) -> None:
    with backend(home) as (store, wrapper):
        latest = store.read(CA_OBJECT)
        address = CertAddress.ca("default", TEAM_A)
        data = ca_pem("the attacker's CA")
        header = ev.new_header(
            address=address, algorithm=None, source_name="/x/ca.pem", source_mode=0o600, data=data
        )
        other = Ed25519FileSealer(Path("/nonexistent"), ed25519.Ed25519PrivateKey.generate())
        sealed = ev.seal(
            header,
            data,
            [wrapper],
            sealer=other,
            chain=ev.Chain(2, hashlib.sha256(latest.data).hexdigest()),
        )
        store.write(CA_OBJECT, sealed.to_bytes(), replaces=latest.version)
    backed["ca"].unlink()
    run = kv("--trust-dir", home / "laptop", "restore", "--all")
    assert run.code == 5, run.err
    assert "trust_pinning.ca" in run.err
    assert not backed["ca"].exists() and tree(home / "laptop") == {}


def test_a_certificate_moved_under_the_servers_name_is_refused(
    kv: KV, home: Path, backed: dict[str, Path]
) -> None:
    with backend(home) as (store, _):
        ca = store.read(CA_OBJECT).data
        store.write(SERVER_OBJECT, ca, replaces=store.read(SERVER_OBJECT).version)
    run = kv("--trust-dir", home / "laptop", "restore", "--all")
    assert run.code == 5, run.err


def test_one_guns_restore_brings_its_prefixs_ca_and_the_servers_only(
    kv: KV, home: Path, backed: dict[str, Path]
) -> None:
    for path in backed.values():
        path.unlink()
    run = kv("--json", "--trust-dir", home / "laptop", "restore", "--gun", OTHER)
    assert run.code == 0, run.err
    assert {r["key_id"] for r in cert_rows(run.json())} == {"root_ca.pem"}
    assert not backed["ca"].exists()
    run = kv("--json", "--trust-dir", home / "laptop2", "restore", "--gun", APP)
    assert {r["key_id"] for r in cert_rows(run.json())} == {"ca.pem", "root_ca.pem"}


def test_no_pins_leaves_them_out(kv: KV, home: Path, certs: dict[str, Path]) -> None:
    assert kv("init").code == 0
    run = kv("--json", "backup", "--no-pins")
    assert run.code == 0 and cert_rows(run.json()) == []


@pytest.mark.parametrize("hostile", ["private-key", "relative", "symlink", "not-pem"])
def test_a_config_naming_what_is_no_ca_file_is_bad_input(
    kv: KV, home: Path, certs: dict[str, Path], hostile: str
) -> None:
    """The key still travels; the bad entry is said and the exit code is 2."""
    bad = home / "pki" / "bad.pem"
    if hostile == "private-key":
        key = ec.generate_private_key(ec.SECP256R1())
        bad.write_bytes(
            ca_pem("x")
            + key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        value = str(bad)
    elif hostile == "relative":
        value = "pki/team-a-ca.pem"
    elif hostile == "symlink":
        bad.symlink_to(certs["ca"])
        value = str(bad)
    else:
        bad.write_bytes(
            b"-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n"
        )
        value = str(bad)
    write_config(home, {TEAM_A: value})
    assert kv("init").code == 0
    run = kv("--json", "backup")
    assert run.code == 2, run.err
    assert "pinned certificate" in run.err
    assert "PRIVATE KEY" not in run.err + run.out and "MIG" not in run.err
    rows = cert_rows(run.json())
    assert [r["key_id"] for r in rows] == ["root_ca.pem"]  # the good one still travels
    assert any(k["kind"] == "key" and k["action"] == "created" for k in run.json()["keys"])


def test_restore_never_writes_through_a_symlink_the_config_path_is(
    kv: KV, home: Path, backed: dict[str, Path]
) -> None:
    elsewhere = home / "elsewhere.pem"
    backed["ca"].unlink()
    backed["ca"].symlink_to(elsewhere)
    run = kv("--trust-dir", home / "laptop", "restore", "--all")
    assert run.code == 2, run.err
    assert "symbolic link" in run.err
    assert not elsewhere.exists() and tree(home / "laptop") == {}


def test_names_of_certificates_parse_back_and_never_as_keys_or_pins() -> None:
    from keyvault.errors import UsageError
    from keyvault.names import KeyAddress, PinAddress

    for address in (
        CertAddress.ca("t", "docker.com/"),
        CertAddress.ca("t", "a.io/x/y"),
        CertAddress.server("t", "notary.example.com:4443"),
    ):
        assert CertAddress.from_object_name(address.object_name) == address
        for other in (KeyAddress, PinAddress):
            with pytest.raises(UsageError):
                other.from_object_name(address.object_name)
    for bad in (
        "v1/teams/t/certs/ca/a.io~x/ca.pem",
        "v1/teams/t/certs/server/a/b/root_ca.pem",
        "v1/teams/t/certs/ca/../ca.pem",
        "v1/teams/t/certs/server/x/ca.pem",
        "v1/teams/t/certs/ca/A.io:1/x/root_ca.pem",
    ):
        with pytest.raises(UsageError):
            CertAddress.from_object_name(bad)
    with pytest.raises(UsageError):
        CertAddress.server("t", "Upper.example.com")


def test_an_older_certificate_copied_on_top_is_refused_as_a_rollback(
    kv: KV, home: Path, backed: dict[str, Path]
) -> None:
    with backend(home) as (store, _):
        first = store.read(CA_OBJECT).data
    backed["ca"].write_bytes(ca_pem("team-a CA, renewed"))
    run = kv("--json", "backup")
    assert [
        (r["key_id"], r["action"]) for r in cert_rows(run.json()) if r["action"] != "unchanged"
    ] == [("ca.pem", "updated")]
    with backend(home) as (store, _):
        store.write(CA_OBJECT, first, replaces=store.read(CA_OBJECT).version)
    backed["ca"].unlink()
    refused = kv("--trust-dir", home / "laptop", "restore", "--all")
    assert refused.code == 5, refused.err
    assert not backed["ca"].exists() and tree(home / "laptop") == {}


def test_rewrap_moves_the_certificates_with_the_keys_and_pins(
    kv: KV, home: Path, backed: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """After 'rewrap --all' to a new wrapper, that wrapper alone restores the CA files."""
    wanted = {name: path.read_bytes() for name, path in backed.items()}
    config = home / ".config" / "keyvault" / "config.toml"
    config.write_text(config.read_text() + "\n[passphrase]\nscrypt_n = 16384\n")
    monkeypatch.setenv("KEYVAULT_PASSPHRASE", "wrapper passphrase")
    run = kv("--json", "rewrap", "--all", "--add", "passphrase:")
    assert run.code == 0, run.err
    assert {
        (r["key_id"], r["action"], "passphrase:" in r["after"]) for r in cert_rows(run.json())
    } == {("ca.pem", "rewrapped", True), ("root_ca.pem", "rewrapped", True)}
    for path in backed.values():
        path.unlink()
    restored = kv("--wrapper", "passphrase:", "--trust-dir", home / "laptop", "restore", "--all")
    assert restored.code == 0, restored.err
    assert {name: path.read_bytes() for name, path in backed.items()} == wanted


def test_list_and_versions_show_the_certificates_after_the_pins(
    kv: KV, backed: dict[str, Path]
) -> None:
    run = kv("--json", "list", "--long")
    assert run.code == 0, run.err
    rows = cert_rows(run.json())
    assert [(r["key_id"], r["object"], r["signed"]) for r in rows] == [
        ("ca.pem", CA_OBJECT, True),
        ("root_ca.pem", SERVER_OBJECT, True),
    ]
    assert run.json()["keys"][-2:] == rows
    other = kv("--json", "list", "--gun", OTHER)
    assert [r["key_id"] for r in cert_rows(other.json())] == ["root_ca.pem"]
    versions = kv("--json", "versions", "--all")
    assert [r["key_id"] for r in cert_rows(versions.json())] == ["ca.pem", "root_ca.pem"]
