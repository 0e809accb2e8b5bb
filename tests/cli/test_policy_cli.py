"""Teams and access control through the CLI, enforced by keyvault and by a real OpenBao.

The policy is rendered with ``keyvault policy render``, loaded into OpenBao as
root, and then three principals log in the way they would in production: a
team A member (a token), a team B member (AppRole) and team A's CI (JWT).
Each may do exactly what the policy says; with keyvault's own check switched
off (KEYVAULT_UNSAFE_SKIP_POLICY_CHECK=1, test-only) OpenBao alone refuses
team B on team A's KV paths and Transit key, and CI on the root path.
"""

from __future__ import annotations

import contextlib
import http.client
import http.server
import json
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from fixtures.vault import JWT_AUDIENCE, KV_MOUNT, TRANSIT_MOUNT, BaoServer, unique

from cli.conftest import KV
from keyvault.sealing import Ed25519FileSealer
from keyvault.trust.model import KeyFile
from keyvault.trust.sample import write_sample_trust_dir

PASS = "correct horse"
REPO = Path(__file__).resolve().parents[2]


@dataclass
class World:
    """Two teams with unique names, their rendered policies loaded, and logins for each."""

    bao: BaoServer
    team_a: str
    team_b: str
    prefix: str
    key_a: str
    key_b: str
    policy_file: Path
    ci_role: str
    approle_b: str

    @property
    def store(self) -> str:
        return f"vault://{KV_MOUNT}/{self.prefix}"

    def gun(self, team: str, app: str = "app") -> str:
        return f"example.com/{team}/{app}"

    def member_a_env(self) -> dict[str, str]:
        token = self.bao.root().auth.token.create(
            policies=[f"keyvault-{self.team_a}-member"], ttl="10m", display_name="alice"
        )["auth"]["client_token"]
        return {"VAULT_ADDR": self.bao.address, "VAULT_TOKEN": token}

    def member_b_env(self) -> dict[str, str]:
        root = self.bao.root()
        role_id = root.auth.approle.read_role_id(self.approle_b)["data"]["role_id"]
        secret_id = root.auth.approle.generate_secret_id(self.approle_b)["data"]["secret_id"]
        return {
            "VAULT_ADDR": self.bao.address,
            "KEYVAULT_VAULT_ROLE_ID": role_id,
            "KEYVAULT_VAULT_SECRET_ID": secret_id,
        }

    def ci_a_env(self) -> dict[str, str]:
        return {
            "VAULT_ADDR": self.bao.address,
            "KEYVAULT_VAULT_JWT": self.bao.mint_jwt(
                team=self.team_a, sub="repo:example/app:ref:main"
            ),
        }


def policy_text(world_parts: dict[str, str]) -> str:
    a, b = world_parts["team_a"], world_parts["team_b"]
    store = f"vault://{KV_MOUNT}/{world_parts['prefix']}"
    return f"""\
version = 1

[teams.{a}]
guns = ["example.com/{a}/*"]
members = ["vault:name:token-alice"]
ci = ["vault:meta:role={world_parts["ci_role"]}"]
store = "{store}"
wrappers = ["transit://{TRANSIT_MOUNT}/{world_parts["key_a"]}"]

[teams.{b}]
guns = ["example.com/{b}/*"]
members = ["vault:meta:role_name={world_parts["approle_b"]}"]
store = "{store}"
wrappers = ["transit://{TRANSIT_MOUNT}/{world_parts["key_b"]}"]
"""


