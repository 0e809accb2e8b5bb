"""Logging in the way Vault users do: token, ~/.vault-token, AppRole, JWT; renewal; expiry."""

from __future__ import annotations

import time
from pathlib import Path

import hvac.exceptions
import pytest
from fixtures.vault import KV_MOUNT, BaoServer, unique

from keyvault.errors import AccessDeniedError, NotFoundError, UsageError
from keyvault.plugins import BackendOptions
from keyvault.stores import _vault_client as vc
from keyvault.stores.vaultkv import VaultKvStore

from .conftest import open_kv, vault_options

ROOT_NAME = f"v1/teams/team-b/root/{'ab' * 32}.json"


def kv_for(bao: BaoServer, prefix: str, env: dict[str, str], **settings: object) -> VaultKvStore:
    options = BackendOptions(
        env={"VAULT_ADDR": bao.address, **env}, settings={"vault": {"timeout": 5, **settings}}
    )
    return VaultKvStore.from_uri(f"vault://{KV_MOUNT}/{prefix}", options)


@pytest.fixture
def seeded(bao: BaoServer) -> str:
    """A store prefix holding one team-b object."""
    prefix = unique("kv")
    admin = open_kv(bao, prefix)
    admin.write(ROOT_NAME, b"team b")
    admin.close()
    return prefix


def test_vault_token_file_in_home(bao: BaoServer, seeded: str, tmp_path: Path) -> None:
    token_file = tmp_path / ".vault-token"
    token_file.write_text(bao.token("team-b") + "\n")
    token_file.chmod(0o600)
    store = kv_for(bao, seeded, {"HOME": str(tmp_path)})
    assert store.read(ROOT_NAME).data == b"team b"
    store.close()


def test_token_file_others_can_read_is_refused(bao: BaoServer, seeded: str, tmp_path: Path) -> None:
    token = bao.token("team-b")
    token_file = tmp_path / "token"
    token_file.write_text(token)
    token_file.chmod(0o644)
    store = kv_for(bao, seeded, {}, token_file=str(token_file))
    with pytest.raises(AccessDeniedError, match="group or others") as info:
        store.read(ROOT_NAME)
    assert token not in str(info.value)
    store.close()


def test_no_token_anywhere_is_a_clear_error(bao: BaoServer, seeded: str, tmp_path: Path) -> None:
    store = kv_for(bao, seeded, {"HOME": str(tmp_path)})
    with pytest.raises(AccessDeniedError, match="no Vault token") as info:
        store.read(ROOT_NAME)
    assert "VAULT_TOKEN" in str(info.value)
    store.close()


def test_approle_login_from_env_and_file(bao: BaoServer, seeded: str, tmp_path: Path) -> None:
    role_id, secret_id = bao.approle("team-b")
    store = kv_for(
        bao,
        seeded,
        {"KEYVAULT_VAULT_ROLE_ID": role_id, "KEYVAULT_VAULT_SECRET_ID": secret_id},
        auth="approle",
    )
    assert store.read(ROOT_NAME).data == b"team b"
    store.close()
    role_id, secret_id = bao.approle("team-b")
    (tmp_path / "role").write_text(role_id)
    (tmp_path / "secret").write_text(secret_id + "\n")
    for name in ("role", "secret"):
        (tmp_path / name).chmod(0o600)
    store = kv_for(
        bao,
        seeded,
        {},
        auth="approle",
        role_id_file=str(tmp_path / "role"),
        secret_id_file=str(tmp_path / "secret"),
    )
    assert store.read(ROOT_NAME).data == b"team b"
    store.close()


def test_approle_bad_secret_id_refused(bao: BaoServer, seeded: str) -> None:
    role_id, _ = bao.approle("team-b")
    bad = "00000000-0000-0000-0000-000000000000"
    store = kv_for(
        bao,
        seeded,
        {"KEYVAULT_VAULT_ROLE_ID": role_id, "KEYVAULT_VAULT_SECRET_ID": bad},
        auth="approle",
    )
    with pytest.raises(vc.VaultLoginError, match="refused the AppRole login") as info:
        store.read(ROOT_NAME)
    assert bad not in str(info.value) and role_id not in str(info.value)
    store.close()


