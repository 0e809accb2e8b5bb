"""OpenBao alone holds CI and members to what keyvault grants them (T4, T12; issue 17).

The team policy is rendered with ``keyvault policy render``, loaded into a
real OpenBao as root, and tokens are made with the rendered member and CI
policies. A member backs up root, targets, snapshot and timestamp keys of
GUNs of several depths with keyvault; then direct HTTP requests with the
tokens (no keyvault in between) show what OpenBao refuses with 403: CI
reading a root or timestamp envelope or its metadata at any depth, CI
unwrapping a root or timestamp context through Transit (also from a copy put
where CI may read), and a member shortening the version history.
"""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from fixtures.vault import KV_MOUNT, TRANSIT_MOUNT, BaoServer, unique

from cli.conftest import KV
from keyvault.canonical import canonical_json
from keyvault.envelope import Envelope
from keyvault.names import KeyAddress
from keyvault.policy import MAX_GUN_DEPTH, parse_policy, render_vault
from keyvault.sealing import Ed25519FileSealer
from keyvault.trust.keyid import private_key_id
from keyvault.trust.sample import notary_key_file, write_sample_trust_dir

pytestmark = pytest.mark.proves("T12", "T4")

PASS = "correct horse"
DEEPEST_GUN = "e" + "/x" * (MAX_GUN_DEPTH - 1)


@dataclass
class Team:
    bao: BaoServer
    name: str
    prefix: str
    transit_key: str
    policy_file: Path
    sealer: Path

    @property
    def store(self) -> str:
        return f"vault://{KV_MOUNT}/{self.prefix}"

    def token(self, kind: str) -> str:
        return self.bao.token(f"keyvault-{self.name}-{kind}")

    def path(self, section: str, object_name: str) -> str:
        return f"{KV_MOUNT}/{section}/{self.prefix}/{object_name}"


@pytest.fixture(scope="module")
def team(bao: BaoServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Team]:
    name = f"tl-{uuid.uuid4().hex[:6]}"
    prefix, key = unique("lim"), bao.transit_key(team=name)
    directory = tmp_path_factory.mktemp("limits")
    policy_file = directory / "policy.toml"
    policy_file.write_text(
        f'version = 1\n\n[teams.{name}]\nguns = ["example.com/{name}/*"]\n'
        f'members = ["vault:policy:keyvault-{name}-member"]\n'
        f'ci = ["vault:policy:keyvault-{name}-ci"]\n'
        f'store = "vault://{KV_MOUNT}/{prefix}"\n'
        f'wrappers = ["transit://{TRANSIT_MOUNT}/{key}"]\n'
    )
    root = bao.root()
    rendered = render_vault(parse_policy(policy_file.read_text()))
    for policy_name, hcl in rendered.items():
        root.sys.create_or_update_policy(policy_name, hcl)
    sealer = directory / "sealer.key"
    Ed25519FileSealer.generate(sealer)
    yield Team(bao, name, prefix, key, policy_file, sealer)
    # The server is shared: `policy check` elsewhere would report these as unexpected.
    for policy_name in rendered:
        root.sys.delete_policy(policy_name)


def config(home: Path, team: Team) -> Path:
    path = home / f"config-{uuid.uuid4().hex[:6]}.toml"
    path.write_text(
        f'[keyvault]\nteam = "{team.name}"\nstore = "{team.store}"\n'
        f'wrappers = ["transit://{TRANSIT_MOUNT}/{team.transit_key}"]\n'
        f'policy = "{team.policy_file}"\n\n[sealing]\nkey = {json.dumps(str(team.sealer))}\n\n'
        "[vault]\ntimeout = 5\n"
    )
    return path


def use(
    monkeypatch: pytest.MonkeyPatch, team: Team, token: str, *, skip_check: bool = False
) -> None:
    monkeypatch.setenv("VAULT_ADDR", team.bao.address)
    monkeypatch.setenv("VAULT_TOKEN", token)
    if skip_check:
        monkeypatch.setenv("KEYVAULT_UNSAFE_SKIP_POLICY_CHECK", "1")
    else:
        monkeypatch.delenv("KEYVAULT_UNSAFE_SKIP_POLICY_CHECK", raising=False)


