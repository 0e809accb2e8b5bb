"""Audit records that hold (T13): the real actor, the ``--as`` claim, and a chain anchored
in the store by signed checkpoints, on the file store and on SeaweedFS S3.

The local log's own hash chain cannot show a rewrite by whoever can write the file:
they recompute every hash. Each case below rewrites or cuts the log that way (the
result passes the local chain check), or plants a checkpoint in the store the way
anyone with write access to it could, and ``audit verify`` must refuse with exit 5.
"""

from __future__ import annotations

import base64
import json
import os
import pwd
import subprocess
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from fixtures.s3 import WeedServer, s3_env, s3_settings

from cli.conftest import KV, Run
from keyvault.audit import record_hash, verify_records
from keyvault.canonical import canonical_json
from keyvault.checkpoint import SIGN_LABEL, Checkpoint
from keyvault.config import load_config
from keyvault.sealing import Ed25519FileSealer
from keyvault.stores import Store, open_store
from keyvault.trust.sample import write_sample_trust_dir

pytestmark = pytest.mark.proves("T13")

PASS = "correct horse"
TEAM = "team-a"
GUN = "example.com/team-a/app"


@dataclass(frozen=True)
class Machine:
    """A machine with a backed-up trust dir, on one store. Its log holds three records:
    a backup and a restore, each anchored, and an unchanged backup, which is not."""

    kv: KV
    home: Path
    config: Path

    def __call__(self, *args: str | Path) -> Run:
        return self.kv("--config", self.config, *args)

    @property
    def log(self) -> Path:
        return self.home / ".local" / "state" / "keyvault" / "audit.log"

    def records(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.log.read_bytes().splitlines()]

    def store(self) -> Store:
        config = load_config(self.config, dict(os.environ))
        return open_store(config.require_store(), config.backend_options(None))

    def checkpoint_names(self) -> list[str]:
        store = self.store()
        try:
            return sorted(store.list(f"v1/teams/{TEAM}/audit/checkpoints/"))
        finally:
            store.close()

    def plant(self, name: str, data: bytes) -> None:
        """Write an object into the store as anyone with write access to it can."""
        store = self.store()
        try:
            store.write(name, data)
        finally:
            store.close()


def _config(path: Path, store: str, wrapper: str, tail: str = "") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "\n".join(
            [
                "[keyvault]",
                f"team = {json.dumps(TEAM)}",
                f"store = {json.dumps(store)}",
                f"wrappers = {json.dumps([wrapper])}",
                "",
                tail,
            ]
        )
    )
    return path


