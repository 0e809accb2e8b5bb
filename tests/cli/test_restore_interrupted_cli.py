"""B40 at the CLI: Ctrl-C (or SIGTERM) once some files are in place exits 130 (143) and
leaves the trust directory exactly as it was: replaced files back, new ones gone."""

from __future__ import annotations

from pathlib import Path

import pytest
from fixtures.host import tree

from cli.conftest import KV
from keyvault.cli import app as cli_app
from keyvault.trust import restore as restore_mod
from keyvault.trust.sample import write_sample_trust_dir

GUN = "example.com/team-a/app"


@pytest.mark.proves("B40")
@pytest.mark.parametrize(("raised", "code"), [(KeyboardInterrupt, 130), (cli_app._Terminated, 143)])
def test_an_interrupted_restore_exits_130_or_143_and_undoes_every_file(
    kv: KV,
    home: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    raised: type[BaseException],
    code: int,
) -> None:
    keys = write_sample_trust_dir(
        home / ".docker" / "trust", dict.fromkeys(("root", "targets", "snapshot"), "pw"), (GUN,)
    )
    assert kv("init").code == 0 and kv("backup").code == 0
    target = tmp_path / "target"
    (target / "private").mkdir(parents=True)
    replaced = target / "private" / keys[0].relpath
    replaced.write_bytes(b"an older copy\n")
    before = tree(target)
    real_commit = restore_mod._Transaction._commit_one
    calls = []

    def interrupted(self: restore_mod._Transaction, planned: restore_mod.PlannedWrite) -> None:
        calls.append(planned)
        if len(calls) == len(keys):  # every other file is in place by now
            raise raised
        real_commit(self, planned)

    monkeypatch.setattr(restore_mod._Transaction, "_commit_one", interrupted)
    run = kv("--trust-dir", target, "restore", "--all", "--force")
    assert run.code == code, run.out + run.err
    assert len(calls) == len(keys)
    after = tree(target)
    after.pop(".keyvault.lock", None)
    assert after == before
    assert replaced.read_bytes() == b"an older copy\n"
