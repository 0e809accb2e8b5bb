"""write_sample_trust_dir: notary-format keys that the real notary lists and decrypts."""

from __future__ import annotations

import re
import stat
from pathlib import Path

import pytest
from notarykit import PASSPHRASES, BuiltTrustDir, Notary, armour, triples

from keyvault.errors import UsageError
from keyvault.trust import der, pkcs8
from keyvault.trust.deep import verify_key_id
from keyvault.trust.model import KeyFile
from keyvault.trust.pem import decode_first
from keyvault.trust.sample import DEFAULT_GUNS, write_sample_trust_dir
from keyvault.trust.scan import scan_trust_dir

Sample = tuple[Path, tuple[KeyFile, ...]]
FORMAT = re.compile(
    re.escape(armour("ENCRYPTED PRIVATE KEY")[0].encode())
    + rb"\n(gun: [a-z./-]+\n)?role: (root|targets|snapshot)\n"
    rb"\n([A-Za-z0-9+/]{64}\n)+[A-Za-z0-9+/=]{1,64}\n"
    + re.escape(armour("ENCRYPTED PRIVATE KEY")[1].encode())
    + rb"\n"
)


def test_sample_keys_and_layout(sample_trust_dir: Sample) -> None:
    path, keys = sample_trust_dir
    assert {(k.role, k.gun) for k in keys} == {("root", None)} | {
        (role, gun) for gun in DEFAULT_GUNS for role in ("targets", "snapshot")
    }
    assert stat.S_IMODE((path / "private").stat().st_mode) == 0o700
    result = scan_trust_dir(path)
    assert result.problems == ()
    assert result.keys == keys
    for key in keys:
        file = path / "private" / key.relpath
        assert stat.S_IMODE(file.stat().st_mode) == 0o600
        assert FORMAT.fullmatch(file.read_bytes()), key.relpath
        assert key.role is not None
        assert verify_key_id(key, PASSPHRASES[key.role]) == key.key_id


def test_notary_lists_exactly_the_sample(sample_trust_dir: Sample, notary: Notary) -> None:
    path, keys = sample_trust_dir
    assert notary.key_list(path) == triples(keys)


def test_notary_decrypts_every_sample_key(sample_trust_dir: Sample, notary: Notary) -> None:
    path, keys = sample_trust_dir
    for key in keys:
        assert notary.can_decrypt(path, key.key_id), key.relpath
    wrong = {role: value + "-wrong" for role, value in PASSPHRASES.items()}
    assert not notary.can_decrypt(path, keys[0].key_id, wrong)


def _masked_structure(der_bytes: bytes) -> bytes:
    """The DER with salt, IV and ciphertext zeroed: only notary's choices remain."""
    info = pkcs8.parse_encrypted(der_bytes)
    out = der_bytes
    for secret in (info.salt, info.iv, info.ciphertext):
        out = out.replace(secret, bytes(len(secret)))
    return out


def test_sample_der_is_shaped_exactly_like_notarys(
    sample_trust_dir: Sample, notary_trust_dir: BuiltTrustDir
) -> None:
    """Same PBES2 parameters, same field order, no PRF field, 8-byte salt, 2048 rounds."""
    sample_root = next(k for k in sample_trust_dir[1] if k.role == "root")
    notary_root = notary_trust_dir.ids("root")[0]
    ours = decode_first(sample_root.data)
    theirs = decode_first((notary_trust_dir.path / "private" / f"{notary_root}.key").read_bytes())
    assert ours is not None and theirs is not None
    assert ours.headers == theirs.headers == {"role": "root"}
    assert _masked_structure(ours.data) == _masked_structure(theirs.data)
    info = pkcs8.parse_encrypted(ours.data)
    assert (len(info.salt), info.iterations, info.prf, info.key_size) == (8, 2048, "sha1", 32)
    inner = pkcs8.decrypt(info, PASSPHRASES["root"])
    reader = der.DerReader(der.parse_single(inner, der.SEQUENCE, "t"))
    assert reader.integer() == 1  # notary's version 1 without publicKey


def test_unencrypted_sample_is_read_by_notary(tmp_path: Path, notary: Notary) -> None:
    keys = write_sample_trust_dir(
        tmp_path / "t", {"root": "", "targets": "", "snapshot": ""}, guns=("example.com/plain/app",)
    )
    assert all(
        not k.encrypted and k.data.startswith(f"{armour('PRIVATE KEY')[0]}\n".encode())
        for k in keys
    )
    assert notary.key_list(tmp_path / "t") == triples(keys)
    assert notary.can_decrypt(tmp_path / "t", keys[0].key_id, {})


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="snapshot"):
        write_sample_trust_dir(tmp_path / "a", {"root": "r", "targets": "t"})
    with pytest.raises(UsageError, match="GUN"):
        write_sample_trust_dir(
            tmp_path / "b", {"root": "r", "targets": "t", "snapshot": "s"}, guns=("../escape",)
        )
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
