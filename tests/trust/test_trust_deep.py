"""Deep checks: decryption, key IDs against notary's own names, hostile input."""

from __future__ import annotations

import contextlib
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from fixtures.components import find_tool
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from notarykit import PASSPHRASES, BuiltTrustDir, Notary, passphrase_env, passphrase_of

from keyvault.errors import (
    AccessDeniedError,
    IntegrityError,
    InvalidInputError,
    KeyvaultError,
    UsageError,
)
from keyvault.trust import der, pkcs8
from keyvault.trust.deep import load_private_key, open_block, verify_key_id
from keyvault.trust.keyid import private_key_id, tuf_key_id
from keyvault.trust.model import KeyFile, Layout
from keyvault.trust.passphrases import passphrase_for
from keyvault.trust.pem import PemBlock, decode_first
from keyvault.trust.scan import scan_trust_dir

from ._keys import GUN, PASSPHRASE, key_file


def as_key(data: bytes, key_id: str = "ab" * 32, role: str = "targets") -> KeyFile:
    return KeyFile(
        key_id=key_id,
        role=role,
        gun=GUN,
        algorithm=None,
        relpath=f"{key_id}.key",
        mode=0o600,
        layout=Layout.CURRENT,
        encrypted=True,
        data=data,
    )


# --- against the real notary ---------------------------------------------------------


@pytest.mark.parametrize(
    "fixture", ["notary_trust_dir", "legacy_trust_dir", "legacy_v01_trust_dir"]
)
def test_key_ids_equal_notarys_file_names(fixture: str, request: pytest.FixtureRequest) -> None:
    """ECDSA and RSA keys made by notary (PKCS#8) or openssl (RFC 1421): ID == name."""
    built: BuiltTrustDir = request.getfixturevalue(fixture)
    env = passphrase_env()
    result = scan_trust_dir(built.path)
    assert {k.key_id for k in result.keys} == {k for k, _, _ in built.keys}
    for key in result.keys:
        assert verify_key_id(key, passphrase_for(key.role, env)) == key.key_id
        algorithm = (
            "rsa"
            if isinstance(load_private_key(key, passphrase_for(key.role, env)), rsa.RSAPrivateKey)
            else "ecdsa"
        )
        assert algorithm == built.algorithms[key.key_id]
    assert "rsa" in {built.algorithms[k.key_id] for k in result.keys}


@pytest.mark.proves("B11")
def test_b11_renamed_file_is_detected(notary_trust_dir: BuiltTrustDir, notary: Notary) -> None:
    private = notary_trust_dir.path / "private"
    real = notary_trust_dir.ids("root")[0]
    fake = "0" * 64
    (private / f"{real}.key").rename(private / f"{fake}.key")
    (key,) = [k for k in scan_trust_dir(notary_trust_dir.path).keys if k.role == "root"]
    assert key.key_id == fake  # the scan alone cannot tell (the key is encrypted)
    with pytest.raises(IntegrityError, match=real) as caught:
        verify_key_id(key, PASSPHRASES["root"])
    assert "rename it to" in str(caught.value)
    assert not notary.can_decrypt(notary_trust_dir.path, fake)  # notary renames it too


@pytest.mark.proves("B14")
def test_b14_wrong_passphrase(notary_trust_dir: BuiltTrustDir, notary: Notary) -> None:
    (key,) = [
        k
        for k in scan_trust_dir(notary_trust_dir.path).keys
        if k.role == "targets" and k.gun == "example.com/team-a/app"
    ]
    wrong = "not-the-targets-passphrase"
    with pytest.raises(AccessDeniedError, match="wrong passphrase for targets key") as caught:
        verify_key_id(key, wrong)
    assert wrong not in str(caught.value) and "NOTARY_TARGETS_PASSPHRASE" in str(caught.value)
    assert not notary.can_decrypt(
        notary_trust_dir.path, key.key_id, {**PASSPHRASES, "targets": wrong}
    )


