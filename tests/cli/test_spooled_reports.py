"""Bulk backup and restore keep a bounded window of per-key records in memory (#20).

The report and the rollback records of a run beyond ``keyvault.spool.WINDOW`` go to
an unnamed spool file. These tests set the window to 3, so a restore and a backup of
a few dozen keys (and trust pins) against the file store take the spill path, and
check that the output is the same bytes, that a failure after every write still
undoes every one, that no spool ever held more than the window, and that no spool
holds key bytes.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from fixtures.host import tree

from cli.conftest import KV
from keyvault import spool
from keyvault.errors import AccessDeniedError, ConflictError
from keyvault.spool import Spool, Stats
from keyvault.trust import restore as restore_mod
from keyvault.trust.model import KeyFile
from keyvault.trust.sample import write_sample_trust_dir

GUNS = tuple(f"example.com/spool/app{i}" for i in range(8))
WINDOW = 3


@pytest.fixture
def backed_up(kv: KV, home: Path) -> tuple[KeyFile, ...]:
    keys = write_sample_trust_dir(
        home / ".docker" / "trust", dict.fromkeys(("root", "targets", "snapshot"), "p"), GUNS
    )
    assert kv("init").code == 0
    assert kv("backup").code == 0
    return tuple(keys)


@pytest.fixture
def spools(monkeypatch: pytest.MonkeyPatch) -> list[Spool[object]]:
    """Every spool made while the test runs (to check each is closed when a command ends)."""
    made: list[Spool[object]] = []
    real_init = Spool.__init__

    def noting_init(self: Spool[object], *args: Any, **kwargs: Any) -> None:
        real_init(self, *args, **kwargs)
        made.append(self)

    monkeypatch.setattr(Spool, "__init__", noting_init)
    return made


def _window(monkeypatch: pytest.MonkeyPatch, window: int) -> None:
    monkeypatch.setattr(spool, "WINDOW", window)
    Stats.reset()


def _same_output_both_ways(
    kv: KV, monkeypatch: pytest.MonkeyPatch, args: tuple[str | Path, ...], target: Path | None
) -> tuple[str, str]:
    """The run's stdout with the default window (nothing spilled) and with a window of 3."""
    outputs = []
    for window in (spool.WINDOW, WINDOW):
        _window(monkeypatch, window)
        if target is not None:
            shutil.rmtree(target, ignore_errors=True)
        run = kv(*args)
        assert run.code == 0, run.err
        outputs.append(run.out)
    assert Stats.peak == WINDOW  # the second run did spill, and held no more than that
    return outputs[0], outputs[1]


def _as_emit_json_wrote_it(out: str, json_out: bool) -> None:
    """A streamed document is the very text the whole one was (emit_json's, before #20)."""
    if json_out:
        assert out == json.dumps(json.loads(out), indent=2, sort_keys=True) + "\n"


@pytest.mark.parametrize("json_out", [True, False])
def test_restore_output_is_the_same_bytes_with_and_without_spilling(
    kv: KV,
    backed_up: tuple[KeyFile, ...],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    json_out: bool,
    spools: list[Spool[object]],
) -> None:
    target = tmp_path / "restored"
    json_flag = ["--json"] if json_out else []
    args: tuple[str | Path, ...] = ("--trust-dir", target, *json_flag, "restore", "--all")
    whole, spilled = _same_output_both_ways(kv, monkeypatch, args, target)
    assert whole == spilled
    _as_emit_json_wrote_it(whole, json_out)
    assert whole.count("example.com/spool/app") >= 2 * len(GUNS)  # every GUN's two keys
    assert spools and all(s.closed for s in spools)  # each file freed when the command ended


@pytest.mark.parametrize("json_out", [True, False])
def test_backup_output_is_the_same_bytes_with_and_without_spilling(
    kv: KV,
    backed_up: tuple[KeyFile, ...],
    monkeypatch: pytest.MonkeyPatch,
    json_out: bool,
    spools: list[Spool[object]],
) -> None:
    args: tuple[str | Path, ...] = (*(["--json"] if json_out else []), "backup")
    whole, spilled = _same_output_both_ways(kv, monkeypatch, args, None)
    assert whole == spilled
    _as_emit_json_wrote_it(whole, json_out)
    assert whole.count("unchanged") >= len(backed_up)
    assert spools and all(s.closed for s in spools)


