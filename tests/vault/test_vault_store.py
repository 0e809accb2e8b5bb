"""VaultKvStore beyond the contract: labels, soft delete, typed errors, bounded reads."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from fixtures.vault import KV_MOUNT, BaoServer, unique

from keyvault.errors import (
    AccessDeniedError,
    ConflictError,
    IntegrityError,
    NotFoundError,
    UsageError,
)
from keyvault.stores._vault_client import VaultMountNotFoundError, VaultPermissionError
from keyvault.stores.base import MAX_OBJECT_SIZE
from keyvault.stores.vaultkv import VaultKvStore, parse_vault_uri

from .conftest import open_kv, soft_delete_latest, undelete, vault_options

KEY_ID = "ab" * 32
TARGETS = f"v1/teams/team-a/guns/example.com/team-a/app/targets/{KEY_ID}.json"
ROOT = f"v1/teams/team-a/root/{'cd' * 32}.json"
B_ROOT = f"v1/teams/team-b/root/{'ef' * 32}.json"


def test_labels_say_what_an_entry_is(bao: BaoServer, kv_store: VaultKvStore) -> None:
    kv_store.write(TARGETS, b"{}")
    prefix = kv_store.uri.removeprefix(f"vault://{KV_MOUNT}/")
    meta = bao.root().secrets.kv.v2.read_secret_metadata(
        f"{prefix}/{TARGETS}", mount_point=KV_MOUNT
    )["data"]
    assert meta["custom_metadata"] == {
        "keyvault": "envelope/v1",
        "team": "team-a",
        "gun": "example.com/team-a/app",
        "role": "targets",
        "key_id": KEY_ID,
    }
    assert kv_store.labels(TARGETS)["gun"] == "example.com/team-a/app"
    kv_store.write(ROOT, b"{}")
    assert "gun" not in kv_store.labels(ROOT)


def test_envelope_is_readable_text_in_vault(bao: BaoServer, kv_store: VaultKvStore) -> None:
    kv_store.write(ROOT, b'{"format":"keyvault-envelope"}')
    prefix = kv_store.uri.removeprefix(f"vault://{KV_MOUNT}/")
    data = bao.root().secrets.kv.v2.read_secret_version(
        f"{prefix}/{ROOT}", mount_point=KV_MOUNT, raise_on_deleted_version=True
    )["data"]["data"]
    assert data == {"envelope": '{"format":"keyvault-envelope"}'}


@pytest.mark.proves("T12")
def test_a_soft_deleted_latest_is_refused_and_older_versions_stay(
    bao: BaoServer, kv_store: VaultKvStore
) -> None:
    """An operator's 'bao kv delete': read refuses the deleted version and says how to
    undelete it; older versions stay readable; after 'bao kv undelete' it reads again."""
    v1 = kv_store.write(ROOT, b"one")
    v2 = kv_store.write(ROOT, b"two", replaces=v1)
    assert soft_delete_latest(bao, kv_store, ROOT) == v2
    with pytest.raises(NotFoundError, match=r"deleted \(soft delete\)") as info:
        kv_store.read(ROOT)
    assert f"bao kv undelete -mount={KV_MOUNT} -versions={v2} " in str(info.value)
    assert kv_store.read(ROOT, v1).data == b"one"  # older versions stay readable
    assert [v.version for v in kv_store.versions(ROOT)] == [v1]
    assert list(kv_store.list("v1/")) == [ROOT]
    undelete(bao, kv_store, ROOT, [v2])
    assert kv_store.read(ROOT).data == b"two"
    assert [v.latest for v in kv_store.versions(ROOT)] == [True, False]


@pytest.mark.proves("T12")
def test_every_version_soft_deleted_says_how_to_undelete(
    bao: BaoServer, kv_store: VaultKvStore
) -> None:
    kv_store.write(ROOT, b"one")
    soft_delete_latest(bao, kv_store, ROOT)
    with pytest.raises(NotFoundError, match="all were deleted") as info:
        kv_store.versions(ROOT)
    assert "bao kv undelete" in str(info.value) and "VaultKvStore" not in str(info.value)


@pytest.mark.proves("T12")
def test_write_on_top_of_a_deleted_latest_keeps_history(
    bao: BaoServer, kv_store: VaultKvStore
) -> None:
    v1 = kv_store.write(ROOT, b"one")
    soft_delete_latest(bao, kv_store, ROOT)
    with pytest.raises(ConflictError, match="already exists"):  # its history still does
        kv_store.write(ROOT, b"again")
    v2 = kv_store.write(ROOT, b"again", replaces=v1)
    assert kv_store.read(ROOT).data == b"again" and v2 == "2"


@pytest.mark.proves("T10")
def test_oversized_stored_object_refused_on_read(bao: BaoServer, kv_store: VaultKvStore) -> None:
    """T10: an entry grown beyond MAX_OBJECT_SIZE outside keyvault is refused, not returned."""
    prefix = kv_store.uri.removeprefix(f"vault://{KV_MOUNT}/")
    bao.root().secrets.kv.v2.create_or_update_secret(
        f"{prefix}/{ROOT}", secret={"envelope": "x" * (MAX_OBJECT_SIZE + 1)}, mount_point=KV_MOUNT
    )
    with pytest.raises(IntegrityError, match="larger than"):
        kv_store.read(ROOT)


def test_foreign_entry_refused(bao: BaoServer, kv_store: VaultKvStore) -> None:
    prefix = kv_store.uri.removeprefix(f"vault://{KV_MOUNT}/")
    bao.root().secrets.kv.v2.create_or_update_secret(
        f"{prefix}/{ROOT}", secret={"password": "hunter2"}, mount_point=KV_MOUNT
    )
    with pytest.raises(IntegrityError, match="not an object written by keyvault") as info:
        kv_store.read(ROOT)
    assert "hunter2" not in str(info.value)


def test_a_damaged_version_is_still_listed_so_a_good_one_can_go_on_top(
    bao: BaoServer, kv_store: VaultKvStore
) -> None:
    """Backup answers a damaged latest envelope by writing a good one on top of it, which
    needs versions() to list it rather than fail on it."""
    first = kv_store.write(ROOT, b"good")
    prefix = kv_store.uri.removeprefix(f"vault://{KV_MOUNT}/")
    bao.root().secrets.kv.v2.create_or_update_secret(
        f"{prefix}/{ROOT}", secret={"password": "hunter2"}, mount_point=KV_MOUNT
    )
    with pytest.raises(IntegrityError):
        kv_store.read(ROOT)
    versions = kv_store.versions(ROOT)
    assert [(v.version, v.latest, v.size) for v in versions] == [("2", True, 0), (first, False, 4)]
    assert kv_store.write(ROOT, b"good again", replaces=versions[0].version) == "3"
    assert kv_store.read(ROOT).data == b"good again"


def test_list_walks_only_the_prefix_subtree(bao: BaoServer) -> None:
    """A team-a token lists team-a's subtree; it is not allowed to LIST the store's root, so
    a walk that strayed outside the prefix would fail with 403."""
    token = bao.token("team-a")
    prefix = unique("kv")
    admin = open_kv(bao, prefix)
    for name in (TARGETS, ROOT, B_ROOT):
        admin.write(name, b"x")
    store = open_kv(bao, prefix, token=token)
    assert list(store.list("v1/teams/team-a/")) == sorted([TARGETS, ROOT])
    assert list(store.list("v1/teams/team-a/guns/example.com/")) == [TARGETS]
    with pytest.raises(VaultPermissionError):
        list(store.list("v1/teams/"))
    store.close()
    admin.close()


def test_list_yields_the_first_name_before_it_walks_the_other_folders(bao: BaoServer) -> None:
    """A listing is walked as it is read, folder by folder, in name order: the first
    name comes after the LISTs of the folders above it, not after the whole tree."""
    store = open_kv(bao, unique("kv"))
    names = [
        f"v1/teams/team-a/guns/example.com/app{g}/{role}/{KEY_ID}.json"
        for g in range(5)
        for role in ("snapshot", "targets")
    ]
    for name in names:
        store.write(name, b"x")
    listed: list[str] = []
    real = store._call

    def counted(what: str, path: str, fn: Callable[[Any], Any]) -> Any:
        listed.append(path)
        return real(what, path, fn)

    store._call = counted  # type: ignore[method-assign]
    found = store.list("v1/teams/team-a/")
    assert next(found) == names[0]
    # team-a/, guns/, example.com/, app0/, app0/snapshot/: app1..app4 not listed yet
    assert len(listed) == 5 and not any("app1" in p for p in listed)
    assert [names[0], *found] == sorted(names)
    assert len(listed) == 3 + 5 * 3  # team-a/, guns/, example.com/, and 3 per app
    store.close()


@pytest.mark.proves("T3")
def test_team_b_token_is_refused_team_a_entry_by_openbao(bao: BaoServer) -> None:
    """T3: the server's own ACL refuses, and the error names the path and the policies."""
    prefix = unique("kv")
    admin = open_kv(bao, prefix)
    admin.write(ROOT, b"team a's envelope")
    token = bao.token("team-b")
    store = open_kv(bao, prefix, token=token)
    with pytest.raises(VaultPermissionError) as info:
        store.read(ROOT)
    message = str(info.value)
    assert f"{KV_MOUNT}/{prefix}/{ROOT}" in message
    assert "permission denied" in message and "default, team-b" in message
    assert info.value.exit_code == 4
    assert token not in message and token not in repr(info.value)
    with pytest.raises(AccessDeniedError):
        store.write(ROOT, b"overwrite", replaces="1")
    with pytest.raises(AccessDeniedError):
        store.versions(ROOT)
    assert admin.read(ROOT).data == b"team a's envelope"
    store.close()
    admin.close()


