"""docs/recover.py, run as a person in an incident would: a separate process, no keyvault.

Envelopes are sealed by keyvault itself (age, passphrase and a test wrapper);
the script must give back the identical bytes, 0600, never overwrite, and
refuse tampered input with a non-zero exit and a message that says why.
"""

from __future__ import annotations

import ast
import base64
import json
import os
import shutil
import stat
import subprocess
import sys
import unicodedata
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyrage
import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from keyvault import envelope as ev
from keyvault.names import KeyAddress
from keyvault.plugins import BackendOptions
from keyvault.wrappers.age import AgeWrapper
from keyvault.wrappers.passphrase import PassphraseWrapper

from ._support import GUN, KEY_ID, SEALER, TRUST, AeadWrapper, key_bytes, make_header

SCRIPT = Path(__file__).resolve().parents[2] / "docs" / "recover.py"
VECTORS = json.loads((Path(__file__).with_name("vectors.json")).read_text(encoding="utf-8"))
PASSPHRASE = "pässwörd for the recovery test"
Run = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def run(tmp_path: Path) -> Run:
    """Run recover.py isolated (-I: no PYTHONPATH, no cwd on sys.path) with umask 0."""

    def go(*args: str | Path, env: dict[str, str] | None = None
           ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-I", str(SCRIPT), *map(str, args)], cwd=tmp_path,
            env={"PATH": os.environ.get("PATH", ""), **(env or {})}, capture_output=True,
            text=True, timeout=60, check=False, preexec_fn=lambda: os.umask(0))

    return go


def save(path: Path, envelope: ev.Envelope | dict[str, Any]) -> Path:
    doc = envelope if isinstance(envelope, dict) else envelope.to_json()
    path.write_text(json.dumps(doc, indent=2))
    return path


def assert_recovered(result: subprocess.CompletedProcess[str], out: Path, data: bytes) -> None:
    assert result.returncode == 0, result.stderr
    assert out.read_bytes() == data
    assert stat.S_IMODE(out.stat().st_mode) == 0o600  # even with umask 0


def assert_refused(result: subprocess.CompletedProcess[str], code: int, fragment: str,
                   out: Path | None = None) -> None:
    assert result.returncode == code, (result.returncode, result.stderr)
    assert fragment in result.stderr
    assert result.stderr.startswith("recover.py: error: ")
    assert result.stdout == ""
    if out is not None:
        assert not out.exists()


# --------------------------------------------------------------------------- the script itself


def test_script_imports_only_the_standard_library_and_cryptography() -> None:
    tree = ast.parse(SCRIPT.read_text(encoding="utf-8"))
    modules = {alias.name.split(".")[0] for node in ast.walk(tree)
               if isinstance(node, ast.Import) for alias in node.names}
    modules |= {(node.module or "").split(".")[0] for node in ast.walk(tree)
                if isinstance(node, ast.ImportFrom)}
    assert "keyvault" not in modules
    assert modules - set(sys.stdlib_module_names) == {"cryptography"}


# --------------------------------------------------------------------------- (a) age


@pytest.fixture
def age_identity(tmp_path: Path) -> tuple[Any, Path]:
    identity = pyrage.x25519.Identity.generate()
    path = tmp_path / "identity.txt"
    path.write_text(f"{identity}\n")
    path.chmod(0o600)
    return identity, path


def age_blob(envelope_path: Path) -> bytes:
    """What the docs tell a person to do: base64-decode the age1... entry's ``wrapped``."""
    doc = json.loads(envelope_path.read_text())
    [entry] = [e for e in doc["wrapped_keys"] if e["uri"].startswith("age1")]
    assert entry["alg"] == "age-x25519"
    return base64.b64decode(entry["wrapped"])