def test_jwt_login_as_ci_agent(bao: BaoServer, seeded: str, tmp_path: Path) -> None:
    jwt = bao.mint_jwt(team="team-b")
    store = kv_for(
        bao, seeded, {"CI_ID_TOKEN": jwt}, auth="jwt", jwt_role="ci-team-b", jwt_env="CI_ID_TOKEN"
    )
    assert store.read(ROOT_NAME).data == b"team b"
    store.close()
    (tmp_path / "jwt").write_text(bao.mint_jwt(team="team-b"))
    store = kv_for(
        bao, seeded, {}, auth="jwt", jwt_role="ci-team-b", jwt_file=str(tmp_path / "jwt")
    )
    assert store.read(ROOT_NAME).data == b"team b"
    store.close()


@pytest.mark.parametrize("case", ["wrong team claim", "wrong audience", "expired", "foreign key"])
def test_jwt_refused(bao: BaoServer, seeded: str, case: str) -> None:
    from cryptography.hazmat.primitives.asymmetric import ec

    jwt = {
        "wrong team claim": lambda: bao.mint_jwt(team="team-a"),
        "wrong audience": lambda: bao.mint_jwt(team="team-b", audience="other"),
        "expired": lambda: bao.mint_jwt(team="team-b", ttl=-120),
        "foreign key": lambda: bao.mint_jwt(
            team="team-b", key=ec.generate_private_key(ec.SECP256R1())
        ),
    }[case]()
    store = kv_for(bao, seeded, {"KEYVAULT_VAULT_JWT": jwt}, auth="jwt", jwt_role="ci-team-b")
    with pytest.raises(vc.VaultLoginError, match="refused the JWT login") as info:
        store.read(ROOT_NAME)
    assert jwt not in str(info.value)
    store.close()


def test_jwt_of_team_a_cannot_read_team_b(bao: BaoServer, seeded: str) -> None:
    store = kv_for(
        bao,
        seeded,
        {"KEYVAULT_VAULT_JWT": bao.mint_jwt(team="team-a")},
        auth="jwt",
        jwt_role="ci-team-a",
    )
    with pytest.raises(vc.VaultPermissionError, match="team-a"):
        store.read(ROOT_NAME)
    store.close()


@pytest.mark.proves("B37", "F06")
def test_expired_token_is_a_clear_error(bao: BaoServer, seeded: str) -> None:
    """B37 / F06: the token works, then expires mid-run: 'expired', exit 4."""
    token = bao.token("team-b", ttl="2s", renewable=False)
    store = kv_for(bao, seeded, {"VAULT_TOKEN": token})
    assert store.read(ROOT_NAME).data == b"team b"
    deadline = time.monotonic() + 10
    root = bao.root()
    while time.monotonic() < deadline:  # poll until Vault has let the token go
        try:
            root.auth.token.lookup(token)
        except (hvac.exceptions.Forbidden, hvac.exceptions.InvalidRequest):  # gone
            break
        time.sleep(0.1)
    with pytest.raises(vc.VaultTokenExpiredError, match="token has expired") as info:
        store.read(ROOT_NAME)
    assert info.value.exit_code == 4 and token not in str(info.value)
    store.close()


def test_revoked_token_is_reported(bao: BaoServer, seeded: str) -> None:
    token = bao.token("team-b")
    store = kv_for(bao, seeded, {"VAULT_TOKEN": token})
    store.read(ROOT_NAME)
    bao.root().auth.token.revoke(token)
    with pytest.raises(vc.VaultTokenExpiredError, match="expired, revoked or not valid"):
        store.read(ROOT_NAME)
    store.close()


def test_renewable_token_is_renewed_before_it_expires(bao: BaoServer, seeded: str) -> None:
    token = bao.token("team-b", ttl="30s")
    store = kv_for(bao, seeded, {"VAULT_TOKEN": token})
    store.read(ROOT_NAME)
    client = store._live()
    client._expires = time.monotonic() + 0.5  # as if the TTL were nearly over
    before = bao.root().auth.token.lookup(token)["data"]["expire_time"]
    store.read(ROOT_NAME)
    after = bao.root().auth.token.lookup(token)["data"]["expire_time"]
    assert after > before and client._expires > time.monotonic() + 20
    store.close()


