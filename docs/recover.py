#!/usr/bin/env python3
"""Open a keyvault envelope (format v2, v1 on request) by hand: `cryptography` only.

Needs Python 3.11 or newer and the `cryptography` package; never imports keyvault.

    python recover.py ENVELOPE.json --out KEYFILE --identity ID.txt --age-plaintext DEK.bin
    python recover.py ENVELOPE.json --out KEYFILE --trust-sealer sha256:... --dek-hex-file DEK.hex
    python recover.py ENVELOPE.json --out KEYFILE --trust-sealer sha256:... --passphrase-env VAR

--age-plaintext is the 64 bytes `age -d` prints, --dek-hex-file a DEK as 64 hex
digits (e.g. from aws kms decrypt), --passphrase-env names the variable that
holds the passphrase (never put it in argv).

Checks, in order: strict parse; the sealer, before any DEK is looked at: its
fingerprint must be pinned (--trust-sealer, repeatable, or the
"# keyvault-trusted-sealer:" lines of the --identity file) and its signature
must verify (a v1 envelope has none: refused unless --allow-unsigned); the
DEK (and its wrap context); the HMAC commitment, before decrypting;
AES-256-GCM with the canonical header as AAD; size and SHA-256. KEYFILE is
then created 0600 and never overwritten.

Not checked here: the version chain and this machine's high-water mark (the
script sees one envelope, not the store's history: make sure it is the
version you mean, e.g. the newest 'keyvault versions' lists) and revoked
sealers (pin only sealers you still trust).
Exit codes: 0 ok, 1 I/O, 2 usage, 4 wrong passphrase, 5 integrity, 7 KEYFILE exists.
Specification: docs/envelope.md.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hashlib
import hmac
import json
import os
import re
import sys
import unicodedata
from typing import Any, NoReturn

from cryptography.exceptions import InvalidSignature, InvalidTag, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

MAX_ENVELOPE_SIZE = 2 * 1024 * 1024
FORMAT = "keyvault-envelope"
COMMIT_LABEL = b"keyvault/v1/commit"
SIGN_LABEL = b"keyvault/v2/envelope\n"
UNSIGNED, SIGNED = 1, 2  # the format versions this script reads
V1_FIELDS = {
    "format",
    "version",
    "header",
    "cipher",
    "nonce",
    "ciphertext",
    "commitment",
    "wrapped_keys",
}
DOC_FIELDS = {UNSIGNED: V1_FIELDS, SIGNED: V1_FIELDS | {"chain", "signature"}}
SIGNATURE_FIELDS = {"alg", "public_key", "value"}
ED25519, ECDSA_P256 = "ed25519", "ecdsa-p256-sha256"
MAX_SEQUENCE = 2**53
MAX_SEALER_BYTES = 1024  # public key and signature, each
PIN_LINE = "# keyvault-trusted-sealer: "
MAX_PIN_FILE = 64 * 1024
FINGERPRINT = re.compile(r"sha256:[0-9a-f]{64}")
HEX_DIGEST = re.compile(r"[0-9a-f]{64}")
HEADER_TYPES: dict[str, tuple[type, ...]] = {
    "format": (str,),
    "version": (int,),
    "team": (str,),
    "gun": (str, type(None)),
    "role": (str, type(None)),
    "key_id": (str,),
    "algorithm": (str, type(None)),
    "created": (str,),
    "source_name": (str,),
    "source_mode": (int,),
    "size": (int,),
    "sha256": (str,),
}
PASSPHRASE_ALG = "scrypt-aes256gcm"
PASSPHRASE_PARAMS = {"kdf", "salt", "n", "r", "p", "nonce", "check"}
CHECK_LABEL = b"keyvault/v1/passphrase-check"


def fail(code: int, message: str) -> NoReturn:
    print(f"recover.py: error: {message}", file=sys.stderr)
    sys.exit(code)


def check(ok: bool, message: str) -> None:
    if not ok:
        fail(5, message)


def canonical(value: dict[str, Any]) -> bytes:
    """Sorted keys, no whitespace, UTF-8: the bytes the AAD, commitment and signature cover."""
    try:
        return json.dumps(
            value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        ).encode("utf-8")
    except (UnicodeEncodeError, ValueError, RecursionError):  # a lone surrogate, 1e999
        fail(5, "the envelope holds a value that has no canonical form; altered")


def unb64(value: Any, what: str) -> bytes:
    try:
        raw = base64.b64decode(value, validate=True) if isinstance(value, str) else None
    except (binascii.Error, ValueError):
        raw = None
    check(
        raw is not None and base64.b64encode(raw).decode() == value,
        f"{what} is not canonical base64",
    )
    return raw or b""


def unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    if len({key for key, _ in pairs}) != len(pairs):
        raise ValueError("duplicate key")
    return dict(pairs)


def refuse_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not JSON")


def read(path: str, limit: int, code: int) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read(limit + 1)
    except OSError as exc:
        fail(code, f"cannot read {path}: {exc.strerror}")


def load_envelope(path: str) -> dict[str, Any]:
    raw = read(path, MAX_ENVELOPE_SIZE, 1)
    check(len(raw) <= MAX_ENVELOPE_SIZE, f"{path} is larger than {MAX_ENVELOPE_SIZE} bytes")
    try:
        doc: Any = json.loads(
            raw.decode("utf-8"), object_pairs_hook=unique_keys, parse_constant=refuse_constant
        )
    except (UnicodeDecodeError, ValueError, RecursionError):
        fail(5, f"{path} is not valid JSON (truncated or corrupt)")
    check(isinstance(doc, dict) and doc.get("format") == FORMAT, "not a keyvault envelope (format)")
    version = doc.get("version")
    check(
        type(version) is int and version in DOC_FIELDS,  # bool is an int in Python; refuse it
        f"unsupported envelope version {shown(version)[:16]}; this script reads 1 and 2",
    )
    if version == SIGNED and "signature" not in doc:
        fail(5, "the envelope is format v2 but carries no signature (removed?); refused")
    check(set(doc) == DOC_FIELDS[version], "not a keyvault envelope (fields)")
    header = doc["header"]
    check(isinstance(header, dict) and set(header) == set(HEADER_TYPES), "bad header fields")
    for name, kinds in HEADER_TYPES.items():
        check(type(header[name]) in kinds, f"header field {name!r} has the wrong type")
    check(header["format"] == FORMAT, "not a keyvault envelope (header format)")
    check(header["version"] == version, "the header names another format version")
    check(doc["cipher"] == "AES-256-GCM", "unsupported cipher")
    check(isinstance(doc["wrapped_keys"], list), "wrapped_keys is not a list")
    return dict(doc)


def fingerprint_pin(value: str, where: str) -> str:
    """A sealer fingerprint as printed by keyvault: ``sha256:`` and 64 hex digits."""
    text = value.strip().lower()
    if not FINGERPRINT.fullmatch(text):
        fail(
            2,
            f"{where}: {shown(value)[:80]!r} is not a sealer fingerprint "
            "(sha256: and 64 hex digits, as 'keyvault init' printed it)",
        )
    return text


def pinned_sealers(trusted: list[str], identity_files: list[str]) -> set[str]:
    """--trust-sealer values, and the pin lines of identity files (age ignores # lines)."""
    pins = {fingerprint_pin(value, "--trust-sealer") for value in trusted}
    for path in identity_files:
        raw = read(path, MAX_PIN_FILE, 2)
        if len(raw) > MAX_PIN_FILE:
            fail(2, f"{path} is larger than {MAX_PIN_FILE} bytes: not an identity file")
        lines = raw.decode("utf-8", errors="replace").splitlines()
        pins |= {
            fingerprint_pin(line[len(PIN_LINE) :], path)
            for line in lines
            if line.startswith(PIN_LINE)
        }
    return pins


def verifies(alg: str, public_key: bytes, message: bytes, signature: bytes) -> bool:
    """True only for a valid signature over ``message`` by this DER SubjectPublicKeyInfo."""
    try:
        key = serialization.load_der_public_key(public_key)
        if alg == ED25519 and isinstance(key, ed25519.Ed25519PublicKey):
            key.verify(signature, message)
            return True
        if (
            alg == ECDSA_P256
            and isinstance(key, ec.EllipticCurvePublicKey)
            and isinstance(key.curve, ec.SECP256R1)
        ):
            key.verify(signature, message, ec.ECDSA(hashes.SHA256()))  # DER-encoded (r, s)
            return True
    except (InvalidSignature, UnsupportedAlgorithm, ValueError, TypeError):
        return False
    return False


def authenticate(doc: dict[str, Any], pins: set[str], allow_unsigned: bool) -> str:
    """Who sealed the envelope (a pinned sealer whose signature verifies), or "unsigned"."""
    if doc["version"] == UNSIGNED:
        if not allow_unsigned:
            fail(
                5,
                "the envelope is unsigned (format v1): anyone who could write the store "
                "could have sealed it; refused (--allow-unsigned opens it, if you trust "
                "where this file came from)",
            )
        print(
            "recover.py: warning: the envelope is unsigned (format v1): nothing shows who "
            "sealed it; opened because of --allow-unsigned",
            file=sys.stderr,
        )
        return "unsigned (format v1)"
    chain, signature = doc["chain"], doc["signature"]
    check(isinstance(chain, dict) and set(chain) == {"sequence", "previous"}, "bad chain fields")
    check(
        type(chain["sequence"]) is int and 1 <= chain["sequence"] <= MAX_SEQUENCE,
        "chain sequence out of range",
    )
    check(
        chain["previous"] is None
        or (
            isinstance(chain["previous"], str)
            and HEX_DIGEST.fullmatch(chain["previous"]) is not None
        ),
        "chain previous is not 64 lower-case hex digits",
    )
    check(
        isinstance(signature, dict) and set(signature) == SIGNATURE_FIELDS, "bad signature fields"
    )
    alg = signature["alg"]
    check(alg in (ED25519, ECDSA_P256), f"unknown sealer algorithm {shown(alg)[:24]}")
    public_key = unb64(signature["public_key"], "public_key")
    value = unb64(signature["value"], "signature value")
    check(
        0 < len(public_key) <= MAX_SEALER_BYTES and 0 < len(value) <= MAX_SEALER_BYTES,
        "the signature or its public key has an invalid length",
    )
    sealer = "sha256:" + hashlib.sha256(public_key).hexdigest()
    if sealer not in pins:
        fail(
            5,
            f"the envelope is sealed by {sealer}, which is not pinned here (pinned: "
            f"{', '.join(sorted(pins)) or 'none'}); refused. If that is your own sealer "
            "(compare it with what 'keyvault init' printed, the identity file's pin lines "
            "or the share pages), pin it with --trust-sealer or --identity; otherwise "
            "someone else wrote this envelope",
        )
    unsigned = {name: part for name, part in doc.items() if name != "signature"}
    check(
        verifies(alg, public_key, SIGN_LABEL + canonical(unsigned), value),
        f"the signature by {sealer} does not verify: the envelope was altered after "
        "sealing; refused",
    )
    return sealer


def wrap_context(header: dict[str, Any]) -> dict[str, str]:
    """The facts every wrapped copy of the DEK is bound to (no GUN entry for root keys).

    A key without a role has no role entry; one without a role, or a targets,
    snapshot or timestamp key without a GUN, gets "keyvault:scope": "team".
    """
    role, gun = header["role"], header["gun"]
    context = {"keyvault:team": header["team"], "keyvault:key_id": header["key_id"]}
    if role is not None:
        context["keyvault:role"] = role
    if gun is not None:
        context["keyvault:gun"] = gun
    if role is None or (role in ("targets", "snapshot", "timestamp") and gun is None):
        context["keyvault:scope"] = "team"
    return context


def dek_from_hex(path: str) -> bytes:
    try:
        dek = bytes.fromhex(read(path, 4096, 2).decode("ascii").strip())
    except (UnicodeDecodeError, ValueError):
        fail(2, f"{path} does not hold a hex-encoded DEK")
    if len(dek) != 32:
        fail(2, f"{path} holds a {len(dek)}-byte DEK; a keyvault DEK is 32 bytes (64 hex digits)")
    return dek


def dek_from_age(path: str, context: dict[str, str]) -> bytes:
    plain = read(path, 4096, 2)
    if len(plain) != 64:
        fail(2, f"{path} holds {len(plain)} bytes; `age -d` prints 64 for a keyvault DEK")
    check(
        hmac.compare_digest(plain[32:], hashlib.sha256(canonical(context)).digest()),
        "the age plaintext is bound to another key (context digest differs)",
    )
    return plain[:32]


def dek_from_passphrase(doc: dict[str, Any], variable: str, context: dict[str, str]) -> bytes:
    passphrase = os.environ.get(variable, "")
    if not passphrase:
        fail(2, f"environment variable {variable} is not set or empty")
    secret = unicodedata.normalize("NFC", passphrase).encode("utf-8")  # as keyvault does
    entries = [
        e
        for e in doc["wrapped_keys"]
        if isinstance(e, dict) and str(e.get("uri")).startswith("passphrase:")
    ]
    if not entries:
        fail(2, "this envelope has no passphrase: wrapped key")
    for entry in entries:
        params: Any = entry.get("params")
        check(
            entry.get("alg") == PASSPHRASE_ALG
            and isinstance(params, dict)
            and set(params) == PASSPHRASE_PARAMS
            and params["kdf"] == "scrypt",
            f"passphrase entry: not {PASSPHRASE_ALG} with the expected params",
        )
        check(entry.get("context") == context, "passphrase entry is bound to another key")
        n, r, p = params["n"], params["r"], params["p"]
        check(
            all(type(v) is int for v in (n, r, p))
            and 2**14 <= n <= 2**20
            and n & (n - 1) == 0
            and r == 8
            and 1 <= p <= 2,
            "passphrase entry: scrypt parameters outside the allow-list (downgrade?)",
        )
        salt, nonce, expected = (unb64(params[k], k) for k in ("salt", "nonce", "check"))
        check((len(salt), len(nonce), len(expected)) == (16, 12, 16), "bad salt/nonce/check")
        kek = Scrypt(salt=salt, length=32, n=n, r=r, p=p).derive(secret)
        right = hmac.new(kek, CHECK_LABEL, hashlib.sha256).digest()[:16]
        if not hmac.compare_digest(right, expected):
            continue  # not this entry's passphrase
        try:
            return AESGCM(kek).decrypt(
                nonce, unb64(entry.get("wrapped"), "wrapped"), canonical(context)
            )
        except InvalidTag:
            fail(5, "the passphrase is right but the wrapped key was altered or moved")
    fail(4, "wrong passphrase (or the passphrase entry's salt or check was altered)")


def decrypt(doc: dict[str, Any], dek: bytes) -> bytes:
    header, aad = doc["header"], canonical(doc["header"])
    check(len(dek) == 32, "the DEK is not 32 bytes")  # HMAC would accept DEK || 0x00
    commitment = hmac.new(dek, COMMIT_LABEL + aad, hashlib.sha256).digest()
    check(
        hmac.compare_digest(commitment, unb64(doc["commitment"], "commitment")),
        "this DEK is not the envelope's DEK (commitment mismatch): wrong DEK, or altered",
    )
    nonce, ciphertext = unb64(doc["nonce"], "nonce"), unb64(doc["ciphertext"], "ciphertext")
    check(len(nonce) == 12 and len(ciphertext) == header["size"] + 16, "wrong length")
    try:
        data = AESGCM(dek).decrypt(nonce, ciphertext, aad)
    except InvalidTag:
        fail(5, "authentication failed: the envelope was altered, truncated or moved")
    check(
        hmac.compare_digest(hashlib.sha256(data).hexdigest(), header["sha256"]),
        "decrypted bytes do not match the header's SHA-256",
    )
    return data


def write_new(path: str, data: bytes) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        fail(7, f"{path} already exists; refusing to overwrite it")
    except OSError as exc:
        fail(1, f"cannot create {path}: {exc.strerror}")
    try:
        os.fchmod(fd, 0o600)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    except BaseException as exc:  # also Ctrl-C: never leave a partial key file behind
        os.unlink(path)
        if isinstance(exc, OSError):
            fail(1, f"cannot write {path}: {exc.strerror}; the partial file was removed")
        raise
    finally:
        os.close(fd)


def shown(value: Any) -> str:
    return "-" if value is None else "".join(c if c.isprintable() else "?" for c in str(value))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("envelope")
    parser.add_argument("--out", required=True, help="key file to create (never overwritten)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--dek-hex-file", metavar="FILE", help="the DEK as 64 hex digits")
    source.add_argument("--age-plaintext", metavar="FILE", help="the 64 bytes age -d printed")
    source.add_argument("--passphrase-env", metavar="VAR", help="env var with the passphrase")
    parser.add_argument(
        "--trust-sealer",
        metavar="FINGERPRINT",
        action="append",
        default=[],
        help="accept envelopes sealed by this sealer (sha256:...); repeatable",
    )
    parser.add_argument(
        "--identity",
        metavar="FILE",
        action="append",
        default=[],
        help="an age identity file (or share page): its '# keyvault-trusted-"
        "sealer:' lines pin sealers (only those lines are used)",
    )
    parser.add_argument(
        "--allow-unsigned",
        action="store_true",
        help="open an unsigned format v1 envelope (anyone who could write the "
        "store could have sealed it)",
    )
    args = parser.parse_args(argv)
    pins = pinned_sealers(args.trust_sealer, args.identity)
    doc = load_envelope(args.envelope)
    sealer = authenticate(doc, pins, args.allow_unsigned)  # before any DEK is looked at
    header, context = doc["header"], wrap_context(doc["header"])
    if args.dek_hex_file:
        dek = dek_from_hex(args.dek_hex_file)
    elif args.age_plaintext:
        dek = dek_from_age(args.age_plaintext, context)
    else:
        dek = dek_from_passphrase(doc, args.passphrase_env, context)
    write_new(args.out, decrypt(doc, dek))
    print(f"recovered {shown(args.out)}: {header['size']} bytes, mode 0600, SHA-256 verified")
    for label in ("key_id", "role", "gun", "team", "algorithm", "created", "sha256"):
        print(f"  {label + ':':<12}{shown(header[label])}")
    print(
        f"  {'source:':<12}private/{shown(header['source_name'])} "
        f"(mode {header['source_mode']:04o})"
    )
    print(f"  {'sealed by:':<12}{sealer}")
    if doc["version"] == SIGNED:
        chain = doc["chain"]
        below = chain["previous"] or "none: the key's first version"
        print(
            f"  {'version:':<12}number {chain['sequence']}, on top of {below} "
            "(not checked here: is it the newest?)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