def _reencrypt_with_openssl(data: bytes, passphrase: str, *options: str) -> bytes:
    body = b"\n".join(line for line in data.splitlines() if b": " not in line and line)
    env = {"PATH": "/usr/bin:/bin", "KV_PW": passphrase}
    out = subprocess.run(
        [
            find_tool("openssl"),
            "pkcs8",
            "-topk8",
            "-passin",
            "env:KV_PW",
            "-passout",
            "env:KV_PW",
            *options,
        ],
        input=body + b"\n",
        env=env,
        capture_output=True,
        check=True,
    ).stdout
    begin, rest = out.split(b"\n", 1)
    return begin + b"\n" + data.split(b"\n", 1)[1].split(b"\n\n", 1)[0] + b"\n\n" + rest


def test_prf_notary_cannot_read_is_reported(
    notary_trust_dir: BuiltTrustDir, notary: Notary
) -> None:
    """hmacWithSHA256 keys decrypt here, but notary refuses them, so verify says so."""
    path = notary_trust_dir.path / "private" / f"{notary_trust_dir.ids('root')[0]}.key"
    original = path.read_bytes()
    pw = PASSPHRASES["root"]
    for options, notary_ok in (
        ((), False),
        (("-v2", "aes-256-cbc", "-v2prf", "hmacWithSHA1"), True),
    ):
        path.write_bytes(_reencrypt_with_openssl(original, pw, *options))
        (key,) = [k for k in scan_trust_dir(notary_trust_dir.path).keys if k.role == "root"]
        assert notary.can_decrypt(notary_trust_dir.path, key.key_id) is notary_ok
        assert private_key_id(load_private_key(key, pw)) == key.key_id
        if notary_ok:
            assert verify_key_id(key, pw) == key.key_id
        else:
            with pytest.raises(InvalidInputError, match="HMAC-SHA256"):
                verify_key_id(key, pw)


# --- in-process keys ---------------------------------------------------------------


@pytest.mark.parametrize(
    "make",
    [
        lambda: ec.generate_private_key(ec.SECP256R1()),
        lambda: ec.generate_private_key(ec.SECP384R1()),
        lambda: ed25519.Ed25519PrivateKey.generate(),
    ],
    ids=["p256", "p384", "ed25519"],
)
@pytest.mark.parametrize("passphrase", [PASSPHRASE, ""], ids=["encrypted", "plain"])
def test_notary_format_round_trip(make: object, passphrase: str) -> None:
    key = make()  # type: ignore[operator]
    key_id, data = key_file("targets", GUN, passphrase, key)
    loaded = load_private_key(as_key(data, key_id), passphrase or None)
    assert private_key_id(loaded) == key_id
    assert verify_key_id(as_key(data, key_id), passphrase or None) == key_id


def test_ed25519_id_is_over_the_raw_public_key() -> None:
    key = ed25519.Ed25519PrivateKey.generate()
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert private_key_id(key) == tuf_key_id("ed25519", raw)


def test_legacy_rfc1421_blocks() -> None:
    """EC/RSA PRIVATE KEY with Proc-Type/DEK-Info, as notary < 0.4 wrote them."""
    for key in (
        ec.generate_private_key(ec.SECP256R1()),
        rsa.generate_private_key(public_exponent=65537, key_size=1024),
    ):
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.BestAvailableEncryption(PASSPHRASE.encode()),
        )
        assert b"DEK-Info: AES-256-CBC" in pem
        data = pem.replace(b"\n\n", b"\nrole: targets\n\n", 1)
        key_id = private_key_id(key)
        assert verify_key_id(as_key(data, key_id), PASSPHRASE) == key_id
        with pytest.raises(AccessDeniedError):
            verify_key_id(as_key(data, key_id), "wrong")


def test_missing_passphrase_is_a_usage_error() -> None:
    key_id, data = key_file()
    with pytest.raises(UsageError, match="no passphrase") as caught:
        verify_key_id(as_key(data, key_id), None)
    assert "NOTARY_TARGETS_PASSPHRASE" in str(caught.value)


@pytest.mark.proves("B15")
def test_b15_empty_passphrase_variable() -> None:
    with pytest.raises(UsageError, match="NOTARY_ROOT_PASSPHRASE is set but empty"):
        passphrase_for("root", {"NOTARY_ROOT_PASSPHRASE": ""})


