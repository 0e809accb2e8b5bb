"""Sign, lose the machine, restore with keyvault, sign again: real notary client and server.

Each scenario runs once per store + wrapper pair (``backend`` in conftest.py).
Every claim is made with notary's own behaviour: before the restore a fresh
machine's ``notary publish`` fails with notary's exact "could not find
necessary signing keys" error naming the key it needs; after ``keyvault
restore`` the key files are byte-identical to the lost ones and the same
publish succeeds; ``notary list``, read back from the server, shows every
target with the digest of what was signed.
"""

from __future__ import annotations

import datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from e2e.machines import MISSING_KEY, Lab, expected, new_repository, release, sign
from keyvault.trust.keyid import cert_key_id

RELEASES = "targets/releases"


def test_sign_after_restore_on_a_new_machine(lab: Lab) -> None:
    gun = lab.gun("app")
    old = lab.machine("old-laptop")
    ids = new_repository(old, gun)
    keys = old.key_files()
    assert old.keyvault.backup() == dict.fromkeys(keys, "created")
    old.lose()

    new = lab.machine("new-laptop")
    new.notary.add(gun, "v2", release("v2"))
    assert new.notary.publish_fails(gun) == MISSING_KEY.format(key_id=ids["targets"])
    assert new.key_files() == {}

    assert new.keyvault.restore() == dict.fromkeys(keys, "create")
    assert new.key_files() == keys  # byte for byte, checked before notary touches them
    new.notary.publish(gun)  # the change staged before the restore
    assert new.notary.targets(gun) == {"v1": expected("v1"), "v2": expected("v2")}
    assert new.key_files() == keys  # signing used the restored keys, made no new ones


def test_rotated_targets_key_is_the_one_restored(lab: Lab) -> None:
    gun = lab.gun("rotated")
    laptop = lab.machine("laptop")
    ids = new_repository(laptop, gun)
    before_rotation = laptop.key_files()
    assert laptop.keyvault.backup() == dict.fromkeys(ids.values(), "created")
    stale = lab.machine("stale")  # restored from the backup taken before the rotation
    assert stale.keyvault.restore() == dict.fromkeys(ids.values(), "create")

    laptop.notary.rotate(gun, "targets")
    (new_targets,) = laptop.notary.key_ids("targets", gun)
    assert new_targets != ids["targets"]
    assert ids["targets"] not in laptop.key_files()  # notary deleted the old key file
    sign(laptop, gun, "v2")
    assert laptop.keyvault.backup() == {
        ids["root"]: "unchanged",
        ids["snapshot"]: "unchanged",
        new_targets: "created",
    }
    keys = laptop.key_files()
    laptop.lose()

    # The old targets key no longer signs: notary asks for the new one.
    stale.notary.add(gun, "v3-stale", release("v3-stale"))
    assert stale.notary.publish_fails(gun) == MISSING_KEY.format(key_id=new_targets)

    fresh = lab.machine("replacement")
    fresh.notary.add(gun, "v3", release("v3"))
    assert fresh.notary.publish_fails(gun) == MISSING_KEY.format(key_id=new_targets)
    # The store still holds the retired key too: --all brings it back, unused.
    everything = {**before_rotation, **keys}
    assert fresh.keyvault.restore() == dict.fromkeys(everything, "create")
    assert fresh.key_files() == everything
    fresh.notary.publish(gun)
    assert fresh.notary.targets(gun) == {n: expected(n) for n in ("v1", "v2", "v3")}


def write_delegation_key(directory: Path, name: str) -> tuple[Path, Path]:
    """An unencrypted P-256 key and its self-signed certificate, like a ``docker trust`` signer."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .sign(key, hashes.SHA256())
    )
    key_path, cert_path = directory / f"{name}.key", directory / f"{name}.crt"
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key_path, cert_path


def test_delegation_key_signs_after_restore(lab: Lab, tmp_path: Path) -> None:
    gun = lab.gun("delegated")
    laptop = lab.machine("laptop")
    new_repository(laptop, gun)
    key_path, cert_path = write_delegation_key(tmp_path, "alice")
    laptop.notary.delegation_add(gun, RELEASES, cert_path)
    laptop.notary.key_import(key_path, RELEASES)
    (delegation,) = laptop.notary.key_ids(RELEASES)
    assert delegation == cert_key_id("ecdsa-x509", cert_path.read_bytes())
    sign(laptop, gun, "v2", roles=(RELEASES,))
    keys = laptop.key_files()
    assert laptop.keyvault.backup() == dict.fromkeys(keys, "created")
    laptop.lose()

    new = lab.machine("new-laptop")
    new.notary.add(gun, "v3", release("v3"), roles=(RELEASES,))
    assert new.notary.publish_fails(gun) == MISSING_KEY.format(key_id=delegation)
    assert new.keyvault.restore() == dict.fromkeys(keys, "create")
    assert new.key_files() == keys
    new.notary.publish(gun)
    assert new.notary.targets(gun) == {
        "v1": expected("v1"),
        "v2": expected("v2", RELEASES),
        "v3": expected("v3", RELEASES),
    }
