"""T2 at the CLI, on every store: whoever can write the store holds none of the owner's secrets.

Each case runs on the file store (age), SeaweedFS S3 + moto KMS and OpenBao KV + Transit:
an envelope forged with keyvault's own CLI and the owner's public wrapper, one sealed by
another machine (unpinned, pinned for another team only, revoked), a stripped or altered
signature, an older version copied on top, a validly signed envelope aimed at another key's
file, and an unsigned (v1) envelope. Each is refused with exit 5 naming the key in full,
and nothing reaches a trust directory. Where a case is allowed on purpose (a trusted
sealer, ``--version``, ``--allow-unsigned``), the exact bytes are restored.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from envelope._support import as_v1
from fixtures.host import Unchanged
from fixtures.servers import BackendSetup, wait_for
from notarykit import BuiltTrustDir

from cli.conftest import KV, Run
from keyvault import envelope as ev
from keyvault.config import load_config
from keyvault.names import KeyAddress
from keyvault.sealing import Ed25519FileSealer
from keyvault.stores import Store, open_store
from keyvault.trust.keyid import private_key_id
from keyvault.trust.model import KeyFile
from keyvault.trust.sample import notary_key_file, write_sample_trust_dir
from keyvault.wrappers import Wrapper, open_wrapper

pytestmark = pytest.mark.proves("T2")

PASS = "correct horse"
ROLES = ("root", "targets", "snapshot")
TEAM = "team-a"
GUN = "example.com/team-a/app"
STORES = ("file", "s3", "vault")
XDG = {
    "XDG_CONFIG_HOME": ".config",
    "XDG_DATA_HOME": ".local/share",
    "XDG_STATE_HOME": ".local/state",
}


# -- one store + wrapper pair, and the machines that use it ------------------------------


@dataclass(frozen=True)
class Stage:
    """A store and a wrapper; ``identity`` opens the age wrapper (file store only)."""

    name: str
    store: str
    wrapper: str
    sections: str = ""
    identity: Path | None = None

    def config(
        self, path: Path, *, keyvault: str = "", tail: str = "", identity: bool = True
    ) -> Path:
        """A config file for this stage; ``identity=False``: a writer who cannot open it."""
        lines = [
            "[keyvault]",
            f"team = {json.dumps(TEAM)}",
            f"store = {json.dumps(self.store)}",
            f"wrappers = {json.dumps([self.wrapper])}",
            "concurrency = 2",
            keyvault,
            "",
            self.sections,
        ]
        if identity and self.identity is not None:
            lines += ["[recovery]", f"identity_file = {json.dumps(str(self.identity))}", ""]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(lines) + tail)
        return path


def file_stage(tmp_path: Path) -> Stage:
    from keyvault.plugins import BackendOptions
    from keyvault.wrappers.age import generate_identity

    store = tmp_path / "store"
    open_store(store.as_uri(), BackendOptions(), create=True).close()
    identity = tmp_path / "offline" / "identity.txt"
    return Stage("file", store.as_uri(), generate_identity(identity), identity=identity)


def backend_stage(setup: BackendSetup, monkeypatch: pytest.MonkeyPatch) -> Stage:
    for key in (
        "AWS_PROFILE",
        "AWS_ENDPOINT_URL",
        "AWS_ENDPOINT_URL_S3",
        "AWS_REGION",
        "VAULT_NAMESPACE",
        "VAULT_CACERT",
        "VAULT_SKIP_VERIFY",
    ):
        monkeypatch.delenv(key, raising=False)
    for key, value in setup.env.items():
        monkeypatch.setenv(key, value)
    name = "vault" if setup.store.startswith("vault://") else "s3"
    return Stage(name, setup.store, setup.wrappers[0], setup.config_toml)


@pytest.fixture(params=STORES)
def stage(
    request: pytest.FixtureRequest, home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Stage:
    if request.param == "file":
        return file_stage(tmp_path)
    fixture = "s3_kms_backend" if request.param == "s3" else "vault_backend"
    return backend_stage(request.getfixturevalue(fixture), monkeypatch)


@contextlib.contextmanager
def machine(home: Path) -> Iterator[None]:
    """Run as another machine: its own HOME, so its own sealer and high-water marks."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HOME", str(home))
        for name, sub in XDG.items():
            mp.setenv(name, str(home / sub))
        yield