@pytest.fixture
def stored(
    kv: KV, team: Team, home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> dict[str, KeyAddress]:
    """A member's keyvault backup of root, and targets, snapshot, timestamp keys per GUN.

    Returns one address per ``role@depth`` (``root``, ``timestamp@3``, ``targets@6``...);
    the GUNs are new for each test.
    """
    trust, tag = tmp_path / "trust", uuid.uuid4().hex[:6]
    guns = [f"example.com/{team.name}/app-{tag}", f"example.com/{team.name}/{tag}/b/c/d"]
    keys = write_sample_trust_dir(trust, {"root": PASS, "targets": PASS, "snapshot": PASS}, guns)
    found = {
        f"{k.role}" if k.gun is None else f"{k.role}@{k.gun.count('/') + 1}": KeyAddress(
            team.name, k.gun, k.role, k.key_id
        )
        for k in keys
    }
    for gun in guns:
        key = ec.generate_private_key(ec.SECP256R1())
        (trust / "private" / f"{private_key_id(key)}.key").write_bytes(
            notary_key_file(key, "timestamp", gun, PASS)
        )
        (trust / "private" / f"{private_key_id(key)}.key").chmod(0o600)
        found[f"timestamp@{gun.count('/') + 1}"] = KeyAddress(
            team.name, gun, "timestamp", private_key_id(key)
        )
    use(monkeypatch, team, team.token("member"))
    run = kv("--config", config(home, team), "--trust-dir", trust, "--json", "backup")
    assert run.code == 0, run.err
    assert {k["action"] for k in run.json()["keys"]} == {"created"}
    assert len(run.json()["keys"]) == len(found) == 7
    return found


def request(team: Team, token: str, method: str, path: str, body: Any = None) -> int:
    """A direct request to OpenBao with ``token``; the HTTP status."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(
        f"{team.bao.address}/v1/{path}", data=data, method=method, headers={"X-Vault-Token": token}
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def envelope_at(team: Team, address: KeyAddress) -> tuple[dict[str, str], Envelope]:
    """The KV secret (as root) and the parsed envelope stored for ``address``."""
    answer = team.bao.root().secrets.kv.v2.read_secret_version(
        path=f"{team.prefix}/{address.object_name}",
        mount_point=KV_MOUNT,
        raise_on_deleted_version=True,
    )
    secret: dict[str, str] = answer["data"]["data"]
    return secret, Envelope.from_bytes(secret["envelope"].encode())


def plant(team: Team, object_name: str, secret: dict[str, str]) -> None:
    """Root puts an envelope where keyvault never writes it (a copy, a mistake)."""
    team.bao.root().secrets.kv.v2.create_or_update_secret(
        path=f"{team.prefix}/{object_name}", secret=secret, mount_point=KV_MOUNT
    )


def decrypt_body(team: Team, envelope: Envelope) -> dict[str, str]:
    """What keyvault's Transit wrapper sends to unwrap this envelope's DEK."""
    wrapped = next(w for w in envelope.wrapped_keys if w.uri.endswith(team.transit_key))
    context = base64.b64encode(canonical_json(envelope.header.context())).decode()
    return {"ciphertext": wrapped.blob.decode(), "context": context}


# -- item 2: CI, straight to OpenBao ---------------------------------------------------------


def test_ci_token_reads_no_root_or_timestamp_envelope_at_any_depth(
    team: Team, stored: dict[str, KeyAddress]
) -> None:
    ci = team.token("ci")
    for label, address in stored.items():
        expected = 403 if address.role in ("root", "timestamp") else 200
        for section in ("data", "metadata"):
            status = request(team, ci, "GET", team.path(section, address.object_name))
            assert status == expected, (label, section, status)
    # Keyvault walks a GUN's folders: the timestamp folder may be listed (key IDs are public
    # in the TUF root), nothing in it read.
    for gun in {a.gun for a in stored.values() if a.gun}:
        folder = f"v1/teams/{team.name}/guns/{gun}/timestamp/"
        assert request(team, ci, "LIST", team.path("metadata", folder)) == 200
    # Copies where keyvault never writes them: a root envelope below GUNs of every depth, a
    # timestamp envelope below the deepest GUN a name can have, both below delegations/.
    root_secret, _ = envelope_at(team, stored["root"])
    stamp_secret, _ = envelope_at(team, stored["timestamp@3"])
    base, kid = f"v1/teams/{team.name}", stored["root"].key_id
    guns = [*sorted({a.gun for a in stored.values() if a.gun}), DEEPEST_GUN]
    planted = [f"{base}/guns/{gun}/root/{kid}.json" for gun in guns]
    planted += [f"{base}/delegations/root/{kid}.json"]
    for name in planted:
        plant(team, name, root_secret)
    deep = [
        f"{base}/guns/{DEEPEST_GUN}/timestamp/{kid}.json",
        f"{base}/delegations/timestamp/{kid}.json",
    ]
    for name in deep:
        plant(team, name, stamp_secret)
    for name in planted + deep:
        for section in ("data", "metadata"):
            assert request(team, ci, "GET", team.path(section, name)) == 403, (name, section)
    # The same depth with another role is CI's to read: the refusals are about the role.
    targets = f"{base}/guns/{DEEPEST_GUN}/targets/{kid}.json"
    plant(team, targets, stamp_secret)
    assert request(team, ci, "GET", team.path("data", targets)) == 200


def test_ci_token_cannot_unwrap_a_root_or_timestamp_context_through_transit(
    team: Team, stored: dict[str, KeyAddress]
) -> None:
    ci, root = team.token("ci"), "root-test-token"
    decrypt = f"{TRANSIT_MOUNT}/decrypt/{team.transit_key}"
    _, targets = envelope_at(team, stored["targets@6"])
    assert request(team, ci, "POST", decrypt, decrypt_body(team, targets)) == 200
    for label in ("root", "timestamp@3", "timestamp@6"):
        secret, envelope = envelope_at(team, stored[label])
        body = decrypt_body(team, envelope)
        assert request(team, root, "POST", decrypt, body) == 200  # the request itself works
        assert request(team, ci, "POST", decrypt, body) == 403, label
        # Transit skips line breaks in base64: one inside the role does not get through.
        context = body["context"]
        role_at = canonical_json(envelope.header.context()).index(b'"keyvault:role"')
        middle = (role_at // 3 + 2) * 4 + 2  # inside a 4-character group of the role
        split = {**body, "context": context[:middle] + "\n" + context[middle:]}
        assert request(team, root, "POST", decrypt, split) == 200
        assert request(team, ci, "POST", decrypt, split) == 403
        assert request(team, ci, "POST", decrypt, {"batch_input": [body]}) == 403
        # Copied where CI may read it, the envelope is CI's to read and still not to unwrap.
        copy = KeyAddress(team.name, stored["targets@3"].gun, "targets", envelope.header.key_id)
        plant(team, copy.object_name, secret)
        assert request(team, ci, "GET", team.path("data", copy.object_name)) == 200
        assert request(team, ci, "POST", decrypt, decrypt_body(team, envelope)) == 403


def test_ci_fetch_works_and_openbao_alone_refuses_the_timestamp_key(
    kv: KV,
    team: Team,
    stored: dict[str, KeyAddress],
    home: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    gun = stored["targets@6"].gun
    assert gun is not None
    use(monkeypatch, team, team.token("ci"))
    run = kv("--config", config(home, team), "fetch", "--into", tmp_path / "ci", "--gun", gun)
    assert run.code == 0, run.err  # the listing walks the timestamp folder
    restored = {p.name for p in (tmp_path / "ci" / "trust" / "private").rglob("*.key")}
    assert restored == {f"{stored[f'{r}@6'].key_id}.key" for r in ("targets", "snapshot")}
    use(monkeypatch, team, team.token("ci"), skip_check=True)
    refused = kv(
        "--config",
        config(home, team),
        "--trust-dir",
        tmp_path / "ts",
        "restore",
        "--gun",
        gun,
        "--role",
        "timestamp",
    )
    assert refused.code == 4 and "403" in refused.err, refused.err
    assert not (tmp_path / "ts" / "private").exists() or not any(
        (tmp_path / "ts" / "private").rglob("*.key")
    )


# -- item 3: members keep the history ----------------------------------------------------------


def test_member_may_label_but_never_shorten_the_history(
    team: Team, stored: dict[str, KeyAddress]
) -> None:
    # keyvault's own backup with the member token labelled every key (custom_metadata).
    for address in stored.values():
        labels = team.bao.root().secrets.kv.v2.read_secret_metadata(
            path=f"{team.prefix}/{address.object_name}", mount_point=KV_MOUNT
        )["data"]
        assert (labels["custom_metadata"] or {}).get("role") == address.role, address
    member = team.token("member")
    name = stored["root"].object_name
    metadata = team.path("metadata", name)
    for settings in (
        {"max_versions": 1},
        {"delete_version_after": "1s"},
        {"custom_metadata": {"note": "x"}, "max_versions": 1},
        {"cas_required": True},
    ):
        assert request(team, member, "POST", metadata, settings) == 403, settings
    assert request(
        team, member, "POST", metadata, {"custom_metadata": {"keyvault": "envelope", "note": "x"}}
    ) in (200, 204)
    meta = team.bao.root().secrets.kv.v2.read_secret_metadata(
        path=f"{team.prefix}/{name}", mount_point=KV_MOUNT
    )["data"]
    assert meta["max_versions"] == 0 and meta["delete_version_after"] == "0s"
    assert meta["custom_metadata"]["note"] == "x"


# -- issue 18: keys without a GUN or a role are the team's, like root ---------------------------


def test_openbao_alone_keeps_keys_missing_a_fact_from_ci(
    kv: KV, team: Team, home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A member backs up a GUN-less targets key and role-less keys; OpenBao alone refuses
    the CI token their envelopes, their metadata and their Transit contexts."""
    trust = tmp_path / "trust"
    (trust / "private").mkdir(parents=True, mode=0o700)
    gun = f"example.com/{team.name}/app-{uuid.uuid4().hex[:6]}"
    addresses = []
    for role, key_gun in (("targets", None), ("snapshot", None), (None, None), (None, gun)):
        key = ec.generate_private_key(ec.SECP256R1())
        file = trust / "private" / f"{private_key_id(key)}.key"
        file.write_bytes(notary_key_file(key, role, key_gun, PASS))
        file.chmod(0o600)
        addresses.append(KeyAddress(team.name, key_gun, role, private_key_id(key)))
    use(monkeypatch, team, team.token("member"))
    run = kv("--config", config(home, team), "--trust-dir", trust, "--json", "backup")
    assert run.code == 0, run.err
    assert {k["action"] for k in run.json()["keys"]} == {"created"}
    ci, root = team.token("ci"), "root-test-token"
    member = team.token("member")
    decrypt = f"{TRANSIT_MOUNT}/decrypt/{team.transit_key}"
    for address in addresses:
        assert address.team_only
        for section in ("data", "metadata"):
            path = team.path(section, address.object_name)
            assert request(team, member, "GET", path) == 200, (address, section)
            assert request(team, ci, "GET", path) == 403, (address, section)
        secret, envelope = envelope_at(team, address)
        body = decrypt_body(team, envelope)
        assert request(team, root, "POST", decrypt, body) == 200
        assert request(team, ci, "POST", decrypt, body) == 403, address
        # Copied where CI may read it, the envelope still does not unwrap for CI.
        copy = KeyAddress(team.name, gun, "targets", envelope.header.key_id)
        plant(team, copy.object_name, secret)
        assert request(team, ci, "GET", team.path("data", copy.object_name)) == 200
        assert request(team, ci, "POST", decrypt, decrypt_body(team, envelope)) == 403
