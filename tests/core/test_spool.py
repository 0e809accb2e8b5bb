"""keyvault.spool: a window of records in memory, the rest in an unnamed 0600 file."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import pytest

from keyvault import spool
from keyvault.spool import Spool, Stats, keyed_digest


def _numbers(window: int, directory: Path) -> Spool[int]:
    return Spool(lambda n: [n], lambda r: int(r[0]), window=window, directory=str(directory))


def test_records_come_back_in_order_every_time_with_at_most_the_window_held(
    tmp_path: Path,
) -> None:
    Stats.reset()
    with _numbers(3, tmp_path) as numbers:
        for n in range(10):
            numbers.append(n)
        assert len(numbers) == 10
        assert list(numbers) == list(range(10))
        assert list(numbers) == list(range(10))  # read again: the same
        assert numbers._spilled == 9 and len(numbers._held) == 1
    assert Stats.peak == 3


def test_the_spool_file_is_0600_has_no_name_and_leaves_nothing_behind(tmp_path: Path) -> None:
    numbers = _numbers(2, tmp_path)
    numbers.append(1)
    numbers.append(2)  # spilled
    assert numbers._file is not None
    st = os.fstat(numbers._file.fileno())
    assert stat.S_IMODE(st.st_mode) == 0o600
    assert st.st_nlink == 0  # no name: gone with the descriptor, even on SIGKILL
    assert list(tmp_path.iterdir()) == []  # its 0700 directory is removed at once
    file = numbers._file
    numbers.close()
    assert file.closed and numbers.closed
    with pytest.raises(ValueError, match="closed"):
        numbers.append(3)


def test_the_directory_made_for_it_is_0700(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    modes: list[int] = []
    real_rmdir = Path.rmdir

    def noting_rmdir(self: Path) -> None:
        modes.append(stat.S_IMODE(self.stat().st_mode))
        real_rmdir(self)

    monkeypatch.setattr(Path, "rmdir", noting_rmdir)
    numbers = _numbers(1, tmp_path)
    numbers.append(1)
    numbers.close()
    assert modes == [0o700]


def test_the_default_window_is_read_when_a_spool_is_made(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(spool, "WINDOW", 2)
    Stats.reset()
    with Spool(lambda n: n, int) as numbers:
        for n in range(5):
            numbers.append(n)
        assert list(numbers) == [0, 1, 2, 3, 4] and numbers._spilled == 4
    assert Stats.peak == 2


def test_a_keyed_digest_compares_bytes_and_reveals_nothing_about_them() -> None:
    data = b"key bytes"
    assert keyed_digest(data) == keyed_digest(data) != keyed_digest(b"other bytes")
    assert keyed_digest(data) != hashlib.sha256(data).digest()


def test_a_spooled_table_prints_what_table_prints_in_a_pipe(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from keyvault.cli.output import spooled_table, table

    rows = [["create", "targets", "example.com/app"], ["unchanged", "root", "-"]]
    table("Restore into /t", ["ACTION", "ROLE", "GUN"], rows)
    whole = capsys.readouterr().out
    spooled_table("Restore into /t", ["ACTION", "ROLE", "GUN"], lambda: iter(rows), len(rows))
    assert capsys.readouterr().out == whole
    assert whole.splitlines()[1].startswith("ACTION     ROLE     GUN")