def test_age_envelope_recovers_with_the_age_d_plaintext(
        tmp_path: Path, run: Run, age_identity: tuple[Any, Path]) -> None:
    identity, identity_file = age_identity
    data = key_bytes(300, seed=b"age")
    wrapper = AgeWrapper(str(identity.to_public()), (identity_file,))
    envelope_path = save(tmp_path / "env.json", ev.seal(make_header(data=data), data, [wrapper], sealer=SEALER))
    plain = tmp_path / "dek.bin"
    plain.write_bytes(pyrage.decrypt(age_blob(envelope_path), [identity]))  # = age -d
    out = tmp_path / "restored.key"
    result = run(envelope_path, "--out", out, "--age-plaintext", plain)
    assert_recovered(result, out, data)
    for fact in (KEY_ID, "targets", GUN, "team-a", f"{KEY_ID}.key"):
        assert fact in result.stdout
    assert ev.open_envelope(ev.Envelope.from_bytes(envelope_path.read_bytes()), [wrapper], sealers=TRUST) == data


@pytest.mark.skipif(shutil.which("age") is None, reason="the age binary is not installed")
def test_age_envelope_recovers_with_the_real_age_binary(
        tmp_path: Path, run: Run, age_identity: tuple[Any, Path]) -> None:
    identity, identity_file = age_identity
    data = key_bytes(64, seed=b"age binary")
    wrapper = AgeWrapper(str(identity.to_public()))
    envelope_path = save(tmp_path / "env.json", ev.seal(make_header(data=data), data, [wrapper], sealer=SEALER))
    blob = tmp_path / "dek.age"
    blob.write_bytes(age_blob(envelope_path))
    plain = tmp_path / "dek.bin"
    subprocess.run(["age", "-d", "-i", str(identity_file), "-o", str(plain), str(blob)],
                   check=True, timeout=60)
    out = tmp_path / "restored.key"
    assert_recovered(run(envelope_path, "--out", out, "--age-plaintext", plain), out, data)


def test_age_plaintext_of_another_key_is_refused(
        tmp_path: Path, run: Run, age_identity: tuple[Any, Path]) -> None:
    identity, _ = age_identity
    wrapper = AgeWrapper(str(identity.to_public()))
    data = key_bytes()
    mine = save(tmp_path / "mine.json", ev.seal(make_header(data=data), data, [wrapper], sealer=SEALER))
    other_header = make_header(KeyAddress("team-b", GUN, "targets", KEY_ID), data)
    other = save(tmp_path / "other.json", ev.seal(other_header, data, [wrapper], sealer=SEALER))
    plain = tmp_path / "dek.bin"
    plain.write_bytes(pyrage.decrypt(age_blob(other), [identity]))
    out = tmp_path / "restored.key"
    assert_refused(run(mine, "--out", out, "--age-plaintext", plain), 5,
                   "bound to another key (context digest differs)", out)
    plain.write_bytes(plain.read_bytes()[:32])
    assert_refused(run(mine, "--out", out, "--age-plaintext", plain), 2, "holds 32 bytes", out)


# --------------------------------------------------------------------------- (b) passphrase


@pytest.fixture
def passphrase_sealed(tmp_path: Path) -> tuple[Path, bytes]:
    data = key_bytes(500, seed=b"passphrase")
    header = make_header(KeyAddress("team-a", None, "root", KEY_ID), data)
    wrapper = PassphraseWrapper("passphrase:", BackendOptions(
        env={"KEYVAULT_PASSPHRASE": PASSPHRASE}), n=2**14)
    try:
        envelope = ev.seal(header, data, [wrapper, AeadWrapper("transit://test/a")], sealer=SEALER)
    finally:
        wrapper.close()
    return save(tmp_path / "env.json", envelope), data


def test_passphrase_envelope_recovers(tmp_path: Path, run: Run,
                                      passphrase_sealed: tuple[Path, bytes]) -> None:
    envelope_path, data = passphrase_sealed
    out = tmp_path / "restored.key"
    result = run(envelope_path, "--out", out, "--passphrase-env", "PW", env={"PW": PASSPHRASE})
    assert_recovered(result, out, data)
    assert "role:       root" in result.stdout and "gun:        -" in result.stdout
    assert PASSPHRASE not in result.stdout + result.stderr


