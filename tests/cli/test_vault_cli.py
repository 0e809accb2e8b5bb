"""The CLI on OpenBao: KV v2 store + Transit wrapper, team ACLs, CI logins, rotation, faults."""

from __future__ import annotations

import json
from pathlib import Path

import hvac.exceptions
import pytest
from fixtures.host import tree
from fixtures.proxy import CuttingProxy
from fixtures.servers import BackendSetup
from fixtures.vault import KV_MOUNT, TRANSIT_MOUNT, BaoServer, unique, vault_env

from cli.conftest import KV
from keyvault.trust.model import KeyFile
from keyvault.trust.sample import write_sample_trust_dir

PASS = "correct horse"
GUNS_A = ("example.com/team-a/app", "example.com/team-a/web")
GUNS_B = ("example.com/team-b/api",)


def write_config(
    home: Path,
    setup: BackendSetup,
    *,
    team: str = "team-a",
    store: str | None = None,
    wrappers: tuple[str, ...] | None = None,
    extra: str = "",
) -> Path:
    path = home / f"kv-vault-{unique('cfg')}.toml"
    lines = [
        "[keyvault]",
        f'team = "{team}"',
        f"store = {json.dumps(store or setup.store)}",
        f"wrappers = {json.dumps(list(wrappers or setup.wrappers))}",
        "concurrency = 2",
        "",
    ]
    path.write_text("\n".join(lines) + setup.config_toml + extra)
    return path


@pytest.fixture
def vault(vault_backend: BackendSetup, home: Path, monkeypatch: pytest.MonkeyPatch) -> BackendSetup:
    for key in ("VAULT_NAMESPACE", "VAULT_CACERT", "VAULT_SKIP_VERIFY", "KEYVAULT_VAULT_JWT"):
        monkeypatch.delenv(key, raising=False)
    for key, value in vault_backend.env.items():
        monkeypatch.setenv(key, value)
    return vault_backend


def sample(path: Path, guns: tuple[str, ...]) -> tuple[KeyFile, ...]:
    return write_sample_trust_dir(path, {"root": PASS, "targets": PASS, "snapshot": PASS}, guns)


@pytest.fixture
def trust(home: Path) -> tuple[Path, tuple[KeyFile, ...]]:
    path = home / ".docker" / "trust"
    return path, sample(path, GUNS_A)


def kv_prefix(setup: BackendSetup) -> str:
    return setup.store.removeprefix(f"vault://{KV_MOUNT}/")


def transit_key(setup: BackendSetup) -> str:
    return setup.wrappers[0].removeprefix(f"transit://{TRANSIT_MOUNT}/")


def stored(
    bao: BaoServer, setup: BackendSetup, key: KeyFile, team: str = "team-a"
) -> dict[str, object]:
    """The KV metadata of a key's entry, read as root."""
    where = f"v1/teams/{team}/" + (
        f"root/{key.key_id}.json"
        if key.role == "root"
        else f"guns/{key.gun}/{key.role}/{key.key_id}.json"
    )
    return dict(
        bao.root().secrets.kv.v2.read_secret_metadata(
            f"{kv_prefix(setup)}/{where}", mount_point=KV_MOUNT
        )["data"]
    )


def test_round_trip_through_kv_and_transit(
    kv: KV,
    vault: BackendSetup,
    bao: BaoServer,
    home: Path,
    trust: tuple[Path, tuple[KeyFile, ...]],
    tmp_path: Path,
) -> None:
    _, keys = trust
    config = write_config(home, vault)
    run = kv("--config", config, "--json", "backup")
    assert run.code == 0, run.err
    assert {k["action"] for k in run.json()["keys"]} == {"created"}
    for key in keys:
        meta = stored(bao, vault, key)
        assert meta["current_version"] == 1
        assert meta["custom_metadata"]["key_id"] == key.key_id  # type: ignore[index]
    # A second backup of the same keys writes nothing: still one version each.
    again = kv("--config", config, "--json", "backup")
    assert again.code == 0 and {k["action"] for k in again.json()["keys"]} == {"unchanged"}
    assert {stored(bao, vault, k)["current_version"] for k in keys} == {1}
    fresh = tmp_path / "laptop" / "trust"
    restored = kv("--config", config, "--trust-dir", fresh, "restore", "--all")
    assert restored.code == 0, restored.err
    for key in keys:
        assert (fresh / "private" / key.relpath).read_bytes() == key.data
    listed = kv("--config", config, "--json", "list")
    assert listed.code == 0, listed.err


