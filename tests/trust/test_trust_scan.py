"""scan_trust_dir: every layout notary reads, every bad input, the fatal errors."""

from __future__ import annotations

import base64
import os
from collections.abc import Callable
from pathlib import Path

import pytest
from fixtures.host import NOBODY, needs_root_for_nobody, run_as_nobody
from hypothesis import given, settings
from hypothesis import strategies as st
from notarykit import BuiltTrustDir, Notary, armour, triples

from keyvault.errors import NotFoundError, UsageError
from keyvault.trust.interpret import interpret
from keyvault.trust.layout import place
from keyvault.trust.model import MAX_KEY_FILE_SIZE, KeyFile, Layout, ScanProblem, ScanResult
from keyvault.trust.scan import PROBLEM_CODES, default_trust_dir, scan_trust_dir

from ._keys import GUN, ec_key, key_file, self_signed_cert, with_headers

MakeTrustDir = Callable[[dict[str, bytes]], Path]
OTHER_GUN = "example.com/unit/other"


def codes(result: ScanResult) -> dict[str, str]:
    return {p.relpath: p.code for p in result.problems}


# --- layouts made by the real notary ------------------------------------------------


def test_current_layout_finds_exactly_notarys_keys(notary_trust_dir: BuiltTrustDir) -> None:
    result = scan_trust_dir(notary_trust_dir.path)
    assert result.problems == ()
    assert triples(result.keys) == notary_trust_dir.keys
    for key in result.keys:
        path = notary_trust_dir.path / "private" / key.relpath
        assert key.relpath == f"{key.key_id}.key"
        assert key.data == path.read_bytes()
        assert key.layout is Layout.CURRENT
        assert key.encrypted and key.algorithm is None
        assert key.mode == 0o600
    assert [k.relpath for k in result.keys] == sorted(k.relpath for k in result.keys)


def test_legacy_layout_finds_the_same_keys(legacy_trust_dir: BuiltTrustDir) -> None:
    result = scan_trust_dir(legacy_trust_dir.path)
    assert result.problems == ()
    assert triples(result.keys) == legacy_trust_dir.keys
    for key in result.keys:
        assert key.data == (legacy_trust_dir.path / "private" / key.relpath).read_bytes()
        if key.role == "root":
            assert (key.layout, key.relpath) == (
                Layout.LEGACY_ROOT_KEYS,
                f"root_keys/{key.key_id}.key",
            )
        else:
            where = f"tuf_keys/{key.gun}/" if key.gun else "tuf_keys/"
            assert (key.layout, key.relpath) == (Layout.LEGACY_TUF_KEYS, f"{where}{key.key_id}.key")


def test_v01_layout_finds_the_same_keys(legacy_v01_trust_dir: BuiltTrustDir) -> None:
    result = scan_trust_dir(legacy_v01_trust_dir.path)
    assert result.problems == ()
    assert triples(result.keys) == legacy_v01_trust_dir.keys
    assert {k.role for k in result.keys} == {"root", "targets", "snapshot", "alice"}
    for key in result.keys:
        assert key.layout is Layout.LEGACY_V01
        assert key.relpath.endswith(f"{key.key_id}_{key.role}.key")
        assert key.encrypted
        assert key.algorithm == legacy_v01_trust_dir.algorithms[key.key_id]


@pytest.mark.parametrize("fixture", ["legacy_trust_dir", "legacy_v01_trust_dir"])
def test_notary_migrates_legacy_layouts_to_what_keyvault_found(
    fixture: str, request: pytest.FixtureRequest, notary: Notary
) -> None:
    """Our reading of the legacy layouts is notary's: its migration yields the same keys."""
    built: BuiltTrustDir = request.getfixturevalue(fixture)
    found = triples(scan_trust_dir(built.path).keys)
    assert notary.key_list(built.path) == found
    migrated = scan_trust_dir(built.path)
    assert {k.layout for k in migrated.keys} == {Layout.CURRENT}
    assert triples(migrated.keys) == found
    root = next(k for k, r, _ in found if r == "root")
    assert notary.can_decrypt(built.path, root)


# --- one bad file at a time; the good key beside it still scans ---------------------


def _cert_pem() -> bytes:
    return self_signed_cert(ec_key(), "example.com/x")


