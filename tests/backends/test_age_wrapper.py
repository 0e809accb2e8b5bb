"""AgeWrapper: the wrapper contract, identity files, strict unwrapping."""

from __future__ import annotations

import hashlib
import os
import re
import stat
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pyrage
import pytest
from contracts.wrapper_contract import CONTEXT, WrapperContract

from keyvault.canonical import canonical_json
from keyvault.errors import (
    AccessDeniedError,
    ConflictError,
    IntegrityError,
    InvalidInputError,
    NotFoundError,
    UsageError,
)
from keyvault.plugins import BackendOptions
from keyvault.wrappers import open_wrapper
from keyvault.wrappers.age import ALG, AgeWrapper, generate_identity, read_identity_file
from keyvault.wrappers.base import Wrapper

DEK = bytes(range(32))


def secret_line(path: Path) -> str:
    return next(
        line for line in path.read_text().splitlines() if line.startswith("AGE-SECRET-KEY-1")
    )


@pytest.fixture
def identity_file(tmp_path: Path) -> Path:
    path = tmp_path / "keys" / "recovery.txt"
    generate_identity(path)
    return path


@pytest.fixture
def recipient(identity_file: Path) -> str:
    return str(read_identity_file(identity_file)[0].to_public())


def wrapper_for(recipient: str, *files: Path) -> AgeWrapper:
    return AgeWrapper.from_uri(recipient, BackendOptions(age_identity_files=files))


class TestAgeWrapperContract(WrapperContract):
    @pytest.fixture
    def wrapper(self, recipient: str, identity_file: Path) -> Iterator[Wrapper]:
        w = wrapper_for(recipient, identity_file)
        yield w
        w.close()

    @pytest.fixture
    def secret_strings(self, identity_file: Path) -> list[str]:
        line = secret_line(identity_file)
        return [line, line[len("AGE-SECRET-KEY-1") :][:20]]


# -- URIs ---------------------------------------------------------------------------


def test_registry_builds_an_age_wrapper(recipient: str) -> None:
    w = open_wrapper(recipient, BackendOptions())
    assert isinstance(w, AgeWrapper) and w.uri == recipient
    assert repr(w) == f"AgeWrapper({recipient!r})"


@pytest.mark.parametrize(
    "uri",
    [
        "age1",
        "age1notbech32",
        "age1" + "q" * 58,
        "AGE-SECRET-KEY-1X",
        "age1qqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqq",
    ],
)
def test_invalid_recipient_refused(uri: str) -> None:
    with pytest.raises(UsageError):
        AgeWrapper.from_uri(uri, BackendOptions())


# -- generate_identity ----------------------------------------------------------------


