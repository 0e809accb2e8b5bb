"""docs/recover.py, run as a person in an incident would: a separate process, no keyvault.

Envelopes are sealed by keyvault itself (age, passphrase and a test wrapper)
and signed by the test SEALER; the script must give back the identical bytes,
0600, never overwrite, and refuse tampered input with a non-zero exit and a
message that says why. It checks who sealed an envelope before anything else:
a document altered to test a deeper check (commitment, tag, base64...) is
signed again by SEALER, as a trusted sealer's own mistake would be, and the
tests of the signature check prove that without that every change is refused.
"""

from __future__ import annotations

import ast
import base64
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import textwrap
import unicodedata
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyrage
import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from fixtures.components import find_tool

from keyvault import envelope as ev
from keyvault.canonical import canonical_json
from keyvault.names import KeyAddress
from keyvault.plugins import BackendOptions
from keyvault.sealing import PIN_LINE, Ed25519FileSealer, Sealer
from keyvault.wrappers.age import AgeWrapper
from keyvault.wrappers.passphrase import PassphraseWrapper

from ._support import GUN, KEY_ID, SEALER, TRUST, AeadWrapper, key_bytes, make_header

SCRIPT = Path(__file__).resolve().parents[2] / "docs" / "recover.py"
VECTORS = json.loads((Path(__file__).with_name("vectors.json")).read_text(encoding="utf-8"))
PASSPHRASE = "pässwörd for the recovery test"
PIN = SEALER.key.fingerprint
#: A sealer nobody pinned: what anyone who can write the store (and wrap for you) can be.
STRANGER = Ed25519FileSealer(
    Path("/nonexistent/stranger.key"), ed25519.Ed25519PrivateKey.generate()
)
Run = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def run(tmp_path: Path) -> Run:
    """Run recover.py isolated (-I: no PYTHONPATH, no cwd on sys.path) with umask 0.

    Every run pins the test SEALER with --trust-sealer unless ``pinned=False``.
    """

    def go(
        *args: str | Path, env: dict[str, str] | None = None, pinned: bool = True
    ) -> subprocess.CompletedProcess[str]:
        pin = ["--trust-sealer", PIN] if pinned else []
        return subprocess.run(
            [sys.executable, "-I", str(SCRIPT), *map(str, args), *pin],
            cwd=tmp_path,
            env={"PATH": os.environ.get("PATH", ""), **(env or {})},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            preexec_fn=lambda: os.umask(0),
        )

    return go


def save(path: Path, envelope: ev.Envelope | dict[str, Any]) -> Path:
    doc = envelope if isinstance(envelope, dict) else envelope.to_json()
    path.write_text(json.dumps(doc, indent=2))
    return path


def resign(doc: dict[str, Any], sealer: Sealer = SEALER) -> dict[str, Any]:
    """``doc`` signed again as it stands, however altered (keyvault need not parse it)."""
    unsigned = {name: value for name, value in doc.items() if name != "signature"}
    value = sealer.sign(ev.SIGN_LABEL + canonical_json(unsigned))
    return {**unsigned, "signature": ev.Signature(sealer.key, value).to_json()}


def seal(data: bytes, wrapper: Any, header: ev.Header | None = None) -> ev.Envelope:
    return ev.seal(header or make_header(data=data), data, [wrapper], sealer=SEALER)


def assert_recovered(result: subprocess.CompletedProcess[str], out: Path, data: bytes) -> None:
    assert result.returncode == 0, result.stderr
    assert out.read_bytes() == data
    assert stat.S_IMODE(out.stat().st_mode) == 0o600  # even with umask 0


def assert_refused(
    result: subprocess.CompletedProcess[str], code: int, fragment: str, out: Path | None = None
) -> None:
    assert result.returncode == code, (result.returncode, result.stderr)
    assert fragment in result.stderr
    assert result.stderr.startswith("recover.py: error: ")
    assert result.stdout == ""
    if out is not None:
        assert not out.exists()


# --------------------------------------------------------------------------- the script itself


def test_script_imports_only_the_standard_library_and_cryptography() -> None:
    tree = ast.parse(SCRIPT.read_text(encoding="utf-8"))
    modules = {
        alias.name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    }
    modules |= {
        (node.module or "").split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom)
    }
    assert "keyvault" not in modules
    assert modules - set(sys.stdlib_module_names) == {"cryptography"}


def test_help_says_what_the_script_does_not_check(run: Run) -> None:
    result = run("--help", pinned=False)
    assert result.returncode == 0
    text = " ".join(result.stdout.split())
    for fragment in (
        "--trust-sealer",
        "--identity",
        "--allow-unsigned",
        "Not checked here: the version chain",
        "revoked sealers",
    ):
        assert fragment in text, fragment


# --------------------------------------------------------------------------- (a) age


