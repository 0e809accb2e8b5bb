"""The contract every Store passes (file, S3, Vault KV): mix it into a test class.

Usage::

    class TestMyStore(StoreContract):
        @pytest.fixture
        def store(self) -> Iterator[Store]:
            ...  # a fresh, empty store
            yield store
            store.close()

The cases follow the protocol in ``keyvault/stores/base.py``: create-only
writes, compare-and-set versions, every version readable, listing by prefix
that never leaks a sibling prefix, NotFound and hostile-name refusals; and the
optional ``Deleting`` capability, which every store here has (removing a name
that is absent is not an error).
"""

from __future__ import annotations

import pytest
from fixtures.host import race

from keyvault.errors import ConflictError, NotFoundError, UsageError
from keyvault.stores.base import MAX_OBJECT_SIZE, Deleting, Store

A_ROOT = "v1/teams/team-a/root/" + "a" * 64 + ".json"
A_TARGETS = "v1/teams/team-a/guns/registry.example.com/team-a/app/targets/" + "b" * 64 + ".json"
A_SNAPSHOT = "v1/teams/team-a/guns/registry.example.com/team-a/app/snapshot/" + "c" * 64 + ".json"
A_OTHER_GUN = "v1/teams/team-a/guns/registry.example.com/team-a/app2/targets/" + "d" * 64 + ".json"
AB_ROOT = "v1/teams/team-ab/root/" + "e" * 64 + ".json"
B_ROOT = "v1/teams/team-b/root/" + "f" * 64 + ".json"
#: An audit checkpoint of team-a: it sorts before every key, pin and CA file of the team.
A_CHECKPOINT = "v1/teams/team-a/audit/checkpoints/" + "0" * 32 + "/0000000001-" + "9" * 64 + ".json"

HOSTILE_NAMES = [
    "",
    "/etc/passwd",
    "../escape.json",
    "v1/../../escape.json",
    "v1/./x.json",
    "v1//x.json",
    "v1/x/",
    "v1/x\x00.json",
    "v1/x\n.json",
    "v1/x .json",
    "v1\\..\\x.json",
    "v1/\u00e9.json",
    "v1/" + "a" * 1100,
]


def race_creates(store: Store, n: int) -> list[str | Exception]:
    """``n`` threads create A_ROOT at once ("writer i"); each one's version or exception."""
    outcomes = race(n, lambda i: store.write(A_ROOT, f"writer {i}".encode()))
    return [o if isinstance(o, str | Exception) else "" for o in outcomes]


