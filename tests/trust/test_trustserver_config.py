"""Trust-server access without a server: challenges, docker's login lookup, the notary
config, and which server a run talks to."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from keyvault.errors import AccessDeniedError, InvalidInputError
from keyvault.trustserver.challenge import Challenge, parse_bearer, scope_repository
from keyvault.trustserver.credentials import (
    DOCKER_HUB,
    Credentials,
    docker_credentials,
    login_keys,
    notary_auth,
    registry_shown,
    run_helper,
)
from keyvault.trustserver.endpoint import select_endpoint
from keyvault.trustserver.notaryconfig import read_notary_config
from keyvault.trustserver.transport import Transport, checked_url

SECRET = "pa55-w0rd-never-shown"


def test_a_bearer_challenge_is_parsed_with_quotes_and_host_port_scopes() -> None:
    header = (
        'Bearer realm="https://auth.example/token",service="registry:5000",'
        'scope="repository:reg.example:5000/ns/app:push,pull",error="insufficient_scope"'
    )
    assert parse_bearer(header) == Challenge(
        "https://auth.example/token",
        "registry:5000",
        "repository:reg.example:5000/ns/app:push,pull",
        "insufficient_scope",
    )
    assert scope_repository("repository:reg.example:5000/ns/app:push,pull") == (
        "reg.example:5000/ns/app",
        "push,pull",
    )
    assert parse_bearer('Basic realm="x"') is None
    assert parse_bearer('Bearer service="s"') is None  # no realm: nothing to ask
    assert parse_bearer(None) is None


def test_login_keys_put_the_registry_first_then_the_trust_server() -> None:
    assert login_keys("registry.ng.bluemix.net/ns/app", "https://registry.ng.bluemix.net:4443") == [
        "registry.ng.bluemix.net",
        "registry.ng.bluemix.net:4443",
    ]
    assert login_keys("docker.io/library/app", "https://notary.docker.io") == [
        DOCKER_HUB,
        "notary.docker.io",
    ]
    assert login_keys("kv/team/app", "https://127.0.0.1:4443") == ["127.0.0.1:4443", "127.0.0.1"]
    assert registry_shown([DOCKER_HUB]) == ""  # plain 'docker login' is Docker Hub's
    assert registry_shown(["reg.example:5000"]) == "reg.example:5000"


def _config(tmp_path: Path, config: dict[str, object]) -> dict[str, str]:
    (tmp_path / "config.json").write_text(json.dumps(config))
    return {"DOCKER_CONFIG": str(tmp_path), "PATH": "/usr/bin:/bin"}


@pytest.mark.parametrize(
    "key", ["reg.example:5000", "https://reg.example:5000", "https://reg.example:5000/v1/"]
)
def test_auths_are_found_by_host_port_or_url(tmp_path: Path, key: str) -> None:
    auth = base64.b64encode(f"alice:{SECRET}".encode()).decode()
    env = _config(tmp_path, {"auths": {key: {"auth": auth}}})
    found = docker_credentials(["reg.example:5000"], env)
    assert found == Credentials("alice", SECRET, "auths")
    assert SECRET not in repr(found) + str(found)


def test_auths_with_username_and_password_and_docker_hub(tmp_path: Path) -> None:
    env = _config(tmp_path, {"auths": {DOCKER_HUB: {"username": "bob", "password": SECRET}}})
    assert docker_credentials(
        login_keys("docker.io/bob/app", "https://notary.docker.io"), env
    ) == Credentials("bob", SECRET, "auths")
    assert docker_credentials(["other.example"], env) is None


def test_home_docker_config_when_docker_config_is_unset(tmp_path: Path) -> None:
    (tmp_path / ".docker").mkdir()
    (tmp_path / ".docker" / "config.json").write_text(
        json.dumps({"auths": {"reg.example": {"username": "carol", "password": SECRET}}})
    )
    assert docker_credentials(["reg.example"], {"HOME": str(tmp_path)}) == Credentials(
        "carol", SECRET, "auths"
    )


def test_a_helper_name_is_validated_and_its_output_never_shown(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError):
        run_helper("../../bin/sh", "reg.example", {"PATH": "/usr/bin"})
    env = _config(tmp_path, {"credsStore": "absent-kv"})
    with pytest.raises(AccessDeniedError, match="docker-credential-absent-kv is not on PATH"):
        docker_credentials(["reg.example"], env)
    helper = tmp_path / "docker-credential-garbled"
    helper.write_text(f"#!/bin/sh\necho 'not json {SECRET}'\n")
    helper.chmod(0o700)
    with pytest.raises(AccessDeniedError) as raised:
        run_helper("garbled", "reg.example", {"PATH": str(tmp_path)})
    assert SECRET not in str(raised.value)


def test_notary_auth_is_base64_user_password() -> None:
    value = base64.b64encode(f"dave:{SECRET}".encode()).decode()
    assert notary_auth({"NOTARY_AUTH": value}) == Credentials("dave", SECRET, "NOTARY_AUTH")
    with pytest.raises(InvalidInputError) as raised:
        notary_auth({"NOTARY_AUTH": SECRET})
    assert SECRET not in str(raised.value)


def test_the_notary_config_resolves_root_ca_and_trust_dir_beside_it(tmp_path: Path) -> None:
    (tmp_path / ".notary").mkdir()
    (tmp_path / ".notary" / "config.json").write_text(
        json.dumps(
            {
                "trust_dir": "~/.notary-trust",
                "remote_server": {"url": "https://notary.example:4443", "root_ca": "root-ca.crt"},
            }
        )
    )
    config = read_notary_config({"HOME": str(tmp_path)})
    assert config is not None
    assert config.url == "https://notary.example:4443"
    assert config.root_ca == tmp_path / ".notary" / "root-ca.crt"
    assert config.trust_dir == tmp_path / ".notary-trust"


def test_the_server_is_the_flag_then_the_environment_then_the_notary_config(tmp_path: Path) -> None:
    (tmp_path / ".notary").mkdir()
    (tmp_path / ".notary" / "config.json").write_text(
        json.dumps({"remote_server": {"url": "https://from-config:4443", "root_ca": "ca.pem"}})
    )
    env = {"HOME": str(tmp_path), "DOCKER_CONTENT_TRUST_SERVER": "https://from-env:4443"}
    flag = select_endpoint("https://from-flag", "ca.pem", env)
    assert flag is not None and (flag.url, flag.origin) == ("https://from-flag", "--server")
    from_env = select_endpoint(None, None, env)
    assert from_env is not None and from_env.url == "https://from-env:4443"
    assert from_env.ca_file is None  # the config's root_ca is for the config's server
    from_config = select_endpoint(None, None, {"HOME": str(tmp_path)})
    assert from_config is not None and from_config.url == "https://from-config:4443"
    assert from_config.ca_file == tmp_path / ".notary" / "ca.pem"
    assert select_endpoint(None, None, {"HOME": str(tmp_path / "nobody")}) is None


def test_a_server_url_must_be_https_and_carry_no_credentials() -> None:
    with pytest.raises(InvalidInputError):
        checked_url("http://notary.example", "trust server")
    with pytest.raises(InvalidInputError) as raised:
        checked_url(f"https://alice:{SECRET}@notary.example", "trust server")
    assert SECRET not in str(raised.value)
    assert checked_url("http://127.0.0.1:4443", "trust server")


def test_identity_tokens_are_marked_as_refresh_tokens(tmp_path: Path) -> None:
    """docker's ``identitytoken`` and a helper's ``<token>`` user are OAuth2 refresh
    tokens, exchanged with a POST, never sent as a password."""
    env = _config(tmp_path, {"auths": {"reg.example": {"auth": "", "identitytoken": SECRET}}})
    found = docker_credentials(["reg.example"], env)
    assert found is not None and found.identity_token and found.secret == SECRET
    helper = tmp_path / "docker-credential-oauth"
    helper.write_text('#!/bin/sh\necho \'{"Username": "<token>", "Secret": "rt"}\'\n')
    helper.chmod(0o700)
    answer = run_helper("oauth", "reg.example", {"PATH": str(tmp_path)})
    assert answer is not None and answer.identity_token


def test_a_tls_ca_that_is_missing_or_not_pem_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="does not exist"):
        Transport(tmp_path / "absent.pem")
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    with pytest.raises(InvalidInputError, match="not a PEM certificate bundle"):
        Transport(garbage)
