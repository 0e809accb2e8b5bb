"""The CLI on S3 (SeaweedFS) + AWS KMS (moto): round trips, versions, swaps, faults."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from fixtures.host import tree
from fixtures.kms import KmsKey, MotoServer, kms_settings
from fixtures.kms_responder import ARN, Responder, error
from fixtures.proxy import CuttingProxy
from fixtures.s3 import ADMIN, WeedServer, new_bucket, s3_client, s3_settings, weed_server
from fixtures.servers import BackendSetup
from notarykit import BuiltTrustDir

from cli.conftest import KV
from keyvault.config import load_config
from keyvault.trust.model import KeyFile
from keyvault.trust.sample import write_sample_trust_dir

PASS = "correct horse"
GUNS = ("example.com/team-a/app", "example.com/team-a/web")


def write_config(
    home: Path,
    setup: BackendSetup,
    *,
    store: str | None = None,
    wrappers: tuple[str, ...] | None = None,
    extra: str = "",
) -> Path:
    path = home / "kv-aws.toml"
    lines = [
        "[keyvault]",
        'team = "team-a"',
        f"store = {json.dumps(store or setup.store)}",
        f"wrappers = {json.dumps(list(wrappers or setup.wrappers))}",
        "concurrency = 1",
        "",
    ]
    path.write_text("\n".join(lines) + setup.config_toml + extra)
    return path


@pytest.fixture
def aws(s3_kms_backend: BackendSetup, home: Path, monkeypatch: pytest.MonkeyPatch) -> BackendSetup:
    for key in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_REGION"):
        monkeypatch.delenv(key, raising=False)
    for key, value in s3_kms_backend.env.items():
        monkeypatch.setenv(key, value)
    return s3_kms_backend


@pytest.fixture
def trust(home: Path) -> tuple[Path, tuple[KeyFile, ...]]:
    path = home / ".docker" / "trust"
    passphrases = {"root": PASS, "targets": PASS, "snapshot": PASS}
    return path, write_sample_trust_dir(path, passphrases, GUNS)


def bucket_of(setup: BackendSetup) -> str:
    return setup.store.removeprefix("s3://").split("/")[0]


def test_round_trip_through_s3_and_kms(
    kv: KV,
    aws: BackendSetup,
    home: Path,
    weed: WeedServer,
    trust: tuple[Path, tuple[KeyFile, ...]],
    tmp_path: Path,
) -> None:
    _, keys = trust
    config = write_config(home, aws)
    run = kv("--config", config, "--json", "backup")
    assert run.code == 0, run.err
    assert {k["action"] for k in run.json()["keys"]} == {"created"}
    listed = weed.admin().list_objects_v2(Bucket=bucket_of(aws), Prefix="keyvault/")
    envelopes = [o["Key"] for o in listed["Contents"] if "/audit/" not in o["Key"]]
    assert len(envelopes) == len(keys)
    assert len(listed["Contents"]) == len(keys) + 1  # and the audit log's checkpoint
    again = kv("--config", config, "--json", "backup")
    assert {k["action"] for k in again.json()["keys"]} == {"unchanged"}
    fresh = tmp_path / "laptop" / "trust"
    restored = kv("--config", config, "--trust-dir", fresh, "--json", "restore", "--all")
    assert restored.code == 0, restored.err
    for key in keys:
        assert (fresh / "private" / key.relpath).read_bytes() == key.data
    envelope = json.loads(
        weed.admin().get_object(Bucket=bucket_of(aws), Key=envelopes[0])["Body"].read()
    )
    (entry,) = envelope["wrapped_keys"]
    assert entry["uri"] == aws.wrappers[0] and entry["params"]["key_arn"].startswith("arn:aws:kms")
    assert set(entry["context"]) >= {"keyvault:team", "keyvault:role", "keyvault:key_id"}


def test_restore_a_chosen_version(
    kv: KV, aws: BackendSetup, home: Path, trust: tuple[Path, tuple[KeyFile, ...]], tmp_path: Path
) -> None:
    trust_dir, keys = trust
    config = write_config(home, aws)
    assert kv("--config", config, "backup").code == 0
    target = next(k for k in keys if k.role == "targets")
    path = trust_dir / "private" / target.relpath
    path.write_bytes(target.data + b"\n")
    run = kv("--config", config, "--json", "backup", "--key-id", target.key_id)
    assert run.code == 0, run.err
    versions = kv("--config", config, "--json", "versions", "--key-id", target.key_id)
    assert versions.code == 0, versions.err
    (found,) = versions.json()["keys"]
    assert [v["latest"] for v in found["versions"]] == [True, False]
    old = found["versions"][1]["version"]
    fresh = tmp_path / "old"
    restored = kv(
        "--config",
        config,
        "--trust-dir",
        fresh,
        "restore",
        "--key-id",
        target.key_id,
        "--version",
        old,
    )
    assert restored.code == 0, restored.err
    assert (fresh / "private" / target.relpath).read_bytes() == target.data
    latest = kv(
        "--config", config, "--trust-dir", tmp_path / "new", "restore", "--key-id", target.key_id
    )
    assert latest.code == 0
    assert (tmp_path / "new" / "private" / target.relpath).read_bytes() == target.data + b"\n"


@pytest.mark.proves("B25", "T6")
def test_envelope_copied_to_another_guns_name_is_refused(
    kv: KV,
    aws: BackendSetup,
    home: Path,
    weed: WeedServer,
    trust: tuple[Path, tuple[KeyFile, ...]],
    tmp_path: Path,
) -> None:
    """B25 / T6: moto enforces the context only if asked; keyvault's own binding (object
    name vs header, header AAD, commitment) refuses the swap whatever the KMS does."""
    _, keys = trust
    config = write_config(home, aws)
    assert kv("--config", config, "backup").code == 0
    app, web = (next(k for k in keys if k.role == "targets" and k.gun == g) for g in GUNS)
    admin = weed.admin()
    bucket = bucket_of(aws)
    src = f"keyvault/v1/teams/team-a/guns/{app.gun}/targets/{app.key_id}.json"
    dst = f"keyvault/v1/teams/team-a/guns/{web.gun}/targets/{web.key_id}.json"
    body = admin.get_object(Bucket=bucket, Key=src)["Body"].read()
    admin.put_object(Bucket=bucket, Key=dst, Body=body)  # a new version on top
    fresh = tmp_path / "ci"
    run = kv(
        "--config", config, "--trust-dir", fresh, "restore", "--gun", web.gun, "--role", "targets"
    )
    assert run.code == 5, run.err
    assert "moved or swapped" in run.err or "another key" in run.err
    assert not (fresh / "private" / web.relpath).exists()
    # The header edited to match the new name: the wrapped DEK's context (checked by
    # keyvault against the header) and the GCM AAD both refuse it.
    doc = json.loads(body)
    doc["header"]["gun"], doc["header"]["key_id"] = web.gun, web.key_id
    admin.put_object(Bucket=bucket, Key=dst, Body=json.dumps(doc).encode())
    again = kv(
        "--config", config, "--trust-dir", fresh, "restore", "--gun", web.gun, "--role", "targets"
    )
    assert again.code == 5, again.err
    assert not (fresh / "private" / web.relpath).exists()
    # The context rewritten too: the DEK still fails the commitment or the KMS context.
    doc["wrapped_keys"][0]["context"]["keyvault:gun"] = web.gun
    doc["wrapped_keys"][0]["context"]["keyvault:key_id"] = web.key_id
    admin.put_object(Bucket=bucket, Key=dst, Body=json.dumps(doc).encode())
    third = kv(
        "--config", config, "--trust-dir", fresh, "restore", "--gun", web.gun, "--role", "targets"
    )
    assert third.code == 5, third.err
    assert not (fresh / "private" / web.relpath).exists()


@pytest.mark.proves("B38")
def test_disabled_kms_key_is_a_clear_error_naming_the_key(
    kv: KV,
    aws: BackendSetup,
    home: Path,
    weed: WeedServer,
    responder: Responder,
    trust: tuple[Path, tuple[KeyFile, ...]],
) -> None:
    """B38, with the error real KMS sends for a disabled key (moto ignores key state)."""
    responder.script = [(400, error("DisabledException", f"{ARN} is disabled."))]
    uri = f"awskms://127.0.0.1:{responder.port}/{ARN}"
    config = write_config(home, aws, wrappers=(uri,))
    run = kv("--config", config, "backup")
    assert run.code == 4, run.err
    assert "disabled" in run.err and ARN in run.err
    assert "Contents" not in weed.admin().list_objects_v2(Bucket=bucket_of(aws))


def test_unknown_kms_key_is_not_found(
    kv: KV, aws: BackendSetup, home: Path, trust: tuple[Path, tuple[KeyFile, ...]]
) -> None:
    config = write_config(home, aws, wrappers=("awskms:///alias/kv-no-such-key",))
    run = kv("--config", config, "backup")
    assert run.code == 3, run.err
    assert "alias/kv-no-such-key" in run.err


@pytest.mark.proves("B21")
def test_missing_bucket_b21(
    kv: KV, aws: BackendSetup, home: Path, trust: tuple[Path, tuple[KeyFile, ...]]
) -> None:
    config = write_config(home, aws, store="s3://kv-no-such-bucket/x")
    run = kv("--config", config, "list")
    assert run.code == 3, run.err
    assert "bucket kv-no-such-bucket does not exist" in run.err


@pytest.mark.proves("B19")
def test_store_uri_without_bucket_b19(kv: KV, aws: BackendSetup, home: Path) -> None:
    config = write_config(home, aws, store="s3://")
    run = kv("--config", config, "list")
    assert run.code == 2 and "names no bucket" in run.err


# -- F01: the S3 server stopped in the middle of a backup -------------------------------


@pytest.mark.proves("F01")
def test_s3_stopped_mid_backup_then_rerun_completes(
    kv: KV, aws: BackendSetup, home: Path, tmp_path: Path, trust: tuple[Path, tuple[KeyFile, ...]]
) -> None:
    """F01: a clear error, no partial object, and a re-run completes."""
    trust_dir, keys = trust
    with weed_server(tmp_path / "weed-f01") as weed:
        bucket = new_bucket(weed)
        proxy = CuttingProxy(
            weed.ports["s3.port"],
            cut_at=3,
            is_write=lambda data: data.startswith(b"PUT "),
            on_cut=weed.kill,
        )
        via_proxy = BackendSetup(
            aws.name,
            f"s3://{bucket}/kv",
            aws.wrappers,
            aws.env,
            aws.config_toml.replace(weed_endpoint(aws), f"http://127.0.0.1:{proxy.port}"),
        )
        config = write_config(home, via_proxy)
        # One write at a time: with several in flight, one the server took whole just before
        # the SIGKILL may be stored with its reply lost, and SeaweedFS, once restarted, may
        # hide it from GET and listings for a moment while If-None-Match already sees it (the
        # re-run then reports a conflict, exit 7). Only the cut write is in flight here.
        run = kv("--config", config, "--json", "backup", "--jobs", "1")
        proxy.close()
        assert proxy.cut.is_set()
        assert run.code == 6, run.err + run.out
        errors = " ".join(json.dumps(k["error"]) for k in run.json()["keys"] if k["error"])
        assert "cannot reach" in errors, errors
        outcomes = {k["action"] for k in run.json()["keys"]}
        assert "failed" in outcomes and "created" in outcomes
        weed.start()  # same data directory and ports
        admin = s3_client(weed.endpoint, ADMIN)
        stored = [
            o
            for o in admin.list_objects_v2(Bucket=bucket).get("Contents", [])
            if "/audit/" not in o["Key"]
        ]  # envelopes, not the audit log's checkpoints
        created = [k for k in run.json()["keys"] if k["action"] == "created"]
        assert len(stored) == len(created)  # the interrupted object does not exist at all
        direct = BackendSetup(
            aws.name,
            f"s3://{bucket}/kv",
            aws.wrappers,
            aws.env,
            aws.config_toml.replace(weed_endpoint(aws), weed.endpoint),
        )
        config = write_config(home, direct)
        for obj in stored:  # and every object that exists is a whole, valid envelope
            assert json.loads(admin.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read())
        rerun = kv("--config", config, "--json", "backup")
        assert rerun.code == 0, rerun.err + rerun.out
        actions = [k["action"] for k in rerun.json()["keys"]]
        assert actions.count("unchanged") == len(created)
        assert actions.count("created") == len(keys) - len(created)
        fresh = tmp_path / "restored"
        restored = kv("--config", config, "--trust-dir", fresh, "restore", "--all")
        assert restored.code == 0, restored.err
        assert {p: v for p, v in tree(fresh / "private").items() if v[1] is not None} == {
            k.relpath: (tree(trust_dir / "private")[k.relpath]) for k in keys
        }


def weed_endpoint(setup: BackendSetup) -> str:
    for line in setup.config_toml.splitlines():
        if line.startswith("endpoint_url") and "127.0.0.1" in line:
            return json.loads(line.partition("=")[2].strip())  # type: ignore[no-any-return]
    raise AssertionError("no endpoint in the backend's config")


def test_the_test_servers_config_is_config_keyvault_accepts(
    aws: BackendSetup, home: Path, weed: WeedServer, moto_kms: MotoServer
) -> None:
    """The [s3] and [awskms] sections every test here writes pass keyvault's own config
    check (unknown keys are refused) and reach the backends unchanged."""
    config = load_config(write_config(home, aws), {"HOME": str(home)})
    assert config.settings["s3"] == s3_settings(weed)
    assert config.settings["awskms"] == kms_settings(moto_kms)


def test_moto_fixture_is_reachable(moto_kms: MotoServer) -> None:
    assert moto_kms.client().list_keys()["Keys"] is not None


def test_rewrap_kms_to_age_to_kms_and_rotate(
    kv: KV,
    aws: BackendSetup,
    home: Path,
    trust: tuple[Path, tuple[KeyFile, ...]],
    tmp_path: Path,
    make_kms_key: Callable[[], KmsKey],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """How a team retires a KMS key: KMS -> age (offline) -> a new KMS key; the sealed key
    files never change and restore byte-identical through each wrapper alone."""
    from keyvault.wrappers.age import generate_identity

    _, keys = trust
    config = write_config(home, aws)
    assert kv("--config", config, "backup").code == 0
    (old_kms,) = aws.wrappers
    identity = tmp_path / "offline.txt"
    age = generate_identity(identity)
    monkeypatch.setenv("KEYVAULT_AGE_IDENTITY", str(identity))

    def restore_with(wrapper: str, where: str) -> None:
        fresh = tmp_path / where
        run = kv("--config", config, "--wrapper", wrapper, "--trust-dir", fresh, "restore", "--all")
        assert run.code == 0, run.err
        for key in keys:
            assert (fresh / "private" / key.relpath).read_bytes() == key.data

    to_age = kv("--config", config, "--json", "rewrap", "--all", "--add", age, "--remove", old_kms)
    assert to_age.code == 0, to_age.err
    assert {tuple(k["after"]) for k in to_age.json()["keys"]} == {(age,)}
    restore_with(age, "via-age")
    new_kms = make_kms_key().alias_uri
    to_kms = kv(
        "--config",
        config,
        "--wrapper",
        age,
        "--json",
        "rewrap",
        "--all",
        "--add",
        new_kms,
        "--remove",
        age,
    )
    assert to_kms.code == 0, to_kms.err
    assert {tuple(k["after"]) for k in to_kms.json()["keys"]} == {(new_kms,)}
    restore_with(new_kms, "via-new-kms")
    denied = kv("--config", config, "--trust-dir", tmp_path / "old", "restore", "--all")
    assert denied.code == 4 and "not wrapped by any wrapper you hold" in denied.err
    rotated = kv("--config", config, "--wrapper", new_kms, "--json", "rewrap", "--all", "--rotate")
    assert rotated.code == 0, rotated.err
    assert {k["action"] for k in rotated.json()["keys"]} == {"rotated"}
    restore_with(new_kms, "after-rotate")


def test_exec_fetches_one_gun_through_s3_and_kms_and_wipes(
    kv: KV,
    aws: BackendSetup,
    home: Path,
    trust: tuple[Path, tuple[KeyFile, ...]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A CI job with S3 + KMS credentials (the standard AWS environment) gets one GUN's keys."""
    import sys

    _, keys = trust
    config = write_config(home, aws)
    assert kv("--config", config, "backup").code == 0
    runtime = tmp_path / "runtime"
    monkeypatch.setenv("KEYVAULT_TMPDIR", str(runtime))
    out = tmp_path / "seen.json"
    script = (
        "import json, os, sys; d = os.path.join(os.environ['KEYVAULT_TRUST_DIR'], "
        "'private'); json.dump(sorted(os.listdir(d)), open(sys.argv[1], 'w'))"
    )
    run = kv(
        "--config", config, "exec", "--gun", GUNS[0], "--", sys.executable, "-c", script, str(out)
    )
    assert run.code == 0, run.err
    expected = sorted(k.relpath for k in keys if k.gun == GUNS[0])
    assert json.loads(out.read_text()) == expected  # targets + snapshot of that GUN, no root
    assert not [p for p in runtime.rglob("*") if p.is_file() and p.suffix == ".key"]
    refused = kv("--config", config, "exec", "--gun", GUNS[0], "--role", "root", "--", "true")
    assert refused.code == 4