@pytest.fixture
def age_identity(tmp_path: Path) -> tuple[Any, Path]:
    """An identity file as 'keyvault init' writes it: the sealer pin in a comment line."""
    identity = pyrage.x25519.Identity.generate()
    path = tmp_path / "identity.txt"
    path.write_text(f"# created by the recovery tests\n{PIN_LINE}{PIN}\n{identity}\n")
    path.chmod(0o600)
    return identity, path


def age_blob(envelope_path: Path) -> bytes:
    """What the docs tell a person to do: base64-decode the age1... entry's ``wrapped``."""
    doc = json.loads(envelope_path.read_text())
    [entry] = [e for e in doc["wrapped_keys"] if e["uri"].startswith("age1")]
    assert entry["alg"] == "age-x25519"
    return base64.b64decode(entry["wrapped"])


def test_age_envelope_recovers_with_the_age_d_plaintext(
    tmp_path: Path, run: Run, age_identity: tuple[Any, Path]
) -> None:
    """The identity file's pin line is the only pin: no --trust-sealer needed."""
    identity, identity_file = age_identity
    data = key_bytes(300, seed=b"age")
    wrapper = AgeWrapper(str(identity.to_public()), (identity_file,))
    envelope_path = save(tmp_path / "env.json", seal(data, wrapper))
    plain = tmp_path / "dek.bin"
    plain.write_bytes(pyrage.decrypt(age_blob(envelope_path), [identity]))  # = age -d
    out = tmp_path / "restored.key"
    result = run(
        envelope_path,
        "--out",
        out,
        "--age-plaintext",
        plain,
        "--identity",
        identity_file,
        pinned=False,
    )
    assert_recovered(result, out, data)
    for fact in (
        KEY_ID,
        "targets",
        GUN,
        "team-a",
        f"{KEY_ID}.key",
        PIN,
        "number 1, on top of none",
    ):
        assert fact in result.stdout
    opened = ev.Envelope.from_bytes(envelope_path.read_bytes())
    assert ev.open_envelope(opened, [wrapper], sealers=TRUST) == data


def test_age_envelope_recovers_with_the_real_age_binary(
    tmp_path: Path, run: Run, age_identity: tuple[Any, Path]
) -> None:
    """age itself reads the identity file with its pin line (a # comment to age)."""
    identity, identity_file = age_identity
    data = key_bytes(64, seed=b"age binary")
    wrapper = AgeWrapper(str(identity.to_public()))
    envelope_path = save(tmp_path / "env.json", seal(data, wrapper))
    blob = tmp_path / "dek.age"
    blob.write_bytes(age_blob(envelope_path))
    plain = tmp_path / "dek.bin"
    age = find_tool("age")
    subprocess.run(
        [age, "-d", "-i", str(identity_file), "-o", str(plain), str(blob)], check=True, timeout=60
    )
    out = tmp_path / "restored.key"
    assert_recovered(
        run(
            envelope_path,
            "--out",
            out,
            "--age-plaintext",
            plain,
            "--identity",
            identity_file,
            pinned=False,
        ),
        out,
        data,
    )


def test_age_plaintext_of_another_key_is_refused(
    tmp_path: Path, run: Run, age_identity: tuple[Any, Path]
) -> None:
    identity, _ = age_identity
    wrapper = AgeWrapper(str(identity.to_public()))
    data = key_bytes()
    mine = save(tmp_path / "mine.json", seal(data, wrapper))
    other_header = make_header(KeyAddress("team-b", GUN, "targets", KEY_ID), data)
    other = save(tmp_path / "other.json", seal(data, wrapper, other_header))
    plain = tmp_path / "dek.bin"
    plain.write_bytes(pyrage.decrypt(age_blob(other), [identity]))
    out = tmp_path / "restored.key"
    assert_refused(
        run(mine, "--out", out, "--age-plaintext", plain),
        5,
        "bound to another key (context digest differs)",
        out,
    )
    plain.write_bytes(plain.read_bytes()[:32])
    assert_refused(run(mine, "--out", out, "--age-plaintext", plain), 2, "holds 32 bytes", out)


# --------------------------------------------------------------------------- (b) passphrase


@pytest.fixture
def passphrase_sealed(tmp_path: Path) -> tuple[Path, bytes]:
    data = key_bytes(500, seed=b"passphrase")
    header = make_header(KeyAddress("team-a", None, "root", KEY_ID), data)
    wrapper = PassphraseWrapper(
        "passphrase:", BackendOptions(env={"KEYVAULT_PASSPHRASE": PASSPHRASE}), n=2**14
    )
    try:
        envelope = ev.seal(header, data, [wrapper, AeadWrapper("transit://test/a")], sealer=SEALER)
    finally:
        wrapper.close()
    return save(tmp_path / "env.json", envelope), data


def test_passphrase_envelope_recovers(
    tmp_path: Path, run: Run, passphrase_sealed: tuple[Path, bytes]
) -> None:
    envelope_path, data = passphrase_sealed
    out = tmp_path / "restored.key"
    result = run(envelope_path, "--out", out, "--passphrase-env", "PW", env={"PW": PASSPHRASE})
    assert_recovered(result, out, data)
    assert "role:       root" in result.stdout and "gun:        -" in result.stdout
    assert PASSPHRASE not in result.stdout + result.stderr