@dataclass
class Owner:
    """The owner's machine: a backed-up sample trust dir (root, and targets + snapshot
    of GUN) in a store of the stage."""

    kv: KV
    stage: Stage
    home: Path
    config: Path
    trust: Path
    keys: tuple[KeyFile, ...]

    def __call__(self, *args: str | Path) -> Run:
        return self.kv("--config", self.config, *args)

    def key(self, role: str) -> KeyFile:
        (found,) = [k for k in self.keys if k.role == role]
        return found

    def fingerprint(self) -> str:
        run = self("--json", "sealer", "show")
        assert run.code == 0, run.err
        return str(run.json()["sealer"])

    def sealer(self) -> Ed25519FileSealer:
        return Ed25519FileSealer.load(self.home / ".config" / "keyvault" / "sealer.key")

    @contextlib.contextmanager
    def backend(self) -> Iterator[tuple[Store, Wrapper]]:
        """The store and wrapper, opened in this process as the CLI opens them."""
        config = load_config(self.config, dict(os.environ))
        options = config.backend_options(None)
        store = open_store(config.require_store(), options)
        wrapper = open_wrapper(self.stage.wrapper, options)
        try:
            yield store, wrapper
        finally:
            wrapper.close()
            store.close()

    def latest(self, name: str) -> tuple[str, bytes]:
        with self.backend() as (store, _):
            found = store.read(name)
        return found.version, found.data

    def write_on_top(self, name: str, data: bytes) -> str:
        """A new version on top of the latest, through the store itself (as any writer can)."""
        with self.backend() as (store, _):
            return store.write(name, data, replaces=store.read(name).version)

    def versions(self, key_id: str) -> list[dict[str, Any]]:
        run = self("--json", "versions", "--key-id", key_id)
        assert run.code == 0, run.err
        (found,) = run.json()["keys"]
        return list(found["versions"])


def make_owner(kv: KV, home: Path, stage: Stage) -> Owner:
    trust = home / ".docker" / "trust"
    keys = write_sample_trust_dir(trust, dict.fromkeys(ROLES, PASS), (GUN,))
    made = Owner(kv, stage, home, stage.config(home / "kv.toml"), trust, keys)
    run = made("--json", "backup")
    assert run.code == 0, run.err
    assert [k["action"] for k in run.json()["keys"]] == ["created"] * len(keys)
    return made


@pytest.fixture
def owner(kv: KV, home: Path, stage: Stage) -> Owner:
    return make_owner(kv, home, stage)


def object_name(key: KeyFile) -> str:
    return KeyAddress(TEAM, key.gun, key.role, key.key_id).object_name


def refused(run: Run, key_id: str, *fragments: str, code: int = 5) -> None:
    """Exit ``code``, the key's full ID and every fragment in the message."""
    assert run.code == code, (run.code, run.err)
    assert key_id in run.err, run.err
    for fragment in fragments:
        assert fragment in run.err, run.err


def restored(owner: Owner, target: Path, *args: str | Path) -> None:
    """A restore into ``target`` that works, with the owner's exact bytes."""
    run = owner("--trust-dir", target, *args)
    assert run.code == 0, run.err
    paths = list((target / "private").rglob("*.key"))
    assert paths, run.err
    for path in paths:
        (key,) = [k for k in owner.keys if k.relpath == path.name]
        assert path.read_bytes() == key.data