def test_approle_logs_in_again_when_its_token_dies(bao: BaoServer, seeded: str) -> None:
    role_id, secret_id = bao.approle("team-b")
    store = kv_for(
        bao,
        seeded,
        {"KEYVAULT_VAULT_ROLE_ID": role_id, "KEYVAULT_VAULT_SECRET_ID": secret_id},
        auth="approle",
    )
    store.read(ROOT_NAME)
    bao.root().auth.token.revoke(store._live()._hvac.token)  # expired under our feet
    assert store.read(ROOT_NAME).data == b"team b"
    store.close()


def test_store_and_wrapper_share_one_client(bao: BaoServer) -> None:
    from keyvault.wrappers.transit import TransitWrapper

    options = vault_options(bao)
    store = VaultKvStore.from_uri(f"vault://{KV_MOUNT}/x", options)
    wrapper = TransitWrapper.from_uri("transit://transit/k", options)
    assert store._live() is wrapper._live()
    other = VaultKvStore.from_uri(
        f"vault://{KV_MOUNT}/x", vault_options(bao, token=bao.token("team-a"))
    )
    assert other._live() is not store._live()
    for backend in (store, wrapper, other):
        backend.close()


def test_skip_verify_warns_loudly(bao: BaoServer) -> None:
    with pytest.warns(vc.VaultInsecureWarning, match="OFF"):
        store = VaultKvStore.from_uri(
            f"vault://{KV_MOUNT}/x", vault_options(bao, env={"VAULT_SKIP_VERIFY": "true"})
        )
    store.close()


def test_settings_are_validated() -> None:
    for settings in (
        {"auth": "ldap"},
        {"timeout": 0},
        {"timeout": True},
        {"auth": "jwt"},
        {"address": "ftp://x"},
        {"address": "http://u:p@x"},
        {"approle_mount": "../x"},
        {"jwt_env": "A B"},
    ):
        with pytest.raises(UsageError):
            vc.vault_settings(BackendOptions(settings={"vault": settings}))
    with pytest.raises(NotFoundError):
        vc.vault_settings(BackendOptions(env={"VAULT_CACERT": "/nonexistent/ca.pem"}))
    s = vc.vault_settings(BackendOptions(env={"VAULT_NAMESPACE": "team/ns"}))
    assert s.address == vc.DEFAULT_ADDRESS and s.namespace == "team/ns" and s.verify is True


def test_unreachable_vault_is_reported_after_brief_retries(tmp_path: Path) -> None:
    from fixtures.servers import free_port

    options = BackendOptions(
        env={"VAULT_ADDR": f"http://127.0.0.1:{free_port()}", "VAULT_TOKEN": "t"},
        settings={"vault": {"timeout": 2}},
    )
    store = VaultKvStore.from_uri(f"vault://{KV_MOUNT}/x", options)
    with pytest.raises(vc.VaultUnavailableError, match=r"cannot be reached \(connection refused\)"):
        store.read(ROOT_NAME)
    store.close()


@pytest.mark.proves("F05")
def test_sealed_vault_is_reported(make_bao: object) -> None:
    bao = make_bao()  # type: ignore[operator]
    store = open_kv(bao)
    store.write(ROOT_NAME, b"x")
    bao.root().sys.seal()
    with pytest.raises(vc.VaultUnavailableError, match="sealed"):
        store.read(ROOT_NAME)
    store.close()


def test_tls_with_vault_cacert_and_without(make_bao: object) -> None:
    bao = make_bao(tls=True)  # type: ignore[operator]
    assert bao.address.startswith("https://")
    good = open_kv(bao, env={"VAULT_CACERT": str(bao.cacert)})
    good.write(ROOT_NAME, b"over tls")
    assert good.read(ROOT_NAME).data == b"over tls"
    good.close()
    bad = open_kv(bao)  # the system CAs do not know the dev CA
    with pytest.raises(vc.VaultUnavailableError, match="TLS failed") as info:
        bad.read(ROOT_NAME)
    assert "VAULT_CACERT" in str(info.value)
    bad.close()