@pytest.mark.parametrize(
    ("role", "gun"), [(None, None), (None, GUN), ("targets", None), ("snapshot", None)]
)
def test_keys_missing_a_fact_recover(
    tmp_path: Path, run: Run, role: str | None, gun: str | None
) -> None:
    """#18: recover.py derives the context of a role-less or GUN-less key as keyvault does."""
    data = key_bytes(300, seed=b"missing")
    header = make_header(KeyAddress("team-a", gun, role, KEY_ID), data)
    assert header.context()["keyvault:scope"] == "team"
    wrapper = PassphraseWrapper(
        "passphrase:", BackendOptions(env={"KEYVAULT_PASSPHRASE": PASSPHRASE}), n=2**14
    )
    try:
        envelope = ev.seal(header, data, [wrapper], sealer=SEALER)
    finally:
        wrapper.close()
    out = tmp_path / "restored.key"
    result = run(
        save(tmp_path / "env.json", envelope),
        "--out",
        out,
        "--passphrase-env",
        "PW",
        env={"PW": PASSPHRASE},
    )
    assert_recovered(result, out, data)
    assert f"role:       {role or '-'}" in result.stdout


def test_passphrase_typed_in_nfd_recovers(
    tmp_path: Path, run: Run, passphrase_sealed: tuple[Path, bytes]
) -> None:
    envelope_path, data = passphrase_sealed
    out = tmp_path / "restored.key"
    typed = unicodedata.normalize("NFD", PASSPHRASE)
    assert typed != PASSPHRASE
    assert_recovered(
        run(envelope_path, "--out", out, "--passphrase-env", "PW", env={"PW": typed}), out, data
    )


def test_wrong_or_missing_passphrase_is_refused(
    tmp_path: Path, run: Run, passphrase_sealed: tuple[Path, bytes]
) -> None:
    envelope_path, _ = passphrase_sealed
    out = tmp_path / "restored.key"
    assert_refused(
        run(envelope_path, "--out", out, "--passphrase-env", "PW", env={"PW": PASSPHRASE + "!"}),
        4,
        "wrong passphrase",
        out,
    )
    assert_refused(
        run(envelope_path, "--out", out, "--passphrase-env", "PW", env={"PW": ""}),
        2,
        "PW is not set or empty",
        out,
    )
    assert_refused(
        run(envelope_path, "--out", out, "--passphrase-env", "PW"), 2, "PW is not set or empty", out
    )


def _edit_passphrase_entry(path: Path, edit: Callable[[dict[str, Any]], None]) -> Path:
    return _tamper(
        path, lambda doc: edit(next(e for e in doc["wrapped_keys"] if e["uri"] == "passphrase:"))
    )


@pytest.mark.parametrize(
    ("edit", "code", "fragment"),
    [
        (lambda e: e["params"].update(n=2**21), 5, "outside the allow-list"),
        (lambda e: e["params"].update(n=2**10), 5, "outside the allow-list"),
        (lambda e: e["params"].update(r=True), 5, "outside the allow-list"),
        (lambda e: e["params"].update(extra=1), 5, "expected params"),
        (lambda e: e.update(alg="scrypt-aes-256-gcm"), 5, "expected params"),
        (lambda e: e["context"].update({"keyvault:team": "team-b"}), 5, "bound to another key"),
        (
            lambda e: e.update(wrapped=base64.b64encode(bytes(48)).decode()),
            5,
            "passphrase is right but the wrapped key was altered",
        ),
        (
            lambda e: e["params"].update(salt=base64.b64encode(bytes(16)).decode()),
            4,
            "wrong passphrase",
        ),
    ],
)
def test_tampered_passphrase_entry_is_refused(
    tmp_path: Path,
    run: Run,
    passphrase_sealed: tuple[Path, bytes],
    edit: Callable[[dict[str, Any]], None],
    code: int,
    fragment: str,
) -> None:
    envelope_path = _edit_passphrase_entry(passphrase_sealed[0], edit)
    out = tmp_path / "restored.key"
    assert_refused(
        run(envelope_path, "--out", out, "--passphrase-env", "PW", env={"PW": PASSPHRASE}),
        code,
        fragment,
        out,
    )


def _vector_id(vector: dict[str, Any]) -> str:
    chain = vector["inputs"].get("chain")
    return f"v{vector['envelope']['version']}-{vector['inputs']['header']['role']}" + (
        f"-{chain['sequence']}" if chain else ""
    )


