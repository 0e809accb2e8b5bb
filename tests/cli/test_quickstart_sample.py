"""quickstart's sample, whose passphrase is public, can be removed the way quickstart says:
its envelopes leave the store and its trust directory is wiped; nothing else changes."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Self

import pytest
from fixtures.host import tree

from cli.conftest import KV
from keyvault.ops.quickstart import SAMPLE_PASSPHRASE
from keyvault.plugins import BackendOptions
from keyvault.stores import STORE_FOR_SCHEME
from keyvault.stores.base import ObjectVersion, StoredObject
from keyvault.stores.file import FileStore
from keyvault.trust.sample import write_sample_trust_dir

REPO = Path(__file__).resolve().parents[2]


def objects(kv: KV, *team: str) -> list[str]:
    listed = kv("--json", *team, "list")
    assert listed.code == 0, listed.err
    return sorted(k["object"] for k in listed.json()["keys"])


@pytest.mark.proves("T12")
def test_the_printed_command_removes_the_sample_and_nothing_else(kv: KV, home: Path) -> None:
    first = kv("quickstart")
    assert first.code == 0, first.err
    sample = home / ".local" / "share" / "keyvault" / "sample-trust"
    assert len(list((sample / "private").iterdir())) == 5
    sample_objects = objects(kv, "--team", "sample")
    assert len(sample_objects) == 5
    (command,) = re.findall(r"'(keyvault quickstart [^']*)'", first.err)

    # The user's real keys arrive and are backed up, under their team and also under a
    # real team that happens to be called "sample"; then the sample is removed as told.
    trust = home / ".docker" / "trust"
    write_sample_trust_dir(
        trust,
        dict.fromkeys(("root", "targets", "snapshot"), "real one"),
        ("registry.example.com/real/app",),
    )
    assert kv("backup").code == 0
    assert kv("--team", "sample", "backup").code == 0
    real = objects(kv)
    real_in_sample_team = sorted(set(objects(kv, "--team", "sample")) - set(sample_objects))
    assert real and len(real) == len(real_in_sample_team)
    config_dir = home / ".config" / "keyvault"
    kept = {"trust": tree(trust), "config": tree(config_dir)}
    run = kv(*command.split()[1:])
    assert run.code == 0, run.err
    assert objects(kv, "--team", "sample") == real_in_sample_team
    assert "Deleted the envelopes of the 5 sample key(s), every version" in run.out
    assert f"Wiped the sample trust directory {sample}" in run.out
    assert not sample.exists()
    assert {"trust": tree(trust), "config": tree(config_dir)} == kept
    assert objects(kv) == real
    for team, restored in (((), home / "restored"), (("--team", "sample"), home / "r2")):
        assert kv("--trust-dir", restored, *team, "restore", "--all").code == 0
        assert tree(restored / "private") == tree(trust / "private")
    audit = kv("--json", "audit", "show")
    assert audit.code == 0, audit.err
    (removal,) = [r for r in audit.json()["records"] if r["action"] == "quickstart"]
    assert removal["team"] == "sample" and len(removal["keys"]) == 5
    again = kv("--json", *command.split()[1:])  # nothing left to remove is not an error
    assert again.code == 0 and again.json() == {
        "removed": None,
        "envelopes_removed": 0,
        "left_in_store": [],
    }


def test_removal_deletes_only_the_sample_keys_even_with_other_keys_in_its_directory(
    kv: KV, home: Path
) -> None:
    """T12: the one delete path is bounded by what quickstart wrote. A real key of a team
    called "sample", copied into the sample directory, keeps its envelope: so does a key
    of another GUN that even uses the public sample passphrase, and a root key that the
    public passphrase does not open."""
    assert kv("quickstart").code == 0
    sample_objects = objects(kv, "--team", "sample")
    sample = home / ".local" / "share" / "keyvault" / "sample-trust"
    trust = home / ".docker" / "trust"
    write_sample_trust_dir(
        trust,
        dict.fromkeys(("root", "targets", "snapshot"), "real one"),
        ("registry.example.com/real/app",),
    )
    public = home / "public"
    write_sample_trust_dir(
        public,
        {"root": "its own", "targets": SAMPLE_PASSPHRASE, "snapshot": SAMPLE_PASSPHRASE},
        ("registry.example.com/x/y",),
    )
    for other in (trust, public):
        assert kv("--trust-dir", other, "--team", "sample", "backup").code == 0
        for key_file in (other / "private").iterdir():
            (sample / "private" / key_file.name).write_bytes(key_file.read_bytes())
    others = sorted(set(objects(kv, "--team", "sample")) - set(sample_objects))
    assert len(others) == 6  # root + targets + snapshot, twice
    run = kv("quickstart", "--remove-sample")
    assert run.code == 0, run.err
    assert "Deleted the envelopes of the 5 sample key(s), every version" in run.out
    assert objects(kv, "--team", "sample") == others


def test_no_store_has_a_delete_method_but_the_samples_one() -> None:
    """T12: deletion is not a keyvault verb; every store's one deletion is
    delete_all_versions, which only --remove-sample calls (keyvault/ops/quickstart.py)."""
    import inspect

    from keyvault.stores.s3 import S3Store
    from keyvault.stores.vaultkv import VaultKvStore

    for store in (FileStore, S3Store, VaultKvStore):
        verbs = {n for n, _ in inspect.getmembers(store) if not n.startswith("_")}
        assert {v for v in verbs if "delete" in v or "destroy" in v} == {"delete_all_versions"}
    callers = [
        p
        for p in (REPO / "keyvault").rglob("*.py")
        if "delete_all_versions(" in p.read_text() and p.parent.name != "stores"
    ]
    assert [p.relative_to(REPO).as_posix() for p in callers] == ["keyvault/ops/quickstart.py"]


class FileStoreWithoutDelete:
    """The real file store minus the optional Deleting capability, as a store plugin
    that cannot delete would be."""

    def __init__(self, inner: FileStore) -> None:
        self._inner = inner

    @classmethod
    def from_uri(cls, uri: str, options: BackendOptions, *, create: bool = False) -> Self:
        return cls(FileStore.from_uri(uri, options, create=create))

    @property
    def uri(self) -> str:
        return self._inner.uri

    def read(self, name: str, version: str | None = None) -> StoredObject:
        return self._inner.read(name, version)

    def write(self, name: str, data: bytes, *, replaces: str | None = None) -> str:
        return self._inner.write(name, data, replaces=replaces)

    def versions(self, name: str) -> list[ObjectVersion]:
        return self._inner.versions(name)

    def list(self, prefix: str, *, after: str = "") -> Iterator[str]:
        return self._inner.list(prefix, after=after)

    def close(self) -> None:
        self._inner.close()


def test_a_store_that_cannot_delete_is_named_with_the_objects_to_delete(
    kv: KV, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert kv("quickstart").code == 0
    sample_objects = objects(kv, "--team", "sample")
    monkeypatch.setitem(STORE_FOR_SCHEME, "file", f"{__name__}:{FileStoreWithoutDelete.__name__}")
    run = kv("quickstart", "--remove-sample")
    assert run.code == 0, run.err
    assert "cannot delete objects; delete these 5 sample envelope(s)" in run.err
    assert sorted(re.findall(r"^  (v1/\S+)$", run.err, re.MULTILINE)) == sample_objects
    assert objects(kv, "--team", "sample") == sample_objects
    assert not (home / ".local" / "share" / "keyvault" / "sample-trust").exists()


def test_the_quickstart_page_names_the_same_command() -> None:
    page = (Path(__file__).resolve().parents[2] / "docs" / "quickstart.md").read_text()
    from keyvault.ops.quickstart import REMOVE_SAMPLE

    assert f"`{REMOVE_SAMPLE}`" in page
