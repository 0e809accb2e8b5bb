"""deploy/compose: the local stack (SeaweedFS + OpenBao) is well formed, and its init works.

Docker does not run on the development machine, so the compose file is
checked three ways: ``docker compose config`` where docker exists; its YAML
structure (services, images, one-shot init containers ordered after healthy
servers, ports on loopback only, every bind-mounted file present); and the
OpenBao init script, run for real against ``bao server -dev`` with the team
policies, twice (it must be idempotent).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from keyvault.config import load_config

REPO = Path(__file__).resolve().parents[2]
COMPOSE_DIR = REPO / "deploy" / "compose"
COMPOSE = COMPOSE_DIR / "docker-compose.yml"
POLICY_DIR = REPO / "deploy" / "policies" / "vault"
SERVICES = {"seaweedfs", "s3-init", "openbao", "openbao-init"}


def _compose() -> dict[str, Any]:
    doc = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(doc, dict)
    return doc


def test_compose_services_and_images() -> None:
    doc = _compose()
    assert set(doc) <= {"name", "services", "volumes", "networks"}
    services = doc["services"]
    assert set(services) == SERVICES
    images = {name: svc["image"] for name, svc in services.items()}
    assert "chrislusf/seaweedfs" in images["seaweedfs"]
    assert "openbao/openbao" in images["openbao"] and "openbao/openbao" in images["openbao-init"]
    for name, svc in services.items():
        assert set(svc) <= {
            "image",
            "command",
            "entrypoint",
            "environment",
            "ports",
            "volumes",
            "healthcheck",
            "depends_on",
            "restart",
        }, name
    # Named volumes used by services are declared.
    declared = set(doc.get("volumes") or {})
    for svc in services.values():
        for spec in svc.get("volumes", []):
            source = spec.split(":", 1)[0]
            if not source.startswith((".", "/")):
                assert source in declared, spec


def test_init_containers_wait_for_healthy_servers() -> None:
    services = _compose()["services"]
    for init, server in (("s3-init", "seaweedfs"), ("openbao-init", "openbao")):
        assert services[init]["depends_on"] == {server: {"condition": "service_healthy"}}
        assert services[init]["restart"] == "no"
        assert services[server]["healthcheck"]["test"][0] in ("CMD", "CMD-SHELL")
        entry = services[init]["entrypoint"]
        assert entry[0] == "/bin/sh" and entry[1].startswith("/init/")


def test_ports_are_published_on_loopback_only() -> None:
    published = []
    for svc in _compose()["services"].values():
        for port in svc.get("ports", []):
            assert re.fullmatch(r"127\.0\.0\.1:\d+:\d+", str(port)), port
            published.append(port)
    assert sorted(published) == ["127.0.0.1:8200:8200", "127.0.0.1:8333:8333"]


def test_bind_mounts_exist() -> None:
    """Every file the stack mounts is in the repository; the policy dir is issue 6's output."""
    for svc in _compose()["services"].values():
        for spec in svc.get("volumes", []):
            source = spec.split(":", 1)[0]
            if not source.startswith("."):
                continue
            path = (COMPOSE_DIR / source).resolve()
            if path == POLICY_DIR.resolve():
                continue  # rendered by `keyvault policy render`; init.sh copes with none
            assert path.is_file(), f"{spec}: {path} is missing"


def test_the_policy_mount_is_the_rendered_vault_policies() -> None:
    mounts = _compose()["services"]["openbao-init"]["volumes"]
    assert "../policies/vault:/policies:ro" in mounts


def test_the_stack_config_example_is_a_valid_keyvault_config() -> None:
    config = load_config(COMPOSE_DIR / "keyvault.toml", {"HOME": "/nonexistent"})
    assert config.store == "vault://secret/keyvault"
    assert config.wrappers == ("transit://transit/platform",)
    assert config.settings["s3"]["endpoint_url"] == "http://127.0.0.1:8333"
    assert config.settings["vault"]["address"] == "http://127.0.0.1:8200"


def test_the_dev_s3_identity_matches_the_init_container() -> None:
    import json

    identities = json.loads((COMPOSE_DIR / "seaweedfs" / "s3.json").read_text())["identities"]
    creds = {c["accessKey"]: c["secretKey"] for i in identities for c in i["credentials"]}
    env = _compose()["services"]["s3-init"]["environment"]
    assert creds[env["AWS_ACCESS_KEY_ID"]] == env["AWS_SECRET_ACCESS_KEY"]


