"""keyvault.known: the records that let a backup skip reading an unchanged key.

Each record is only a shortcut; these tests pin what makes it one that cannot be
forged or moved: its MAC (keyed from the sealing key), the keyed digest of the key
file, and the file's place in the private state directory.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from keyvault.errors import AccessDeniedError
from keyvault.known import KnownVersions, Seen, wrappers_digest

STORE = "s3://bucket/prefix"
NAME = "v1/teams/t/guns/registry.example.com/t/app/targets/" + "a" * 64 + ".json"
KEY_SHA = hashlib.sha256(b"key file bytes").hexdigest()


def _known(state: Path, mac_key: bytes = b"k" * 32, store: str = STORE) -> KnownVersions:
    return KnownVersions(state, store, mac_key)


def _seen(known: KnownVersions, tag: str = "d41d8cd98f00b204e9800998ecf8427e") -> Seen:
    return Seen(
        tag,
        "v-1",
        3,
        "ab" * 32,
        "sha256:" + "cd" * 32,
        1,
        wrappers_digest(["awskms:///alias/a"]),
        known.key_digest(NAME, KEY_SHA),
    )


def _saved(state: Path) -> KnownVersions:
    known = _known(state)
    known.note(NAME, _seen(known))
    known.save()
    return known


def test_a_saved_record_matches_its_listed_tag_on_the_next_run(tmp_path: Path) -> None:
    _saved(tmp_path)
    later = _known(tmp_path)
    seen = later.match(NAME, "d41d8cd98f00b204e9800998ecf8427e")
    assert seen is not None and seen.version == "v-1" and seen.sequence == 3
    assert later.holds(seen, NAME, KEY_SHA)
    assert not later.holds(seen, NAME, hashlib.sha256(b"other bytes").hexdigest())
    assert later.match(NAME, "another-etag") is None
    assert later.path.stat().st_mode & 0o777 == 0o600
    assert later.path.parent.stat().st_mode & 0o777 == 0o700


def test_the_key_file_is_recorded_by_a_keyed_digest_never_a_plain_hash(tmp_path: Path) -> None:
    known = _saved(tmp_path)
    text = known.path.read_text()
    assert KEY_SHA not in text and hashlib.sha256(KEY_SHA.encode()).hexdigest() not in text


def test_an_edited_record_does_not_match(tmp_path: Path) -> None:
    """Pointing the record at another ETag (one a store writer made) breaks its MAC."""
    known = _saved(tmp_path)
    doc = json.loads(known.path.read_text())
    doc["keys"][NAME][0] = "0" * 32
    known.path.write_text(json.dumps(doc))
    assert _known(tmp_path).match(NAME, "0" * 32) is None


@pytest.mark.parametrize("other", [{"mac_key": b"x" * 32}, {"store": "s3://bucket/other"}])
def test_a_record_of_another_sealing_key_or_store_does_not_match(
    tmp_path: Path, other: dict[str, object]
) -> None:
    """Another machine's file (another sealing key), or another store's records moved
    here: the MAC covers the store and is keyed from the sealing key."""
    known = _saved(tmp_path)
    moved = _known(tmp_path, **other)  # type: ignore[arg-type]
    moved.path.parent.mkdir(exist_ok=True, mode=0o700)
    if moved.path != known.path:
        moved.path.write_bytes(known.path.read_bytes())
    assert moved.match(NAME, "d41d8cd98f00b204e9800998ecf8427e") is None


def test_a_corrupt_file_is_no_records(tmp_path: Path) -> None:
    known = _saved(tmp_path)
    known.path.write_bytes(b"{not json")
    assert _known(tmp_path).match(NAME, "d41d8cd98f00b204e9800998ecf8427e") is None


def test_a_file_others_could_replace_is_refused(tmp_path: Path) -> None:
    known = _saved(tmp_path)
    known.path.parent.chmod(0o777)
    with pytest.raises(AccessDeniedError, match="known-versions file"):
        _known(tmp_path).match(NAME, "d41d8cd98f00b204e9800998ecf8427e")
