"""PEM decoding follows Go's encoding/pem (what notary uses), encoding matches notary's bytes."""

from __future__ import annotations

from notarykit import BuiltTrustDir, armour

from keyvault.trust import pem

BODY = "MAMCAQA="  # SEQUENCE { INTEGER 0 }
BEGIN, END = armour("PRIVATE KEY")
BEGIN_EC, END_EC = armour("EC PRIVATE KEY")


def block(text: str) -> pem.PemBlock | None:
    return pem.decode_first(text.encode())


def test_encode_reproduces_notarys_files_byte_for_byte(notary_trust_dir: BuiltTrustDir) -> None:
    files = sorted((notary_trust_dir.path / "private").glob("*.key"))
    assert files
    for path in files:
        data = path.read_bytes()
        decoded = pem.decode_first(data)
        assert decoded is not None
        assert pem.encode(decoded.type, decoded.data, decoded.headers) == data


def test_headers_are_trimmed_like_go() -> None:
    got = block(f"{BEGIN}\n role :  targets \ngun:example.com/a\n\n{BODY}\n{END}\n")
    assert got is not None
    assert got.headers == {"role": "targets", "gun": "example.com/a"}
    assert got.data == b"\x30\x03\x02\x01\x00"


def test_blank_line_after_headers_is_optional_and_crlf_is_accepted() -> None:
    got = block(f"{BEGIN}\r\nrole: root\r\n{BODY}\r\n{END}\r\n")
    assert got is not None and got.headers == {"role": "root"}


def test_only_the_first_block_counts_and_leading_junk_is_skipped() -> None:
    got = block(
        f"junk\n-----BEGIN CERTIFICATE-----\n{BODY}\n-----END CERTIFICATE-----\n"
        f"{BEGIN}\n{BODY}\n{END}\n"
    )
    assert got is not None and got.type == "CERTIFICATE"


def test_broken_blocks_are_skipped_like_go() -> None:
    text = f"{BEGIN}\n{BODY}\n-----END OTHER-----\n{BEGIN_EC}\nrole: x\n\n{BODY}\n{END_EC}\n"
    got = block(text)
    assert got is not None and got.type == "EC PRIVATE KEY"
    assert block(f"{BEGIN}\n%%%%\n{END}\n") is None
    assert block(f"{BEGIN}\nrole: x\n") is None
    assert block("") is None


def test_differently_repeated_headers_are_flagged() -> None:
    got = block(f"{BEGIN}\nrole: a\nrole: b\ngun: g\ngun: g\n\n{BODY}\n{END}\n")
    assert got is not None
    assert got.headers["role"] == "b"  # Go: the last one wins
    assert got.duplicates == frozenset({"role"})


def test_encode_layout() -> None:
    data = bytes(range(100))
    text = pem.encode(
        "ENCRYPTED PRIVATE KEY", data, {"role": "r", "gun": "g", "Proc-Type": "4,ENCRYPTED"}
    ).decode()
    lines = text.splitlines()
    assert lines[:5] == [
        armour("ENCRYPTED PRIVATE KEY")[0],
        "Proc-Type: 4,ENCRYPTED",
        "gun: g",
        "role: r",
        "",
    ]
    assert len(lines[5]) == 64 and text.endswith(armour("ENCRYPTED PRIVATE KEY")[1] + "\n")
    decoded = pem.decode_first(text.encode())
    assert decoded is not None and decoded.data == data