def test_store_and_wrapper_given_as_flags(
    kv: KV, vault: BackendSetup, home: Path, trust: tuple[Path, tuple[KeyFile, ...]], tmp_path: Path
) -> None:
    _, keys = trust
    flags = ["--store", vault.store, "--wrapper", vault.wrappers[0], "--team", "team-a"]
    assert kv(*flags, "backup").code == 0
    run = kv(*flags, "--trust-dir", tmp_path / "t", "restore", "--all")
    assert run.code == 0, run.err
    assert all((tmp_path / "t" / "private" / k.relpath).read_bytes() == k.data for k in keys)


def test_restore_an_older_version(
    kv: KV, vault: BackendSetup, home: Path, trust: tuple[Path, tuple[KeyFile, ...]], tmp_path: Path
) -> None:
    trust_dir, keys = trust
    config = write_config(home, vault)
    assert kv("--config", config, "backup").code == 0
    target = next(k for k in keys if k.role == "targets")
    (trust_dir / "private" / target.relpath).write_bytes(target.data + b"\n")
    assert kv("--config", config, "backup", "--key-id", target.key_id).code == 0
    versions = kv("--config", config, "--json", "versions", "--key-id", target.key_id)
    assert versions.code == 0, versions.err
    (found,) = versions.json()["keys"]
    assert [(v["version"], v["latest"]) for v in found["versions"]] == [("2", True), ("1", False)]
    old = tmp_path / "old"
    run = kv(
        "--config",
        config,
        "--trust-dir",
        old,
        "restore",
        "--key-id",
        target.key_id,
        "--version",
        "1",
    )
    assert run.code == 0, run.err
    assert (old / "private" / target.relpath).read_bytes() == target.data
    new = tmp_path / "new"
    assert (
        kv("--config", config, "--trust-dir", new, "restore", "--key-id", target.key_id).code == 0
    )
    assert (new / "private" / target.relpath).read_bytes() == target.data + b"\n"


def test_transit_rotation_then_rewrap_then_restore(
    kv: KV,
    vault: BackendSetup,
    bao: BaoServer,
    home: Path,
    trust: tuple[Path, tuple[KeyFile, ...]],
    tmp_path: Path,
) -> None:
    _, keys = trust
    config = write_config(home, vault)
    assert kv("--config", config, "backup").code == 0
    key = transit_key(vault)
    transit = bao.root().secrets.transit
    transit.rotate_key(key, mount_point=TRANSIT_MOUNT)
    transit.update_key_configuration(key, min_decryption_version=2, mount_point=TRANSIT_MOUNT)
    # Old ciphertexts are now below min_decryption_version: a clear refusal, nothing written.
    early = tmp_path / "early"
    refused = kv("--config", config, "--trust-dir", early, "restore", "--all")
    assert refused.code == 4, refused.err
    assert "min_decryption_version" in refused.err
    assert (
        not (early / "private").exists()
        or tree(early / "private") == {}
        or not any(v[1] for v in tree(early / "private").values())
    )
    # The operator lowers it for the migration; rewrap --rotate moves every DEK in Vault.
    transit.update_key_configuration(key, min_decryption_version=1, mount_point=TRANSIT_MOUNT)
    run = kv("--config", config, "--json", "rewrap", "--all", "--rotate")
    assert run.code == 0, run.err
    assert {k["action"] for k in run.json()["keys"]} == {"rotated"}
    transit.update_key_configuration(key, min_decryption_version=2, mount_point=TRANSIT_MOUNT)
    for k in keys:
        assert stored(bao, vault, k)["current_version"] == 2
    again = kv("--config", config, "--json", "rewrap", "--all", "--rotate")
    assert again.code == 0 and {k["action"] for k in again.json()["keys"]} == {"unchanged"}
    fresh = tmp_path / "after"
    restored = kv("--config", config, "--trust-dir", fresh, "restore", "--all")
    assert restored.code == 0, restored.err
    assert all((fresh / "private" / k.relpath).read_bytes() == k.data for k in keys)