def test_a_failed_backup_reports_each_error_from_the_spool(
    kv: KV, backed_up: tuple[KeyFile, ...], home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failed key's error (kind, exit code, message, hint, wrapper) comes back whole
    from the spool: the same document, the same grouped warning, the same exit code."""
    from keyvault.ops import backup as backup_ops

    for key in backed_up[-2:]:
        changed = home / ".docker" / "trust" / "private" / key.relpath
        changed.write_bytes(changed.read_bytes() + b"\n")

    def refused(run: object, key: KeyFile, *args: object, **kw: object) -> object:
        error = AccessDeniedError(f"refused {key.key_id}", hint="a test")
        error.wrapper = "awskms:///alias/test"
        raise error

    monkeypatch.setattr(backup_ops, "_write", refused)
    runs = []
    for window in (spool.WINDOW, WINDOW):
        _window(monkeypatch, window)
        runs += [kv("--json", "backup"), kv("backup")]
    assert Stats.peak == WINDOW
    assert [r.code for r in runs] == [4] * 4
    assert runs[0].out == runs[2].out and (runs[1].out, runs[1].err) == (runs[3].out, runs[3].err)
    failed = [k for k in runs[2].json()["keys"] if k["action"] == "failed"]
    assert [f["key_id"] for f in failed] == [k.key_id for k in backed_up[-2:]]
    assert failed[0]["error"] == {
        "error": "access-denied",
        "exit_code": 4,
        "message": f"refused {backed_up[-2].key_id}",
        "hint": "a test",
    }
    assert "wrapper awskms:///alias/test failed for 2 keys (access-denied" in runs[3].err


def test_a_failure_after_every_write_undoes_all_of_them_through_the_spool(
    kv: KV,
    backed_up: tuple[KeyFile, ...],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    spools: list[Spool[object]],
) -> None:
    """Every file but the last is in place (created or replaced) when the restore fails:
    the rollback records, most of them spilled, undo each one."""
    target = tmp_path / "target"
    (target / "private").mkdir(parents=True)
    replaced = [target / "private" / k.relpath for k in backed_up[:2]]
    for path in replaced:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"an older copy\n")
    before = tree(target)
    _window(monkeypatch, WINDOW)
    real_commit = restore_mod._Transaction._commit_one
    calls: list[restore_mod.PlannedWrite] = []
    committed: list[int] = []

    def fail_at_the_last(self: restore_mod._Transaction, planned: restore_mod.PlannedWrite) -> None:
        calls.append(planned)
        if len(calls) == len(backed_up):  # the last key
            committed.append(len(self.committed))
            raise ConflictError("the disk changed under the restore")
        real_commit(self, planned)

    monkeypatch.setattr(restore_mod._Transaction, "_commit_one", fail_at_the_last)
    run = kv("--trust-dir", target, "restore", "--all", "--force")
    assert run.code == 7, run.out + run.err
    assert committed == [len(calls) - 1] and committed[0] > 3 * WINDOW  # most were spilled
    assert Stats.peak == WINDOW
    after = tree(target)
    after.pop(".keyvault.lock", None)
    assert after == before
    assert all(p.read_bytes() == b"an older copy\n" for p in replaced)
    assert spools and all(s.closed for s in spools)  # each file freed on the failure too


def test_no_spool_holds_key_bytes_or_their_digest(
    kv: KV,
    backed_up: tuple[KeyFile, ...],
    home: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    spilled: list[bytes] = []
    real_close = Spool.close

    def reading_close(self: Spool[object]) -> None:
        if self._held and not self.closed:
            self._spill()  # what is still held would have gone there too: look at it all
        if self._file is not None:
            self._file.flush()
            spilled.append(os.pread(self._file.fileno(), 1 << 24, 0))
        real_close(self)

    monkeypatch.setattr(Spool, "close", reading_close)
    _window(monkeypatch, WINDOW)
    changed = home / ".docker" / "trust" / "private" / backed_up[0].relpath
    changed.write_bytes(changed.read_bytes() + b"\n")  # so the backup writes something
    assert kv("backup").code == 0
    target = tmp_path / "restored"
    assert kv("--trust-dir", target, "restore", "--all").code == 0
    everything = b"".join(spilled)
    for key in backed_up:  # in the backup's report, the restore's, its rollback records
        assert everything.count(key.key_id.encode()) >= 3
    for key in backed_up:
        data = (target / "private" / key.relpath).read_bytes()
        body = [line for line in data.splitlines() if len(line) >= 32 and b":" not in line]
        assert body and not any(line in everything for line in body), key.relpath
        digest = hashlib.sha256(data).digest()
        assert digest.hex().encode() not in everything and digest not in everything
