"""The root key alone, restored on a new machine, founds a new GUN and recovers an old one.

A root key belongs to a team, not to a GUN: ``keyvault restore --role root``
brings back that one file, and the real notary then finds it ("Root key
found, using: <id>"), signs the second GUN's root.json with it (its root
certificate's public key is the restored key's), and, with nothing else,
takes back the first GUN whose targets and snapshot keys were lost: rotate
the snapshot key to the server, rotate the targets key, publish.
"""

from __future__ import annotations

import base64

from e2e.machines import MISSING_ROOT, Lab, expected, new_repository, sign
from keyvault.trust.keyid import cert_key_id


def root_cert(root_json: dict[str, object]) -> tuple[str, bytes]:
    """(cert key ID in root.json, PEM certificate) of the single root key."""
    signed = root_json["signed"]
    assert isinstance(signed, dict)
    (cert_id,) = signed["roles"]["root"]["keyids"]
    key = signed["keys"][cert_id]
    assert key["keytype"] == "ecdsa-x509"
    return cert_id, base64.b64decode(key["keyval"]["public"])


def test_second_gun_from_the_restored_root_key(lab: Lab) -> None:
    first, second = lab.gun("first"), lab.gun("second")
    laptop = lab.machine("laptop")
    ids = new_repository(laptop, first)
    keys = laptop.key_files()
    assert laptop.keyvault.backup() == dict.fromkeys(keys, "created")
    laptop.lose()

    # Without the root key nothing can change the first GUN's root.json.
    probe = lab.machine("without-root")
    assert probe.notary.rotate_fails(first, "targets") == MISSING_ROOT.format(key_id=ids["root"])

    new = lab.machine("new-laptop")
    assert new.keyvault.restore("--role", "root") == {ids["root"]: "create"}
    assert new.key_files() == {ids["root"]: keys[ids["root"]]}

    out = new.notary.init(second)
    assert f"Root key found, using: {ids['root']}" in out
    assert new.notary.key_ids("root") == {ids["root"]}  # no new root key was made
    second_cert_id, second_cert = root_cert(new.notary.root_json(second))
    assert cert_key_id("ecdsa-x509", second_cert) == ids["root"]

    # The first GUN, from the root key alone.
    new.notary.rotate(first, "snapshot", server_managed=True)
    new.notary.rotate(first, "targets")
    first_cert_id, first_cert = root_cert(new.notary.root_json(first))
    assert cert_key_id("ecdsa-x509", first_cert) == ids["root"]
    assert first_cert_id != second_cert_id  # one root key, one certificate per GUN
    sign(new, first, "v2")
    assert new.notary.targets(first) == {"v1": expected("v1"), "v2": expected("v2")}
    sign(new, second, "s1")
    assert new.notary.targets(second) == {"s1": expected("s1")}