def test_generate_identity_writes_an_age_keygen_file(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        path = tmp_path / "new" / "dir" / "identity.txt"
        recipient = generate_identity(path)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(path.parent.parent.stat().st_mode) == 0o700
    lines = path.read_text().splitlines()
    assert re.fullmatch(r"# created: \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", lines[0])
    assert lines[1] == f"# public key: {recipient}"
    assert lines[2].startswith("AGE-SECRET-KEY-1") and len(lines) == 3
    identity = pyrage.x25519.Identity.from_str(lines[2])
    assert str(identity.to_public()) == recipient


def test_generate_identity_never_overwrites(identity_file: Path) -> None:
    before = identity_file.read_bytes()
    with pytest.raises(ConflictError) as info:
        generate_identity(identity_file)
    assert identity_file.read_bytes() == before
    assert str(identity_file) in info.value.message
    assert secret_line(identity_file) not in str(info.value)
    assert [p.name for p in identity_file.parent.iterdir()] == [identity_file.name]


# -- the format -------------------------------------------------------------------------


def test_blob_is_dek_and_context_digest_encrypted_to_the_recipient(
    recipient: str, identity_file: Path
) -> None:
    wrapped = wrapper_for(recipient).wrap(DEK, CONTEXT)
    assert (wrapped.alg, dict(wrapped.params)) == (ALG, {})
    identity = pyrage.x25519.Identity.from_str(secret_line(identity_file))
    plain = pyrage.decrypt(wrapped.blob, [identity])
    assert plain == DEK + hashlib.sha256(canonical_json(CONTEXT)).digest()


def test_wrapping_needs_no_identity(recipient: str) -> None:
    wrapped = wrapper_for(recipient).wrap(DEK, CONTEXT)
    assert wrapped.uri == recipient


# -- identities ---------------------------------------------------------------------------


def test_identity_readable_by_others_refused(recipient: str, identity_file: Path) -> None:
    wrapped = wrapper_for(recipient).wrap(DEK, CONTEXT)
    for mode in (0o640, 0o604, 0o660, 0o700 | 0o004):
        identity_file.chmod(mode)
        with pytest.raises(AccessDeniedError) as info:
            wrapper_for(recipient, identity_file).unwrap(wrapped, CONTEXT)
        assert f"chmod 600 {identity_file}" in str(info.value)
        assert secret_line(identity_file) not in str(info.value)


def test_missing_identity_file_is_named(recipient: str, tmp_path: Path) -> None:
    wrapped = wrapper_for(recipient).wrap(DEK, CONTEXT)
    missing = tmp_path / "lost-identity.txt"
    with pytest.raises(NotFoundError) as info:
        wrapper_for(recipient, missing).unwrap(wrapped, CONTEXT)
    assert str(missing) in info.value.message


def test_no_identity_configured(recipient: str) -> None:
    wrapped = wrapper_for(recipient).wrap(DEK, CONTEXT)
    with pytest.raises(AccessDeniedError) as info:
        wrapper_for(recipient).unwrap(wrapped, CONTEXT)
    text = str(info.value)
    assert recipient in text
    assert "recovery.identity_file" in text and "KEYVAULT_AGE_IDENTITY" in text


def test_wrong_identity_is_access_denied(recipient: str, tmp_path: Path) -> None:
    wrapped = wrapper_for(recipient).wrap(DEK, CONTEXT)
    other = tmp_path / "other.txt"
    other_recipient = generate_identity(other)
    with pytest.raises(AccessDeniedError) as info:
        wrapper_for(recipient, other).unwrap(wrapped, CONTEXT)
    assert recipient in info.value.message
    assert secret_line(other) not in str(info.value)
    assert other_recipient != recipient


def test_identity_found_in_a_later_file_and_among_several(
    recipient: str, identity_file: Path, tmp_path: Path
) -> None:
    wrapped = wrapper_for(recipient).wrap(DEK, CONTEXT)
    other = tmp_path / "other.txt"
    generate_identity(other)
    combined = tmp_path / "combined.txt"
    combined.write_text(f"# two keys\n\n{secret_line(other)}\n  {secret_line(identity_file)}  \n")
    combined.chmod(0o600)
    missing = tmp_path / "missing.txt"
    assert wrapper_for(recipient, missing, other, combined).unwrap(wrapped, CONTEXT) == DEK


def test_identity_is_read_once(recipient: str, identity_file: Path) -> None:
    w = wrapper_for(recipient, identity_file)
    first = w.wrap(DEK, CONTEXT)
    assert w.unwrap(first, CONTEXT) == DEK
    identity_file.unlink()
    assert w.unwrap(w.wrap(DEK, CONTEXT), CONTEXT) == DEK
    w.close()
    with pytest.raises(NotFoundError):
        w.unwrap(first, CONTEXT)


@pytest.mark.parametrize(
    "content",
    [
        "AGE-SECRET-KEY-1NOTVALID\n",
        "ssh-ed25519 AAAA...\n",
        "AGE-PLUGIN-YUBIKEY-1XYZ\n",
    ],
)
def test_bad_identity_file(recipient: str, tmp_path: Path, content: str) -> None:
    path = tmp_path / "bad.txt"
    path.write_text(content)
    path.chmod(0o600)
    wrapped = wrapper_for(recipient).wrap(DEK, CONTEXT)
    with pytest.raises(InvalidInputError) as info:
        wrapper_for(recipient, path).unwrap(wrapped, CONTEXT)
    assert "line 1" in info.value.message
    assert content.strip() not in str(info.value)


def test_binary_identity_file(recipient: str, tmp_path: Path) -> None:
    path = tmp_path / "bin.txt"
    path.write_bytes(b"\xff\xfe")
    path.chmod(0o600)
    with pytest.raises(InvalidInputError):
        read_identity_file(path)


def test_identity_directory_refused(tmp_path: Path) -> None:
    (tmp_path / "dir").mkdir(mode=0o700)
    with pytest.raises(UsageError):
        read_identity_file(tmp_path / "dir")


# -- strictness and tampering ----------------------------------------------------------------


def test_blob_for_another_recipient_under_this_uri(
    recipient: str, identity_file: Path, tmp_path: Path
) -> None:
    other = generate_identity(tmp_path / "other.txt")
    foreign = wrapper_for(other).wrap(DEK, CONTEXT)
    swapped = replace(foreign, uri=recipient)
    with pytest.raises(IntegrityError):
        wrapper_for(recipient, identity_file).unwrap(swapped, CONTEXT)


@pytest.mark.parametrize("plain_size", [32, 63, 65])
def test_wrong_plaintext_length(recipient: str, identity_file: Path, plain_size: int) -> None:
    forged = pyrage.encrypt(os.urandom(plain_size), [pyrage.x25519.Recipient.from_str(recipient)])
    wrapped = replace(wrapper_for(recipient).wrap(DEK, CONTEXT), blob=forged)
    with pytest.raises(IntegrityError):
        wrapper_for(recipient, identity_file).unwrap(wrapped, CONTEXT)


def test_unexpected_params_refused(recipient: str, identity_file: Path) -> None:
    wrapped = wrapper_for(recipient).wrap(DEK, CONTEXT)
    with pytest.raises(IntegrityError):
        wrapper_for(recipient, identity_file).unwrap(replace(wrapped, params={"x": 1}), CONTEXT)


def test_huge_blob_refused_before_decrypting(recipient: str, identity_file: Path) -> None:
    wrapped = replace(wrapper_for(recipient).wrap(DEK, CONTEXT), blob=b"a" * 100_000)
    with pytest.raises(IntegrityError):
        wrapper_for(recipient, identity_file).unwrap(wrapped, CONTEXT)
