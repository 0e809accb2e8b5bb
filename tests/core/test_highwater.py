"""This machine's high-water marks: never a lower version than one seen, nor a fork."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from fixtures.host import race

from keyvault.errors import IntegrityError
from keyvault.highwater import HighWater

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
    assert stat.S_IMODE(again.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(again.path.parent.stat().st_mode) == 0o700


def test_a_lower_number_is_a_rollback_and_another_same_number_a_fork(tmp_path: Path) -> None:
    marks = HighWater(tmp_path, "s3://bucket/p")
    marks.note(NAME, 3, D3)
    with pytest.raises(IntegrityError, match=r"root key x: rollback: .* number 2, older than "
                                             "version 3"):
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
    marks.path.write_text(json.dumps({"marks": {NAME: "not a pair"}}))
    with pytest.raises(IntegrityError, match=r"high-water file .* is corrupt"):
        HighWater(tmp_path, "file:///store").get(NAME)