class StoreContract:
    """Tests every Store must pass; a subclass provides the ``store`` fixture."""

    def test_write_then_read_latest(self, store: Store) -> None:
        version = store.write(A_ROOT, b"envelope-1")
        got = store.read(A_ROOT)
        assert (got.name, got.version, got.data) == (A_ROOT, version, b"envelope-1")

    @pytest.mark.proves("T12")
    def test_create_only(self, store: Store) -> None:
        store.write(A_ROOT, b"first")
        with pytest.raises(ConflictError):
            store.write(A_ROOT, b"second")
        assert store.read(A_ROOT).data == b"first"
        assert len(store.versions(A_ROOT)) == 1

    @pytest.mark.proves("T12")
    def test_cas_adds_versions_and_keeps_old_ones(self, store: Store) -> None:
        v1 = store.write(A_ROOT, b"one")
        v2 = store.write(A_ROOT, b"two", replaces=v1)
        v3 = store.write(A_ROOT, b"three", replaces=v2)
        assert len({v1, v2, v3}) == 3
        assert store.read(A_ROOT).data == b"three"
        assert store.read(A_ROOT, v1).data == b"one"
        assert store.read(A_ROOT, v2).data == b"two"
        assert store.read(A_ROOT, v3).version == v3

    def test_stale_replaces_is_a_conflict(self, store: Store) -> None:
        v1 = store.write(A_ROOT, b"one")
        store.write(A_ROOT, b"two", replaces=v1)
        with pytest.raises(ConflictError):
            store.write(A_ROOT, b"lost update", replaces=v1)
        assert store.read(A_ROOT).data == b"two"
        assert len(store.versions(A_ROOT)) == 2

    def test_replaces_on_missing_object_is_a_conflict(self, store: Store) -> None:
        v1 = store.write(A_TARGETS, b"x")
        with pytest.raises(ConflictError):
            store.write(A_ROOT, b"y", replaces=v1)
        with pytest.raises(NotFoundError):
            store.read(A_ROOT)

    def test_versions_newest_first(self, store: Store) -> None:
        v1 = store.write(A_ROOT, b"1")
        v2 = store.write(A_ROOT, b"22", replaces=v1)
        v3 = store.write(A_ROOT, b"333", replaces=v2)
        versions = store.versions(A_ROOT)
        assert [v.version for v in versions] == [v3, v2, v1]
        assert [v.size for v in versions] == [3, 2, 1]
        assert [v.latest for v in versions] == [True, False, False]
        assert all(v.name == A_ROOT for v in versions)

    def test_binary_data_round_trips(self, store: Store) -> None:
        data = bytes(range(256)) * 4
        store.write(A_ROOT, data)
        assert store.read(A_ROOT).data == data

    def test_largest_object_accepted(self, store: Store) -> None:
        data = b"\x5a" * MAX_OBJECT_SIZE
        store.write(A_ROOT, data)
        assert store.read(A_ROOT).data == data

    @pytest.mark.proves("T10")
    def test_oversized_write_refused(self, store: Store) -> None:
        with pytest.raises(UsageError):
            store.write(A_ROOT, b"x" * (MAX_OBJECT_SIZE + 1))
        with pytest.raises(NotFoundError):
            store.read(A_ROOT)

    def test_not_found(self, store: Store) -> None:
        with pytest.raises(NotFoundError):
            store.read(A_ROOT)
        with pytest.raises(NotFoundError):
            store.versions(A_ROOT)
        v1 = store.write(A_ROOT, b"x")
        missing = store.write(A_ROOT, b"y", replaces=v1)
        with pytest.raises(NotFoundError):
            store.read(A_TARGETS, v1)
        with pytest.raises(NotFoundError):
            store.read(A_ROOT[:-5] + "x.json", missing)

    def test_list_by_prefix(self, store: Store) -> None:
        for name in (A_ROOT, A_TARGETS, A_SNAPSHOT, A_OTHER_GUN, AB_ROOT, B_ROOT):
            store.write(name, b"x")
        assert list(store.list("v1/teams/team-a/")) == sorted(
            [A_ROOT, A_TARGETS, A_SNAPSHOT, A_OTHER_GUN]
        )
        gun = "v1/teams/team-a/guns/registry.example.com/team-a/app/"
        assert list(store.list(gun)) == sorted([A_TARGETS, A_SNAPSHOT])
        assert list(store.list("v1/teams/team-b/")) == [B_ROOT]
        assert list(store.list("")) == sorted(
            [A_ROOT, A_TARGETS, A_SNAPSHOT, A_OTHER_GUN, AB_ROOT, B_ROOT]
        )

    def test_list_is_a_plain_string_prefix(self, store: Store) -> None:
        for name in (A_ROOT, AB_ROOT, B_ROOT):
            store.write(name, b"x")
        assert list(store.list("v1/teams/team-a")) == sorted([A_ROOT, AB_ROOT])
        assert list(store.list(A_ROOT)) == [A_ROOT]

    def test_list_after_names_only_what_sorts_after(self, store: Store) -> None:
        """What a restore of a whole team lists: from past the audit checkpoints on."""
        team_a = [A_ROOT, A_TARGETS, A_SNAPSHOT, A_OTHER_GUN]
        for name in (A_CHECKPOINT, *team_a, AB_ROOT, B_ROOT):
            store.write(name, b"x")
        assert sorted(store.list("v1/teams/team-a/")) == sorted([A_CHECKPOINT, *team_a])
        assert sorted(store.list("v1/teams/team-a/", after="v1/teams/team-a/audit0")) == sorted(
            team_a
        )
        assert sorted(store.list("v1/teams/team-a/", after=A_TARGETS)) == sorted(
            n for n in team_a if n > A_TARGETS
        )
        assert list(store.list("v1/teams/team-a/", after="v1/teams/team-a/z")) == []

    def test_list_of_an_empty_prefix(self, store: Store) -> None:
        assert list(store.list("v1/teams/nobody/")) == []
        assert list(store.list("")) == []

    def test_list_names_each_object_once(self, store: Store) -> None:
        v1 = store.write(A_ROOT, b"1")
        store.write(A_ROOT, b"2", replaces=v1)
        assert list(store.list("v1/")) == [A_ROOT]

    @pytest.mark.parametrize("name", HOSTILE_NAMES)
    @pytest.mark.proves("T9")
    def test_hostile_names_refused(self, store: Store, name: str) -> None:
        with pytest.raises(UsageError):
            store.write(name, b"x")
        with pytest.raises(UsageError):
            store.read(name)
        with pytest.raises(UsageError):
            store.versions(name)
        assert isinstance(store, Deleting)
        with pytest.raises(UsageError):
            store.delete_all_versions(name)
        assert list(store.list("")) == []

    @pytest.mark.parametrize("prefix", ["../", "/v1/", "v1/../", "v1//", "v1/\x00"])
    @pytest.mark.proves("T9")
    def test_hostile_prefixes_refused(self, store: Store, prefix: str) -> None:
        with pytest.raises(UsageError):
            list(store.list(prefix))

    def test_racing_creates_exactly_one_wins(self, store: Store) -> None:
        outcomes = race_creates(store, 4)
        winners = [i for i, o in enumerate(outcomes) if isinstance(o, str)]
        assert len(winners) == 1, outcomes
        assert all(isinstance(o, ConflictError) for o in outcomes if not isinstance(o, str))
        assert store.read(A_ROOT).data == f"writer {winners[0]}".encode()

    def test_delete_all_versions_removes_exactly_that_name(self, store: Store) -> None:
        assert isinstance(store, Deleting)
        v1 = store.write(A_ROOT, b"one")
        store.write(A_ROOT, b"two", replaces=v1)
        neighbours = {
            A_ROOT[:-1]: b"a string prefix of it",
            A_ROOT + "2": b"it is a prefix",
            A_TARGETS: b"same team",
            AB_ROOT: b"team-ab",
        }
        for name, data in neighbours.items():
            store.write(name, data + b"!", replaces=store.write(name, data))
        store.delete_all_versions(A_ROOT)
        with pytest.raises(NotFoundError):
            store.read(A_ROOT)
        with pytest.raises(NotFoundError):
            store.read(A_ROOT, v1)
        with pytest.raises(NotFoundError):
            store.versions(A_ROOT)
        assert list(store.list("")) == sorted(neighbours)
        for name, data in neighbours.items():
            assert store.read(name).data == data + b"!"
            assert store.read(name, store.versions(name)[1].version).data == data
        again = store.write(A_ROOT, b"created afresh")  # nothing left to conflict with
        assert [v.version for v in store.versions(A_ROOT)] == [again]

    def test_delete_all_versions_of_an_absent_name_is_not_an_error(self, store: Store) -> None:
        assert isinstance(store, Deleting)
        store.write(A_TARGETS, b"kept")
        store.delete_all_versions(A_ROOT)
        store.delete_all_versions(A_TARGETS)
        store.delete_all_versions(A_TARGETS)  # twice: the second finds nothing
        assert list(store.list("")) == []