def other_machine(
    owner: Owner,
    tmp_path: Path,
    name: str,
    *,
    guns: tuple[str, ...] = (GUN,),
    identity: bool = False,
) -> tuple[Path, Path, tuple[KeyFile, ...]]:
    """(HOME, config, keys) of another machine with a sample trust dir of its own, set up
    for the owner's store and the owner's (public) wrapper."""
    home = tmp_path / name
    keys = write_sample_trust_dir(home / ".docker" / "trust", dict.fromkeys(ROLES, PASS), guns)
    return home, owner.stage.config(home / "kv.toml", identity=identity), keys


def forge(owner: Owner, tmp_path: Path, victim: KeyFile) -> bytes:
    """An attacker (a HOME of their own, so a sealer of their own) backs up their own key
    file of the victim's role, renamed to the victim's key ID, into the owner's store with
    the owner's wrapper URI; returns the attacker's bytes."""
    home, config, keys = other_machine(
        owner, tmp_path, "attacker", guns=(victim.gun,) if victim.gun else ()
    )
    (mine,) = [k for k in keys if k.role == victim.role]
    private = home / ".docker" / "trust" / "private"
    (private / mine.relpath).rename(private / victim.relpath)
    with machine(home):
        run = owner.kv("--config", config, "--json", "backup", "--key-id", victim.key_id)
    assert run.code == 0, run.err
    (outcome,) = run.json()["keys"]
    assert outcome["action"] == "updated" and "not trusted" in outcome["warning"], outcome
    return mine.data


# -- 1. a forged envelope, made with keyvault's own CLI ---------------------------------


def test_forged_root_key_is_refused_and_the_next_backup_seals_over_it(
    owner: Owner, tmp_path: Path
) -> None:
    root = owner.key("root")
    forged = forge(owner, tmp_path, root)
    fresh = tmp_path / "new-laptop" / "trust"
    refused(
        owner("--trust-dir", fresh, "restore", "--all"),
        root.key_id,
        "which this machine does not trust",
    )
    assert not fresh.exists()
    live = Unchanged(owner.trust)  # the real attack: over the live key, even with --force
    refused(owner("restore", "--all", "--force"), root.key_id, "does not trust")
    live.check()
    # The owner's next backup does not take the forgery for its key: it says so and seals
    # a fresh version on top, which restores the owner's bytes, not the attacker's.
    run = owner("--json", "backup")
    assert run.code == 0, run.err
    actions = {k["key_id"]: (k["action"], k["warning"]) for k in run.json()["keys"]}
    action, warning = actions.pop(root.key_id)
    assert action == "updated" and root.key_id in warning and "does not trust" in warning
    assert {a for a, _ in actions.values()} == {"unchanged"}
    assert root.key_id in run.err
    restored(owner, fresh, "restore", "--all")
    assert forged != root.data == (fresh / "private" / root.relpath).read_bytes()


# -- 2. another machine's sealer: unpinned, pinned for another team, revoked -------------


def test_another_machines_sealer_is_refused_until_pinned_and_once_revoked(
    owner: Owner, tmp_path: Path
) -> None:
    home, config, keys = other_machine(
        owner, tmp_path, "colleague", guns=("example.com/team-a/web",)
    )
    with machine(home):
        assert owner.kv("--config", config, "backup").code == 0
        colleague = owner.kv("--config", config, "--json", "sealer", "show").json()["sealer"]
    root = next(k for k in keys if k.role == "root")
    fresh = tmp_path / "fresh"
    refused(
        owner("--trust-dir", fresh, "restore", "--key-id", root.key_id),
        root.key_id,
        f"is sealed by {colleague}, which this machine does not trust",
    )
    assert not fresh.exists()
    owner.config = owner.stage.config(
        owner.home / "trusting.toml", tail=f"[sealing]\ntrusted = [{json.dumps(colleague)}]\n"
    )
    run = owner("--trust-dir", fresh, "restore", "--key-id", root.key_id)
    assert run.code == 0, run.err
    assert (fresh / "private" / root.relpath).read_bytes() == root.data
    owner.config = owner.stage.config(
        owner.home / "revoking.toml",
        tail=f"[sealing]\ntrusted = [{json.dumps(colleague)}]\n"
        f"revoked = [{json.dumps(colleague)}]\n",
    )
    again = tmp_path / "again"
    refused(
        owner("--trust-dir", again, "restore", "--key-id", root.key_id),
        root.key_id,
        f"revoked sealer {colleague}",
    )
    assert not again.exists()
    # The owner's own keys still restore: only the revoked sealer's are refused.
    restored(owner, again, "restore", "--gun", GUN)


