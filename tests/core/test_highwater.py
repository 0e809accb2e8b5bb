"""This machine's high-water marks: never a lower version than one seen, nor a fork."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from fixtures.host import race

from keyvault import highwater
from keyvault.errors import AccessDeniedError, IntegrityError
from keyvault.highwater import HighWater, Mark

pytestmark = pytest.mark.proves("T2")

NAME = "v1/teams/a/root/" + "ab" * 32 + ".json"
D1, D2, D3 = "11" * 32, "22" * 32, "33" * 32


def test_marks_survive_between_runs_and_never_go_down(tmp_path: Path) -> None:
    marks = HighWater(tmp_path, "file:///store")
    assert marks.get(NAME) is None
    marks.check(NAME, 1, D1, "root key x")  # nothing seen yet: anything goes
    marks.note(NAME, 2, D2)
    marks.note(NAME, 1, D1)  # lower: ignored
    marks.save()
    again = HighWater(tmp_path, "file:///store")
    mark = again.get(NAME)
    assert mark is not None and (mark.sequence, mark.digest) == (2, D2)
    assert stat.S_IMODE(again.shard_path(NAME).stat().st_mode) == 0o600
    assert stat.S_IMODE(again.directory.stat().st_mode) == 0o700


def test_a_lower_number_is_a_rollback_and_another_same_number_a_fork(tmp_path: Path) -> None:
    marks = HighWater(tmp_path, "s3://bucket/p")
    marks.note(NAME, 3, D3)
    with pytest.raises(
        IntegrityError,
        match=r"root key x: rollback: .* number 2, older than "
        "version 3",
    ):
        marks.check(NAME, 2, D2, "root key x")
    with pytest.raises(IntegrityError, match="fork"):
        marks.check(NAME, 3, D1, "root key x")
    marks.check(NAME, 3, D3, "root key x")
    marks.check(NAME, 4, D1, "root key x")


def test_each_store_has_its_own_marks(tmp_path: Path) -> None:
    one = HighWater(tmp_path, "file:///one")
    one.note(NAME, 5, D1)
    one.save()
    assert HighWater(tmp_path, "file:///two").get(NAME) is None


def test_concurrent_savers_keep_the_highest_mark(tmp_path: Path) -> None:
    def save(i: int) -> None:
        marks = HighWater(tmp_path, "file:///store")
        marks.note(NAME, i + 1, f"{i:02d}" * 32)
        marks.note(f"{NAME}.{i}", 1, D1)
        marks.save()

    assert all(r is None for r in race(8, save))
    final = HighWater(tmp_path, "file:///store")
    mark = final.get(NAME)
    assert mark is not None and mark.sequence == 8
    assert all(final.get(f"{NAME}.{i}") is not None for i in range(8))


def test_a_corrupt_file_is_refused_not_reset(tmp_path: Path) -> None:
    marks = HighWater(tmp_path, "file:///store")
    marks.note(NAME, 1, D1)
    marks.save()
    marks.shard_path(NAME).write_text(json.dumps({"marks": {NAME: "not a pair"}}))
    with pytest.raises(IntegrityError, match=r"high-water file .* is corrupt"):
        HighWater(tmp_path, "file:///store").get(NAME)


def test_a_corrupt_file_of_an_earlier_version_is_refused_not_reset(tmp_path: Path) -> None:
    marks = HighWater(tmp_path, "file:///store")
    marks.directory.mkdir(mode=0o700)
    marks.path.write_text(json.dumps({"marks": {NAME: "not a pair"}}))
    marks.path.chmod(0o600)
    with pytest.raises(IntegrityError, match=r"high-water file .* is corrupt"):
        marks.get(NAME)
    assert marks.path.exists()


def test_the_single_file_of_earlier_versions_is_split_into_shards(tmp_path: Path) -> None:
    """A machine upgraded from the one-file layout keeps every mark it had."""
    old = HighWater(tmp_path, "file:///store")
    names = [f"v1/teams/a/guns/example.com/app{i}/targets/{'ab' * 32}.json" for i in range(40)]
    old.directory.mkdir(mode=0o700)
    old.path.write_text(
        json.dumps(
            {"store": "file:///store", "marks": {n: [i + 1, D1] for i, n in enumerate(names)}}
        )
    )
    old.path.chmod(0o600)
    marks = HighWater(tmp_path, "file:///store")
    with pytest.raises(IntegrityError, match="rollback"):
        marks.check(names[7], 7, D1, "targets key")  # it had seen number 8
    assert not marks.path.exists()
    again = HighWater(tmp_path, "file:///store")
    assert [again.get(n) for n in names] == [Mark(i + 1, D1) for i in range(40)]


def test_one_guns_marks_are_read_from_its_own_small_file(tmp_path: Path) -> None:
    """A machine that has seen many keys reads one GUN's marks from one shard, not all."""
    marks = HighWater(tmp_path, "file:///store")
    for g in range(300):
        for role in ("targets", "snapshot", "targets~releases"):
            marks.note(f"v1/teams/a/guns/example.com/app{g}/{role}/{'ab' * 32}.json", 1, D1)
    marks.save()
    gun = "v1/teams/a/guns/example.com/app7/"
    fresh = HighWater(tmp_path, "file:///store")
    assert fresh.get(gun + f"targets/{'ab' * 32}.json") == Mark(1, D1)
    assert fresh.get(gun + f"targets~releases/{'ab' * 32}.json") == Mark(1, D1)
    assert len(fresh._loaded) == 1  # one shard holds the GUN's three keys
    (loaded,) = fresh._loaded.values()
    assert 3 <= len(loaded) < 900 // 10  # a few GUNs' worth of the 900 marks


