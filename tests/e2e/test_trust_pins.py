"""The trust pin travels with the keys: real notary client and server.

A GUN's ``tuf/<gun>/metadata/root.json`` is what notary trusted on first use;
a new machine without it trusts whatever the server says next. keyvault backs
it up with the keys, and ``keyvault restore`` puts it back byte for byte, so
the new machine's ``notary publish`` runs against the root the old machine
pinned: notary's own refusal of a wrong pin shows that it reads that file.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from e2e.machines import Lab, Machine, expected, new_repository, release, sign

pytestmark = pytest.mark.proves("T16")


def pin_of(machine: Machine, gun: str) -> Path:
    return machine.trust_dir / "tuf" / gun / "metadata" / "root.json"


def test_the_pin_is_restored_byte_for_byte_and_publish_trusts_nothing_new(lab: Lab) -> None:
    gun = lab.gun("pinned")
    old = lab.machine("old-laptop")
    new_repository(old, gun)
    original = pin_of(old, gun).read_bytes()
    keys = old.key_files()
    assert old.keyvault.backup() == dict.fromkeys(keys, "created")
    assert old.keyvault.last_pins == {gun: "created"}
    assert old.keyvault.backup() == dict.fromkeys(keys, "unchanged")
    assert old.keyvault.last_pins == {gun: "unchanged"}
    old.lose()

    new = lab.machine("new-laptop")
    assert not (new.trust_dir / "tuf").exists()
    assert new.keyvault.restore() == dict.fromkeys(keys, "create")
    assert new.keyvault.last_pins == {gun: "create"}
    assert pin_of(new, gun).read_bytes() == original
    sign(new, gun, "v2")  # against the pinned root: no new trust on first use
    assert new.notary.targets(gun) == {"v1": expected("v1"), "v2": expected("v2")}
    assert pin_of(new, gun).read_bytes() == original  # notary kept the very pin


def test_notary_refuses_a_server_root_that_the_restored_pin_does_not_vouch_for(lab: Lab) -> None:
    """The control: the pin is what notary checks the server against. A machine whose
    pin for the GUN is another repository's root refuses to publish; the same machine
    with the restored pin publishes."""
    gun, other = lab.gun("vouched"), lab.gun("stranger")
    laptop, elsewhere = lab.machine("laptop"), lab.machine("elsewhere")
    new_repository(laptop, gun)
    new_repository(elsewhere, other)
    assert laptop.keyvault.backup() == dict.fromkeys(laptop.key_files(), "created")
    assert laptop.keyvault.last_pins == {gun: "created"}
    stranger = pin_of(elsewhere, other).read_bytes()

    new = lab.machine("new-laptop")
    new.keyvault.restore()
    pin_of(new, gun).write_bytes(stranger)
    new.notary.add(gun, "v2", release("v2"))
    refused = new.notary.run("publish", gun, check=False)
    assert refused.returncode != 0, refused.stdout
    assert "could not validate the path to a trusted root" in refused.stderr, refused.stderr
    pin_of(new, gun).unlink()
    assert set(new.keyvault.restore("--gun", gun).values()) == {"unchanged"}
    assert new.keyvault.last_pins == {gun: "create"}
    new.notary.publish(gun)
    assert new.notary.targets(gun)["v2"] == expected("v2")


def notary_config(machine: Machine, server_url: str) -> Path:
    """The machine's ``~/.notary/config.json``: the trust server and its CA by a path
    relative to the config's directory, as notary reads it (no -s/--tlscacert flags)."""
    config = machine.keyvault.home / ".notary" / "config.json"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(
        json.dumps({"remote_server": {"url": server_url, "root_ca": "server-ca.pem"}})
    )
    return config


def publish_with_config(
    machine: Machine, config: Path, gun: str, name: str
) -> subprocess.CompletedProcess[str]:
    """``notary -c CONFIG add`` and ``publish``: the server and its CA from the config only."""
    payload = machine.root / f"{name}.payload"
    payload.write_bytes(release(name))
    notary = machine.notary.notary
    notary.run(machine.trust_dir, "-c", str(config), "add", gun, name, str(payload))
    return notary.run(machine.trust_dir, "-c", str(config), "publish", gun, check=False)


def test_the_servers_ca_the_notary_config_pins_comes_back_and_notary_publishes_with_it(
    lab: Lab,
) -> None:
    """remote_server.root_ca travels with the keys: a new laptop that has the config but
    not the CA file cannot reach the server (the control); after the restore it can."""
    gun = lab.gun("ca")
    old = lab.machine("old-laptop")
    new_repository(old, gun)
    config = notary_config(old, lab.server.url)
    shutil.copyfile(lab.server.ca_cert, config.parent / "server-ca.pem")
    ca = (config.parent / "server-ca.pem").read_bytes()
    report = old.keyvault.json("backup")
    assert [(k["key_id"], k["action"]) for k in report["keys"] if k["kind"] == "cert"] == [
        ("root_ca.pem", "created")
    ]
    old.keyvault.backup()  # notes the sealer for the next machine
    old.lose()

    new = lab.machine("new-laptop")
    config = notary_config(new, lab.server.url)
    new.keyvault.restore()
    (config.parent / "server-ca.pem").unlink()
    control = publish_with_config(new, config, gun, "v2")
    assert control.returncode != 0, control.stdout  # no CA: notary cannot reach the server
    restored = new.keyvault.json("restore", "--all")
    assert [(k["path"], k["action"]) for k in restored["keys"] if k["kind"] == "cert"] == [
        (str(config.parent / "server-ca.pem"), "create")
    ]
    assert (config.parent / "server-ca.pem").read_bytes() == ca
    published = publish_with_config(new, config, gun, "v3")
    assert published.returncode == 0, published.stderr
    assert new.notary.targets(gun)["v3"] == expected("v3")
