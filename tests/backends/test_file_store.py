"""FileStore: the store contract, plus what only a local directory can get wrong."""

from __future__ import annotations

import json
import os
import re
import stat
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from contracts.store_contract import A_ROOT, A_TARGETS, B_ROOT, StoreContract
from fixtures.host import race, run_as_nobody
from hypothesis import given, settings
from hypothesis import strategies as st

from keyvault import fsutil
from keyvault.errors import (
    ConflictError,
    IntegrityError,
    LocalIOError,
    NotFoundError,
    UsageError,
)
from keyvault.plugins import BackendOptions
from keyvault.stores import open_store
from keyvault.stores.base import MAX_OBJECT_SIZE, Store
from keyvault.stores.file import MARKER, MARKER_BYTES, MARKER_NAME, FileStore, parse_file_uri

OPTIONS = BackendOptions()


def make_store(root: Path) -> FileStore:
    return FileStore.from_uri(root.as_uri(), OPTIONS, create=True)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "store"


@pytest.fixture
def store(root: Path) -> Iterator[FileStore]:
    s = make_store(root)
    yield s
    s.close()


def object_dir(root: Path, name: str) -> Path:
    return root / "objects" / name


class TestFileStoreContract(StoreContract):
    @pytest.fixture
    def store(self, tmp_path: Path) -> Iterator[Store]:
        s = make_store(tmp_path / "contract-store")
        yield s
        s.close()


# -- URIs ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("uri", "path"),
    [
        ("file:///var/lib/keyvault", "/var/lib/keyvault"),
        ("file:/var/lib/keyvault", "/var/lib/keyvault"),
        ("file://localhost/var/lib/keyvault", "/var/lib/keyvault"),
        ("FILE:///srv/a%20b/store", "/srv/a b/store"),
        ("file:///srv/x/../y/", "/srv/y"),
    ],
)
def test_uri_forms(uri: str, path: str) -> None:
    assert parse_file_uri(uri) == Path(path)


@pytest.mark.parametrize(
    "uri",
    [
        "file:relative/dir",
        "file://",
        "file://host/abs",
        "file://evil.example.com/x",
        "file:///a?b=c",
        "file:///a#frag",
        "file:///a%00b",
        "file:///a%0Ab",
        "s3://bucket/x",
        "file:///a%ff",
    ],
)
def test_bad_uris_refused(uri: str) -> None:
    with pytest.raises(UsageError):
        parse_file_uri(uri)


def test_canonical_uri_round_trips(tmp_path: Path) -> None:
    root = tmp_path / "with space"
    s = make_store(root)
    s.close()
    assert s.uri == root.as_uri() and "%20" in s.uri
    again = FileStore.from_uri(s.uri, OPTIONS)
    assert again.uri == s.uri and repr(again) == f"FileStore({s.uri!r})"
    again.close()


def test_registry_opens_a_file_store(tmp_path: Path) -> None:
    s = open_store((tmp_path / "s").as_uri(), OPTIONS, create=True)
    assert isinstance(s, FileStore)
    s.close()


# -- opening and creating (B21) ------------------------------------------------------


@pytest.mark.proves("B21")
def test_missing_store_is_not_found_and_not_created(root: Path) -> None:
    with pytest.raises(NotFoundError) as info:
        FileStore.from_uri(root.as_uri(), OPTIONS)
    assert "point it at the store you kept" in str(info.value)
    assert not root.exists()