def test_a_bulk_runs_marks_stream_to_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Marks of many GUNs: a bounded number in memory, saved in batches, every one kept."""
    monkeypatch.setattr(highwater, "SHARDS", 16)
    monkeypatch.setattr(highwater, "FLUSH_AT", 50)
    marks = HighWater(tmp_path, "file:///store")
    names = [f"v1/teams/a/guns/example.com/app{g}/targets/{'cd' * 32}.json" for g in range(400)]
    for i, n in enumerate(names):
        marks.note(n, 2, D2)
        assert len(marks._loaded) <= highwater.MAX_LOADED
        assert sum(map(len, marks._dirty.values())) == (i + 1) % 50
    marks.note(names[0], 1, D1)  # lower than the saved mark: ignored
    assert not marks._dirty
    again = HighWater(tmp_path, "file:///store")
    assert all(again.get(n) == Mark(2, D2) for n in names)


def test_a_shard_with_no_file_yet_is_looked_for_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A first restore touches more shards than are held in memory, none of which has a
    file yet: each is looked for once, not again whenever it left the held ones. One
    saved later is read from its file."""
    read: list[str] = []
    real = highwater._read

    def counted(path: Path, *, folder_checked: bool = False) -> dict[str, Mark]:
        read.append(path.name)
        return real(path, folder_checked=folder_checked)

    monkeypatch.setattr(highwater, "_read", counted)
    marks = HighWater(tmp_path, "file:///store")
    names = [f"v1/teams/a/guns/example.com/app{g}/targets/{'cd' * 32}.json" for g in range(100)]
    shards = {highwater.shard_of(n) for n in names}
    assert len(shards) > highwater.MAX_LOADED
    for _ in range(3):
        for name in names:
            marks.check(name, 1, D1, "targets key")
    shard_reads = [r for r in read if r != marks.path.name]  # not the single older file
    assert sorted(shard_reads) == sorted(f"{marks._stem}-{s}.json" for s in shards)
    marks.note(names[0], 2, D2)
    marks.save()
    assert marks.get(names[0]) == Mark(2, D2)
    with pytest.raises(IntegrityError, match="rollback"):
        HighWater(tmp_path, "file:///store").check(names[0], 1, D1, "targets key")


def test_a_folder_others_can_write_is_refused_at_every_look(tmp_path: Path) -> None:
    """Whoever can remove the marks can make a rolled-back version pass: a refusal of the
    marks' folder is not forgotten by the next look (missing shards are looked for once
    the folder has passed, not before)."""
    marks = HighWater(tmp_path, "file:///store")
    marks.directory.mkdir(parents=True)
    marks.directory.chmod(0o777)
    for _ in range(2):
        with pytest.raises(AccessDeniedError, match="high-water file"):
            marks.get(NAME)
    marks.directory.chmod(0o700)
    assert marks.get(NAME) is None