@pytest.fixture(params=["file", "s3"])
def machine(
    request: pytest.FixtureRequest,
    kv: KV,
    home: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Machine:
    from keyvault.plugins import BackendOptions
    from keyvault.wrappers.age import generate_identity

    identity = tmp_path / "offline" / "identity.txt"
    recipient = generate_identity(identity)
    tail = f"[recovery]\nidentity_file = {json.dumps(str(identity))}\n"
    if request.param == "file":
        store = (tmp_path / "store").as_uri()
        open_store(store, BackendOptions(), create=True).close()
    else:
        weed: WeedServer = request.getfixturevalue("weed")
        store = f"s3://{request.getfixturevalue('bucket')}/keyvault"
        for key, value in s3_env(weed).items():
            monkeypatch.setenv(key, value)
        tail += "[s3]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in s3_settings(weed).items())
    write_sample_trust_dir(
        home / ".docker" / "trust", dict.fromkeys(("root", "targets", "snapshot"), PASS), (GUN,)
    )
    made = Machine(kv, home, _config(home / "kv.toml", store, recipient, tail))
    for args in (("backup",), ("--trust-dir", tmp_path / "out", "restore", "--all"), ("backup",)):
        run = made(*args)
        assert run.code == 0, run.err
    assert [r["action"] for r in made.records()] == ["backup", "restore", "backup"]
    return made


def rewrite(log: Path, seq: int, **changes: Any) -> None:
    """Edit record ``seq`` and recompute every hash from there on: a self-consistent log."""
    records = [json.loads(line) for line in log.read_bytes().splitlines()]
    records[seq - 1].update(changes)
    for i in range(seq - 1, len(records)):
        if i:
            records[i]["prev"] = records[i - 1]["hash"]
        records[i]["hash"] = record_hash(records[i])
    log.write_bytes(b"".join(canonical_json(r) + b"\n" for r in records))
    assert verify_records(log.read_bytes().splitlines())[2] == []  # the local chain passes


def refused(run: Run, *fragments: str) -> None:
    assert run.code == 5, (run.code, run.out, run.err)
    for fragment in fragments:
        assert fragment in run.err, run.err


# -- the actor and the claim -------------------------------------------------------------


def test_the_actor_is_the_real_user_not_what_logname_says(kv: KV, home: Path) -> None:
    """``LOGNAME=bob keyvault ...`` run by root is recorded as root, as the uid says."""
    write_sample_trust_dir(
        home / ".docker" / "trust", dict.fromkeys(("root", "targets", "snapshot"), PASS), (GUN,)
    )
    assert kv("init").code == 0
    spoofed = {
        **os.environ,
        "LOGNAME": "mallory",
        "USER": "mallory",
        "LNAME": "mallory",
        "USERNAME": "mallory",
    }
    done = subprocess.run(
        [sys.executable, "-m", "keyvault", "backup"],
        env=spoofed,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    shown = kv("--json", "audit", "show")
    (record,) = shown.json()["records"]
    real = pwd.getpwuid(os.getuid()).pw_name
    assert real != "mallory"
    assert record["actor"] == f"{real}@{os.uname().nodename}"


def test_an_as_claim_is_recorded_beside_the_real_actor(kv: KV, home: Path, tmp_path: Path) -> None:
    """``--as`` (file store, for the policy check) is in every record it touched, and in
    ``audit show --json``; the actor stays who really ran the command."""
    from keyvault.ops.identity import local_principal

    me = local_principal()
    policy = tmp_path / "p.toml"
    policy.write_text(
        f'[teams.{TEAM}]\nguns = ["example.com/{TEAM}/*"]\n'
        f'members = ["local:{me.split("@")[0]}"]\nci = ["local:ci-bot"]\n'
    )
    trust = home / ".docker" / "trust"
    write_sample_trust_dir(trust, dict.fromkeys(("root", "targets", "snapshot"), PASS), (GUN,))
    assert kv("--team", TEAM, "init").code == 0
    config = home / ".config" / "keyvault" / "config.toml"
    config.write_text(
        config.read_text().replace("[keyvault]\n", f'[keyvault]\npolicy = "{policy}"\n')
    )
    assert kv("backup").code == 0
    assert kv("--as", "local:ci-bot", "--trust-dir", tmp_path / "ci", "restore", "--all").code == 4
    assert (
        kv("--as", "local:ci-bot", "--trust-dir", tmp_path / "ci", "restore", "--gun", GUN).code
        == 0
    )
    shown = kv("--json", "audit", "show")
    records = shown.json()["records"]
    assert [(r["action"], r["outcome"], r["actor"], r["claimed_as"]) for r in records] == [
        ("backup", "ok", me, None),
        ("restore", "refused", me, "local:ci-bot"),
        ("restore", "ok", me, "local:ci-bot"),
    ]
    table = kv("audit", "show")
    assert f"{me} (--as local:ci-bot)" in table.out
    # What the policy names CI does is not anchored (CI may only read the store); the
    # member's backup is.
    verified = kv("--json", "audit", "verify")
    assert verified.code == 0, verified.err
    assert verified.json()["checkpoints"]["checkpoints"] == 1
    assert verified.json()["checkpoints"]["unanchored"] == 2


# -- the chain, anchored in the store -----------------------------------------------------


def test_a_legit_log_verifies_against_its_checkpoints(machine: Machine) -> None:
    names = machine.checkpoint_names()
    # One signed checkpoint per command that wrote or restored keys: the backup and the
    # restore; the unchanged backup wrote nothing, checkpoint included.
    heads = [r["hash"] for r in machine.records()]
    assert [n.rsplit("/", 1)[1] for n in names] == [f"{i:010d}-{heads[i - 1]}.json" for i in (1, 2)]
    run = machine("--json", "audit", "verify")
    assert run.code == 0, run.err
    doc = run.json()
    assert doc["intact"] and doc["problems"] == []
    assert doc["checkpoints"]["checkpoints"] == 2
    assert doc["checkpoints"]["anchored_up_to"] == 2 and doc["checkpoints"]["unanchored"] == 1
    said = machine("audit", "verify")
    assert said.code == 0, said.err
    assert "up to record 2 by 2 signed checkpoints; 1 newer record is not anchored" in said.out


def test_a_rewritten_log_is_caught_by_the_checkpoints(machine: Machine) -> None:
    """The restore (record 2) made someone else's and every hash after it recomputed:
    the local chain is whole, the signed checkpoint of record 2 is not in it any more."""
    rewrite(machine.log, 2, actor="bob@elsewhere")
    refused(
        machine("audit", "verify"),
        "record 2: differs from the signed checkpoint",
        "after record 1, which matches",
    )
    doc = machine("--json", "audit", "verify").json()
    assert not doc["intact"] and [p["seq"] for p in doc["problems"]] == [2]


def test_a_log_rewritten_from_its_first_record_is_caught(machine: Machine) -> None:
    """Every record someone else's: every hash differs, from the first one."""
    for seq in (1, 2, 3):
        rewrite(machine.log, seq, actor="bob@elsewhere")
    refused(machine("audit", "verify"), "record 1: differs from the signed checkpoint")


def test_a_truncated_log_is_caught_by_the_checkpoints(machine: Machine) -> None:
    """The restore and what followed dropped from the end: a valid, shorter chain."""
    lines = machine.log.read_bytes().splitlines(keepends=True)
    machine.log.write_bytes(lines[0])
    assert verify_records(machine.log.read_bytes().splitlines())[2] == []
    refused(machine("audit", "verify"), "record 2: is anchored by a signed checkpoint", "truncated")


def _signature(private: ed25519.Ed25519PrivateKey, message: bytes) -> dict[str, str]:
    from cryptography.hazmat.primitives import serialization

    spki = private.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return {
        "alg": "ed25519",
        "public_key": base64.b64encode(spki).decode(),
        "value": base64.b64encode(private.sign(message)).decode(),
    }


def _own_key(machine: Machine) -> ed25519.Ed25519PrivateKey:
    sealer = Ed25519FileSealer.load(machine.home / ".config" / "keyvault" / "sealer.key")
    return sealer._private


def _checkpoint_of_head(
    machine: Machine, seq: int, head: str, actor: str
) -> tuple[str, dict[str, Any]]:
    """(object name, unsigned document) of a checkpoint of record ``seq`` of this log."""
    log_dir = machine.checkpoint_names()[0].rsplit("/", 1)[0]
    log_id = log_dir.rsplit("/", 1)[1]
    made = Checkpoint(log_id, TEAM, seq, head, "2030-01-01T00:00:00.000000Z", actor)
    return made.name(), made.unsigned_json()


@pytest.mark.parametrize("forgery", ["unsigned", "untrusted", "altered"])
def test_a_forged_checkpoint_is_refused(machine: Machine, forgery: str) -> None:
    """A checkpoint of the log's *true* head, planted in the store: refused for its
    signature alone (none, an unknown sealer's, or the machine's own over other facts)."""
    from keyvault.audit import AuditLog

    record = AuditLog(machine.log, "alice@host").append("list", "ok", team=TEAM)  # not anchored
    name, doc = _checkpoint_of_head(machine, record["seq"], record["hash"], record["actor"])
    message = SIGN_LABEL + canonical_json(doc)
    if forgery == "untrusted":
        doc["signature"] = _signature(ed25519.Ed25519PrivateKey.generate(), message)
    elif forgery == "altered":
        doc["signature"] = _signature(_own_key(machine), message)
        doc["actor"] = "mallory@elsewhere"
    machine.plant(name, canonical_json(doc))
    expected = {
        "unsigned": "is unsigned",
        "untrusted": "which this machine does not trust",
        "altered": "the signature does not verify",
    }[forgery]
    refused(machine("audit", "verify"), f"{name.rsplit('/', 1)[1]} in the store", expected)


def test_a_rewrite_anchored_again_with_the_machines_own_key_is_still_caught(
    machine: Machine,
) -> None:
    """Whoever holds this machine's sealer can sign a checkpoint of the rewritten head,
    but cannot remove the genuine checkpoints before it: every one is compared."""
    rewrite(machine.log, 2, outcome="failed")
    head = machine.records()[-1]
    name, doc = _checkpoint_of_head(machine, head["seq"], head["hash"], head["actor"])
    doc["signature"] = _signature(_own_key(machine), SIGN_LABEL + canonical_json(doc))
    machine.plant(name, canonical_json(doc))
    refused(machine("audit", "verify"), "record 2: differs from the signed checkpoint")


# -- when the store cannot take a checkpoint ----------------------------------------------


def _file_machine(kv: KV, home: Path, tmp_path: Path) -> tuple[Machine, Path]:
    from keyvault.plugins import BackendOptions
    from keyvault.wrappers.age import generate_identity

    store = tmp_path / "store"
    open_store(store.as_uri(), BackendOptions(), create=True).close()
    write_sample_trust_dir(
        home / ".docker" / "trust", dict.fromkeys(("root", "targets", "snapshot"), PASS), (GUN,)
    )
    identity = tmp_path / "offline" / "identity.txt"
    recipient = generate_identity(identity)
    tail = f"[recovery]\nidentity_file = {json.dumps(str(identity))}\n"
    return Machine(kv, home, _config(home / "kv.toml", store.as_uri(), recipient, tail)), store


def test_a_checkpoint_the_store_refuses_warns_and_the_next_one_anchors_the_record(
    kv: KV, home: Path, tmp_path: Path
) -> None:
    made, store = _file_machine(kv, home, tmp_path)
    blocker = store / "objects" / "v1" / "teams" / TEAM / "audit"
    blocker.parent.mkdir(parents=True)
    blocker.write_bytes(b"")  # a file where the checkpoints' directory goes
    from keyvault.ops.anchor import CheckpointNotWrittenWarning

    with pytest.warns(
        CheckpointNotWrittenWarning, match="checkpoint of record 1 was not written to the store"
    ):
        run = made("backup")
    assert run.code == 0, run.err
    blocker.unlink()
    said = made("audit", "verify")
    assert said.code == 0 and "No checkpoint of this log" in said.out, said.err
    assert made("--trust-dir", tmp_path / "out", "restore", "--all").code == 0
    doc = made("--json", "audit", "verify").json()
    assert doc["intact"] and doc["checkpoints"]["anchored_up_to"] == 2
    assert doc["checkpoints"]["checkpoints"] == 1
    rewrite(made.log, 1, outcome="failed")  # record 1 is anchored through record 2's head
    refused(made("audit", "verify"), "record 2: differs from the signed checkpoint")


def test_a_failed_command_writes_no_checkpoint_and_verify_says_it_cannot_compare(
    kv: KV, home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The failed backup is recorded without asking the dead store again for a checkpoint;
    ``audit verify`` cannot compare, and says so with exit 6."""
    from fixtures.s3 import REGION
    from fixtures.servers import free_port

    for key, value in {
        "AWS_ACCESS_KEY_ID": "k",
        "AWS_SECRET_ACCESS_KEY": "s",
        "AWS_DEFAULT_REGION": REGION,
    }.items():
        monkeypatch.setenv(key, value)
    write_sample_trust_dir(
        home / ".docker" / "trust", dict.fromkeys(("root", "targets", "snapshot"), PASS), (GUN,)
    )
    from keyvault.wrappers.age import generate_identity

    recipient = generate_identity(tmp_path / "offline" / "identity.txt")
    tail = (
        f'[s3]\nendpoint_url = "http://127.0.0.1:{free_port()}"\nregion = "{REGION}"\n'
        'addressing_style = "path"\nconnect_timeout = 1\nmax_attempts = 1\n'
    )
    made = Machine(kv, home, _config(home / "kv.toml", "s3://nowhere/kv", recipient, tail))
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        run = made("backup")
    assert run.code == 6, run.err
    assert not [w for w in said if "checkpoint" in str(w.message)], said
    assert [(r["action"], r["outcome"]) for r in made.records()] == [("backup", "failed")]
    assert made("audit", "verify").code == 6


def test_the_daemons_backups_are_anchored(kv: KV, home: Path, tmp_path: Path) -> None:
    """The daemon's long-lived session anchors each backup record it makes."""
    import signal

    from fixtures.servers import wait_for

    made, _ = _file_machine(kv, home, tmp_path)
    log = tmp_path / "daemon.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "keyvault",
                "--config",
                str(made.config),
                "daemon",
                "--trust-dir",
                str(home / ".docker" / "trust"),
                "--listen",
                "127.0.0.1:0",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        wait_for(
            lambda: made.log.exists() and made.checkpoint_names(),
            "the daemon's first record, anchored",
        )
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    records = made.records()
    assert records[0]["action"] == "backup" and records[0]["outcome"] == "ok"
    doc = made("--json", "audit", "verify").json()
    assert doc["intact"], doc
    assert doc["checkpoints"]["anchored_up_to"] == len(records) == doc["checkpoints"]["checkpoints"]


def test_a_rewrap_is_anchored(kv: KV, home: Path, tmp_path: Path) -> None:
    made, _ = _file_machine(kv, home, tmp_path)
    assert made("backup").code == 0
    run = made("rewrap", "--all", "--reseal")
    assert run.code == 0, run.err
    assert [r["action"] for r in made.records()] == ["backup", "rewrap"]
    doc = made("--json", "audit", "verify").json()
    assert doc["intact"] and doc["checkpoints"]["anchored_up_to"] == 2
    assert doc["checkpoints"]["checkpoints"] == 2
