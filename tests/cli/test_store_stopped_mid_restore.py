"""F02 mid-way: the S3 server is killed after a restore has read some envelopes (#21).

A CuttingProxy in front of a private SeaweedFS lets the listing and the first
envelope reads through, cuts the third envelope read in half, kills the server
and refuses every later connection. The restore (all or nothing) exits 6,
names the unreachable store and how many keys it never started, and leaves
the target trust directory exactly as it was; with the server back, the same
restore completes.
"""

from __future__ import annotations

from pathlib import Path

from fixtures.host import tree
from fixtures.proxy import CuttingProxy
from fixtures.s3 import new_bucket, weed_server
from fixtures.servers import BackendSetup

from cli.conftest import KV
from cli.test_aws_cli import aws, trust, weed_endpoint, write_config  # noqa: F401 - fixtures
from keyvault.trust.model import KeyFile


def is_envelope_read(data: bytes) -> bool:
    line = data.split(b"\r\n", 1)[0]
    return line.startswith(b"GET /") and b".json" in line and b"/audit/" not in line


def test_s3_stopped_mid_restore_writes_nothing_then_a_rerun_restores(
    kv: KV,
    aws: BackendSetup,  # noqa: F811
    home: Path,
    tmp_path: Path,
    trust: tuple[Path, tuple[KeyFile, ...]],  # noqa: F811
) -> None:
    _, keys = trust
    with weed_server(tmp_path / "weed-f02") as weed:
        bucket = new_bucket(weed)
        direct = BackendSetup(
            aws.name,
            f"s3://{bucket}/kv",
            aws.wrappers,
            aws.env,
            aws.config_toml.replace(weed_endpoint(aws), weed.endpoint),
        )
        assert kv("--config", write_config(home, direct), "backup").code == 0
        target = tmp_path / "laptop" / "trust"
        (target / "private").mkdir(parents=True, mode=0o700)
        (target / "private" / "keep.txt").write_text("already here\n")
        before = tree(target)
        proxy = CuttingProxy(
            weed.ports["s3.port"],
            cut_at=3,
            is_write=is_envelope_read,
            on_cut=weed.kill,
            refuse_after=True,
        )
        via_proxy = BackendSetup(
            aws.name,
            direct.store,
            aws.wrappers,
            aws.env,
            aws.config_toml.replace(weed_endpoint(aws), f"http://127.0.0.1:{proxy.port}"),
        )
        run = kv(
            "--config", write_config(home, via_proxy), "--trust-dir", target, "restore", "--all"
        )
        proxy.close()
        assert proxy.cut.is_set() and proxy.writes >= 3  # two envelopes were read whole
        assert run.code == 6, run.err
        assert "cannot reach" in run.err
        assert f"of {len(keys)} keys were not attempted and nothing was written" in run.err
        assert tree(target) == before
        weed.start()
        again = kv(
            "--config", write_config(home, direct), "--trust-dir", target, "restore", "--all"
        )
        assert again.code == 0, again.err
        assert (target / "private" / "keep.txt").read_text() == "already here\n"
        assert all((target / "private" / k.relpath).read_bytes() == k.data for k in keys)
