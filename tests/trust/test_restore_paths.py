"""Restore paths follow from a key's authenticated facts, and one key ID lives in one file."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from keyvault.errors import ConflictError, IntegrityError
from keyvault.trust.layout import derived_relpath
from keyvault.trust.restore import RestoreItem, apply_restore, plan_restore

pytestmark = pytest.mark.proves("T2")

ROOT, OTHER = "aa" * 32, "bb" * 32
GUN = "example.com/team/app"


@pytest.mark.parametrize(
    ("name", "role", "gun"),
    [
        (f"{ROOT}.key", "root", None),
        (f"root_keys/{ROOT}.key", "root", None),
        (f"tuf_keys/{GUN}/{ROOT}.key", "targets", GUN),
        (f"tuf_keys/{GUN}/{ROOT}_targets.key", "targets", GUN),
        (f"root_keys/{ROOT}_root.key", "root", None),
    ],
)
def test_the_known_layouts_are_accepted(name: str, role: str, gun: str | None) -> None:
    assert derived_relpath(name, ROOT, role, gun) == name


@pytest.mark.parametrize(
    ("name", "role", "gun"),
    [
        (f"root_keys/{OTHER}.key", "root", None),  # another key's file
        (f"{OTHER}.key", "targets", GUN),  # another key's file
        (f"tuf_keys/example.com/other/{ROOT}.key", "targets", GUN),  # another GUN's directory
        (f"tuf_keys/{GUN}/{ROOT}_snapshot.key", "targets", GUN),  # another role in the name
        (f"sub/{ROOT}.key", "root", None),  # a directory notary never signs from
        (f"../{ROOT}.key", "root", None),
        (f"root_keys/../{ROOT}.key", "root", None),
        ("", "root", None),
    ],
)
def test_any_other_path_is_refused(name: str, role: str, gun: str | None) -> None:
    with pytest.raises(IntegrityError, match=f"{role} key {ROOT}: the recorded file name"):
        derived_relpath(name, ROOT, role, gun)


def _trust(tmp_path: Path, files: dict[str, bytes]) -> Path:
    trust = tmp_path / "trust"
    for relpath, data in files.items():
        path = trust / "private" / relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return trust


@pytest.mark.parametrize(
    ("existing", "restored"),
    [
        (f"{ROOT}.key", f"root_keys/{ROOT}.key"),  # notary would migrate it over the key
        (f"root_keys/{ROOT}.key", f"{ROOT}.key"),  # ...or the legacy copy over the new one
        (f"tuf_keys/{GUN}/{ROOT}.key", f"{ROOT}.key"),
    ],
)
def test_the_same_key_id_under_another_path_is_a_conflict(
    tmp_path: Path, existing: str, restored: str
) -> None:
    trust = _trust(tmp_path, {existing: b"the key on disk"})
    before = {p: p.read_bytes() for p in trust.rglob("*") if p.is_file()}
    item = RestoreItem(restored, b"the backed-up key", "root key", ROOT)
    with pytest.raises(ConflictError, match=f"already present as private/{existing}"):
        apply_restore(trust, [item], force=True)  # --force replaces a path, not another file
    assert {p: p.read_bytes() for p in trust.rglob("*") if p.is_file()} == before
    (planned,) = plan_restore(trust, [item], force=False)
    assert planned.action.value == "conflict" and existing in planned.reason


def test_one_key_id_twice_in_one_restore_is_a_conflict(tmp_path: Path) -> None:
    items = [
        RestoreItem(f"{ROOT}.key", b"a", "root", ROOT),
        RestoreItem(f"root_keys/{ROOT}.key", b"a", "root", ROOT),
    ]
    with pytest.raises(ConflictError, match=f"key {ROOT} would be restored twice"):
        apply_restore(tmp_path / "trust", items, force=False)
    assert not (tmp_path / "trust").exists()


def test_the_same_path_again_is_not_a_conflict(tmp_path: Path) -> None:
    trust = _trust(tmp_path, {f"{ROOT}.key": b"same"})
    result = apply_restore(trust, [RestoreItem(f"{ROOT}.key", b"same", "root", ROOT)], force=False)
    assert [p.action.value for p in result.planned] == ["unchanged"]


def test_a_fresh_directory_is_not_read_key_by_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One walk of private/ shows nothing is there: no per-key read (a bulk restore's cost)."""
    from keyvault.trust import restore as restore_mod

    reads: list[str] = []
    real = restore_mod._read_existing

    def counted(root: int, parts: list[str], relpath: str) -> bytes | None:
        reads.append(relpath)
        return real(root, parts, relpath)

    monkeypatch.setattr(restore_mod, "_read_existing", counted)
    trust = _trust(tmp_path, {f"{OTHER}.key": b"another key"})
    items = [
        RestoreItem(f"tuf_keys/{GUN}/{i:064x}.key", b"key %d" % i, "k", f"{i:064x}")
        for i in range(20)
    ]
    apply_restore(trust, items, force=False)
    assert reads == []
    # ...but what the walk did see is read and compared, as before
    again = apply_restore(
        trust, [*items[:2], RestoreItem(f"{OTHER}.key", b"another key", "o", OTHER)], force=False
    )
    assert sorted(reads) == sorted([items[0].relpath, items[1].relpath, f"{OTHER}.key"])
    assert {p.action.value for p in again.planned} == {"unchanged"}


@pytest.mark.parametrize("kind", ["file", "symlink"])
def test_a_file_that_appears_after_the_walk_is_never_replaced(tmp_path: Path, kind: str) -> None:
    """Planned as a creation from the walk, the path is taken meanwhile: the final link
    fails, nothing is changed, and the file that appeared is kept."""
    trust = _trust(tmp_path, {f"{OTHER}.key": b"another key"})
    target = trust / "private" / f"{ROOT}.key"

    def items() -> Iterator[RestoreItem]:
        """Consumed after the walk: the file appears between walk and commit."""
        yield RestoreItem(f"{OTHER}.key", b"another key", "o", OTHER)
        if kind == "file":
            target.write_bytes(b"someone else's")
        else:
            target.symlink_to(tmp_path / "elsewhere")
        yield RestoreItem(f"{ROOT}.key", b"ours", "r", ROOT)

    with pytest.raises(ConflictError, match="appeared while restoring"):
        apply_restore(trust, items(), force=False)
    if kind == "file":
        assert target.read_bytes() == b"someone else's"
    else:
        assert target.is_symlink() and not (tmp_path / "elsewhere").exists()
    assert sorted(p.name for p in (trust / "private").iterdir()) == sorted(
        [f"{OTHER}.key", f"{ROOT}.key"]
    )


def test_an_unwalkable_tree_falls_back_to_reading_each_path(tmp_path: Path) -> None:
    """private/ as a symlink: the walk sees nothing, so absence proves nothing, and the
    restore refuses as it always did instead of planning creations."""
    real = tmp_path / "real-private"
    real.mkdir()
    trust = tmp_path / "trust"
    trust.mkdir()
    (trust / "private").symlink_to(real)
    with pytest.raises(ConflictError):
        apply_restore(trust, [RestoreItem(f"{ROOT}.key", b"ours", "r", ROOT)], force=False)
    assert list(real.iterdir()) == []
