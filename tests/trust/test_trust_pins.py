"""Reading trust pins from a trust directory, and the paths a restore may write them to."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from keyvault.errors import InvalidInputError, UsageError
from keyvault.trust.pins import root_version, scan_pins
from keyvault.trust.restore import is_pin_relpath, shown_path, tree_parts

GUN = "example.com/team/app"


def root(version: object) -> bytes:
    return b'{"signed":{"_type":"Root","version":%s},"signatures":[]}' % str(version).encode()


def put(trust: Path, gun: str, data: bytes) -> Path:
    path = trust / "tuf" / gun / "metadata" / "root.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_root_version_reads_signed_version_only_from_a_root() -> None:
    assert root_version(root(7)) == 7
    for bad in (
        root(0),
        root("true"),
        root('"3"'),
        root(1.5),
        b"[]",
        b"{",
        b'{"signed":{"_type":"Targets","version":1}}',
    ):
        with pytest.raises(InvalidInputError):
            root_version(bad)


def test_scan_reads_pins_selects_by_gun_and_reports_bad_ones(tmp_path: Path) -> None:
    put(tmp_path, GUN, root(2))
    put(tmp_path, "example.com/team/web", root(1))
    put(tmp_path, "example.com/team/junk", b"not json")
    put(tmp_path, "example.com/Bad/app", root(1))  # no GUN: upper case in a path segment
    elsewhere = tmp_path / "outside.json"
    elsewhere.write_bytes(root(9))
    linked = tmp_path / "tuf" / "example.com/team/linked" / "metadata"
    linked.mkdir(parents=True)
    os.symlink(elsewhere, linked / "root.json")
    pins, problems = scan_pins(tmp_path)
    assert {(p.gun, p.version) for p in pins} == {(GUN, 2), ("example.com/team/web", 1)}
    assert {p.path for p in problems} == {
        "tuf/example.com/team/junk/metadata/root.json",
        "tuf/example.com/Bad/app/metadata/root.json",
        "tuf/example.com/team/linked/metadata/root.json",
    }
    chosen, _ = scan_pins(tmp_path, ["example.com/team/w*"])
    assert [p.gun for p in chosen] == ["example.com/team/web"]
    assert scan_pins(tmp_path / "nowhere") == ([], [])


@pytest.mark.parametrize(
    "relpath",
    [
        "tuf/../private/x/metadata/root.json",
        "tuf//metadata/root.json",
        "tuf/a/../../metadata/root.json",
        "tuf/A B/metadata/root.json",
    ],
)
@pytest.mark.proves("T9", "T16")
def test_a_pin_path_off_the_gun_grammar_is_refused(relpath: str) -> None:
    assert is_pin_relpath(relpath)
    with pytest.raises(UsageError):
        tree_parts(relpath)


def test_pins_go_under_tuf_and_keys_under_private() -> None:
    assert tree_parts(f"tuf/{GUN}/metadata/root.json") == [
        "tuf",
        *GUN.split("/"),
        "metadata",
        "root.json",
    ]
    assert tree_parts("tuf_keys/x/abc.key") == ["private", "tuf_keys", "x", "abc.key"]
    assert shown_path("abc.key") == "private/abc.key"
    with pytest.raises(UsageError):
        tree_parts("tuf/x/metadata/targets.json")  # neither a pin nor a key