@pytest.mark.filterwarnings("ignore:acting as local:")
def test_a_sealer_pinned_only_for_another_team_is_refused(
    kv: KV, home: Path, tmp_path: Path
) -> None:
    stage = file_stage(tmp_path)
    mine = make_owner(kv, home, stage)
    other_gun = "example.com/team-b/api"
    colleague, config, keys = other_machine(mine, tmp_path, "team-b-laptop", guns=(other_gun,))
    with machine(colleague):
        assert kv("--config", config, "--team", "team-b", "backup").code == 0
        assert kv("--config", config, "backup", "--role", "root").code == 0  # into team-a
        pin = kv("--config", config, "--json", "sealer", "show").json()["sealer"]
    policy = tmp_path / "policy.toml"
    policy.write_text(
        'version = 1\n\n[teams.team-a]\nguns = ["example.com/team-a/*"]\n'
        'members = ["local:alice"]\n\n[teams.team-b]\n'
        'guns = ["example.com/team-b/*"]\nmembers = ["local:alice"]\n'
        f"sealers = [{json.dumps(pin)}]\n"
    )
    mine.config = stage.config(
        home / "kv-policy.toml", keyvault=f"policy = {json.dumps(str(policy))}"
    )
    root = next(k for k in keys if k.role == "root")
    fresh = tmp_path / "fresh"
    refused(
        mine("--as", "local:alice", "--trust-dir", fresh, "restore", "--key-id", root.key_id),
        root.key_id,
        f"is sealed by {pin}, which this machine does not",
    )
    assert not fresh.exists()
    # Team B's members do trust it (the pin is honoured, for that team only).
    run = mine("--as", "local:alice", "--team", "team-b", "--trust-dir", fresh, "restore", "--all")
    assert run.code == 0, run.err
    assert {p.name: p.read_bytes() for p in (fresh / "private").iterdir()} == {
        k.relpath: k.data for k in keys
    }


# -- 3. a stripped or altered signature, written on top through the store ----------------


def _strip(doc: dict[str, Any]) -> None:
    del doc["signature"]


def _dress_as_v1(doc: dict[str, Any]) -> None:
    """Signature and chain removed and the version set to 1, to pass for an old envelope."""
    del doc["signature"], doc["chain"]
    doc["version"] = doc["header"]["version"] = 1


def _alter(doc: dict[str, Any]) -> None:
    value = bytearray(base64.b64decode(doc["signature"]["value"]))
    value[0] ^= 0x01
    doc["signature"]["value"] = base64.b64encode(bytes(value)).decode()


@pytest.mark.parametrize(
    ("change", "says"),
    [
        (_strip, "carries no signature"),
        (_dress_as_v1, "the envelope is unsigned"),
        (_alter, "signature does not verify"),
    ],
    ids=["stripped", "dressed-as-v1", "altered-value"],
)
def test_a_stripped_or_altered_signature_is_refused(
    owner: Owner, tmp_path: Path, change: Callable[[dict[str, Any]], None], says: str
) -> None:
    target = owner.key("targets")
    name = object_name(target)
    original, data = owner.latest(name)
    doc = json.loads(data)
    change(doc)
    owner.write_on_top(name, json.dumps(doc).encode())
    fresh = tmp_path / "fresh"
    refused(owner("--trust-dir", fresh, "restore", "--all"), target.key_id, says)
    refused(owner("--trust-dir", fresh, "restore", "--key-id", target.key_id), target.key_id, says)
    if change is _dress_as_v1:  # allowing v1 does not let a v2 envelope through dressed up
        run = owner("--allow-unsigned", "--trust-dir", fresh, "restore", "--key-id", target.key_id)
        assert run.code == 5 and "does not match the envelope's commitment" in run.err, run.err
        assert target.key_id in run.err
    assert not fresh.exists()
    restored(owner, fresh, "restore", "--key-id", target.key_id, "--version", original)
    assert (fresh / "private" / target.relpath).read_bytes() == target.data


