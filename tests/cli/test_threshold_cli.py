"""Dual control for root keys: a root envelope under a 2-of-3 group of age identities."""

from __future__ import annotations

from pathlib import Path

import pytest

from cli.conftest import KV
from keyvault.trust.sample import write_sample_trust_dir
from keyvault.wrappers.age import generate_identity


def test_a_root_key_under_two_of_three_opens_with_two_and_not_one(
        kv: KV, home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    keys = write_sample_trust_dir(home / ".docker" / "trust",
                                  dict.fromkeys(("root", "targets", "snapshot"), "p"),
                                  ("example.com/dual/app",))
    root = next(k for k in keys if k.role == "root")
    identities = [tmp_path / f"officer-{i}.txt" for i in range(3)]
    recipients = [generate_identity(p) for p in identities]
    wrappers = [arg for r in recipients for arg in ("--wrapper", r)]
    assert kv("--store", (tmp_path / "store").as_uri(), *wrappers, "init").code == 0
    run = kv(*wrappers, "--json", "backup", "--role", "root", "--threshold", "2")
    assert run.code == 0, run.err

    def restore_with(*officers: int) -> int:
        monkeypatch.setenv("KEYVAULT_AGE_IDENTITY",
                           ",".join(str(identities[i]) for i in officers))
        where = tmp_path / ("restore-" + "-".join(map(str, officers)))
        code = kv(*wrappers, "--trust-dir", where, "restore", "--role", "root").code
        if code == 0:
            assert (where / "private" / root.relpath).read_bytes() == root.data
        else:
            assert not where.exists()
        return code

    assert restore_with(0, 2) == 0
    assert restore_with(1, 2) == 0
    assert restore_with(1) == 4
    too_many = kv(*wrappers, "backup", "--role", "targets", "--threshold", "4")
    assert too_many.code == 2 and "needs at least 4 wrappers" in too_many.err
