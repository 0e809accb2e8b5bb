"""Released key files: a scan that keeps no key bytes, and the checked re-read."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from keyvault.errors import ChangedOnDiskError, ConflictError
from keyvault.trust.scan import read_key_bytes, scan_trust_dir

from ._keys import key_file

GUNS = ("example.com/unit/a", "example.com/unit/b")


@pytest.fixture
def trust(tmp_path: Path) -> Path:
    private = tmp_path / "trust" / "private"
    (private / "tuf_keys" / GUNS[1]).mkdir(parents=True, mode=0o700)
    for role, gun in (("root", None), ("targets", GUNS[0]), ("snapshot", GUNS[0])):
        key_id, data = key_file(role, gun)
        (private / f"{key_id}.key").write_bytes(data)
    key_id, data = key_file("targets", GUNS[1])  # a legacy layout, below a GUN directory
    (private / "tuf_keys" / GUNS[1] / f"{key_id}.key").write_bytes(data)
    return tmp_path / "trust"


def test_a_released_scan_keeps_identity_and_digest_but_no_bytes(trust: Path) -> None:
    full = scan_trust_dir(trust)
    released = scan_trust_dir(trust, keep_bytes=False)
    assert len(full.keys) == len(released.keys) == 4
    assert released.problems == full.problems == ()
    for kept, light in zip(full.keys, released.keys, strict=True):
        assert light.data == b"" and light.is_released and not kept.is_released
        assert (light.key_id, light.role, light.gun, light.relpath, light.layout) == (
            kept.key_id,
            kept.role,
            kept.gun,
            kept.relpath,
            kept.layout,
        )
        assert light.sha256 == kept.sha256 and light.size == kept.size == len(kept.data)
        assert (
            read_key_bytes(trust, light)
            == kept.data
            == (trust / "private" / kept.relpath).read_bytes()
        )
        assert read_key_bytes(trust, kept) is kept.data  # nothing to read again


def test_a_file_changed_since_the_scan_is_refused(trust: Path) -> None:
    key = scan_trust_dir(trust, keep_bytes=False).keys[0]
    path = trust / "private" / key.relpath
    path.write_bytes(path.read_bytes().replace(b"\n", b"\r\n", 1))
    with pytest.raises(ChangedOnDiskError, match="changed since it was scanned") as caught:
        read_key_bytes(trust, key)
    assert isinstance(caught.value, ConflictError) and caught.value.exit_code == 7
    assert "BEGIN" not in str(caught.value)


def test_a_removed_file_is_refused(trust: Path) -> None:
    key = scan_trust_dir(trust, keep_bytes=False).keys[0]
    (trust / "private" / key.relpath).unlink()
    with pytest.raises(ChangedOnDiskError, match="changed since it was scanned"):
        read_key_bytes(trust, key)


def test_a_symlink_swapped_in_is_not_followed(trust: Path, tmp_path: Path) -> None:
    """Even a link to the very same bytes: the re-read walks like the scan, without links."""
    key = scan_trust_dir(trust, keep_bytes=False).keys[0]
    path = trust / "private" / key.relpath
    elsewhere = tmp_path / "elsewhere.key"
    elsewhere.write_bytes(path.read_bytes())
    path.unlink()
    path.symlink_to(elsewhere)
    with pytest.raises(ChangedOnDiskError):
        read_key_bytes(trust, key)


def test_a_directory_on_the_way_swapped_for_a_symlink_is_not_followed(
    trust: Path, tmp_path: Path
) -> None:
    key = next(
        k for k in scan_trust_dir(trust, keep_bytes=False).keys if k.relpath.startswith("tuf_keys/")
    )
    gun_dir = trust / "private" / "tuf_keys" / GUNS[1]
    moved = tmp_path / "moved"
    os.rename(gun_dir, moved)
    gun_dir.symlink_to(moved)  # the same file, reached through a link
    with pytest.raises(ChangedOnDiskError):
        read_key_bytes(trust, key)


def test_read_regular_reads_whole_files_in_small_pieces(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first read asks for the size fstat gives (plus one), later ones for small chunks,
    never for the whole limit at once; a file that grew while being read is read whole."""
    from keyvault.trust import safefs

    asked: list[int] = []
    real_read = os.read
    data = os.urandom(300_000)
    path = tmp_path / "f"
    path.write_bytes(data[:100_000])

    def watching_read(fd: int, n: int) -> bytes:
        asked.append(n)
        if len(asked) == 1:
            with path.open("ab") as grow:  # grows after fstat, before the first read
                grow.write(data[100_000:])
        return real_read(fd, n)

    monkeypatch.setattr(os, "read", watching_read)
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        assert safefs.read_regular(fd, "f", 1024 * 1024) == data
        with pytest.raises(safefs.ReadRefused, match="grew beyond"):
            asked.clear()
            path.write_bytes(data[:100_000])
            safefs.read_regular(fd, "f", 150_000)
    finally:
        os.close(fd)
    assert asked[0] == 100_001 and max(asked[1:]) <= 64 * 1024