def test_create_makes_a_private_store_with_a_marker(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        make_store(tmp_path / "a" / "store").close()
    finally:
        os.umask(old)
    root = tmp_path / "a" / "store"
    assert stat.S_IMODE(root.stat().st_mode) == 0o700
    assert stat.S_IMODE((root / "objects").stat().st_mode) == 0o700
    marker = root / MARKER_NAME
    assert json.loads(marker.read_bytes()) == {"format": "keyvault-file-store", "version": 1}
    assert stat.S_IMODE(marker.stat().st_mode) == 0o600


def test_create_is_idempotent_and_keeps_data(root: Path) -> None:
    s = make_store(root)
    s.write(A_ROOT, b"kept")
    s.close()
    s = make_store(root)
    assert s.read(A_ROOT).data == b"kept"
    s.close()


def test_an_existing_non_empty_directory_is_not_adopted(root: Path) -> None:
    root.mkdir()
    (root / "photos").mkdir()
    for create in (False, True):
        with pytest.raises(UsageError) as info:
            FileStore.from_uri(root.as_uri(), OPTIONS, create=create)
        assert "not a keyvault store" in info.value.message
    assert sorted(p.name for p in root.iterdir()) == ["photos"]


def test_an_empty_directory_is_adopted_only_on_create(root: Path) -> None:
    root.mkdir(mode=0o755)
    with pytest.raises(NotFoundError):
        FileStore.from_uri(root.as_uri(), OPTIONS)
    make_store(root).close()
    assert (root / MARKER_NAME).is_file()
    assert stat.S_IMODE(root.stat().st_mode) == 0o700


def test_an_interrupted_init_can_be_rerun(root: Path) -> None:
    root.mkdir(mode=0o700)
    (root / f"{fsutil.TEMP_PREFIX}0123abcd").write_bytes(b"half a marker")
    make_store(root).close()
    FileStore.from_uri(root.as_uri(), OPTIONS).close()


def test_concurrent_inits_agree(root: Path) -> None:
    results = race(8, lambda i: make_store(root).close())
    assert results == [None] * 8
    assert (root / MARKER_NAME).is_file()


def test_a_file_is_not_a_store(root: Path) -> None:
    root.write_bytes(b"not a dir")
    for create in (False, True):
        with pytest.raises(UsageError):
            FileStore.from_uri(root.as_uri(), OPTIONS, create=create)
    assert root.read_bytes() == b"not a dir"


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"{",
        b"[]",
        b'{"format": "other", "version": 1}',
        b"x" * 10000,
        b'{"format": "keyvault-file-store", "version": 2}',
    ],
)
def test_bad_marker_refused(root: Path, content: bytes) -> None:
    make_store(root).close()
    (root / MARKER_NAME).write_bytes(content)
    with pytest.raises(UsageError):
        FileStore.from_uri(root.as_uri(), OPTIONS)


def test_the_marker_bytes_are_the_json_of_the_marker() -> None:
    """Opening a store compares the marker's bytes (no json import on the fast path)."""
    assert json.dumps(MARKER, sort_keys=True).encode() + b"\n" == MARKER_BYTES


def test_a_marker_written_differently_but_equal_is_accepted(root: Path) -> None:
    make_store(root).close()
    (root / MARKER_NAME).write_bytes(b'{ "version":1,\n  "format":"keyvault-file-store" }')
    FileStore.from_uri(root.as_uri(), OPTIONS).close()


def test_symlinked_marker_refused(root: Path, tmp_path: Path) -> None:
    make_store(root).close()
    real = tmp_path / "marker"
    (root / MARKER_NAME).rename(real)
    (root / MARKER_NAME).symlink_to(real)
    with pytest.raises(UsageError):
        FileStore.from_uri(root.as_uri(), OPTIONS)


def test_closed_store_refuses_work(store: FileStore) -> None:
    store.close()
    store.close()
    with pytest.raises(UsageError):
        store.read(A_ROOT)


# -- layout and modes ----------------------------------------------------------------


def test_layout_and_modes(store: FileStore, root: Path) -> None:
    old = os.umask(0)
    try:
        v1 = store.write(A_ROOT, b"one")
        v2 = store.write(A_ROOT, b"two", replaces=v1)
    finally:
        os.umask(old)
    assert (v1, v2) == ("0000000001", "0000000002")
    obj = object_dir(root, A_ROOT)
    assert (obj / v1).read_bytes() == b"one" and (obj / v2).read_bytes() == b"two"
    assert stat.S_IMODE((obj / v2).stat().st_mode) == 0o600
    path = root / "objects"
    for part in A_ROOT.split("/"):
        path = path / part
        assert stat.S_IMODE(path.stat().st_mode) == 0o700


@pytest.mark.parametrize("version", ["1", "00000000001", "0000000000", "abcdefghij", "../x"])
def test_bad_versions_refused(store: FileStore, version: str) -> None:
    v1 = store.write(A_ROOT, b"x")
    with pytest.raises(UsageError):
        store.read(A_ROOT, version)
    with pytest.raises(UsageError):
        store.write(A_ROOT, b"y", replaces=version)
    assert store.read(A_ROOT).version == v1


def test_versions_carry_creation_times(store: FileStore, root: Path) -> None:
    store.write(A_ROOT, b"x")
    os.utime(object_dir(root, A_ROOT) / "0000000001", (0, 1700000000))
    [only] = store.versions(A_ROOT)
    assert only.created == "2023-11-14T22:13:20Z"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", only.created)


# -- crash leftovers and strays ------------------------------------------------------