@pytest.fixture(scope="module")
def world(bao: BaoServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    from keyvault.policy import load_policy, render_vault

    tag = uuid.uuid4().hex[:6]
    parts = {
        "team_a": f"ta-{tag}",
        "team_b": f"tb-{tag}",
        "prefix": unique("pol"),
        "ci_role": f"ci-ta-{tag}",
        "approle_b": f"tb-{tag}",
    }
    parts["key_a"] = bao.transit_key(team=parts["team_a"])
    parts["key_b"] = bao.transit_key(team=parts["team_b"])
    path = tmp_path_factory.mktemp("policy") / "policy.toml"
    path.write_text(policy_text(parts))
    root = bao.root()
    for name, hcl in render_vault(load_policy(path)).items():
        root.sys.create_or_update_policy(name, hcl)
    root.auth.jwt.create_role(
        name=parts["ci_role"],
        role_type="jwt",
        user_claim="sub",
        bound_audiences=[JWT_AUDIENCE],
        bound_claims={"team": parts["team_a"]},
        token_policies=[f"keyvault-{parts['team_a']}-ci"],
        token_ttl="5m",
        allowed_redirect_uris=[],
        path="jwt",
    )
    root.auth.approle.create_or_update_approle(
        role_name=parts["approle_b"],
        token_policies=[f"keyvault-{parts['team_b']}-member"],
        token_ttl="5m",
    )
    yield World(
        bao,
        parts["team_a"],
        parts["team_b"],
        parts["prefix"],
        parts["key_a"],
        parts["key_b"],
        path,
        parts["ci_role"],
        parts["approle_b"],
    )


def config(
    home: Path, world: World, team: str, *, auth: str = "token", wrappers: list[str] | None = None
) -> Path:
    key = world.key_a if team == world.team_a else world.key_b
    lines = [
        "[keyvault]",
        f'team = "{team}"',
        f'store = "{world.store}"',
        f"wrappers = {json.dumps(wrappers or [f'transit://{TRANSIT_MOUNT}/{key}'])}",
        f'policy = "{world.policy_file}"',
        "concurrency = 2",
        "",
        "[sealing]",
        f"key = {json.dumps(str(team_sealer(world)))}",
        "",
        "[vault]",
        "timeout = 5",
    ]
    if auth == "approle":
        lines.append('auth = "approle"')
    if auth == "jwt":
        lines += ['auth = "jwt"', f'jwt_role = "{world.ci_role}"']
    path = home / f"{team}-{auth}-{uuid.uuid4().hex[:6]}.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def team_sealer(world: World) -> Path:
    """One sealing key for the world's machines: each test is another machine of the same
    people, and its backups must be accepted by the next test's restore."""
    path = world.policy_file.parent / "sealer.key"
    if not path.exists():
        Ed25519FileSealer.generate(path)
    return path


def use(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> None:
    for key in (
        "VAULT_TOKEN",
        "KEYVAULT_VAULT_ROLE_ID",
        "KEYVAULT_VAULT_SECRET_ID",
        "KEYVAULT_VAULT_JWT",
        "KEYVAULT_UNSAFE_SKIP_POLICY_CHECK",
    ):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)


def backed_up_team_a(
    kv: KV, world: World, home: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[KeyFile, ...]:
    """Team A's member backs up a root key and the keys of one GUN (all created)."""
    trust = home / f"trust-{uuid.uuid4().hex[:6]}"
    keys = write_sample_trust_dir(
        trust, {"root": PASS, "targets": PASS, "snapshot": PASS}, [world.gun(world.team_a)]
    )
    use(monkeypatch, world.member_a_env())
    run = kv(
        "--config", config(home, world, world.team_a), "--trust-dir", trust, "--json", "backup"
    )
    assert run.code == 0, run.err
    assert {k["action"] for k in run.json()["keys"]} == {"created"}
    return keys


@contextlib.contextmanager
def counting_proxy(upstream: str) -> Iterator[tuple[str, list[str]]]:
    """An HTTP proxy in front of OpenBao that records the path of every request."""
    target = urlsplit(upstream)
    paths: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def forward(self) -> None:
            paths.append(self.path.split("?")[0])
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            assert target.hostname is not None
            conn = http.client.HTTPConnection(target.hostname, target.port, timeout=10)
            headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
            conn.request(self.command, self.path, body=body, headers=headers)
            answer = conn.getresponse()
            data = answer.read()
            self.send_response(answer.status)
            for key, value in answer.getheaders():
                if key.lower() not in ("transfer-encoding", "connection", "content-length"):
                    self.send_header(key, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            conn.close()

        do_GET = do_POST = do_PUT = do_DELETE = do_LIST = forward  # noqa: N815

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", paths
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def audit_lines(home: Path, outcome: str) -> list[dict[str, object]]:
    log = home / ".local" / "state" / "keyvault" / "audit.log"
    records = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    return [r for r in records if r.get("outcome") == outcome]


# -- each principal can do exactly what the policy says --------------------------------------


def test_whoami_names_each_login(
    kv: KV, world: World, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cases = [
        (world.member_a_env(), "token", world.team_a, "member"),
        (world.member_b_env(), "approle", world.team_b, "member"),
        (world.ci_a_env(), "jwt", world.team_a, "ci"),
    ]
    for env, auth, team, role in cases:
        use(monkeypatch, env)
        run = kv("--config", config(home, world, team, auth=auth), "--json", "policy", "whoami")
        assert run.code == 0, run.err
        assert run.json()["teams"] == {team: role}, (auth, run.json())


def test_member_a_backs_up_and_restores_everything(
    kv: KV, world: World, home: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    keys = backed_up_team_a(kv, world, home, monkeypatch)
    run = kv(
        "--config",
        config(home, world, world.team_a),
        "--trust-dir",
        tmp_path / "t",
        "restore",
        "--all",
    )
    assert run.code == 0, run.err
    assert all((tmp_path / "t" / "private" / k.relpath).read_bytes() == k.data for k in keys)


def test_ci_fetches_its_gun_keys_but_never_root(
    kv: KV, world: World, home: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    keys = backed_up_team_a(kv, world, home, monkeypatch)
    use(monkeypatch, world.ci_a_env())
    ci = config(home, world, world.team_a, auth="jwt")
    run = kv(
        "--config", ci, "--trust-dir", tmp_path / "ci", "restore", "--gun", world.gun(world.team_a)
    )
    assert run.code == 0, run.err
    for key in keys:
        restored = tmp_path / "ci" / "private" / key.relpath
        assert restored.exists() == (key.role != "root")
    # A backup is refused (CI never writes), before any request to the store.
    trust = tmp_path / "ci-trust"
    write_sample_trust_dir(
        trust, {"root": PASS, "targets": PASS, "snapshot": PASS}, [world.gun(world.team_a, "other")]
    )
    backup = kv("--config", ci, "--trust-dir", trust, "backup")
    assert backup.code == 4 and "CI principals may only" in backup.err


@pytest.mark.proves("T4")
def test_ci_asking_for_a_root_key_is_refused_before_any_request(
    kv: KV, world: World, home: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    keys = backed_up_team_a(kv, world, home, monkeypatch)
    root_key = next(k for k in keys if k.role == "root")
    with counting_proxy(world.bao.address) as (address, paths):
        env = {**world.ci_a_env(), "VAULT_ADDR": address}
        use(monkeypatch, env)
        ci = config(home, world, world.team_a, auth="jwt")
        run = kv("--config", ci, "--trust-dir", tmp_path / "t", "restore", "--role", "root")
        assert run.code == 4, run.err
        assert "never get root" in run.err and f"teams.{world.team_a}.ci" in run.err
        assert "vault:entity:" in run.err  # names the principal
        assert paths, "the proxy saw nothing: the test could not have failed"
        before = list(paths)
        # By key ID the role is not known before listing; keyvault lists for CI only the
        # folders it may read (guns/, delegations/), never root/: the root key is not found.
        by_id = kv(
            "--config", ci, "--trust-dir", tmp_path / "t", "restore", "--key-id", root_key.key_id
        )
        assert by_id.code == 3, by_id.err
        assert "are never listed for CI" in by_id.err
    # --role root: only the login and lookup-self, no KV or Transit request at all.
    assert all(p.startswith(("/v1/auth/", "/v1/sys/")) for p in before), before
    touched = [p for p in paths if p.startswith((f"/v1/{KV_MOUNT}/", f"/v1/{TRANSIT_MOUNT}/"))]
    # --key-id: listings of guns/ and delegations/ only; no envelope read, nothing under
    # root/ touched.
    assert touched and not any("/root/" in p or "/data/" in p for p in touched), touched
    assert all("/guns" in p or "/delegations" in p for p in touched), touched
    assert not (tmp_path / "t" / "private" / root_key.relpath).exists()
    refused = audit_lines(home, "refused")
    assert refused and any(r["action"] == "restore" for r in refused)


@pytest.mark.proves("T3")
def test_member_b_is_refused_team_a_by_keyvault(
    kv: KV, world: World, home: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    backed_up_team_a(kv, world, home, monkeypatch)
    use(monkeypatch, world.member_b_env())
    run = kv(
        "--config",
        config(home, world, world.team_a, auth="approle"),
        "--trust-dir",
        tmp_path / "t",
        "restore",
        "--all",
    )
    assert run.code == 4
    assert "neither a member nor a CI principal" in run.err and world.team_a in run.err
    assert not (tmp_path / "t").exists()
    assert any(r["action"] == "restore" for r in audit_lines(home, "refused"))


# -- with keyvault's own check off, OpenBao alone refuses -------------------------------------


@pytest.mark.proves("T3")
def test_openbao_alone_refuses_team_b_on_team_a_paths_and_transit_key(
    kv: KV, world: World, home: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    backed_up_team_a(kv, world, home, monkeypatch)
    use(monkeypatch, {**world.member_b_env(), "KEYVAULT_UNSAFE_SKIP_POLICY_CHECK": "1"})
    as_a = config(
        home,
        world,
        world.team_a,
        auth="approle",
        wrappers=[f"transit://{TRANSIT_MOUNT}/{world.key_b}"],
    )
    # A process of its own: Python shows a warning once per process, so only a fresh one
    # proves what a user sees on stderr.
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "keyvault",
            "--config",
            str(as_a),
            "--trust-dir",
            str(tmp_path / "t"),
            "restore",
            "--all",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert run.returncode == 4, run.stderr
    assert "permission denied (HTTP 403)" in run.stderr
    assert f"v1/teams/{world.team_a}" in run.stderr
    assert "keyvault's OWN POLICY CHECK IS OFF" in run.stderr
    assert any(r["action"] == "policy" and r["outcome"] == "skipped" for r in _all_audit(home))
    # Team B's own KV path, but team A's Transit key: Transit refuses the encrypt.
    trust = tmp_path / "b-trust"
    write_sample_trust_dir(
        trust, {"root": PASS, "targets": PASS, "snapshot": PASS}, [world.gun(world.team_b)]
    )
    use(monkeypatch, {**world.member_b_env(), "KEYVAULT_UNSAFE_SKIP_POLICY_CHECK": "1"})
    foreign_key = config(
        home,
        world,
        world.team_b,
        auth="approle",
        wrappers=[f"transit://{TRANSIT_MOUNT}/{world.key_a}"],
    )
    backup = kv("--config", foreign_key, "--trust-dir", trust, "--json", "backup")
    assert backup.code == 4, backup.err
    errors = [k["error"]["message"] for k in backup.json()["keys"] if k.get("error")]
    assert errors and all("403" in e and world.key_a in e for e in errors), errors
    # And with its own key, team B can back up its own keys: the refusals were about team A.
    use(monkeypatch, world.member_b_env())
    own = kv(
        "--config",
        config(home, world, world.team_b, auth="approle"),
        "--trust-dir",
        trust,
        "backup",
    )
    assert own.code == 0, own.err


@pytest.mark.proves("T4")
def test_openbao_alone_refuses_ci_the_root_path_and_any_write(
    kv: KV, world: World, home: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    backed_up_team_a(kv, world, home, monkeypatch)
    use(monkeypatch, {**world.ci_a_env(), "KEYVAULT_UNSAFE_SKIP_POLICY_CHECK": "1"})
    ci = config(home, world, world.team_a, auth="jwt")
    run = kv("--config", ci, "--trust-dir", tmp_path / "t", "restore", "--role", "root")
    assert run.code == 4 and "403" in run.err, run.err
    trust = tmp_path / "ci-trust"
    write_sample_trust_dir(
        trust, {"root": PASS, "targets": PASS, "snapshot": PASS}, [world.gun(world.team_a, "new")]
    )
    use(monkeypatch, {**world.ci_a_env(), "KEYVAULT_UNSAFE_SKIP_POLICY_CHECK": "1"})
    backup = kv("--config", ci, "--trust-dir", trust, "backup")
    assert backup.code == 4 and "403" in backup.err + backup.out, backup.err


def _all_audit(home: Path) -> list[dict[str, object]]:
    log = home / ".local" / "state" / "keyvault" / "audit.log"
    return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]


# -- render, check, validate, show -------------------------------------------------------------


def test_render_then_check_reports_drift(
    kv: KV, world: World, home: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    out = tmp_path / "rendered"
    run = kv("policy", "render", world.policy_file, "--target", "vault", "--out", out)
    assert run.code == 0, run.err
    assert sorted(p.name for p in out.iterdir()) == sorted(
        f"keyvault-{t}-{k}.hcl" for t in (world.team_a, world.team_b) for k in ("member", "ci")
    )
    use(monkeypatch, {"VAULT_ADDR": world.bao.address, "VAULT_TOKEN": "root-test-token"})
    check = kv("--json", "policy", "check", world.policy_file, "--target", "vault")
    assert check.code == 0, check.out
    statuses = {p["name"]: p["status"] for p in check.json()["policies"]}
    assert statuses[f"keyvault-{world.team_a}-ci"] == "in sync"
    admin = world.bao.root()
    name = f"keyvault-{world.team_a}-ci"
    original = admin.sys.read_acl_policy(name)["data"]["policy"]
    admin.sys.create_or_update_acl_policy(
        name, original + f'\npath "{KV_MOUNT}/data/*" {{ capabilities = ["read"] }}\n'
    )
    try:
        drift = kv("--json", "policy", "check", world.policy_file, "--target", "vault")
        assert drift.code == 5
        found = {p["name"]: p["status"] for p in drift.json()["policies"]}
        assert found[name] == "differs" and drift.json()["drift"] is True
    finally:
        admin.sys.create_or_update_acl_policy(name, original)


@pytest.mark.proves("B35")
def test_validate_show_and_errors_with_lines(kv: KV, home: Path, tmp_path: Path) -> None:
    good = tmp_path / "p.toml"
    good.write_text(
        '[teams.a]\nguns = ["r/a/*"]\nmembers = ["local:alice"]\n'
        '[teams.b]\nguns = ["r/b/*"]\nmembers = ["local:bob"]\n'
    )
    assert kv("policy", "validate", good).code == 0
    shown = kv("--json", "policy", "show", good)
    assert shown.code == 0 and [t["name"] for t in shown.json()["teams"]] == ["a", "b"]
    bad = tmp_path / "bad.toml"
    bad.write_text(good.read_text().replace('"r/b/*"', '"r/*"'))
    run = kv("policy", "validate", bad)
    assert run.code == 2 and f"{bad}:5:" in run.err and "overlaps" in run.err


def test_file_store_with_as_and_local_principals(kv: KV, home: Path, tmp_path: Path) -> None:
    """The file store: the local user, or --as (claimed, file store only)."""
    from keyvault.ops.session import local_principal

    me = local_principal().split("@")[0]
    policy = tmp_path / "p.toml"
    policy.write_text(
        f'[teams.team-a]\nguns = ["example.com/team-a/*"]\n'
        f'members = ["local:{me}"]\nci = ["local:ci-bot"]\n'
    )
    trust = tmp_path / "trust"
    keys = write_sample_trust_dir(
        trust, {"root": PASS, "targets": PASS, "snapshot": PASS}, ["example.com/team-a/app"]
    )
    init = kv("--team", "team-a", "--trust-dir", trust, "init")
    assert init.code == 0, init.err
    cfg = home / ".config" / "keyvault" / "config.toml"
    cfg.write_text(cfg.read_text().replace("[keyvault]\n", f'[keyvault]\npolicy = "{policy}"\n'))
    assert kv("--trust-dir", trust, "backup").code == 0
    ci = kv("--as", "local:ci-bot", "--trust-dir", tmp_path / "ci", "restore", "--all")
    assert ci.code == 4 and "local:ci-bot (claimed with --as)" in ci.err
    assert "never get root" in ci.err
    assert not (tmp_path / "ci").exists()
    gun = kv(
        "--as",
        "local:ci-bot",
        "--trust-dir",
        tmp_path / "ci",
        "restore",
        "--gun",
        "example.com/team-a/app",
    )
    assert gun.code == 0, gun.err
    stranger = kv("--as", "local:mallory", "--trust-dir", tmp_path / "m", "restore", "--all")
    assert stranger.code == 4 and "neither a member" in stranger.err
    assert len(keys) == 3
    # A CI job's bare list is what it may see, not a refusal because of the root key.
    listed = kv("--as", "local:ci-bot", "--json", "list")
    assert listed.code == 0, listed.err
    assert sorted(k["role"] for k in listed.json()["keys"]) == ["snapshot", "targets"]
    asked = kv("--as", "local:ci-bot", "list", "--role", "root")
    assert asked.code == 4 and "never get root" in asked.err
    assert kv("--as", "local:mallory", "list").code == 4


def test_as_is_refused_with_a_backend_that_knows_better(
    kv: KV, world: World, home: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    use(monkeypatch, world.member_b_env())
    run = kv(
        "--as",
        "vault:name:token-alice",
        "--config",
        config(home, world, world.team_a, auth="approle"),
        "--trust-dir",
        tmp_path / "t",
        "restore",
        "--all",
    )
    assert run.code == 2 and "--as is honoured only with the file store" in run.err


def test_deploy_renders_are_up_to_date(kv: KV, tmp_path: Path) -> None:
    example = REPO / "deploy" / "policy.example.toml"
    for target, ext in (("vault", "hcl"), ("aws", "json")):
        out = tmp_path / target
        assert kv("policy", "render", example, "--target", target, "--out", out).code == 0
        committed = REPO / "deploy" / "policies" / target
        rendered = {p.name: p.read_text() for p in out.iterdir()}
        assert rendered == {p.name: p.read_text() for p in committed.glob(f"*.{ext}")}, (
            f"deploy/policies/{target} is stale: run 'keyvault policy render "
            f"deploy/policy.example.toml --target {target} --out deploy/policies/{target}'"
        )