def test_missing_mount_is_named(bao: BaoServer) -> None:
    store = VaultKvStore.from_uri("vault://no-such-mount/kv", vault_options(bao))
    with pytest.raises(
        VaultMountNotFoundError, match="no secrets engine is mounted at no-such-mount/"
    ):
        store.read(ROOT)
    with pytest.raises(VaultMountNotFoundError):
        store.write(ROOT, b"x")
    with pytest.raises(VaultMountNotFoundError):
        list(store.list("v1/"))
    store.close()


def test_kv_version_1_mount_refused_before_writing(bao: BaoServer) -> None:
    mount = unique("kv1")
    bao.root().sys.enable_secrets_engine("kv", path=mount, options={"version": "1"})
    store = VaultKvStore.from_uri(f"vault://{mount}/p", vault_options(bao))
    with pytest.raises(UsageError, match="not a KV version 2"):
        store.write(ROOT, b"x")
    import hvac.exceptions

    with pytest.raises(hvac.exceptions.InvalidPath):  # nothing was written under the v1 mount
        bao.root().secrets.kv.v1.list_secrets("", mount_point=mount)
    store.close()


@pytest.mark.parametrize(
    "uri",
    [
        "vault://",
        "vault:///x",
        "vault://a b/x",
        "vault://m/../x",
        "vault://m//x",
        "vault://user@m/x",
        "vault://m/x?y=1",
        "s3://m/x",
        "vault://m/x\n",
    ],
)
def test_bad_uris_refused(uri: str) -> None:
    with pytest.raises(UsageError):
        parse_vault_uri(uri)


def test_uri_forms() -> None:
    assert parse_vault_uri("vault://secret") == ("secret", "")
    assert parse_vault_uri("vault://secret/keyvault/prod/") == ("secret", "keyvault/prod/")


def test_bad_versions_refused(kv_store: VaultKvStore) -> None:
    for version in ("0", "-1", "01", "x", "1.0", "99999999999999999999"):
        with pytest.raises(UsageError):
            kv_store.read(ROOT, version)


def test_closed_store_refuses(kv_store: VaultKvStore) -> None:
    kv_store.close()
    kv_store.close()
    with pytest.raises(UsageError, match="closed"):
        kv_store.read(ROOT)