@pytest.mark.parametrize("vector", VECTORS["vectors_v2"], ids=_vector_id)
def test_the_published_v2_vectors_recover(tmp_path: Path, run: Run, vector: dict[str, Any]) -> None:
    """Both sealer algorithms, each pinned by its fingerprint and nothing else."""
    envelope_path = save(tmp_path / "vector.json", vector["envelope"])
    out = tmp_path / "restored.key"
    result = run(
        envelope_path,
        "--out",
        out,
        "--passphrase-env",
        "PW",
        "--trust-sealer",
        vector["sealer"]["fingerprint"].upper(),  # as someone may type it
        env={"PW": vector["passphrase_wrap"]["passphrase"]},
        pinned=False,
    )
    assert_recovered(result, out, bytes.fromhex(vector["inputs"]["plaintext_hex"]))
    assert vector["sealer"]["fingerprint"] in result.stdout
    assert result.stderr == ""


@pytest.mark.parametrize("vector", VECTORS["vectors_v2"], ids=_vector_id)
def test_an_altered_v2_vector_is_refused_before_the_passphrase_is_tried(
    tmp_path: Path, run: Run, vector: dict[str, Any]
) -> None:
    """The wrong passphrase would be exit 4: exit 5 shows the signature is checked first."""
    doc = json.loads(json.dumps(vector["envelope"]))
    doc["chain"]["sequence"] += 1  # replayed on top as a newer version
    out = tmp_path / "restored.key"
    assert_refused(
        run(
            save(tmp_path / "vector.json", doc),
            "--out",
            out,
            "--passphrase-env",
            "PW",
            "--trust-sealer",
            vector["sealer"]["fingerprint"],
            env={"PW": "not the passphrase"},
            pinned=False,
        ),
        5,
        f"the signature by {vector['sealer']['fingerprint']} does not verify",
        out,
    )


@pytest.mark.parametrize("vector", VECTORS["vectors"], ids=_vector_id)
def test_the_published_v1_vectors_recover_only_when_unsigned_is_allowed(
    tmp_path: Path, run: Run, vector: dict[str, Any]
) -> None:
    envelope_path = save(tmp_path / "vector.json", vector["envelope"])
    out = tmp_path / "restored.key"
    env = {"PW": vector["passphrase_wrap"]["passphrase"]}
    assert_refused(
        run(envelope_path, "--out", out, "--passphrase-env", "PW", env=env),
        5,
        "the envelope is unsigned (format v1)",
        out,
    )
    result = run(
        envelope_path,
        "--out",
        out,
        "--passphrase-env",
        "PW",
        "--allow-unsigned",
        env=env,
        pinned=False,
    )
    assert_recovered(result, out, bytes.fromhex(vector["inputs"]["plaintext_hex"]))
    assert result.stderr.startswith("recover.py: warning: the envelope is unsigned")
    assert "sealed by:  unsigned (format v1)" in result.stdout


# --------------------------------------------------------------------------- (c) DEK as hex


@pytest.fixture
def hex_sealed(tmp_path: Path) -> tuple[Path, Path, bytes]:
    data = key_bytes(777, seed=b"hex")
    wrapper = AeadWrapper("transit://test/a")
    envelope = seal(data, wrapper)
    dek_file = tmp_path / "dek.hex"
    dek_file.write_text(ev.unwrap_dek(envelope, [wrapper], sealers=TRUST).hex() + "\n")
    return save(tmp_path / "env.json", envelope), dek_file, data


def test_dek_hex_file_recovers(
    tmp_path: Path, run: Run, hex_sealed: tuple[Path, Path, bytes]
) -> None:
    envelope_path, dek_file, data = hex_sealed
    out = tmp_path / "restored.key"
    assert_recovered(run(envelope_path, "--out", out, "--dek-hex-file", dek_file), out, data)


def test_an_existing_output_is_never_overwritten(
    tmp_path: Path, run: Run, hex_sealed: tuple[Path, Path, bytes]
) -> None:
    envelope_path, dek_file, _ = hex_sealed
    out = tmp_path / "restored.key"
    out.write_bytes(b"precious")
    assert_refused(
        run(envelope_path, "--out", out, "--dek-hex-file", dek_file),
        7,
        "already exists; refusing to overwrite",
    )
    assert out.read_bytes() == b"precious"
    target = tmp_path / "elsewhere"
    link = tmp_path / "link.key"
    link.symlink_to(target)  # dangling: O_EXCL must not create the target through it
    assert_refused(
        run(envelope_path, "--out", link, "--dek-hex-file", dek_file), 7, "already exists"
    )
    assert not target.exists()


def _tamper(path: Path, edit: Callable[[dict[str, Any]], None], signed: bool = True) -> Path:
    """``edit`` applied to the envelope, signed again by SEALER unless ``signed`` is False."""
    doc = json.loads(path.read_text())
    edit(doc)
    return save(path.with_name("tampered.json"), resign(doc) if signed else doc)


