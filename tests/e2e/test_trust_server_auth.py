"""coverage and drill against a real notary-server that requires registry token auth.

The server is Debian's notary-server with ``auth: {type: token}``; the only
stand-in is the registry's auth service (fixtures.token_issuer). Repositories
are published by the real notary CLI with ``NOTARY_AUTH``; keyvault finds the
user's login the way the docker CLI does (``auths``, ``credsStore``,
``credHelpers``, ``DOCKER_CONFIG``) and never shows it.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fixtures.notary_server import NotaryServer
from fixtures.servers import BackendSetup, free_port
from fixtures.token_issuer import PASSWORD, REFRESH_TOKEN, USER, TokenAuthLab
from notarykit import Notary, passphrase_env

from e2e.machines import Lab, Machine, new_repository, run_keyvault
from keyvault.trustserver.client import TrustClient
from keyvault.trustserver.endpoint import Endpoint

NOTARY_AUTH = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()


@dataclass
class LoggedInNotary(Notary):
    """The notary CLI with the user's registry login in NOTARY_AUTH."""

    def run(
        self, trust_dir: Path, *args: str, env: Mapping[str, str] | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        return super().run(
            trust_dir, *args, env={"NOTARY_AUTH": NOTARY_AUTH, **(env or {})}, check=check
        )


@pytest.fixture
def lab(
    tmp_path: Path, file_age_backend: BackendSetup, notary: Notary, token_notary: TokenAuthLab
) -> Lab:
    return Lab(
        tmp_path, file_age_backend, LoggedInNotary(notary.binary, notary.home), token_notary.server
    )


def registry_gun(lab: Lab, name: str) -> str:
    """A GUN under a registry host: the login is looked up by that host, not the server's."""
    return f"reg.test/{lab.run_id[:6]}/{name}"


def published(lab: Lab, name: str) -> tuple[str, Machine, dict[str, str]]:
    """A repository under the registry host, published and backed up by a new laptop:
    (GUN, laptop, key IDs by role)."""
    gun = registry_gun(lab, name)
    laptop = lab.machine(f"laptop-{uuid.uuid4().hex[:6]}")
    ids = new_repository(laptop, gun)
    laptop.keyvault.backup()
    return gun, laptop, ids


def docker_config(directory: Path, config: dict[str, Any]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(config))
    return directory


def basic(user: str, password: str) -> dict[str, str]:
    return {"auth": base64.b64encode(f"{user}:{password}".encode()).decode()}


def helper_bin(directory: Path, name: str, log: Path) -> Path:
    """A ``docker-credential-<name>`` script: the login for any server, the server asked
    written to ``log`` (one line per call)."""
    directory.mkdir(parents=True, exist_ok=True)
    script = directory / f"docker-credential-{name}"
    answer = json.dumps({"ServerURL": "", "Username": USER, "Secret": PASSWORD})
    script.write_text(
        f'#!/bin/sh\n[ "$1" = get ] || exit 2\nread server\n'
        f"echo \"$server\" >> '{log}'\necho '{answer}'\n"
    )
    script.chmod(0o700)
    return directory


def coverage(
    machine: Machine, gun: str, env: Mapping[str, str], *args: str
) -> tuple[int, Any, subprocess.CompletedProcess[str]]:
    full = {**machine.keyvault.backend.env, **env}
    proc = run_keyvault(
        machine.keyvault.home,
        full,
        "--config",
        machine.keyvault.config,
        "--trust-dir",
        machine.trust_dir,
        "--json",
        "coverage",
        "--gun",
        gun,
        *args,
    )
    report = json.loads(proc.stdout) if proc.stdout.strip() else None
    return proc.returncode, report, proc


def statuses(report: Any) -> dict[tuple[str, str], str]:
    return {(k["role"], k["key_id"]): k["status"] for k in report["keys"]}


def actions_asked(gun: str, asked: list[tuple[str | None, str]]) -> list[tuple[str | None, str]]:
    """(user, sorted actions) of token requests for ``gun`` (notary-server lists a scope's
    actions in either order)."""
    prefix = f"repository:{gun}:"
    assert all(scope.startswith(prefix) for _, scope in asked), asked
    return sorted(
        (user, ",".join(sorted(scope[len(prefix) :].split(",")))) for user, scope in asked
    )


def server_args(server: NotaryServer) -> tuple[str, ...]:
    return ("--server", server.url, "--tls-ca", str(server.ca_cert))


def assert_backed_up(report: Any, ids: Mapping[str, str]) -> None:
    status = statuses(report)
    for role in ("root", "targets", "snapshot"):
        assert status[(role, ids[role])] == "backed-up", report


def assert_no_secret(machine: Machine, *procs: subprocess.CompletedProcess[str]) -> None:
    """Neither the password nor a token reaches the output, the logs or the audit log."""
    for proc in procs:
        for secret in (PASSWORD, NOTARY_AUTH, REFRESH_TOKEN, "eyJ"):  # a JWT starts with eyJ
            assert secret not in proc.stdout + proc.stderr
    for path in machine.keyvault.home.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            for secret in (PASSWORD, NOTARY_AUTH, REFRESH_TOKEN):
                assert secret.encode() not in data, path


def test_the_server_refuses_without_a_token(
    token_notary: TokenAuthLab, notary: Notary, tmp_path: Path
) -> None:
    """The fixture is what registries run: no token, no metadata (the notary CLI too)."""
    gun = f"reg.test/{uuid.uuid4().hex[:6]}/x"
    proc = notary.run(
        tmp_path / "t", *token_notary.server.client_flags(), "init", gun, "-p", check=False
    )
    assert proc.returncode != 0
    assert "you are not authorized to perform this operation: server returned 401" in proc.stdout


def test_docker_login_then_coverage_as_a_user_types_it(
    lab: Lab, token_notary: TokenAuthLab, tmp_path: Path
) -> None:
    """The real docker CLI logs in to the registry (client side: no daemon here), the user
    exports DOCKER_CONTENT_TRUST_SERVER, and coverage finds the login by the GUN's registry."""
    registry = token_notary.issuer.realm.split("/")[2]  # 127.0.0.1:<port>
    gun = f"{registry}/{lab.run_id[:6]}/d"
    laptop = lab.machine("laptop")
    ids = new_repository(laptop, gun)
    laptop.keyvault.backup()
    shutil.rmtree(laptop.trust_dir / "tuf")  # no local cache: only the server can tell
    docker_dir = tmp_path / "docker"
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "DOCKER_CONFIG": str(docker_dir),
        "DOCKER_HOST": f"unix://{tmp_path}/none.sock",
    }
    login = subprocess.run(
        ["docker", "login", registry, "-u", USER, "--password-stdin"],
        input=PASSWORD,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert login.returncode == 0 and "Login Succeeded" in login.stdout, login.stderr
    assert registry in json.loads((docker_dir / "config.json").read_text())["auths"]

    code, report, proc = coverage(
        laptop,
        gun,
        {"DOCKER_CONFIG": str(docker_dir), "DOCKER_CONTENT_TRUST_SERVER": lab.server.url},
        "--tls-ca",
        str(lab.server.ca_cert),
    )
    assert code == 0, proc.stderr
    assert report["source"] == lab.server.url
    assert_backed_up(report, ids)
    assert_no_secret(laptop, proc)


def test_coverage_with_a_login_in_docker_auths(
    lab: Lab, token_notary: TokenAuthLab, tmp_path: Path
) -> None:
    gun, laptop, ids = published(lab, "auths")
    issuer = token_notary.issuer
    before = len(issuer.requests)
    config = docker_config(tmp_path / "docker", {"auths": {"reg.test": basic(USER, PASSWORD)}})

    code, report, proc = coverage(
        laptop, gun, {"DOCKER_CONFIG": str(config)}, *server_args(lab.server)
    )
    assert code == 0, proc.stderr
    assert_backed_up(report, ids)
    asked = issuer.requests[before:]
    # Tokens are reused: one per scope the server asked (pull; push,pull for its keys),
    # for root, targets, the snapshot and timestamp keys and the delegations looked up.
    assert actions_asked(gun, asked) == [(USER, "pull"), (USER, "pull,push")]
    assert_no_secret(laptop, proc)


@pytest.mark.parametrize("where", ["credsStore", "credHelpers"])
def test_coverage_with_a_credential_helper(
    lab: Lab, token_notary: TokenAuthLab, tmp_path: Path, where: str
) -> None:
    gun, laptop, ids = published(lab, where[-5:].lower())
    calls = tmp_path / "helper-calls"
    bin_dir = helper_bin(tmp_path / "bin", "kvtest", calls)
    config: dict[str, Any] = {"auths": {"reg.test": basic(USER, "not-the-password")}}
    config |= (
        {"credsStore": "kvtest"}
        if where == "credsStore"
        else {"credHelpers": {"reg.test": "kvtest"}}
    )
    # ~/.docker/config.json: the default when DOCKER_CONFIG is not set
    docker_config(laptop.keyvault.home / ".docker", config)
    env = {"PATH": f"{bin_dir}:{os.environ.get('PATH', '/usr/bin:/bin')}"}

    gun2, _, ids2 = published(lab, where[-5:].lower() + "2")  # same registry
    code, report, proc = coverage(laptop, gun, env, "--gun", gun2, *server_args(lab.server))
    assert code == 0, proc.stderr
    assert_backed_up(report, ids)
    assert_backed_up(report, ids2)
    # asked once for both GUNs, with the registry's host on stdin
    assert calls.read_text().splitlines() == ["reg.test"]
    assert_no_secret(laptop, proc)


def test_an_identity_token_is_exchanged_with_the_oauth2_form(
    lab: Lab, token_notary: TokenAuthLab, tmp_path: Path
) -> None:
    """docker stores an OAuth2 refresh token as ``identitytoken``: it is POSTed to the
    realm (grant_type=refresh_token), never sent as a password."""
    gun, laptop, ids = published(lab, "ident")
    issuer = token_notary.issuer
    before = len(issuer.requests)
    config = docker_config(
        tmp_path / "docker", {"auths": {"reg.test": {"auth": "", "identitytoken": REFRESH_TOKEN}}}
    )

    code, report, proc = coverage(
        laptop, gun, {"DOCKER_CONFIG": str(config)}, *server_args(lab.server)
    )
    assert code == 0, proc.stderr
    assert_backed_up(report, ids)
    assert actions_asked(gun, issuer.requests[before:]) == [(USER, "pull"), (USER, "pull,push")]
    assert REFRESH_TOKEN not in proc.stdout + proc.stderr


def test_wrong_or_missing_credentials_exit_4_naming_the_login(
    lab: Lab, token_notary: TokenAuthLab, tmp_path: Path
) -> None:
    gun, laptop, _ = published(lab, "denied")
    wrong = docker_config(
        tmp_path / "wrong", {"auths": {"https://reg.test/v1/": basic(USER, "Wr0ng-" + PASSWORD)}}
    )

    code, report, proc = coverage(
        laptop, gun, {"DOCKER_CONFIG": str(wrong)}, *server_args(lab.server)
    )
    assert code == 4, proc.stderr
    assert report["exit_code"] == 4
    assert lab.server.url in report["message"]
    assert "docker login reg.test" in report["hint"]
    assert "Wr0ng-" not in proc.stdout + proc.stderr
    assert_no_secret(laptop, proc)

    empty = docker_config(tmp_path / "empty", {})
    code, _, proc = coverage(laptop, gun, {"DOCKER_CONFIG": str(empty)}, *server_args(lab.server))
    assert code == 4, proc.stderr  # anonymous tokens carry pull only; the keys need push
    assert "docker login reg.test" in proc.stdout


def test_an_expired_token_is_refreshed_mid_run(
    lab: Lab, token_notary: TokenAuthLab, tmp_path: Path
) -> None:
    gun, laptop, ids = published(lab, "expiry")
    issuer = token_notary.issuer
    issuer.stale_next = 1  # the first token says it lasts an hour, but has expired
    before = len(issuer.requests)

    code, report, proc = coverage(
        laptop, gun, {"NOTARY_AUTH": NOTARY_AUTH}, *server_args(lab.server)
    )
    assert code == 0, proc.stderr
    assert_backed_up(report, ids)
    asked = issuer.requests[before:]
    # the first token (for the server's keys) was refused as expired and fetched again
    assert actions_asked(gun, asked) == [(USER, "pull")] + [(USER, "pull,push")] * 2
    assert issuer.stale_next == 0


def test_tokens_are_reused_until_they_expire_then_refreshed(token_notary: TokenAuthLab) -> None:
    """In-process, against the real server: reuse, expiry by expires_in, and a cached token
    the server refuses mid-run."""
    server, issuer = token_notary.server, token_notary.issuer
    client = TrustClient(
        Endpoint(server.url, server.ca_cert, "--server"), {"NOTARY_AUTH": NOTARY_AUTH}
    )
    now = [0.0]
    client.tokens.clock = lambda: now[0]
    issuer.stale_next = 0
    gun = f"reg.test/{uuid.uuid4().hex[:6]}/none"
    path = f"{gun}/_trust/tuf/root.json"
    scope = (USER, f"repository:{gun}:pull")
    before = len(issuer.requests)

    assert client.get(gun, path) is None  # not published: 404 once authenticated
    assert client.get(gun, path) is None
    assert issuer.requests[before:] == [scope]  # one token, reused

    now[0] += 3601  # past expires_in: a new token before the next request
    assert client.get(gun, path) is None
    assert issuer.requests[before:] == [scope] * 2

    # A token cached earlier that the server now refuses as expired: fetched again.
    (challenge,) = {c for c in client._scopes.values()}
    issuer.stale_next = 1
    client.tokens.fetch(challenge, client.login(gun))
    assert client.get(gun, path) is None
    assert issuer.requests[before:] == [scope] * 4
    assert "eyJ" not in repr(client) + repr(client.tokens._cache)


def test_docker_content_trust_server_and_the_notary_config(
    lab: Lab, token_notary: TokenAuthLab, tmp_path: Path
) -> None:
    gun, laptop, ids = published(lab, "envsrv")
    config = docker_config(tmp_path / "docker", {"auths": {"reg.test": basic(USER, PASSWORD)}})
    env = {"DOCKER_CONFIG": str(config), "DOCKER_CONTENT_TRUST_SERVER": lab.server.url}

    code, report, proc = coverage(laptop, gun, env, "--tls-ca", str(lab.server.ca_cert))
    assert code == 0, proc.stderr
    assert report["source"] == lab.server.url
    assert_backed_up(report, ids)

    # The notary CLI's config names the server and its CA (relative to the config file).
    notary_dir = laptop.keyvault.home / ".notary"
    notary_dir.mkdir()
    (notary_dir / "ca.pem").write_bytes(lab.server.ca_cert.read_bytes())
    (notary_dir / "config.json").write_text(
        json.dumps({"remote_server": {"url": lab.server.url, "root_ca": "ca.pem"}})
    )
    code, report, proc = coverage(laptop, gun, {"DOCKER_CONFIG": str(config)})
    assert code == 0, proc.stderr
    assert report["source"] == lab.server.url
    assert_backed_up(report, ids)


def test_a_drill_checks_signatures_against_the_authenticated_server(
    lab: Lab, token_notary: TokenAuthLab, tmp_path: Path
) -> None:
    gun, laptop, ids = published(lab, "drill")
    shutil.rmtree(laptop.trust_dir / "tuf")  # no local cache: only the server can tell
    config = docker_config(tmp_path / "docker", {"auths": {"reg.test": basic(USER, PASSWORD)}})
    env = {
        **laptop.keyvault.backend.env,
        **passphrase_env(),
        "DOCKER_CONFIG": str(config),
        "DOCKER_CONTENT_TRUST_SERVER": lab.server.url,
    }
    proc = run_keyvault(
        laptop.keyvault.home,
        env,
        "--config",
        laptop.keyvault.config,
        "--trust-dir",
        laptop.trust_dir,
        "--json",
        "drill",
        "--gun",
        gun,
        "--tls-ca",
        lab.server.ca_cert,
        "--require-published",
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    checked = {c["key_id"]: c["signature"] for c in report["checks"]}
    assert checked[ids["targets"]] == "passed", report
    assert_no_secret(laptop, proc)


def test_unreachable_server_or_untrusted_tls_exit_6_with_a_hint(
    lab: Lab, token_notary: TokenAuthLab, tmp_path: Path
) -> None:
    gun, laptop, _ = published(lab, "offline")
    env = {"NOTARY_AUTH": NOTARY_AUTH}

    code, _, proc = coverage(laptop, gun, env, "--server", lab.server.url)  # system CAs only
    assert code == 6, proc.stderr
    assert "TLS" in proc.stderr and "--tls-ca" in proc.stderr

    closed = f"https://127.0.0.1:{free_port()}"
    code, _, proc = coverage(
        laptop, gun, env, "--server", closed, "--tls-ca", str(lab.server.ca_cert)
    )
    assert code == 6, proc.stderr
    assert closed in proc.stderr and "--tls-ca" in proc.stderr


def test_anonymous_tokens_where_the_realm_gives_them(
    lab: Lab, token_notary: TokenAuthLab, tmp_path: Path
) -> None:
    """No login anywhere (empty docker config, no NOTARY_AUTH): the realm hands out an
    anonymous pull token, and the published root.json is read with it."""
    gun, _, _ = published(lab, "anon")
    server, issuer = token_notary.server, token_notary.issuer
    empty = docker_config(tmp_path / "anon-docker", {})
    client = TrustClient(
        Endpoint(server.url, server.ca_cert, "--server"),
        {"DOCKER_CONFIG": str(empty), "HOME": str(tmp_path)},
    )
    before = len(issuer.requests)
    root = client.get(gun, f"{gun}/_trust/tuf/root.json")
    assert root is not None and json.loads(root)["signed"]["_type"] == "Root"
    assert issuer.requests[before:] == [(None, f"repository:{gun}:pull")]