@pytest.mark.proves("T3")
def test_team_b_token_is_refused_team_a_entries_by_openbao(
    kv: KV,
    vault: BackendSetup,
    bao: BaoServer,
    home: Path,
    trust: tuple[Path, tuple[KeyFile, ...]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """T3: keyvault's own check is not in the way (no policy file): OpenBao itself says 403."""
    config = write_config(home, vault)
    assert kv("--config", config, "backup").code == 0
    token = bao.token("team-b")
    monkeypatch.setenv("VAULT_TOKEN", token)
    fresh = tmp_path / "stolen"
    run = kv("--config", config, "--trust-dir", fresh, "restore", "--all")
    assert run.code == 4, run.err
    assert "permission denied" in run.err and "default, team-b" in run.err
    assert f"{KV_MOUNT}/{kv_prefix(vault)}/v1/teams/team-a" in run.err
    assert token not in run.err + run.out
    assert not (fresh / "private").exists() or not any(
        v[1] for v in tree(fresh / "private").values()
    )


def test_jwt_login_as_ci_agent_restores_its_repository_keys(
    kv: KV, bao: BaoServer, home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A CI job of team b: its ID token (a real ES256 JWT) is exchanged for a short-lived
    token at the JWT mount; it restores its GUN's targets key into a throw-away trust dir."""
    prefix = unique("kv")
    setup = BackendSetup(
        "vault",
        f"vault://{KV_MOUNT}/{prefix}",
        (f"transit://{TRANSIT_MOUNT}/{bao.transit_key(team='team-b')}",),
        vault_env(bao),
        "[vault]\ntimeout = 5\n",
    )
    monkeypatch.setenv("VAULT_ADDR", bao.address)
    monkeypatch.setenv("VAULT_TOKEN", bao.token("team-b"))  # the key owner backs up
    keys = sample(home / "owner-trust", GUNS_B)
    config = write_config(home, setup, team="team-b")
    assert kv("--config", config, "--trust-dir", home / "owner-trust", "backup").code == 0
    monkeypatch.delenv("VAULT_TOKEN")
    monkeypatch.setenv("CI_JOB_JWT", bao.mint_jwt(team="team-b"))
    ci = write_config(
        home,
        setup,
        team="team-b",
        extra='auth = "jwt"\njwt_role = "ci-team-b"\njwt_env = "CI_JOB_JWT"\n',
    )
    job = tmp_path / "job-trust"
    run = kv("--config", ci, "--trust-dir", job, "restore", "--gun", GUNS_B[0], "--role", "targets")
    assert run.code == 0, run.err
    (target,) = [k for k in keys if k.role == "targets"]
    assert (job / "private" / target.relpath).read_bytes() == target.data
    assert sorted(p for p, v in tree(job / "private").items() if v[1] is not None) == [
        target.relpath
    ]
    # A team-a CI token at team-b's role: refused at login, exit 4.
    monkeypatch.setenv("CI_JOB_JWT", bao.mint_jwt(team="team-a"))
    refused = kv(
        "--config",
        ci,
        "--trust-dir",
        tmp_path / "other",
        "restore",
        "--gun",
        GUNS_B[0],
        "--role",
        "targets",
    )
    assert refused.code == 4, refused.err
    assert "refused the JWT login" in refused.err


@pytest.mark.proves("B25", "T6")
def test_envelope_whose_context_does_not_match_is_refused(
    kv: KV,
    vault: BackendSetup,
    bao: BaoServer,
    home: Path,
    trust: tuple[Path, tuple[KeyFile, ...]],
    tmp_path: Path,
) -> None:
    """B25 / T6: an envelope copied to another GUN's name, header and wrap context rewritten
    to match: Transit's derived key (and keyvault's own binding) refuse it."""
    _, keys = trust
    config = write_config(home, vault)
    assert kv("--config", config, "backup").code == 0
    app, web = (next(k for k in keys if k.role == "targets" and k.gun == g) for g in GUNS_A)
    kv2 = bao.root().secrets.kv.v2
    base = f"{kv_prefix(vault)}/v1/teams/team-a/guns"
    src = f"{base}/{app.gun}/targets/{app.key_id}.json"
    dst = f"{base}/{web.gun}/targets/{web.key_id}.json"
    doc = json.loads(
        kv2.read_secret_version(src, mount_point=KV_MOUNT, raise_on_deleted_version=True)["data"][
            "data"
        ]["envelope"]
    )
    doc["header"]["gun"], doc["header"]["key_id"] = web.gun, web.key_id
    doc["wrapped_keys"][0]["context"]["keyvault:gun"] = web.gun
    doc["wrapped_keys"][0]["context"]["keyvault:key_id"] = web.key_id
    kv2.create_or_update_secret(dst, secret={"envelope": json.dumps(doc)}, mount_point=KV_MOUNT)
    fresh = tmp_path / "ci"
    run = kv(
        "--config", config, "--trust-dir", fresh, "restore", "--gun", web.gun, "--role", "targets"
    )
    assert run.code == 5, run.err
    assert not (fresh / "private" / web.relpath).exists()


def test_missing_mount_is_named(
    kv: KV, vault: BackendSetup, home: Path, trust: tuple[Path, tuple[KeyFile, ...]]
) -> None:
    config = write_config(home, vault, store="vault://no-such-kv/p")
    run = kv("--config", config, "list")
    assert run.code == 3, run.err
    assert "no secrets engine is mounted at no-such-kv/" in run.err


@pytest.mark.proves("B37")
def test_expired_token_exit_4(
    kv: KV,
    vault: BackendSetup,
    bao: BaoServer,
    home: Path,
    monkeypatch: pytest.MonkeyPatch,
    trust: tuple[Path, tuple[KeyFile, ...]],
) -> None:
    token = bao.token("team-a")
    bao.root().auth.token.revoke(token)
    monkeypatch.setenv("VAULT_TOKEN", token)
    run = kv("--config", write_config(home, vault), "list")
    assert run.code == 4, run.err
    assert "token" in run.err and "expired" in run.err and token not in run.err


# -- F01/F02: the server goes away in the middle of a run ------------------------------------


@pytest.mark.filterwarnings("ignore::keyvault.stores.vaultkv.VaultLabelWarning")
@pytest.mark.proves("F01")
def test_server_gone_mid_backup_clear_error_nothing_half_written(
    kv: KV,
    vault: BackendSetup,
    bao: BaoServer,
    home: Path,
    trust: tuple[Path, tuple[KeyFile, ...]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _, keys = trust
    proxy = CuttingProxy(
        bao.port,
        cut_at=3,
        refuse_after=True,
        is_write=lambda data: (
            data.startswith(b"POST ") and f"/{KV_MOUNT}/data/".encode() in data[:300]
        ),
    )
    monkeypatch.setenv("VAULT_ADDR", f"http://127.0.0.1:{proxy.port}")
    config = write_config(home, vault)
    run = kv("--config", config, "--json", "backup")
    assert proxy.cut.is_set()
    assert run.code == 6, run.err
    outcomes = run.json()["keys"]
    errors = " ".join(json.dumps(k["error"]) for k in outcomes if k["error"])
    # The key whose write was cut says the server cannot be reached, unless the run's
    # circuit breaker opened first (retries of keys in flight count as failures too, so
    # under load it can): then every failed key says the backend is down, naming Vault.
    assert "cannot be reached" in errors or (
        "a backend is down" in errors and "connection refused" in errors
    ), errors
    created = [k for k in outcomes if k["action"] == "created"]
    assert 0 < len(created) < len(keys)
    # Seen directly: exactly the reported objects exist, each a whole envelope at version 1.
    kv2 = bao.root().secrets.kv.v2
    for key in keys:
        try:
            meta = stored(bao, vault, key)
        except hvac.exceptions.InvalidPath:  # a 404; a 403 or a transport error still fails
            meta = {}
        reported = any(k["key_id"] == key.key_id for k in created)
        assert bool(meta) == reported, key
    for item in created:
        body = kv2.read_secret_version(
            f"{kv_prefix(vault)}/{item['object']}",
            mount_point=KV_MOUNT,
            raise_on_deleted_version=True,
        )
        assert json.loads(body["data"]["data"]["envelope"])["header"]["key_id"] == item["key_id"]
    # The server is back: a re-run completes and a restore gives every key back.
    monkeypatch.setenv("VAULT_ADDR", bao.address)
    rerun = kv("--config", config, "--json", "backup")
    assert rerun.code == 0, rerun.err
    actions = [k["action"] for k in rerun.json()["keys"]]
    assert actions.count("unchanged") == len(created)
    fresh = tmp_path / "restored"
    assert kv("--config", config, "--trust-dir", fresh, "restore", "--all").code == 0
    assert all((fresh / "private" / k.relpath).read_bytes() == k.data for k in keys)


@pytest.mark.proves("F02")
def test_server_stopped_before_restore_leaves_trust_dir_alone(
    kv: KV,
    vault: BackendSetup,
    make_bao: object,
    home: Path,
    monkeypatch: pytest.MonkeyPatch,
    trust: tuple[Path, tuple[KeyFile, ...]],
    tmp_path: Path,
) -> None:
    """F02: a private server, stopped for real: exit 6, a clear message, nothing written."""
    own = make_bao()  # type: ignore[operator]
    key = own.transit_key()
    setup = BackendSetup(
        "vault",
        f"vault://{KV_MOUNT}/{unique('kv')}",
        (f"transit://{TRANSIT_MOUNT}/{key}",),
        vault_env(own),
        "",
    )
    monkeypatch.setenv("VAULT_ADDR", own.address)
    config = write_config(home, setup)
    assert kv("--config", config, "backup").code == 0
    own.stop()
    target = tmp_path / "restore-here"
    (target / "private").mkdir(parents=True)
    before = tree(target)
    run = kv("--config", config, "--trust-dir", target, "restore", "--all")
    assert run.code == 6, run.err
    assert "cannot be reached" in run.err and own.address in run.err
    assert tree(target) == before


def test_backup_full_check_sees_junk_the_change_marker_hides(
    kv: KV,
    vault: BackendSetup,
    bao: BaoServer,
    home: Path,
    trust: tuple[Path, tuple[KeyFile, ...]],
) -> None:
    """[vault] change_marker on: junk put on top by a Vault writer outside keyvault does
    not move the marker, so the next backup says unchanged; 'backup --full-check' lists
    the folders, reports the key and seals a fresh version on top."""
    _, keys = trust
    config = write_config(home, vault, extra='change_marker = true\nfull_check_every = "7d"\n')
    for _ in range(2):  # the second records the marker's tag
        assert kv("--config", config, "backup").code == 0
    key = next(k for k in keys if k.role == "targets")
    path = f"{kv_prefix(vault)}/v1/teams/team-a/guns/{key.gun}/targets/{key.key_id}.json"
    bao.root().secrets.kv.v2.create_or_update_secret(
        path, secret={"envelope": "junk"}, mount_point=KV_MOUNT
    )
    hidden = kv("--config", config, "--json", "backup")
    assert hidden.code == 0 and {k["action"] for k in hidden.json()["keys"]} == {"unchanged"}
    seen = kv("--config", config, "--json", "backup", "--full-check")
    assert seen.code == 0, seen.err
    updated = [k for k in seen.json()["keys"] if k["action"] == "updated"]
    assert [k["key_id"] for k in updated] == [key.key_id]
    assert stored(bao, vault, key)["current_version"] == 3