def _flip_ciphertext(doc: dict[str, Any]) -> None:
    raw = bytearray(base64.b64decode(doc["ciphertext"]))
    raw[len(raw) // 2] ^= 1
    doc["ciphertext"] = base64.b64encode(bytes(raw)).decode()


@pytest.mark.parametrize(
    ("edit", "fragment"),
    [
        (_flip_ciphertext, "authentication failed"),
        (
            lambda d: d["header"].update(gun="registry.example.com/team-b/app"),
            "commitment mismatch",
        ),
        (lambda d: d["header"].update(size=d["header"]["size"] - 1), "commitment mismatch"),
        (lambda d: d.update(nonce=base64.b64encode(bytes(12)).decode()), "authentication failed"),
        (lambda d: d.update(version=3), "unsupported envelope version 3"),
        (lambda d: d.update(version=True), "unsupported envelope version True"),
        (lambda d: d["header"].update(version=True), "has the wrong type"),
        (lambda d: d["header"].update(version=1), "the header names another format version"),
        (lambda d: d.update(format="keyvault-envelope-x"), "not a keyvault envelope (format)"),
        (lambda d: d.update(cipher="AES-128-GCM"), "unsupported cipher"),
        (
            lambda d: d.update(
                commitment=("B" if d["commitment"][0] == "A" else "A") + d["commitment"][1:]
            ),
            "commitment mismatch",
        ),
        (lambda d: d.update(nonce=d["nonce"] + "=="), "not canonical base64"),
        (lambda d: d.update(extra=1), "not a keyvault envelope"),
        (lambda d: d["header"].pop("sha256"), "bad header fields"),
        (lambda d: d["chain"].update(sequence=0), "chain sequence out of range"),
        (lambda d: d["chain"].update(sequence=2**53 + 1), "chain sequence out of range"),
        (lambda d: d["chain"].update(sequence=True), "chain sequence out of range"),
        (
            lambda d: d["chain"].update(previous="AB" * 32),
            "chain previous is not 64 lower-case hex",
        ),
        (lambda d: d["chain"].pop("previous"), "bad chain fields"),
    ],
)
def test_tampered_envelope_is_refused(
    tmp_path: Path,
    run: Run,
    hex_sealed: tuple[Path, Path, bytes],
    edit: Callable[[dict[str, Any]], None],
    fragment: str,
) -> None:
    envelope_path, dek_file, _ = hex_sealed
    out = tmp_path / "restored.key"
    assert_refused(
        run(_tamper(envelope_path, edit), "--out", out, "--dek-hex-file", dek_file),
        5,
        fragment,
        out,
    )


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (
            '"keyvault:team": "team-a"',
            '"keyvault:team": "team-a", "x": "\\udc80"',
        ),  # lone surrogate
        ('"params": {}', '"params": {"n": 1e999}'),  # parses as infinity
    ],
    ids=["surrogate", "huge-number"],
)
def test_values_without_a_canonical_form_are_refused_cleanly(
    tmp_path: Path, run: Run, hex_sealed: tuple[Path, Path, bytes], old: str, new: str
) -> None:
    """Nobody can sign these (canonical JSON has no bytes for them): refused, no traceback."""
    envelope_path, dek_file, _ = hex_sealed
    text = envelope_path.read_text()
    assert text.count(old) == 1
    bad = tmp_path / "bad.json"
    bad.write_text(text.replace(old, new))
    out = tmp_path / "restored.key"
    assert_refused(
        run(bad, "--out", out, "--dek-hex-file", dek_file),
        5,
        "holds a value that has no canonical form",
        out,
    )


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        (None, "not valid JSON"),  # truncated
        (b'{"a": 1, "a": 2}', "not valid JSON"),
        (b'{"version": NaN}', "not valid JSON"),
        (b"[" * 100_000, "not valid JSON"),
        (b" " * (2 * 1024 * 1024 + 1), "is larger than"),
    ],
    ids=["truncated", "duplicate-key", "nan", "deep-nesting", "oversized"],
)
def test_malformed_documents_are_refused(
    tmp_path: Path, run: Run, hex_sealed: tuple[Path, Path, bytes], raw: bytes | None, fragment: str
) -> None:
    envelope_path, dek_file, _ = hex_sealed
    bad = tmp_path / "bad.json"
    bad.write_bytes(envelope_path.read_bytes()[:-40] if raw is None else raw)
    out = tmp_path / "restored.key"
    assert_refused(run(bad, "--out", out, "--dek-hex-file", dek_file), 5, fragment, out)


@pytest.mark.parametrize(
    ("content", "code", "fragment"),
    [
        ("00" * 31, 2, "holds a 31-byte DEK; a keyvault DEK is 32 bytes"),
        ("00" * 32, 5, "commitment mismatch"),
        ("zz", 2, "does not hold a hex-encoded DEK"),
    ],
)
def test_bad_dek_files_are_refused(
    tmp_path: Path,
    run: Run,
    hex_sealed: tuple[Path, Path, bytes],
    content: str,
    code: int,
    fragment: str,
) -> None:
    envelope_path, dek_file, _ = hex_sealed
    dek_file.write_text(content)
    out = tmp_path / "restored.key"
    assert_refused(
        run(envelope_path, "--out", out, "--dek-hex-file", dek_file), code, fragment, out
    )