def bad_inputs() -> list[tuple[str, str, Callable[[], tuple[str, bytes]]]]:
    """(case, expected code, factory of (relpath, bytes))."""

    def named(
        role: str = "targets",
        gun: str | None = GUN,
        headers: str | None = None,
        where: str = "",
        name: str | None = None,
    ) -> tuple[str, bytes]:
        key_id, data = key_file(role, gun)
        if headers is not None:
            data = with_headers(data, headers)
        return f"{where}{name or key_id}.key", data

    return [
        ("B04 empty file", "empty", lambda: (named()[0], b"")),
        ("B05 not PEM", "not-pem", lambda: (named()[0], b"this is not a key\n")),
        (
            "B05 broken base64",
            "not-pem",
            lambda: (
                named()[0],
                "{}\nrole: x\n\n@@@\n{}\n".format(*armour("PRIVATE KEY")).encode(),
            ),
        ),
        ("B06 certificate only", "not-a-private-key", lambda: (named()[0], _cert_pem())),
        ("B08 unknown role", "bad-role", lambda: named(headers="role: Targets!")),
        ("B08 traversal role", "bad-role", lambda: named(headers="role: ../../etc")),
        ("B09 gun with ..", "bad-gun", lambda: named(headers="gun: ../x\nrole: targets")),
        (
            "B09 gun with leading /",
            "bad-gun",
            lambda: named(headers="gun: /etc/app\nrole: targets"),
        ),
        ("B10 name not hex", "bad-name", lambda: named(name="not-a-key-id")),
        ("B10 upper-case hex", "bad-name", lambda: named(name="AB" * 32)),
        ("B10 0.1 name at the top", "bad-name", lambda: named(name="ab" * 32 + "_targets")),
        (
            "role header given twice",
            "conflicting-headers",
            lambda: named(headers=f"gun: {GUN}\nrole: targets\nrole: snapshot"),
        ),
        (
            "tuf_keys GUN vs gun header",
            "conflicting-headers",
            lambda: named(where=f"tuf_keys/{OTHER_GUN}/"),
        ),
        (
            "0.1 name role vs role header",
            "conflicting-headers",
            lambda: named(where=f"tuf_keys/{GUN}/", name="cd" * 32 + "_snapshot"),
        ),
        ("key in an unknown sub-directory", "misplaced", lambda: named(where="backup/")),
        (
            "OpenSSH private key",
            "unsupported-type",
            lambda: (
                named()[0],
                "{}\nAAAA\n{}\n".format(*armour("OPENSSH PRIVATE KEY")).encode(),
            ),
        ),
        (
            "encrypted block with garbage DER",
            "bad-key",
            lambda: (
                named()[0],
                "{}\nrole: root\n\nMAMCAQA=\n{}\n".format(
                    *armour("ENCRYPTED PRIVATE KEY")
                ).encode(),
            ),
        ),
        (
            "unencrypted key under another ID",
            "id-mismatch",
            lambda: (f"{'ef' * 32}.key", key_file("root", None, passphrase="")[1]),
        ),
    ]


@pytest.mark.parametrize(
    ("code", "factory"), [pytest.param(c, f, id=case) for case, c, f in bad_inputs()]
)
@pytest.mark.proves("B04", "B05", "B06", "B08", "B09", "B10")
def test_bad_key_file_is_a_problem_and_the_rest_still_scans(
    code: str, factory: Callable[[], tuple[str, bytes]], make_trust_dir: MakeTrustDir
) -> None:
    good_id, good = key_file("root", None)
    relpath, data = factory()
    trust = make_trust_dir({f"{good_id}.key": good, relpath: data})
    result = scan_trust_dir(trust)
    assert [k.key_id for k in result.keys] == [good_id]
    assert codes(result) == {relpath: code}
    assert code in PROBLEM_CODES
    for problem in result.problems:  # no key material in a reason
        assert not any(
            line in problem.reason
            for line in data.decode(errors="replace").splitlines()
            if len(line) > 40
        )


@pytest.mark.proves("B12")
def test_b12_symlinks_are_never_followed(make_trust_dir: MakeTrustDir, tmp_path: Path) -> None:
    key_id, data = key_file("root", None)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / f"{key_id}.key").write_bytes(data)
    trust = make_trust_dir({})
    private = trust / "private"
    (private / f"{key_id}.key").symlink_to(outside / f"{key_id}.key")
    (private / "tuf_keys").symlink_to(outside)
    (private / "dangling.key").symlink_to(tmp_path / "nowhere")
    result = scan_trust_dir(trust)
    assert result.keys == ()
    assert codes(result) == {
        f"{key_id}.key": "symlink",
        "tuf_keys": "symlink",
        "dangling.key": "symlink",
    }