def test_passphrase_typed_in_nfd_recovers(tmp_path: Path, run: Run,
                                          passphrase_sealed: tuple[Path, bytes]) -> None:
    envelope_path, data = passphrase_sealed
    out = tmp_path / "restored.key"
    typed = unicodedata.normalize("NFD", PASSPHRASE)
    assert typed != PASSPHRASE
    assert_recovered(run(envelope_path, "--out", out, "--passphrase-env", "PW",
                         env={"PW": typed}), out, data)


def test_wrong_or_missing_passphrase_is_refused(tmp_path: Path, run: Run,
                                                passphrase_sealed: tuple[Path, bytes]) -> None:
    envelope_path, _ = passphrase_sealed
    out = tmp_path / "restored.key"
    assert_refused(run(envelope_path, "--out", out, "--passphrase-env", "PW",
                       env={"PW": PASSPHRASE + "!"}), 4, "wrong passphrase", out)
    assert_refused(run(envelope_path, "--out", out, "--passphrase-env", "PW", env={"PW": ""}),
                   2, "PW is not set or empty", out)
    assert_refused(run(envelope_path, "--out", out, "--passphrase-env", "PW"),
                   2, "PW is not set or empty", out)


def _edit_passphrase_entry(path: Path, edit: Callable[[dict[str, Any]], None]) -> Path:
    doc = json.loads(path.read_text())
    edit(next(e for e in doc["wrapped_keys"] if e["uri"] == "passphrase:"))
    return save(path, doc)


@pytest.mark.parametrize(("edit", "code", "fragment"), [
    (lambda e: e["params"].update(n=2**21), 5, "outside the allow-list"),
    (lambda e: e["params"].update(n=2**10), 5, "outside the allow-list"),
    (lambda e: e["params"].update(r=True), 5, "outside the allow-list"),
    (lambda e: e["params"].update(extra=1), 5, "expected params"),
    (lambda e: e.update(alg="scrypt-aes-256-gcm"), 5, "expected params"),
    (lambda e: e["context"].update({"keyvault:team": "team-b"}), 5, "bound to another key"),
    (lambda e: e.update(wrapped=base64.b64encode(bytes(48)).decode()), 5,
     "passphrase is right but the wrapped key was altered"),
    (lambda e: e["params"].update(salt=base64.b64encode(bytes(16)).decode()), 4,
     "wrong passphrase"),
])
def test_tampered_passphrase_entry_is_refused(
        tmp_path: Path, run: Run, passphrase_sealed: tuple[Path, bytes],
        edit: Callable[[dict[str, Any]], None], code: int, fragment: str) -> None:
    envelope_path = _edit_passphrase_entry(passphrase_sealed[0], edit)
    out = tmp_path / "restored.key"
    assert_refused(run(envelope_path, "--out", out, "--passphrase-env", "PW",
                       env={"PW": PASSPHRASE}), code, fragment, out)


@pytest.mark.parametrize("vector", VECTORS["vectors"], ids=lambda v: v["inputs"]["header"]["role"])
def test_the_published_vectors_recover(tmp_path: Path, run: Run, vector: dict[str, Any]) -> None:
    envelope_path = save(tmp_path / "vector.json", vector["envelope"])
    out = tmp_path / "restored.key"
    result = run(envelope_path, "--out", out, "--passphrase-env", "PW",
                 env={"PW": vector["passphrase_wrap"]["passphrase"]})
    assert_recovered(result, out, bytes.fromhex(vector["inputs"]["plaintext_hex"]))


# --------------------------------------------------------------------------- (c) DEK as hex


@pytest.fixture
def hex_sealed(tmp_path: Path) -> tuple[Path, Path, bytes]:
    data = key_bytes(777, seed=b"hex")
    wrapper = AeadWrapper("transit://test/a")
    envelope = ev.seal(make_header(data=data), data, [wrapper], sealer=SEALER)
    dek_file = tmp_path / "dek.hex"
    dek_file.write_text(ev.unwrap_dek(envelope, [wrapper], sealers=TRUST).hex() + "\n")
    return save(tmp_path / "env.json", envelope), dek_file, data