def test_dek_with_a_trailing_zero_byte_is_refused(
    tmp_path: Path, run: Run, hex_sealed: tuple[Path, Path, bytes]
) -> None:
    """HMAC pads short keys with zeros: DEK||00 passes the commitment; the length check holds."""
    envelope_path, dek_file, _ = hex_sealed
    dek_file.write_text(dek_file.read_text().strip() + "00")
    out = tmp_path / "restored.key"
    assert_refused(
        run(envelope_path, "--out", out, "--dek-hex-file", dek_file), 2, "holds a 33-byte DEK", out
    )


def test_decrypted_bytes_are_checked_against_the_header_digest(
    tmp_path: Path, run: Run, hex_sealed: tuple[Path, Path, bytes]
) -> None:
    """Someone holding the DEK re-encrypts other bytes under the same header: refused."""
    envelope_path, dek_file, data = hex_sealed
    dek = bytes.fromhex(dek_file.read_text())
    envelope = ev.Envelope.from_bytes(envelope_path.read_bytes())
    assert envelope.chain is not None
    other = bytes(b ^ 0xFF for b in data)
    forged = ev.sign(
        ev.Envelope(
            envelope.header,
            envelope.nonce,
            AESGCM(dek).encrypt(envelope.nonce, other, envelope.header.canonical()),
            envelope.commitment,
            envelope.wrapped_keys,
        ),
        SEALER,
        envelope.chain,
    )
    out = tmp_path / "restored.key"
    assert_refused(
        run(save(tmp_path / "forged.json", forged), "--out", out, "--dek-hex-file", dek_file),
        5,
        "do not match the header's SHA-256",
        out,
    )


def test_multi_key_envelope_is_refused_for_the_other_dek(
    tmp_path: Path, run: Run, hex_sealed: tuple[Path, Path, bytes]
) -> None:
    """Another wrapped entry holding another DEK: by hand, too, only the committed DEK opens."""
    envelope_path, _, _ = hex_sealed
    other = tmp_path / "other.hex"
    other.write_text(bytes(range(32)).hex())
    out = tmp_path / "restored.key"
    assert_refused(
        run(envelope_path, "--out", out, "--dek-hex-file", other), 5, "commitment mismatch", out
    )


def test_missing_files_are_clear_errors(
    tmp_path: Path, run: Run, hex_sealed: tuple[Path, Path, bytes]
) -> None:
    envelope_path, dek_file, _ = hex_sealed
    out = tmp_path / "restored.key"
    assert_refused(
        run(tmp_path / "nope.json", "--out", out, "--dek-hex-file", dek_file), 1, "cannot read", out
    )
    assert_refused(
        run(envelope_path, "--out", out, "--dek-hex-file", tmp_path / "nope"), 2, "cannot read", out
    )
    assert_refused(
        run(envelope_path, "--out", tmp_path / "no-dir" / "k", "--dek-hex-file", dek_file),
        1,
        "cannot create",
    )
    result = run(envelope_path, "--out", out)
    assert result.returncode == 2 and "one of the arguments" in result.stderr


# --------------------------------------------------------------------------- who sealed it


def test_an_envelope_sealed_by_an_unpinned_sealer_is_refused(
    tmp_path: Path, run: Run, hex_sealed: tuple[Path, Path, bytes]
) -> None:
    """Anyone who can wrap for you can seal: only the pinned sealer's envelopes open."""
    envelope_path, dek_file, _ = hex_sealed
    out = tmp_path / "restored.key"
    stranger = save(
        tmp_path / "stranger.json", resign(json.loads(envelope_path.read_text()), STRANGER)
    )
    result = run(stranger, "--out", out, "--dek-hex-file", dek_file)
    assert_refused(
        result,
        5,
        f"sealed by {STRANGER.key.fingerprint}, which is not pinned here (pinned: {PIN})",
        out,
    )
    assert_refused(
        run(envelope_path, "--out", out, "--dek-hex-file", dek_file, pinned=False),
        5,
        f"sealed by {PIN}, which is not pinned here (pinned: none)",
        out,
    )
    assert_recovered(
        run(
            stranger,
            "--out",
            out,
            "--dek-hex-file",
            dek_file,
            "--trust-sealer",
            STRANGER.key.fingerprint,
        ),
        out,
        hex_sealed[2],
    )


def test_the_sealer_is_checked_before_the_dek(
    tmp_path: Path, run: Run, hex_sealed: tuple[Path, Path, bytes]
) -> None:
    """A DEK file that is no DEK at all (exit 2) is not even read before the signature holds."""
    envelope_path, dek_file, _ = hex_sealed
    dek_file.write_text("zz")
    out = tmp_path / "restored.key"
    assert_refused(
        run(envelope_path, "--out", out, "--dek-hex-file", dek_file, pinned=False),
        5,
        "not pinned here",
        out,
    )
    assert_refused(
        run(envelope_path, "--out", out, "--dek-hex-file", dek_file),
        2,
        "does not hold a hex-encoded DEK",
        out,
    )


def _swap_signature_value(doc: dict[str, Any]) -> None:
    """SEALER's public key, but the value is STRANGER's signature over the same message."""
    doc["signature"]["value"] = resign(doc, STRANGER)["signature"]["value"]