def _has_compose() -> bool:
    if shutil.which("docker") is None:
        return False
    run = subprocess.run(
        ["docker", "compose", "version"], capture_output=True, text=True, timeout=30, check=False
    )
    return run.returncode == 0


@pytest.mark.skipif(
    not _has_compose(),
    reason="docker with the compose plugin is not installed here (the YAML checks above run)",
)
def test_docker_compose_config() -> None:
    run = subprocess.run(
        ["docker", "compose", "-f", str(COMPOSE), "config", "--quiet"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 0, run.stderr


def test_shell_scripts_parse() -> None:
    for script in (COMPOSE_DIR / "openbao" / "init.sh", COMPOSE_DIR / "seaweedfs" / "init.sh"):
        run = subprocess.run(["sh", "-n", str(script)], capture_output=True, text=True, check=False)
        assert run.returncode == 0, f"{script}: {run.stderr}"


def _policies(target: Path) -> dict[str, str]:
    """The rendered Vault policies: issue 6's files if present, else rendered here."""
    rendered = {p.stem: p.read_text() for p in sorted(POLICY_DIR.glob("*.hcl"))}
    if not rendered:
        from keyvault.policy import parse_policy, render_vault

        rendered = render_vault(
            parse_policy(
                "version = 1\n"
                '[teams.team-a]\nguns = ["registry.example.com/team-a/*"]\n'
                'members = ["local:alice"]\nci = ["vault:meta:role=ci-team-a"]\n'
                'store = "vault://secret/keyvault"\nwrappers = ["transit://transit/team-a"]\n'
                '[teams.team-b]\nguns = ["registry.example.com/team-b/*"]\n'
                'members = ["local:bob"]\nstore = "vault://kv-b/keyvault"\n'
                'wrappers = ["transit://transit-b/team-b"]\n'
            )
        )
    target.mkdir()
    for name, text in rendered.items():
        (target / f"{name}.hcl").write_text(text)
    return rendered


def test_openbao_init_loads_policies_mounts_and_derived_keys(
    make_bao: Callable[..., Any], tmp_path: Path
) -> None:
    from fixtures.vault import ROOT_TOKEN, bao_binary

    server = make_bao()
    policies = _policies(tmp_path / "policies")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "bao").symlink_to(bao_binary())
    env = {
        "PATH": f"{bin_dir}{os.pathsep}/usr/bin:/bin",
        "HOME": str(tmp_path),
        "BAO_ADDR": server.address,
        "BAO_TOKEN": ROOT_TOKEN,
        "POLICY_DIR": str(tmp_path / "policies"),
    }
    for _ in range(2):  # idempotent: a second `docker compose up` runs it again
        run = subprocess.run(
            ["sh", str(COMPOSE_DIR / "openbao" / "init.sh")],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert run.returncode == 0, run.stdout + run.stderr
    root = server.root()
    loaded = set(root.sys.list_acl_policies()["data"]["keys"])
    assert set(policies) <= loaded
    mounts = root.sys.list_mounted_secrets_engines()["data"]
    named = [
        m
        for text in policies.values()
        for m in re.findall(r'^path "([\w.-]+)/encrypt/([\w.-]+)"', text, re.MULTILINE)
    ]
    assert named, "the policies name no Transit key"
    for mount, key in named:
        assert mounts[f"{mount}/"]["type"] == "transit"
        info = root.secrets.transit.read_key(key, mount_point=mount)["data"]
        assert info["type"] == "aes256-gcm96" and info["derived"] is True
    for mount in {
        m
        for text in policies.values()
        for m in re.findall(r'^path "([\w.-]+)/data/', text, re.MULTILINE)
    }:
        assert mounts[f"{mount}/"]["options"]["version"] == "2"
    # A dev token per policy, acting with exactly that policy.
    for name in policies:
        lookup = root.auth.token.lookup(name)["data"]
        assert lookup["policies"] == ["default", name] or lookup["policies"] == [name]


def test_openbao_init_without_policies_still_prepares_the_engines(
    make_bao: Callable[..., Any], tmp_path: Path
) -> None:
    from fixtures.vault import ROOT_TOKEN, bao_binary

    server = make_bao()
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "bao").symlink_to(bao_binary())
    env = {
        "PATH": f"{bin_dir}{os.pathsep}/usr/bin:/bin",
        "HOME": str(tmp_path),
        "BAO_ADDR": server.address,
        "BAO_TOKEN": ROOT_TOKEN,
        "POLICY_DIR": str(tmp_path / "none"),
    }
    run = subprocess.run(
        ["sh", str(COMPOSE_DIR / "openbao" / "init.sh")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    assert "keyvault policy render" in run.stderr