def test_dek_hex_file_recovers(tmp_path: Path, run: Run,
                               hex_sealed: tuple[Path, Path, bytes]) -> None:
    envelope_path, dek_file, data = hex_sealed
    out = tmp_path / "restored.key"
    assert_recovered(run(envelope_path, "--out", out, "--dek-hex-file", dek_file), out, data)


def test_an_existing_output_is_never_overwritten(tmp_path: Path, run: Run,
                                                 hex_sealed: tuple[Path, Path, bytes]) -> None:
    envelope_path, dek_file, _ = hex_sealed
    out = tmp_path / "restored.key"
    out.write_bytes(b"precious")
    assert_refused(run(envelope_path, "--out", out, "--dek-hex-file", dek_file), 7,
                   "already exists; refusing to overwrite")
    assert out.read_bytes() == b"precious"
    target = tmp_path / "elsewhere"
    link = tmp_path / "link.key"
    link.symlink_to(target)  # dangling: O_EXCL must not create the target through it
    assert_refused(run(envelope_path, "--out", link, "--dek-hex-file", dek_file), 7,
                   "already exists")
    assert not target.exists()


def _tamper(path: Path, edit: Callable[[dict[str, Any]], None]) -> Path:
    doc = json.loads(path.read_text())
    edit(doc)
    return save(path.with_name("tampered.json"), doc)