def test_private_dir_symlink_is_a_problem(tmp_path: Path, make_trust_dir: MakeTrustDir) -> None:
    key_id, data = key_file("root", None)
    real = make_trust_dir({f"{key_id}.key": data})
    trust = tmp_path / "trust"
    trust.mkdir()
    (trust / "private").symlink_to(real / "private")
    result = scan_trust_dir(trust)
    assert result.keys == ()
    assert codes(result) == {".": "symlink"}


@pytest.mark.proves("B13")
def test_b13_too_large_is_not_read(make_trust_dir: MakeTrustDir) -> None:
    key_id, data = key_file("root", None)
    trust = make_trust_dir({f"{key_id}.key": data})
    big = trust / "private" / f"{'00' * 32}.key"
    with big.open("wb") as handle:
        handle.truncate(MAX_KEY_FILE_SIZE + 1)
    result = scan_trust_dir(trust)
    assert codes(result) == {big.name: "too-large"}
    exact = trust / "private" / f"{'11' * 32}.key"
    with exact.open("wb") as handle:
        handle.truncate(MAX_KEY_FILE_SIZE)
    assert codes(scan_trust_dir(trust))[exact.name] == "not-pem"  # read, then refused


def test_fifo_and_other_files(make_trust_dir: MakeTrustDir) -> None:
    key_id, data = key_file("root", None)
    trust = make_trust_dir(
        {f"{key_id}.key": data, "README": b"x", "old.pem": b"y", "tuf_keys/notes.txt": b"z"}
    )
    os.mkfifo(trust / "private" / f"{'22' * 32}.key")
    os.mkfifo(trust / "private" / "pipe")
    result = scan_trust_dir(trust)
    assert [k.key_id for k in result.keys] == [key_id]
    assert codes(result) == {f"{'22' * 32}.key": "not-regular"}


def test_duplicate_id_keeps_the_current_layout(make_trust_dir: MakeTrustDir) -> None:
    key_id, data = key_file("root", None)
    trust = make_trust_dir(
        {
            f"{key_id}.key": data,
            f"root_keys/{key_id}.key": data,
            f"root_keys/{key_id}_root.key": with_headers(data, ""),
        }
    )
    result = scan_trust_dir(trust)
    assert [(k.relpath, k.layout) for k in result.keys] == [(f"{key_id}.key", Layout.CURRENT)]
    assert codes(result) == {
        f"root_keys/{key_id}.key": "duplicate-id",
        f"root_keys/{key_id}_root.key": "duplicate-id",
    }


def test_legacy_paths_supply_gun_and_role(make_trust_dir: MakeTrustDir) -> None:
    root_id, root = key_file("root", None)
    snap_id, snap = key_file("snapshot", GUN)
    deleg_id, deleg = key_file("targets/releases", None)
    trust = make_trust_dir(
        {
            f"root_keys/{root_id}_root.key": with_headers(root, ""),
            f"tuf_keys/{GUN}/{snap_id}_snapshot.key": with_headers(snap, ""),
            f"tuf_keys/{deleg_id}.key": deleg,
        }
    )
    result = scan_trust_dir(trust)
    assert result.problems == ()
    assert triples(result.keys) == {
        (root_id, "root", None),
        (snap_id, "snapshot", GUN),
        (deleg_id, "targets/releases", None),
    }


def test_root_key_never_has_a_gun(make_trust_dir: MakeTrustDir) -> None:
    key_id, data = key_file("root", GUN)  # gun: header on a root key
    result = scan_trust_dir(make_trust_dir({f"{key_id}.key": data}))
    assert [(k.role, k.gun) for k in result.keys] == [("root", None)]


def test_unencrypted_keys_have_their_algorithm(make_trust_dir: MakeTrustDir) -> None:
    key_id, data = key_file("root", None, passphrase="")
    (key,) = scan_trust_dir(make_trust_dir({f"{key_id}.key": data})).keys
    assert (key.encrypted, key.algorithm) == (False, "ecdsa")