def _swap_public_key(doc: dict[str, Any]) -> None:
    doc["signature"]["public_key"] = resign(doc, STRANGER)["signature"]["public_key"]


@pytest.mark.parametrize(
    ("edit", "allow_unsigned", "fragment"),
    [
        (lambda d: d.pop("signature"), False, "format v2 but carries no signature"),
        (lambda d: d.pop("signature"), True, "format v2 but carries no signature"),
        (
            lambda d: [d.pop("signature"), d.pop("chain"), d.update(version=1)],
            True,
            "the header names another format version",
        ),  # a downgrade to v1: the header says 2
        (lambda d: d.update(signature=None), False, "bad signature fields"),
        (lambda d: d["signature"].update(value=""), False, "invalid length"),
        (lambda d: d["signature"].update(alg="rsa-pss"), False, "unknown sealer algorithm"),
        (lambda d: d["signature"].update(alg="ecdsa-p256-sha256"), False, "does not verify"),
        (_swap_signature_value, False, f"the signature by {PIN} does not verify"),
        (_swap_public_key, False, f"sealed by {STRANGER.key.fingerprint}, which is not pinned"),
    ],
    ids=[
        "stripped",
        "stripped-allow-unsigned",
        "downgraded-to-v1",
        "null",
        "empty-value",
        "unknown-alg",
        "other-alg",
        "other-signature",
        "other-public-key",
    ],
)
def test_a_stripped_or_swapped_signature_is_refused(
    tmp_path: Path,
    run: Run,
    hex_sealed: tuple[Path, Path, bytes],
    edit: Callable[[dict[str, Any]], None],
    allow_unsigned: bool,
    fragment: str,
) -> None:
    envelope_path, dek_file, _ = hex_sealed
    out = tmp_path / "restored.key"
    flags = ["--allow-unsigned"] if allow_unsigned else []
    assert_refused(
        run(
            _tamper(envelope_path, edit, signed=False),
            "--out",
            out,
            "--dek-hex-file",
            dek_file,
            *flags,
        ),
        5,
        fragment,
        out,
    )


@pytest.mark.parametrize(
    "edit",
    [
        _flip_ciphertext,
        lambda d: d["header"].update(gun="registry.example.com/team-b/app"),
        lambda d: d["header"].update(created="2030-01-01T00:00:00Z"),
        lambda d: d["wrapped_keys"].append({**d["wrapped_keys"][0], "uri": "transit://test/b"}),
        lambda d: d["wrapped_keys"][0]["context"].update({"keyvault:team": "team-b"}),
        lambda d: d["chain"].update(sequence=d["chain"]["sequence"] + 1),
        lambda d: d["chain"].update(previous="ab" * 32),
        lambda d: d.update(nonce=d["nonce"] + "=="),
    ],
    ids=[
        "ciphertext",
        "gun",
        "created",
        "added-entry",
        "entry-context",
        "sequence",
        "previous",
        "base64-layout",
    ],
)
def test_an_envelope_altered_after_sealing_is_refused(
    tmp_path: Path,
    run: Run,
    hex_sealed: tuple[Path, Path, bytes],
    edit: Callable[[dict[str, Any]], None],
) -> None:
    """Not signed again: every change, even one the deeper checks would let pass, is refused."""
    envelope_path, dek_file, _ = hex_sealed
    out = tmp_path / "restored.key"
    assert_refused(
        run(_tamper(envelope_path, edit, signed=False), "--out", out, "--dek-hex-file", dek_file),
        5,
        f"the signature by {PIN} does not verify: the envelope was altered",
        out,
    )


def test_the_layout_of_the_document_is_not_signed(
    tmp_path: Path, run: Run, hex_sealed: tuple[Path, Path, bytes]
) -> None:
    """Only values are signed (canonical JSON): a store that re-indents breaks nothing."""
    envelope_path, dek_file, data = hex_sealed
    compact = tmp_path / "compact.json"
    compact.write_text(
        json.dumps(
            json.loads(envelope_path.read_text()),
            separators=(",", ":"),
            sort_keys=False,
            ensure_ascii=True,
        )
    )
    out = tmp_path / "restored.key"
    assert_recovered(run(compact, "--out", out, "--dek-hex-file", dek_file), out, data)


@pytest.mark.parametrize(
    ("arguments", "identity_text", "fragment"),
    [
        (["--trust-sealer", "sha256:" + "0" * 63], None, "--trust-sealer: 'sha256:000"),
        (["--trust-sealer", "0" * 64], None, "is not a sealer fingerprint"),
        (["--identity", "id.txt"], f"{PIN_LINE}sha256:zz\n", "id.txt: 'sha256:zz'"),
        (["--identity", "id.txt"], "x" * (64 * 1024 + 1), "is larger than 65536 bytes"),
        (["--identity", "missing.txt"], None, "cannot read missing.txt"),
    ],
    ids=["short", "no-prefix", "bad-pin-line", "oversized-identity", "missing-identity"],
)
def test_bad_pins_are_usage_errors(
    tmp_path: Path,
    run: Run,
    hex_sealed: tuple[Path, Path, bytes],
    arguments: list[str],
    identity_text: str | None,
    fragment: str,
) -> None:
    envelope_path, dek_file, _ = hex_sealed
    if identity_text is not None:
        (tmp_path / "id.txt").write_text(identity_text)
    out = tmp_path / "restored.key"
    assert_refused(
        run(envelope_path, "--out", out, "--dek-hex-file", dek_file, *arguments), 2, fragment, out
    )