def _flip_ciphertext(doc: dict[str, Any]) -> None:
    raw = bytearray(base64.b64decode(doc["ciphertext"]))
    raw[len(raw) // 2] ^= 1
    doc["ciphertext"] = base64.b64encode(bytes(raw)).decode()


@pytest.mark.parametrize(("edit", "fragment"), [
    (_flip_ciphertext, "authentication failed"),
    (lambda d: d["header"].update(gun="registry.example.com/team-b/app"), "commitment mismatch"),
    (lambda d: d["header"].update(size=d["header"]["size"] - 1), "commitment mismatch"),
    (lambda d: d.update(nonce=base64.b64encode(bytes(12)).decode()), "authentication failed"),
    (lambda d: d.update(version=2), "not envelope version 1"),
    (lambda d: d["header"].update(version=True), "has the wrong type"),
    (lambda d: d.update(cipher="AES-128-GCM"), "unsupported cipher"),
    (lambda d: d.update(commitment=("B" if d["commitment"][0] == "A" else "A")
                        + d["commitment"][1:]), "commitment mismatch"),
    (lambda d: d.update(nonce=d["nonce"] + "=="), "not canonical base64"),
    (lambda d: d.update(extra=1), "not a keyvault envelope"),
    (lambda d: d["header"].pop("sha256"), "bad header fields"),
])
def test_tampered_envelope_is_refused(tmp_path: Path, run: Run,
                                      hex_sealed: tuple[Path, Path, bytes],
                                      edit: Callable[[dict[str, Any]], None],
                                      fragment: str) -> None:
    envelope_path, dek_file, _ = hex_sealed
    out = tmp_path / "restored.key"
    assert_refused(run(_tamper(envelope_path, edit), "--out", out, "--dek-hex-file", dek_file),
                   5, fragment, out)


@pytest.mark.parametrize(("raw", "fragment"), [
    (None, "not valid JSON"),  # truncated
    (b'{"a": 1, "a": 2}', "not valid JSON"),
    (b'{"version": NaN}', "not valid JSON"),
    (b"[" * 100_000, "not valid JSON"),
    (b" " * (2 * 1024 * 1024 + 1), "is larger than"),
], ids=["truncated", "duplicate-key", "nan", "deep-nesting", "oversized"])
def test_malformed_documents_are_refused(tmp_path: Path, run: Run,
                                         hex_sealed: tuple[Path, Path, bytes],
                                         raw: bytes | None, fragment: str) -> None:
    envelope_path, dek_file, _ = hex_sealed
    bad = tmp_path / "bad.json"
    bad.write_bytes(envelope_path.read_bytes()[:-40] if raw is None else raw)
    out = tmp_path / "restored.key"
    assert_refused(run(bad, "--out", out, "--dek-hex-file", dek_file), 5, fragment, out)


@pytest.mark.parametrize(("content", "code", "fragment"), [
    ("00" * 31, 2, "holds a 31-byte DEK; a keyvault DEK is 32 bytes"),
    ("00" * 32, 5, "commitment mismatch"),
    ("zz", 2, "does not hold a hex-encoded DEK"),
])
def test_bad_dek_files_are_refused(tmp_path: Path, run: Run,
                                   hex_sealed: tuple[Path, Path, bytes], content: str,
                                   code: int, fragment: str) -> None:
    envelope_path, dek_file, _ = hex_sealed
    dek_file.write_text(content)
    out = tmp_path / "restored.key"
    assert_refused(run(envelope_path, "--out", out, "--dek-hex-file", dek_file), code, fragment,
                   out)


def test_dek_with_a_trailing_zero_byte_is_refused(tmp_path: Path, run: Run,
                                                  hex_sealed: tuple[Path, Path, bytes]) -> None:
    """HMAC pads short keys with zeros: DEK||00 passes the commitment; the length check holds."""
    envelope_path, dek_file, _ = hex_sealed
    dek_file.write_text(dek_file.read_text().strip() + "00")
    out = tmp_path / "restored.key"
    assert_refused(run(envelope_path, "--out", out, "--dek-hex-file", dek_file), 2,
                   "holds a 33-byte DEK", out)


def test_decrypted_bytes_are_checked_against_the_header_digest(
        tmp_path: Path, run: Run, hex_sealed: tuple[Path, Path, bytes]) -> None:
    """Someone holding the DEK re-encrypts other bytes under the same header: refused."""
    envelope_path, dek_file, data = hex_sealed
    dek = bytes.fromhex(dek_file.read_text())
    envelope = ev.Envelope.from_bytes(envelope_path.read_bytes())
    other = bytes(b ^ 0xFF for b in data)
    forged = ev.Envelope(envelope.header, envelope.nonce,
                         AESGCM(dek).encrypt(envelope.nonce, other, envelope.header.canonical()),
                         envelope.commitment, envelope.wrapped_keys)
    out = tmp_path / "restored.key"
    assert_refused(run(save(tmp_path / "forged.json", forged), "--out", out, "--dek-hex-file",
                       dek_file), 5, "do not match the header's SHA-256", out)


def test_multi_key_envelope_is_refused_for_the_other_dek(
        tmp_path: Path, run: Run, hex_sealed: tuple[Path, Path, bytes]) -> None:
    """Another wrapped entry holding another DEK: by hand, too, only the committed DEK opens."""
    envelope_path, _, _ = hex_sealed
    other = tmp_path / "other.hex"
    other.write_text(bytes(range(32)).hex())
    out = tmp_path / "restored.key"
    assert_refused(run(envelope_path, "--out", out, "--dek-hex-file", other), 5,
                   "commitment mismatch", out)


def test_missing_files_are_clear_errors(tmp_path: Path, run: Run,
                                        hex_sealed: tuple[Path, Path, bytes]) -> None:
    envelope_path, dek_file, _ = hex_sealed
    out = tmp_path / "restored.key"
    assert_refused(run(tmp_path / "nope.json", "--out", out, "--dek-hex-file", dek_file), 1,
                   "cannot read", out)
    assert_refused(run(envelope_path, "--out", out, "--dek-hex-file", tmp_path / "nope"), 2,
                   "cannot read", out)
    assert_refused(run(envelope_path, "--out", tmp_path / "no-dir" / "k", "--dek-hex-file",
                       dek_file), 1, "cannot create")
    result = run(envelope_path, "--out", out)
    assert result.returncode == 2 and "one of the arguments" in result.stderr
