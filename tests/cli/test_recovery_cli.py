"""Break-glass: a 3-of-5 SLIP-39 split of the recovery identity, and restoring with it."""

from __future__ import annotations

import contextlib
import io
import itertools
import re
import stat
from pathlib import Path

import pytest

from cli.conftest import KV
from keyvault.trust.sample import write_sample_trust_dir

pytestmark = pytest.mark.proves("T11")


def share_words(page: Path) -> str:
    return " ".join(re.findall(r"^\s*\d+\. (\S+)$", page.read_text(), flags=re.M))


@pytest.fixture
def split(kv: KV, home: Path, tmp_path: Path) -> tuple[str, list[str]]:
    init = kv("--json", "init")
    assert init.code == 0
    run = kv(
        "--json",
        "recovery",
        "split",
        "--shares",
        "5",
        "--threshold",
        "3",
        "--out",
        tmp_path / "shares",
    )
    assert run.code == 0, run.err
    pages = [Path(p) for p in run.json()["pages"]]
    assert len(pages) == 5
    assert stat.S_IMODE((tmp_path / "shares").stat().st_mode) == 0o700
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in pages)
    identity = Path(init.json()["identity_file"]).read_text()
    secret = re.search(r"AGE-SECRET-KEY-1\S+", identity)
    assert secret is not None
    assert all(secret.group(0) not in p.read_text() for p in pages)
    return run.json()["recipient"], [share_words(p) for p in pages]


def combine(
    kv: KV, monkeypatch: pytest.MonkeyPatch, shares: list[str], out: Path, *extra: str
) -> tuple[int, str, str]:
    monkeypatch.setattr("sys.stdin", io.StringIO("\n".join(shares) + "\n"))
    run = kv("--json", "recovery", "combine", "--out", out, *extra)
    return run.code, run.out, run.err


def test_any_three_of_five_rebuild_the_identity(
    kv: KV, split: tuple[str, list[str]], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    recipient, shares = split
    for n, chosen in enumerate(itertools.combinations(shares, 3)):
        out = tmp_path / f"rebuilt-{n}.txt"
        code, stdout, err = combine(kv, monkeypatch, list(chosen), out, "--expect", recipient)
        assert code == 0, err
        assert recipient in stdout and recipient in out.read_text()
        assert stat.S_IMODE(out.stat().st_mode) == 0o600


def test_two_shares_are_not_enough(
    kv: KV, split: tuple[str, list[str]], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _, shares = split
    code, _, err = combine(kv, monkeypatch, shares[:2], tmp_path / "x.txt")
    assert code == 2 and "cannot rebuild the identity" in err
    assert not (tmp_path / "x.txt").exists()


def test_a_mistyped_word_is_caught_and_not_echoed(
    kv: KV, split: tuple[str, list[str]], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _, shares = split
    words = shares[1].split()
    words[7] = "academic" if words[7] != "academic" else "acid"
    code, _, err = combine(
        kv, monkeypatch, [shares[0], " ".join(words), shares[2]], tmp_path / "x.txt"
    )
    assert code == 2 and "share 2 is not valid" in err and "mistyped" in err
    assert not any(w in err.split() for w in words[:4])
    assert not (tmp_path / "x.txt").exists()


def test_the_rebuilt_identity_restores_the_keys(
    kv: KV,
    home: Path,
    split: tuple[str, list[str]],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    _, shares = split
    trust = home / ".docker" / "trust"
    keys = write_sample_trust_dir(
        trust, dict.fromkeys(("root", "targets", "snapshot"), "p"), ("example.com/a/app",)
    )
    assert kv("backup").code == 0
    # the laptop and its identity are gone; the shares remain
    (home / ".config" / "keyvault" / "recovery-identity.txt").unlink()
    rebuilt = tmp_path / "rebuilt.txt"
    assert combine(kv, monkeypatch, shares[2:], rebuilt)[0] == 0
    monkeypatch.setenv("KEYVAULT_AGE_IDENTITY", str(rebuilt))
    fresh = tmp_path / "new-laptop"
    run = kv("--trust-dir", fresh, "restore", "--all")
    assert run.code == 0, run.err
    for key in keys:
        assert (fresh / "private" / key.relpath).read_bytes() == key.data
    wrong = combine(kv, monkeypatch, shares[:3], tmp_path / "y.txt", "--expect", "age1" + "q" * 58)
    assert wrong[0] == 5 and not (tmp_path / "y.txt").exists()


def test_bad_split_requests(kv: KV, tmp_path: Path) -> None:
    assert kv("init").code == 0
    run = kv("recovery", "split", "--shares", "3", "--threshold", "4", "--out", tmp_path / "s")
    assert run.code == 2 and "threshold" in run.err and not (tmp_path / "s").exists()
    (tmp_path / "exists").mkdir()
    again = kv(
        "recovery", "split", "--shares", "3", "--threshold", "2", "--out", tmp_path / "exists"
    )
    assert again.code == 7 and list((tmp_path / "exists").iterdir()) == []


def test_at_a_terminal_combine_stops_asking_once_it_has_enough_shares(
    split: tuple[str, list[str]], tmp_path: Path
) -> None:
    """Before: a fourth prompt after the third of 3-of-5 shares, until an empty line."""
    import os
    import select
    import subprocess
    import sys

    recipient, shares = split
    out = tmp_path / "rebuilt.txt"
    master, slave = os.openpty()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "keyvault",
            "recovery",
            "combine",
            "--out",
            str(out),
            "--expect",
            recipient,
        ],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=dict(os.environ),
        start_new_session=True,
    )
    os.close(slave)
    seen = b""

    def read_until(marker: bytes) -> None:
        nonlocal seen
        while marker not in seen:
            ready, _, _ = select.select([master], [], [], 120)
            chunk = os.read(master, 4096) if ready else b""
            assert chunk, seen.decode(errors="replace")
            seen += chunk

    try:
        read_until(b"Share 1 (33 words; empty line when done)")
        for number, share in enumerate(shares[:3], start=1):
            if number > 1:
                read_until(f"Share {number} (33 words; {4 - number} more needed)".encode())
            os.write(master, share.encode() + b"\n")
        assert proc.wait(timeout=120) == 0, seen.decode(errors="replace")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        with contextlib.suppress(OSError):
            seen += os.read(master, 65536)
        os.close(master)
    assert b"Share 4" not in seen
    assert recipient in out.read_text()