# -- 4. an older version copied on top --------------------------------------------------


def test_an_older_version_copied_on_top_is_a_rollback(owner: Owner, tmp_path: Path) -> None:
    target = owner.key("targets")
    name = object_name(target)
    first, old = owner.latest(name)
    changed = target.data + b"\n"  # still a key to the scanner: `notary key passwd` did this
    (owner.trust / "private" / target.relpath).write_bytes(changed)
    run = owner("--json", "backup", "--key-id", target.key_id)
    assert run.code == 0 and run.json()["keys"][0]["action"] == "updated", run.err
    owner.write_on_top(name, old)
    assert [(v["sequence"], v["chain"]) for v in owner.versions(target.key_id)] == [
        (1, "broken"),
        (2, "linked"),
        (1, "first"),
    ]
    fresh = tmp_path / "fresh"
    refused(owner("--trust-dir", fresh, "restore", "--all"), target.key_id, "rollback")
    assert not fresh.exists()
    # A new machine has no high-water mark: the signed chain alone refuses it.
    laptop = tmp_path / "new-laptop"
    pin = owner.fingerprint()
    with machine(laptop):
        run = owner("--trust-sealer", pin, "--trust-dir", fresh, "restore", "--all")
        refused(run, target.key_id, "rollback", "older version(s) lie beneath")
        assert not fresh.exists()
        # The old version on purpose: allowed, with a warning, and its exact bytes.
        run = owner(
            "--trust-sealer",
            pin,
            "--trust-dir",
            fresh,
            "restore",
            "--key-id",
            target.key_id,
            "--version",
            first,
        )
    assert run.code == 0, run.err
    assert f"restored version {first} on purpose" in run.err
    assert (fresh / "private" / target.relpath).read_bytes() == target.data


def test_newer_versions_removed_behind_keyvaults_back_are_a_rollback_here(
    kv: KV, home: Path, tmp_path: Path
) -> None:
    """The high-water mark alone: whoever can write the store's directory removes the newer
    versions, so the signed chain of what is left is intact; this machine has seen more."""
    stage = file_stage(tmp_path)
    mine = make_owner(kv, home, stage)
    target = mine.key("targets")
    (mine.trust / "private" / target.relpath).write_bytes(target.data + b"\n")
    assert mine("backup", "--key-id", target.key_id).code == 0
    newest, _ = mine.latest(object_name(target))
    store_dir = Path(stage.store.removeprefix("file://"))
    (store_dir / "objects" / object_name(target) / newest).unlink()
    assert [(v["sequence"], v["chain"]) for v in mine.versions(target.key_id)] == [(1, "first")]
    fresh = tmp_path / "fresh"
    refused(
        mine("--trust-dir", fresh, "restore", "--key-id", target.key_id),
        target.key_id,
        "rollback",
        "older than version 2 this machine has already seen",
    )
    assert not fresh.exists()
    # What a new machine cannot know: with no mark yet, the intact older chain restores.
    pin = mine.fingerprint()
    with machine(tmp_path / "new-laptop"):
        run = mine(
            "--trust-sealer", pin, "--trust-dir", fresh, "restore", "--key-id", target.key_id
        )
    assert run.code == 0, run.err
    assert (fresh / "private" / target.relpath).read_bytes() == target.data


# -- 5. a trusted sealer cannot aim a key at another key's file -------------------------