def test_keys_missing_a_fact_round_trip_through_s3_and_kms(
    kv: KV,
    aws: BackendSetup,
    home: Path,
    weed: WeedServer,
    loose_trust_dir: BuiltTrustDir,
    tmp_path: Path,
) -> None:
    """#18: notary's GUN-less and role-less keys, under nogun/ and norole/, KMS context and all."""
    config = write_config(home, aws)
    source = loose_trust_dir.path
    run = kv("--config", config, "--trust-dir", source, "--json", "backup")
    assert run.code == 0, run.err
    assert len(run.json()["keys"]) == len(loose_trust_dir.keys)
    listed = weed.admin().list_objects_v2(Bucket=bucket_of(aws), Prefix="keyvault/")
    names = [o["Key"] for o in listed["Contents"]]
    assert sum("/nogun/" in n for n in names) == 2 and sum("/norole/" in n for n in names) == 2
    fresh = tmp_path / "laptop" / "trust"
    restored = kv("--config", config, "--trust-dir", fresh, "restore", "--all")
    assert restored.code == 0, restored.err
    for key_id, _, _ in loose_trust_dir.keys:
        name = f"{key_id}.key"
        assert (fresh / "private" / name).read_bytes() == (source / "private" / name).read_bytes()
    norole = next(n for n in names if "/norole/" in n)
    envelope = json.loads(weed.admin().get_object(Bucket=bucket_of(aws), Key=norole)["Body"].read())
    (entry,) = envelope["wrapped_keys"]
    assert entry["context"]["keyvault:scope"] == "team" and "keyvault:role" not in entry["context"]