@pytest.mark.proves("T7")
def test_errors_and_reprs_carry_no_secret() -> None:
    key_id, data = key_file()
    block = decode_first(data)
    assert block is not None
    assert repr(open_block(block, PASSPHRASE, "k")) == "OpenedKey(algorithm='ecdsa')"
    assert "data=" not in repr(block)
    assert "ciphertext=" not in repr(pkcs8.parse_encrypted(block.data))
    assert data.decode().splitlines()[4] not in repr(as_key(data, key_id))


# --- hostile input -----------------------------------------------------------------


def _encrypted_der() -> bytes:
    block = decode_first(key_file()[1])
    assert block is not None
    return block.data


def _open(der_bytes: bytes, passphrase: str | None = PASSPHRASE) -> None:
    open_block(
        PemBlock("ENCRYPTED PRIVATE KEY", {"role": "targets"}, der_bytes),
        passphrase,
        "k",
        "targets",
    )


def test_truncated_der_is_invalid_input() -> None:
    data = _encrypted_der()
    for n in range(len(data)):
        with pytest.raises(InvalidInputError):
            _open(data[:n])


@pytest.mark.parametrize(
    "mutation",
    [
        lambda d: d[:1] + b"\x84\xff\xff\xff\xff" + d[2:],  # absurd outer length
        lambda d: d[:1] + b"\x80" + d[2:],  # indefinite length
        lambda d: d[:1] + b"\x81\x05" + d[2:],  # non-minimal length
        lambda d: d + b"\x00",  # trailing byte
        lambda d: b"\x1f\x81" + d[2:],  # multi-byte tag
    ],
)
def test_wrong_lengths_are_invalid_input(mutation: object) -> None:
    with pytest.raises(InvalidInputError):
        _open(mutation(_encrypted_der()))  # type: ignore[operator]


@pytest.mark.proves("T10")
def test_huge_iteration_count_is_refused_before_any_work() -> None:
    kdf = der.sequence(
        der.oid(pkcs8.OID_PBKDF2), der.sequence(der.octet_string(b"12345678"), der.integer(10**9))
    )
    scheme = der.sequence(der.oid(pkcs8.OID_AES256_CBC), der.octet_string(b"\0" * 16))
    data = der.sequence(
        der.sequence(der.oid(pkcs8.OID_PBES2), der.sequence(kdf, scheme)),
        der.octet_string(b"\0" * 32),
    )
    with pytest.raises(InvalidInputError, match="out of range"):
        _open(data)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_fuzzed_der_raises_only_keyvault_errors(data: st.DataObject) -> None:
    base = bytearray(_ENCRYPTED)
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(base) - 1))
        base[at] = data.draw(st.integers(0, 255))
    for blob in (bytes(base), data.draw(st.binary(max_size=300))):
        with contextlib.suppress(InvalidInputError, AccessDeniedError):
            _open(blob)
        with contextlib.suppress(InvalidInputError):
            pkcs8.parse_private_key_info(blob)


@settings(max_examples=200, deadline=None)
@given(
    st.binary(max_size=200),
    st.sampled_from(["PRIVATE KEY", "EC PRIVATE KEY", "RSA PRIVATE KEY", "ED25519 PRIVATE KEY"]),
)
def test_fuzzed_plain_blocks_raise_only_invalid_input(blob: bytes, block_type: str) -> None:
    try:
        open_block(PemBlock(block_type, {}, blob), None, "k")
    except KeyvaultError as exc:
        assert isinstance(exc, InvalidInputError)


_ENCRYPTED = _encrypted_der()


def test_passphrase_helper_matches_notary_aliases() -> None:
    assert passphrase_of("targets/releases") == PASSPHRASES["delegation"]
    assert passphrase_for("alice", passphrase_env()) == PASSPHRASES["delegation"]


def test_scan_reads_a_file_once(tmp_path: Path) -> None:
    """Sanity: the scan's bytes are the deep check's input (no re-read of the path)."""
    key_id, data = key_file("root", None)
    (tmp_path / "private").mkdir()
    (tmp_path / "private" / f"{key_id}.key").write_bytes(data)
    (key,) = scan_trust_dir(tmp_path).keys
    (tmp_path / "private" / f"{key_id}.key").write_bytes(b"changed")
    assert verify_key_id(key, PASSPHRASE) == key_id