def _new_key(role: str = "root", gun: str | None = None) -> tuple[str, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    return private_key_id(key), notary_key_file(key, role, gun, "")


def _sealed(
    owner: Owner,
    wrapper: Wrapper,
    key_id: str,
    data: bytes,
    source_name: str,
    role: str = "root",
    gun: str | None = None,
) -> ev.Envelope:
    """A first version sealed by the owner's own sealer, as a backup would, with a chosen
    ``source_name``."""
    header = ev.new_header(
        address=KeyAddress(TEAM, gun, role, key_id),
        algorithm="ecdsa",
        source_name=source_name,
        source_mode=0o600,
        data=data,
    )
    return ev.seal(header, data, [wrapper], sealer=owner.sealer(), chain=ev.FIRST)


def test_a_validly_signed_envelope_aimed_at_another_keys_file_is_refused(
    owner: Owner, tmp_path: Path
) -> None:
    real = owner.key("root").key_id
    aimed = {f"root_keys/{real}.key": _new_key(), f"{real}.key": _new_key()}
    control_id, control = _new_key()
    with owner.backend() as (store, wrapper):
        for source_name, (key_id, data) in aimed.items():
            envelope = _sealed(owner, wrapper, key_id, data, source_name)
            store.write(envelope.address.object_name, envelope.to_bytes())
        envelope = _sealed(owner, wrapper, control_id, control, f"{control_id}.key")
        store.write(envelope.address.object_name, envelope.to_bytes())
    fresh = tmp_path / "fresh"
    for source_name, (key_id, _) in aimed.items():
        refused(
            owner("--trust-dir", fresh, "restore", "--key-id", key_id),
            key_id,
            "not where notary keeps this key",
            repr(source_name),
        )
        assert not fresh.exists()
    live = Unchanged(owner.trust)
    run = owner("restore", "--all", "--force")
    assert run.code == 5 and any(k in run.err for k, _ in aimed.values()), run.err
    live.check()
    # The same envelope with the key's own file name restores (the name is what is refused).
    run = owner("--trust-dir", fresh, "restore", "--key-id", control_id)
    assert run.code == 0, run.err
    assert (fresh / "private" / f"{control_id}.key").read_bytes() == control


# -- 6. an unsigned (v1) envelope -------------------------------------------------------


@pytest.mark.proves("T2", "T15")
def test_a_v1_envelope_needs_allow_unsigned_and_is_resealed_by_rewrap(
    owner: Owner, tmp_path: Path
) -> None:
    key_id, data = _new_key("targets", GUN)
    with owner.backend() as (store, wrapper):
        sealed = _sealed(owner, wrapper, key_id, data, f"{key_id}.key", "targets", GUN)
        v1 = as_v1(sealed, wrapper, data)  # type: ignore[arg-type]
        store.write(v1.address.object_name, v1.to_bytes())
    assert v1.version == 1 and v1.signature is None
    fresh = tmp_path / "fresh"
    refused(
        owner("--trust-dir", fresh, "restore", "--key-id", key_id),
        key_id,
        "unsigned (format v1)",
        "--allow-unsigned",
    )
    assert not fresh.exists()
    run = owner("--allow-unsigned", "--trust-dir", fresh, "restore", "--key-id", key_id)
    assert run.code == 0, run.err
    assert "UNSIGNED" in run.err and "--allow-unsigned" in run.err
    assert (fresh / "private" / f"{key_id}.key").read_bytes() == data

    def sealer_of(run: Run) -> str:
        assert run.code == 0, run.err
        (item,) = [k for k in run.json()["keys"] if k["key_id"] == key_id]
        return str(item["sealer"])

    assert sealer_of(owner("--json", "list", "--long")) == "unsigned"
    run = owner("--allow-unsigned", "--json", "rewrap", "--all", "--reseal")
    assert run.code == 0, run.err
    assert {k["key_id"]: k["action"] for k in run.json()["keys"]}[key_id] == "resealed"
    assert sealer_of(owner("--json", "list", "--long")) == owner.fingerprint()
    again = tmp_path / "again"
    run = owner("--trust-dir", again, "restore", "--key-id", key_id)
    assert run.code == 0, run.err
    assert "UNSIGNED" not in run.err
    assert (again / "private" / f"{key_id}.key").read_bytes() == data


# -- 7. CI (fetch, exec) and drills ------------------------------------------------------


@pytest.mark.filterwarnings("ignore:acting as local:")
def test_ci_and_drill_refuse_a_forged_targets_key(
    owner: Owner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = owner.key("targets")
    forge(owner, tmp_path, target)
    ci: tuple[str | Path, ...] = ("--config", owner.config)
    if owner.stage.name == "file":  # a CI principal the policy allows (--as: file store)
        policy = tmp_path / "policy.toml"
        policy.write_text(
            'version = 1\n\n[teams.team-a]\nguns = ["example.com/team-a/*"]\n'
            'members = ["local:alice"]\nci = ["local:ci-bot"]\n'
        )
        ci = (
            "--config",
            owner.stage.config(
                owner.home / "ci.toml", keyvault=f"policy = {json.dumps(str(policy))}"
            ),
            "--as",
            "local:ci-bot",
        )
    base = tmp_path / "runtime"
    monkeypatch.setenv("KEYVAULT_TMPDIR", str(base))
    ran = tmp_path / "the-command-ran"
    refused(
        owner.kv(
            *ci,
            "exec",
            "--gun",
            GUN,
            "--",
            sys.executable,
            "-c",
            f"open({str(ran)!r}, 'w').close()",
        ),
        target.key_id,
        "does not trust",
    )
    assert not ran.exists()
    assert not base.exists() or list(base.iterdir()) == []
    into = tmp_path / "job"
    refused(owner.kv(*ci, "fetch", "--gun", GUN, "--into", into), target.key_id, "does not trust")
    assert not into.exists()
    run = owner("--json", "drill", "--all", "--no-metadata", "--report-dir", tmp_path / "r")
    assert run.code == 5, run.err
    checks = {c["key_id"]: c for c in run.json()["checks"]}
    bad = checks.pop(target.key_id)
    assert (bad["passed"], bad["sealer"], bad["restore"], bad["error_code"]) == (
        False,
        "failed",
        "not-checked",
        5,
    )
    assert target.key_id in bad["error"] and "does not trust" in bad["error"]
    pin = owner.fingerprint()
    assert {(c["passed"], c["sealer"], c["digest"]) for c in checks.values()} == {
        (True, pin, "passed")
    }


# -- 8. backup's "unchanged" only on a verified latest version --------------------------


def _junk_ciphertext(owner: Owner, name: str, *, resign: bool) -> None:
    """The real header (its sha256 right), junk ciphertext, as a new version on top:
    either keeping the owner's now-invalid signature, or signed by a sealer of one's own."""
    _, data = owner.latest(name)
    real = ev.Envelope.from_bytes(data)
    junk = replace(real, ciphertext=os.urandom(len(real.ciphertext)))
    if resign:
        other = Ed25519FileSealer(Path("/nonexistent"), ed25519.Ed25519PrivateKey.generate())
        junk = ev.sign(junk, other, ev.Chain(2, hashlib.sha256(data).hexdigest()))
    owner.write_on_top(name, junk.to_bytes())


def _events(log: Path) -> list[dict[str, Any]]:
    found = []
    for line in log.read_text().splitlines():
        with contextlib.suppress(ValueError):
            found.append(json.loads(line))
    return found


@pytest.mark.parametrize(
    ("resign", "why"),
    [(False, "signature does not verify"), (True, "which this machine does not trust")],
    ids=["signature-kept", "resigned-by-other"],
)
def test_backup_seals_over_a_latest_version_with_junk_ciphertext(
    owner: Owner, tmp_path: Path, resign: bool, why: str
) -> None:
    target = owner.key("targets")
    name = object_name(target)
    _junk_ciphertext(owner, name, resign=resign)
    run = owner("--json", "backup")
    assert run.code == 0, run.err
    outcomes = {k["key_id"]: k for k in run.json()["keys"]}
    tampered = outcomes.pop(target.key_id)
    assert tampered["action"] == "updated", tampered
    assert target.key_id in tampered["warning"] and "not trusted" in tampered["warning"]
    assert why in tampered["warning"], tampered["warning"]
    assert {(k["action"], k["warning"]) for k in outcomes.values()} == {("unchanged", None)}
    assert "not trusted" in run.err and target.key_id in run.err
    links = owner.versions(target.key_id)
    assert links[0]["chain"] == "linked" and len(links) == 3
    assert links[0]["sealer"] == owner.fingerprint()
    restored(owner, tmp_path / "fresh", "restore", "--all")
    assert (tmp_path / "fresh" / "private" / target.relpath).read_bytes() == target.data


def test_the_daemon_seals_over_a_latest_version_with_junk_ciphertext(
    kv: KV, home: Path, tmp_path: Path
) -> None:
    """The daemon backs up with the same ``backup_keys``: its start-up reconciliation
    finds the tampered latest version and seals the key again on top of it."""
    stage = file_stage(tmp_path)
    mine = make_owner(kv, home, stage)
    target = mine.key("targets")
    _junk_ciphertext(mine, object_name(target), resign=True)
    log = tmp_path / "daemon.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "keyvault",
                "--config",
                str(mine.config),
                "daemon",
                "--trust-dir",
                str(mine.trust),
                "--listen",
                "127.0.0.1:0",
                "--debounce",
                "100",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:

        def backed_up() -> dict[str, Any] | None:
            assert proc.poll() is None, log.read_text()
            return next(
                (
                    e
                    for e in _events(log)
                    if e.get("event") == "backed-up" and e.get("key_id") == target.key_id
                ),
                None,
            )

        event = wait_for(backed_up, "the daemon to seal the tampered key again")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert event["action"] == "updated", event
    assert "not trusted" in log.read_text()
    others = [
        e
        for e in _events(log)
        if e.get("event") == "backed-up" and e.get("key_id") != target.key_id
    ]
    assert others == []  # the keys whose latest version is sound were left alone
    links = mine.versions(target.key_id)
    assert len(links) == 3 and links[0]["chain"] == "linked"
    restored(mine, tmp_path / "fresh", "restore", "--all")
    assert (tmp_path / "fresh" / "private" / target.relpath).read_bytes() == target.data


# -- 9. a legacy path whose key ID is already in private/ -------------------------------


def test_a_legacy_path_whose_key_id_exists_under_private_is_a_conflict(
    kv: KV,
    home: Path,
    stage: Stage,
    legacy_trust_dir: BuiltTrustDir,
    notary_trust_dir: BuiltTrustDir,
    tmp_path: Path,
) -> None:
    config = stage.config(home / "kv.toml")
    run = kv("--config", config, "--trust-dir", legacy_trust_dir.path, "--json", "backup")
    assert run.code == 0, run.err
    assert {k["action"] for k in run.json()["keys"]} == {"created"}
    (root,) = legacy_trust_dir.ids("root")
    assert (notary_trust_dir.path / "private" / f"{root}.key").exists()
    live = Unchanged(notary_trust_dir.path)
    run = kv("--config", config, "--trust-dir", notary_trust_dir.path, "restore", "--key-id", root)
    refused(run, root, "under another path", f"already present as private/{root}.key", code=7)
    for args in (("--all",), ("--all", "--force")):  # --force replaces a path, not another file
        run = kv("--config", config, "--trust-dir", notary_trust_dir.path, "restore", *args)
        assert run.code == 7, run.err
        assert "under another path" in run.err and "already present as private/" in run.err
    live.check()
    fresh = tmp_path / "fresh"
    run = kv("--config", config, "--trust-dir", fresh, "restore", "--all")
    assert run.code == 0, run.err
    legacy = legacy_trust_dir.path / "private"
    for path in legacy.rglob("*.key"):
        assert (fresh / "private" / path.relative_to(legacy)).read_bytes() == path.read_bytes()
