"""SeaweedFS enforces the per-team prefixes that ``policy render --target aws`` grants.

Per-team identities are added at runtime with ``weed shell`` (s3.configure,
as tests/fixtures/s3.py does), scoped to exactly the prefix the rendered member IAM
policy names. A team's identity cannot read, write or list the other team's
prefix; through keyvault (its own check off) the refusal is exit 4.
"""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

import pytest
from fixtures.components import find_tool
from fixtures.s3 import REGION, WeedServer, new_bucket, s3_client

from keyvault.cli.app import main
from keyvault.policy import parse_policy, render_aws
from keyvault.trust.sample import write_sample_trust_dir

pytestmark = pytest.mark.proves("T3")

PASS = "correct horse"


def team_resource(bucket: str, team: str) -> str:
    """The object prefix the rendered member policy grants (bucket/prefix/v1/teams/T/)."""
    text = (
        f'[teams.{team}]\nguns = ["example.com/{team}/*"]\nmembers = ["local:x"]\n'
        f'store = "s3://{bucket}/prod"\n'
    )
    doc = render_aws(parse_policy(text))[f"keyvault-{team}-member"]
    objects = next(s for s in doc["Statement"] if "s3:PutObject" in s["Action"])
    return str(objects["Resource"]).removeprefix("arn:aws:s3:::")


def add_identity(weed: WeedServer, name: str, creds: tuple[str, str], resource: str) -> None:
    actions = ",".join(f"{a}:{resource}" for a in ("Read", "Write", "List"))
    script = (
        f"s3.configure -user={name} -access_key={creds[0]} -secret_key={creds[1]} "
        f"-actions={actions} -apply\n"
    )
    master = f"127.0.0.1:{weed.ports['master.port']}.{weed.ports['master.port.grpc']}"
    filer = f"127.0.0.1:{weed.ports['filer.port']}.{weed.ports['filer.port.grpc']}"
    subprocess.run(
        [find_tool("weed"), "shell", f"-master={master}", f"-filer={filer}"],
        input=script + "exit\n",
        text=True,
        capture_output=True,
        timeout=30,
        check=True,
    )


@pytest.fixture
def teams(weed: WeedServer) -> dict[str, object]:
    bucket = new_bucket(weed)
    tag = uuid.uuid4().hex[:6]
    out: dict[str, object] = {"bucket": bucket}
    for team in ("team-a", "team-b"):
        creds = (f"K{team[-1].upper()}{tag}".upper(), f"secret-{team}-{tag}")
        add_identity(weed, f"{team}-{tag}", creds, team_resource(bucket, team))
        out[team] = creds
    return out


def denied(call: object) -> bool:
    import botocore.exceptions

    try:
        call()  # type: ignore[operator]
    except botocore.exceptions.ClientError as exc:
        return bool(exc.response["ResponseMetadata"]["HTTPStatusCode"] == 403)
    return False


def test_each_team_identity_reaches_only_its_prefix(
    weed: WeedServer, teams: dict[str, object]
) -> None:
    bucket = str(teams["bucket"])
    a = s3_client(weed.endpoint, teams["team-a"])  # type: ignore[arg-type]
    b = s3_client(weed.endpoint, teams["team-b"])  # type: ignore[arg-type]
    key_a = "prod/v1/teams/team-a/root/" + "1" * 64 + ".json"
    key_b = "prod/v1/teams/team-b/root/" + "2" * 64 + ".json"
    a.put_object(Bucket=bucket, Key=key_a, Body=b"a")
    b.put_object(Bucket=bucket, Key=key_b, Body=b"b")
    assert a.get_object(Bucket=bucket, Key=key_a)["Body"].read() == b"a"
    listed = a.list_objects_v2(Bucket=bucket, Prefix="prod/v1/teams/team-a/")
    assert [o["Key"] for o in listed["Contents"]] == [key_a]
    assert denied(lambda: b.get_object(Bucket=bucket, Key=key_a))
    assert denied(lambda: b.put_object(Bucket=bucket, Key=key_a, Body=b"evil"))
    assert denied(lambda: b.list_objects_v2(Bucket=bucket, Prefix="prod/v1/teams/team-a/"))
    assert denied(lambda: a.get_object(Bucket=bucket, Key=key_b))
    assert weed.admin().get_object(Bucket=bucket, Key=key_a)["Body"].read() == b"a"


def test_keyvault_with_its_check_off_gets_exit_4_from_seaweedfs(
    weed: WeedServer,
    teams: dict[str, object],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    bucket = str(teams["bucket"])
    trust = tmp_path / "trust"
    write_sample_trust_dir(
        trust, {"root": PASS, "targets": PASS, "snapshot": PASS}, ["example.com/team-a/app"]
    )
    policy = tmp_path / "policy.toml"
    policy.write_text(
        '[teams.team-a]\nguns = ["example.com/team-a/*"]\nmembers = ["local:x"]\n'
        '[teams.team-b]\nguns = ["example.com/team-b/*"]\nmembers = ["local:y"]\n'
    )
    config = tmp_path / "config.toml"
    config.write_text(
        f'[keyvault]\nteam = "team-a"\nstore = "s3://{bucket}/prod"\n'
        f'policy = "{policy}"\n\n[s3]\nendpoint_url = "{weed.endpoint}"\n'
        f'region = "{REGION}"\naddressing_style = "path"\nmax_attempts = 1\n'
    )
    for key in list(__import__("os").environ):
        if key.startswith(("KEYVAULT_", "AWS_")):
            monkeypatch.delenv(key)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    monkeypatch.setenv("KEYVAULT_UNSAFE_SKIP_POLICY_CHECK", "1")
    creds_b = teams["team-b"]
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", creds_b[0])  # type: ignore[index]
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", creds_b[1])  # type: ignore[index]
    identity = tmp_path / "id.txt"
    subprocess.run(["age-keygen", "-o", str(identity)], capture_output=True, check=True)
    recipient = next(
        line.split(": ")[1] for line in identity.read_text().splitlines() if "public key" in line
    )
    capsys.readouterr()
    code = main(
        ["--config", str(config), "--wrapper", recipient, "--trust-dir", str(trust), "backup"]
    )
    err = capsys.readouterr().err
    assert code == 4, err
    assert "AccessDenied" in err or "403" in err or "denied" in err.lower()
    listed = weed.admin().list_objects_v2(Bucket=bucket, Prefix="prod/v1/teams/team-a/")
    assert listed.get("KeyCount", 0) == 0
    # The control: team A's own identity backs up the same keys through the same store.
    creds_a = teams["team-a"]
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", creds_a[0])  # type: ignore[index]
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", creds_a[1])  # type: ignore[index]
    code = main(
        ["--config", str(config), "--wrapper", recipient, "--trust-dir", str(trust), "backup"]
    )
    assert code == 0, capsys.readouterr().err
    listed = weed.admin().list_objects_v2(Bucket=bucket, Prefix="prod/v1/teams/team-a/")
    keys = [o["Key"] for o in listed.get("Contents", []) if "/audit/" not in o["Key"]]
    assert len(keys) == 3  # and the audit log's checkpoint
