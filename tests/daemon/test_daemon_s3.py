"""F01 for the daemon: the S3 store (SeaweedFS) stopped while keys are created, then started."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fixtures.s3 import ADMIN, REGION, WeedServer, new_bucket, weed_server
from fixtures.servers import wait_for

from daemon.conftest import DaemonEnv, make_key, write_key


@pytest.fixture(scope="module")
def own_weed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WeedServer]:
    """A SeaweedFS of this module's own: these tests stop and start it."""
    with weed_server(tmp_path_factory.mktemp("daemon-weed")) as server:
        yield server


def _use_s3(env: DaemonEnv, weed: WeedServer, bucket: str) -> None:
    config = env.root / "home" / ".config" / "keyvault" / "config.toml"
    text = config.read_text().replace(  # init left the default store out
        "[keyvault]\n", f'[keyvault]\nstore = "s3://{bucket}/daemon"\n', 1
    )
    assert f"s3://{bucket}/daemon" in text
    config.write_text(
        text + f'\n[s3]\nendpoint_url = "{weed.endpoint}"\nregion = "{REGION}"\n'
        'addressing_style = "path"\nconnect_timeout = 1\nread_timeout = 5\n'
        "max_attempts = 1\n"
    )
    env.env.update({"AWS_ACCESS_KEY_ID": ADMIN[0], "AWS_SECRET_ACCESS_KEY": ADMIN[1]})


def _stored(weed: WeedServer, bucket: str) -> dict[str, int]:
    """Key ID -> number of versions in the bucket."""
    counts: dict[str, int] = {}
    pages = weed.admin().get_paginator("list_object_versions").paginate(Bucket=bucket)
    for page in pages:
        for version in page.get("Versions", []):
            if "/audit/" in version["Key"]:  # the audit log's checkpoints, not keys
                continue
            key_id = Path(version["Key"]).stem
            counts[key_id] = counts.get(key_id, 0) + 1
    return counts


@pytest.mark.proves("F01")
def test_store_down_while_keys_are_created_then_back(
    daemon_env: DaemonEnv, own_weed: WeedServer
) -> None:
    bucket = new_bucket(own_weed)
    _use_s3(daemon_env, own_weed, bucket)
    daemon = daemon_env.start("--retry-max", "1")
    first_id, first = make_key()
    write_key(daemon_env.trust, first, first_id)
    wait_for(lambda: _stored(own_weed, bucket).get(first_id) == 1, "the first key in S3")
    # the start-up reconciliations (at start and once the watch has settled) are done
    wait_for(lambda: len(daemon.events("reconciled")) >= 2, "the settle reconciliation")

    own_weed.stop()
    keys = dict(make_key() for _ in range(5))
    for key_id, data in keys.items():
        write_key(daemon_env.trust, data, key_id)
    wait_for(
        lambda: daemon.metric("keyvault_daemon_failures_total", kind="unavailable") >= 5,
        "failed attempts while the store is down",
    )
    health = daemon.health()
    assert health["keys_pending"] == 5 and health["status"] == "degraded"
    assert daemon.metric("keyvault_daemon_oldest_pending_age_seconds") > 0
    assert daemon.proc.poll() is None

    own_weed.start()
    wait_for(
        lambda: _stored(own_weed, bucket) == {first_id: 1, **dict.fromkeys(keys, 1)},
        "every key in S3 exactly once",
        timeout=60,
    )
    wait_for(lambda: daemon.health()["keys_pending"] == 0, "an empty journal")
    assert daemon.health()["status"] == "ok"
    assert daemon.metric("keyvault_daemon_backups_total", action="created") == 6
    failed = daemon.events("backup-failed")
    assert failed and {f["kind"] for f in failed} == {"unavailable"}
    assert all("SECRET" not in line for line in daemon.log_text().splitlines())
    assert daemon.terminate() == 0