def test_temp_files_and_strays_are_never_versions(store: FileStore, root: Path) -> None:
    v1 = store.write(A_ROOT, b"real")
    obj = object_dir(root, A_ROOT)
    (obj / f"{fsutil.TEMP_PREFIX}deadbeef").write_bytes(b"half-written")
    (obj / "0000000002.swp").write_bytes(b"editor")
    (obj / "README").write_bytes(b"notes")
    assert [v.version for v in store.versions(A_ROOT)] == [v1]
    assert store.read(A_ROOT).data == b"real"
    assert list(store.list("")) == [A_ROOT]
    assert store.write(A_ROOT, b"next", replaces=v1) == "0000000002"


def test_an_object_of_only_temp_files_does_not_exist(store: FileStore, root: Path) -> None:
    obj = object_dir(root, A_ROOT)
    obj.mkdir(parents=True)
    (obj / f"{fsutil.TEMP_PREFIX}0000000001").write_bytes(b"crash")
    assert list(store.list("")) == []
    with pytest.raises(NotFoundError):
        store.read(A_ROOT)
    with pytest.raises(NotFoundError):
        store.versions(A_ROOT)
    assert store.write(A_ROOT, b"fresh") == "0000000001"


def test_failed_write_leaves_no_version(
    store: FileStore, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*_: object, **__: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "write", broken)
    with pytest.raises(LocalIOError):
        store.write(A_ROOT, b"x")
    monkeypatch.undo()
    with pytest.raises(NotFoundError):
        store.read(A_ROOT)
    assert not any(fsutil.is_temp_name(p.name) for p in object_dir(root, A_ROOT).iterdir())


# -- tampering: symlinks, special and oversized files (T2, T9, T10) -----------------------


@pytest.mark.proves("T2", "T9")
def test_symlinked_directory_inside_the_store(store: FileStore, root: Path, tmp_path: Path) -> None:
    outside = make_store(tmp_path / "outside")
    outside.write(A_ROOT, b"planted")
    outside.close()
    (root / "objects" / "v1").symlink_to(tmp_path / "outside" / "objects" / "v1")
    with pytest.raises(IntegrityError) as info:
        store.read(A_ROOT)
    assert "symbolic link" in info.value.message
    with pytest.raises(IntegrityError):
        store.versions(A_ROOT)
    with pytest.raises(IntegrityError):
        store.write(A_TARGETS, b"x")
    with pytest.raises(IntegrityError):
        list(store.list(""))
    assert not (tmp_path / "outside" / "objects" / A_TARGETS).exists()


@pytest.mark.proves("T2", "T9")
def test_symlinked_version_file(store: FileStore, root: Path, tmp_path: Path) -> None:
    v1 = store.write(A_ROOT, b"x")
    secret = tmp_path / "secret"
    secret.write_bytes(b"not for the store")
    (object_dir(root, A_ROOT) / "0000000002").symlink_to(secret)
    with pytest.raises(IntegrityError):
        store.read(A_ROOT)
    with pytest.raises(IntegrityError):
        store.read(A_ROOT, "0000000002")
    with pytest.raises(IntegrityError):
        store.versions(A_ROOT)
    with pytest.raises(IntegrityError):
        list(store.list("v1/"))
    assert store.read(A_ROOT, v1).data == b"x"


def test_fifo_as_a_version_does_not_hang(store: FileStore, root: Path) -> None:
    store.write(A_ROOT, b"x")
    os.mkfifo(object_dir(root, A_ROOT) / "0000000002")
    with pytest.raises(IntegrityError):
        store.read(A_ROOT)


@pytest.mark.proves("T10")
def test_oversized_version_refused_before_reading(store: FileStore, root: Path) -> None:
    store.write(A_ROOT, b"x")
    with (object_dir(root, A_ROOT) / "0000000002").open("wb") as fh:
        fh.truncate(MAX_OBJECT_SIZE + 1)
    with pytest.raises(IntegrityError) as info:
        store.read(A_ROOT)
    assert "larger than" in info.value.message
    with pytest.raises(IntegrityError):
        store.versions(A_ROOT)


def test_listing_walks_only_the_prefix(store: FileStore, root: Path, tmp_path: Path) -> None:
    store.write(A_ROOT, b"a")
    store.write(B_ROOT, b"b")
    # a trap in team-b's directory: walking into it raises IntegrityError
    (root / "objects" / "v1" / "teams" / "team-b" / "trap").symlink_to(tmp_path)
    assert list(store.list("v1/teams/team-a/")) == [A_ROOT]
    assert list(store.list("v1/teams/team-a")) == [A_ROOT]
    assert store.read(A_ROOT).data == b"a"
    with pytest.raises(IntegrityError):
        list(store.list("v1/teams/"))


