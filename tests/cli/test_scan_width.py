"""``keyvault scan`` fits COLUMNS and names each key ID once per row (#18)."""

from __future__ import annotations

from pathlib import Path

import pytest
from notarykit import BuiltTrustDir

from cli.conftest import KV
from keyvault.cli.fit import fit_rows, shorten

LONG_GUN = "registry.example.com:5000/some-team/a-rather-long-repository-name/service"


@pytest.fixture
def wide(loose_trust_dir: BuiltTrustDir, tmp_path: Path) -> tuple[Path, set[str]]:
    """The notary-made keys missing a fact, one in tuf_keys/<long GUN>/, and a bad file."""
    trust = loose_trust_dir.copy_to(tmp_path / ("a-long-directory-name-" * 3) / "trust").path
    ids = {k for k, _, _ in loose_trust_dir.keys}
    key_id = next(k for k, r, _ in loose_trust_dir.keys if r == "targets")
    legacy = trust / "private" / "tuf_keys" / LONG_GUN
    legacy.mkdir(parents=True)
    (trust / "private" / f"{key_id}.key").rename(legacy / f"{key_id}.key")
    (trust / "private" / f"{'b' * 64}.key").write_text("not a key, and a long name\n")
    return trust, ids


def test_scan_fits_columns_80_and_names_each_id_once(
    kv: KV, wide: tuple[Path, set[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    trust, ids = wide
    monkeypatch.setenv("COLUMNS", "80")
    run = kv("--trust-dir", trust, "scan")
    assert run.code == 2, run.err  # the bad file
    for line in (run.out + run.err).splitlines():
        assert len(line) <= 80, line
    rows = [line for line in run.out.splitlines() if any(k[:12] in line for k in ids)]
    assert len(rows) == len(ids)
    for row in rows:
        assert sum(row.count(k[:12]) for k in ids) == 1, row
    assert sum("(no role)" in r for r in rows) == 2
    assert sum("(no gun)" in r for r in rows) == 1  # the other targets key moved under a GUN
    legacy = next(r for r in rows if "tuf_keys" in r)
    assert "registry." in legacy and "service" in legacy  # start and end of the GUN kept
    assert "[not-pem]" in run.err


def test_scan_in_a_pipe_keeps_full_ids_once_per_row(
    kv: KV, wide: tuple[Path, set[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    trust, ids = wide
    monkeypatch.delenv("COLUMNS", raising=False)
    run = kv("--trust-dir", trust, "scan")
    rows = [line for line in run.out.splitlines() if any(k in line for k in ids)]
    assert len(rows) == len(ids)
    for row in rows:
        assert sum(row.count(k) for k in ids) == 1, row
        assert sum(row.count(k[:12]) for k in ids) == 1, row
    assert any(f"private/tuf_keys/{LONG_GUN}/" in r for r in rows)


def test_fit_rows_cuts_the_key_id_then_the_widest_column() -> None:
    columns = ["ROLE", "GUN", "KEY ID", "DIRECTORY"]
    rows = [["targets", "g" * 40, "a" * 64, "private/" + "d" * 20 + "/"]]
    assert fit_rows(columns, rows, None, key_id="KEY ID", shrink=("GUN", "DIRECTORY")) == rows
    fitted = fit_rows(columns, rows, 60, key_id="KEY ID", shrink=("GUN", "DIRECTORY"))
    assert fitted[0][2] == "a" * 12
    assert len("  ".join(fitted[0])) <= 60
    assert fitted[0][1].startswith("ggg") and "..." in fitted[0][1]
    assert shorten("example.com/app", 9) == "exa...app"
    assert shorten("(no gun)", 8) == "(no gun)"