def test_too_deep_nesting_stops(make_trust_dir: MakeTrustDir) -> None:
    trust = make_trust_dir({})
    deep = trust / "private" / "tuf_keys"
    for _ in range(70):
        deep = deep / "d"
    deep.mkdir(parents=True)
    result = scan_trust_dir(trust)
    assert list(codes(result).values()) == ["too-deep"]


def test_missing_private_dir_means_no_keys(tmp_path: Path) -> None:
    assert scan_trust_dir(tmp_path) == ScanResult(str(tmp_path), (), ())


def test_private_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "private").write_bytes(b"")
    assert codes(scan_trust_dir(tmp_path)) == {".": "not-a-directory"}


# --- fatal errors -------------------------------------------------------------------


@pytest.mark.proves("B01")
def test_b01_missing_trust_dir(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="does not exist"):
        scan_trust_dir(tmp_path / "absent")


@pytest.mark.proves("B02")
def test_b02_trust_dir_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(UsageError, match="not a directory"):
        scan_trust_dir(tmp_path / "file")


def _scan(trust: Path) -> dict[str, object]:
    result = scan_trust_dir(trust)
    return {
        "keys": [k.key_id for k in result.keys],
        "problems": {p.relpath: p.code for p in result.problems},
    }


@needs_root_for_nobody
@pytest.mark.proves("B03")
def test_b03_unreadable_trust_dir_and_files(shared_dir: Path) -> None:
    """Root ignores modes: the scan runs in a forked child as uid 65534."""
    key_id, data = key_file("root", None)
    other_id, other = key_file("targets", GUN)
    trust = shared_dir / "trust"
    (trust / "private").mkdir(parents=True)
    for name, content in ((key_id, data), (other_id, other)):
        (trust / "private" / f"{name}.key").write_bytes(content)
    for path in (trust, trust / "private", trust / "private" / f"{key_id}.key"):
        os.chown(path, NOBODY, NOBODY)
    (trust / "private" / f"{other_id}.key").chmod(0o600)  # root-owned: unreadable
    assert run_as_nobody(lambda: _scan(trust)) == {
        "result": {"keys": [key_id], "problems": {f"{other_id}.key": "unreadable"}}
    }
    (trust / "private").chmod(0o000)
    outcome = run_as_nobody(lambda: _scan(trust))
    assert outcome.get("error") == "AccessDeniedError", outcome
    assert "private" in str(outcome["message"]) and "permissions" in str(outcome["message"])
    trust.chmod(0o000)
    outcome = run_as_nobody(lambda: _scan(trust))
    assert outcome.get("error") == "AccessDeniedError", outcome
    assert str(trust) in str(outcome["message"])


def test_default_trust_dir() -> None:
    home = Path("/home/u")
    assert default_trust_dir({}, home) == Path("/home/u/.docker/trust")
    assert default_trust_dir({"DOCKER_CONFIG": ""}, home) == Path("/home/u/.docker/trust")
    assert default_trust_dir({"DOCKER_CONFIG": "/etc/dc"}, home) == Path("/etc/dc/trust")


@settings(max_examples=300, deadline=None)
@given(
    st.binary(max_size=400),
    st.sampled_from(
        [
            "PRIVATE KEY",
            "ENCRYPTED PRIVATE KEY",
            "EC PRIVATE KEY",
            "RSA PRIVATE KEY",
            "ED25519 PRIVATE KEY",
            "CERTIFICATE",
        ]
    ),
    st.text(max_size=30),
    st.booleans(),
)
def test_hostile_file_contents_never_raise(
    body: bytes, block_type: str, header: str, legacy_path: bool
) -> None:
    """Whatever a key file holds, interpret gives a KeyFile or a ScanProblem."""
    b64 = base64.b64encode(body).decode()
    text = (
        f"-----BEGIN {block_type}-----\nrole: {header}\nDEK-Info: {header}\n\n{b64}\n"
        f"-----END {block_type}-----\n"
    )
    parts = (
        ("tuf_keys", "example.com", "ab" * 32 + "_targets.key")
        if legacy_path
        else ("ab" * 32 + ".key",)
    )
    for data in (text.encode(), body):
        outcome = interpret(data, place(parts), "/".join(parts), 0o600)
        assert isinstance(outcome, KeyFile | ScanProblem)