@settings(max_examples=200, deadline=None)
@given(name=st.text(alphabet="ab./\\:~-_\x00 \n", max_size=24))
@pytest.mark.proves("T9")
def test_no_name_escapes_the_objects_directory(name: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        s = make_store(base / "store")
        try:
            s.write(name, b"x")
        except UsageError:
            pass
        else:
            assert s.read(name).data == b"x"
            assert list(s.list("")) == [name]
        finally:
            s.close()
        written = [p for p in base.rglob("*") if p.is_file()]
        allowed = base / "store" / "objects"
        assert all(p.is_relative_to(allowed) or p.name == MARKER_NAME for p in written)
        assert len(written) <= 2


# -- concurrency --------------------------------------------------------------------


@pytest.mark.parametrize("attempt", range(5))
def test_racing_creates_exactly_one_wins(root: Path, attempt: int) -> None:
    make_store(root).close()
    stores = [FileStore.from_uri(root.as_uri(), OPTIONS) for _ in range(8)]
    results = race(8, lambda i: stores[i].write(A_ROOT, f"writer {i}".encode()))
    winners = [i for i, r in enumerate(results) if r == "0000000001"]
    assert len(winners) == 1
    assert all(isinstance(r, ConflictError) for i, r in enumerate(results) if i not in winners)
    assert stores[0].read(A_ROOT).data == f"writer {winners[0]}".encode()
    assert len(stores[0].versions(A_ROOT)) == 1
    for s in stores:
        s.close()


@pytest.mark.parametrize("attempt", range(5))
def test_racing_updates_exactly_one_wins(store: FileStore, attempt: int) -> None:
    v1 = store.write(A_ROOT, b"base")
    results = race(8, lambda i: store.write(A_ROOT, f"update {i}".encode(), replaces=v1))
    winners = [i for i, r in enumerate(results) if r == "0000000002"]
    assert len(winners) == 1
    assert sum(isinstance(r, ConflictError) for r in results) == 7
    assert store.read(A_ROOT).data == f"update {winners[0]}".encode()


def test_racing_processes_exactly_one_wins(root: Path) -> None:
    make_store(root).close()
    gate_r, gate_w = os.pipe()  # children block on it until the parent closes it
    pids = []
    for i in range(4):
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                os.close(gate_w)
                s = FileStore.from_uri(root.as_uri(), OPTIONS)
                os.read(gate_r, 1)
                s.write(A_ROOT, f"process {i}".encode())
                code = 0
            except ConflictError:
                code = 7
            finally:
                os._exit(code)
        pids.append(pid)
    os.close(gate_r)
    os.close(gate_w)
    codes = [os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in pids]
    assert sorted(codes) == [0, 7, 7, 7]
    s = FileStore.from_uri(root.as_uri(), OPTIONS)
    assert s.read(A_ROOT).data == f"process {codes.index(0)}".encode()
    s.close()


# -- real faults (root only) ---------------------------------------------------------


@pytest.mark.proves("F09")
def test_disk_full_during_write(tiny_tmpfs: Path) -> None:
    s = make_store(tiny_tmpfs / "store")
    v1 = s.write(A_ROOT, b"small")
    with pytest.raises(LocalIOError) as info:
        s.write(A_ROOT, b"\0" * (200 * 1024), replaces=v1)
    assert "no space" in info.value.message
    assert [v.version for v in s.versions(A_ROOT)] == [v1]
    assert s.read(A_ROOT).data == b"small"
    s.close()


@pytest.mark.proves("F10")
def test_read_only_store(tiny_tmpfs: Path, make_read_only: Callable[[], None]) -> None:
    s = make_store(tiny_tmpfs / "store")
    s.write(A_ROOT, b"kept")
    make_read_only()
    with pytest.raises(LocalIOError) as info:
        s.write(B_ROOT, b"x")
    assert "read-only" in info.value.message
    assert s.read(A_ROOT).data == b"kept"
    s.close()


def test_store_of_another_user_is_access_denied(shared_dir: Path) -> None:
    root = shared_dir / "store"
    make_store(root).close()
    outcome = run_as_nobody(lambda: FileStore.from_uri(root.as_uri(), OPTIONS))
    assert outcome.get("error") == "AccessDeniedError", outcome
    assert str(root) in outcome["message"]


def test_read_only_store_directory_for_a_user(shared_dir: Path) -> None:
    root = shared_dir / "store"
    make_store(root).close()
    root.chmod(0o755)
    (root / "objects").chmod(0o755)
    outcome = run_as_nobody(lambda: FileStore.from_uri(root.as_uri(), OPTIONS).write(A_ROOT, b"x"))
    assert outcome.get("error") == "AccessDeniedError", outcome
    assert not (root / "objects" / "v1").exists()