def test_an_identity_file_without_the_pin_pins_nothing(
    tmp_path: Path, run: Run, hex_sealed: tuple[Path, Path, bytes]
) -> None:
    envelope_path, dek_file, data = hex_sealed
    identity = tmp_path / "id.txt"
    identity.write_text(f"#{PIN_LINE}{PIN}\n {PIN_LINE}{PIN}\n# keyvault-trusted-sealer:{PIN}\n")
    out = tmp_path / "restored.key"
    assert_refused(
        run(
            envelope_path,
            "--out",
            out,
            "--dek-hex-file",
            dek_file,
            "--identity",
            identity,
            pinned=False,
        ),
        5,
        "(pinned: none)",
        out,
    )
    assert_recovered(
        run(envelope_path, "--out", out, "--dek-hex-file", dek_file, "--identity", identity),
        out,
        data,
    )  # the pins add up: --trust-sealer still counts
    out.unlink()
    identity.write_text(f"AGE-SECRET-KEY-1...\n{PIN_LINE}{PIN.upper()}  \n")
    assert_recovered(
        run(
            envelope_path,
            "--out",
            out,
            "--dek-hex-file",
            dek_file,
            "--identity",
            identity,
            pinned=False,
        ),
        out,
        data,
    )


# --------------------------------------------------------------------------- the walkthrough


def _walkthrough_blocks() -> list[str]:
    """The shell blocks of docs/envelope.md section 12, in order, dedented."""
    spec = (SCRIPT.parent / "envelope.md").read_text(encoding="utf-8")
    section = spec.split("\n## 12. Hand recovery", 1)[1].split("\n## 13.", 1)[0]
    return [
        textwrap.dedent(indent + body)
        for indent, body in re.findall(
            r"^( *)```sh\n(.*?)^ *```$", section, re.MULTILINE | re.DOTALL
        )
    ]


def test_the_hand_recovery_walkthrough_works_as_written(
    tmp_path: Path, age_identity: tuple[Any, Path]
) -> None:
    """Section 12's commands, run as printed: only the placeholders are filled in."""
    find_tool("age")  # the walkthrough runs the real age binary: a missing one fails
    identity, identity_file = age_identity
    assert identity_file == tmp_path / "identity.txt"  # the name the walkthrough uses
    data = key_bytes(333, seed=b"walkthrough")
    header = make_header(data=data)
    passphrase = PassphraseWrapper(
        "passphrase:", BackendOptions(env={"KEYVAULT_PASSPHRASE": PASSPHRASE}), n=2**14
    )
    try:
        envelope = ev.seal(
            header, data, [AgeWrapper(str(identity.to_public())), passphrase], sealer=SEALER
        )
    finally:
        passphrase.close()
    save(tmp_path / "envelope.json", envelope)
    shutil.copy(SCRIPT, tmp_path / "recover.py")  # the setup block's cp
    placeholders = {
        "python3 ": f"{sys.executable} ",
        "age1…": str(identity.to_public()),
        "sha256:…": PIN,
        "~/.docker/trust/private/<source name as printed>": str(
            tmp_path / "trust" / "private" / header.source_name
        ),
    }

    def shell(block: str, stdin: str = "") -> str:
        for placeholder, value in placeholders.items():
            block = block.replace(placeholder, value)
        result = subprocess.run(
            ["bash", "-euc", block],
            cwd=tmp_path,
            input=stdin,
            text=True,
            capture_output=True,
            timeout=120,
            check=False,
            env={"PATH": os.environ.get("PATH", "")},
        )
        assert result.returncode == 0, (block, result.stderr)
        return result.stdout

    setup, inspect, by_age, by_passphrase, put_back = _walkthrough_blocks()
    assert "pip install cryptography" in setup
    shown = shell(inspect)
    assert f"sealed by {PIN} ed25519" in shown and "passphrase: scrypt-aes256gcm" in shown
    out = tmp_path / "key.key"
    assert "SHA-256 verified" in shell(by_age)
    assert out.read_bytes() == data
    out.unlink()
    assert "SHA-256 verified" in shell(by_passphrase, stdin=PASSPHRASE + "\n")
    assert out.read_bytes() == data
    installed = tmp_path / "trust" / "private" / header.source_name
    shell(put_back)
    assert installed.read_bytes() == data and stat.S_IMODE(installed.stat().st_mode) == 0o600
    assert "already in place" in shell(put_back)  # never overwritten
