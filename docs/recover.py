#!/usr/bin/env python3
"""Open a keyvault envelope (format v1) by hand: Python 3.11+ and `cryptography` only.

    python recover.py ENVELOPE.json --out KEYFILE --dek-hex-file DEK.hex   (e.g. aws kms decrypt)
    python recover.py ENVELOPE.json --out KEYFILE --age-plaintext DEK.bin  (64 bytes from age -d)
    python recover.py ENVELOPE.json --out KEYFILE --passphrase-env VAR     (never in argv)

Checks, in order: strict parse; the DEK (and its wrap context); the HMAC
commitment, before decrypting; AES-256-GCM with the canonical header as AAD;
size and SHA-256. KEYFILE is then created 0600 and never overwritten.
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
import sys
import unicodedata
from typing import Any, NoReturn

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

MAX_ENVELOPE_SIZE = 2 * 1024 * 1024
COMMIT_LABEL = b"keyvault/v1/commit"
DOC_FIELDS = {"format", "version", "header", "cipher", "nonce", "ciphertext", "commitment",
              "wrapped_keys"}
HEADER_TYPES: dict[str, tuple[type, ...]] = {
    "format": (str,), "version": (int,), "team": (str,), "gun": (str, type(None)),
    "role": (str,), "key_id": (str,), "algorithm": (str, type(None)), "created": (str,),
    "source_name": (str,), "source_mode": (int,), "size": (int,), "sha256": (str,)}
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
    """Sorted keys, no whitespace, UTF-8: the bytes the AAD and the commitment cover."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode("utf-8")


def unb64(value: Any, what: str) -> bytes:
    try:
        raw = base64.b64decode(value, validate=True) if isinstance(value, str) else None
    except (binascii.Error, ValueError):
        raw = None
    check(raw is not None and base64.b64encode(raw).decode() == value,
          f"{what} is not canonical base64")
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
        doc: Any = json.loads(raw.decode("utf-8"), object_pairs_hook=unique_keys,
                              parse_constant=refuse_constant)
    except (UnicodeDecodeError, ValueError, RecursionError):
        fail(5, f"{path} is not valid JSON (truncated or corrupt)")
    check(isinstance(doc, dict) and set(doc) == DOC_FIELDS, "not a keyvault envelope (fields)")
    header = doc["header"]
    check(isinstance(header, dict) and set(header) == set(HEADER_TYPES), "bad header fields")
    for name, kinds in HEADER_TYPES.items():  # bool is an int in Python; refuse it
        check(type(header[name]) in kinds, f"header field {name!r} has the wrong type")
    for obj in (doc, header):
        check(obj["format"] == "keyvault-envelope", "not a keyvault envelope (format)")
        check(type(obj["version"]) is int and obj["version"] == 1, "not envelope version 1")
    check(doc["cipher"] == "AES-256-GCM", "unsupported cipher")
    check(isinstance(doc["wrapped_keys"], list), "wrapped_keys is not a list")
    return dict(doc)


def wrap_context(header: dict[str, Any]) -> dict[str, str]:
    """The facts every wrapped copy of the DEK is bound to (no GUN entry for root keys)."""
    context = {"keyvault:team": header["team"], "keyvault:role": header["role"],
               "keyvault:key_id": header["key_id"]}
    if header["gun"] is not None:
        context["keyvault:gun"] = header["gun"]
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
    check(hmac.compare_digest(plain[32:], hashlib.sha256(canonical(context)).digest()),
          "the age plaintext is bound to another key (context digest differs)")
    return plain[:32]


def dek_from_passphrase(doc: dict[str, Any], variable: str, context: dict[str, str]) -> bytes:
    passphrase = os.environ.get(variable, "")
    if not passphrase:
        fail(2, f"environment variable {variable} is not set or empty")
    secret = unicodedata.normalize("NFC", passphrase).encode("utf-8")  # as keyvault does
    entries = [e for e in doc["wrapped_keys"]
               if isinstance(e, dict) and str(e.get("uri")).startswith("passphrase:")]
    if not entries:
        fail(2, "this envelope has no passphrase: wrapped key")
    for entry in entries:
        params: Any = entry.get("params")
        check(entry.get("alg") == PASSPHRASE_ALG and isinstance(params, dict)
              and set(params) == PASSPHRASE_PARAMS and params["kdf"] == "scrypt",
              f"passphrase entry: not {PASSPHRASE_ALG} with the expected params")
        check(entry.get("context") == context, "passphrase entry is bound to another key")
        n, r, p = params["n"], params["r"], params["p"]
        check(all(type(v) is int for v in (n, r, p)) and 2**14 <= n <= 2**20
              and n & (n - 1) == 0 and r == 8 and 1 <= p <= 4,
              "passphrase entry: scrypt parameters outside the allow-list (downgrade?)")
        salt, nonce, expected = (unb64(params[k], k) for k in ("salt", "nonce", "check"))
        check((len(salt), len(nonce), len(expected)) == (16, 12, 16), "bad salt/nonce/check")
        kek = Scrypt(salt=salt, length=32, n=n, r=r, p=p).derive(secret)
        right = hmac.new(kek, CHECK_LABEL, hashlib.sha256).digest()[:16]
        if not hmac.compare_digest(right, expected):
            continue  # not this entry's passphrase
        try:
            return AESGCM(kek).decrypt(nonce, unb64(entry.get("wrapped"), "wrapped"),
                                       canonical(context))
        except InvalidTag:
            fail(5, "the passphrase is right but the wrapped key was altered or moved")
    fail(4, "wrong passphrase (or the passphrase entry's salt or check was altered)")


def decrypt(doc: dict[str, Any], dek: bytes) -> bytes:
    header, aad = doc["header"], canonical(doc["header"])
    check(len(dek) == 32, "the DEK is not 32 bytes")  # HMAC would accept DEK || 0x00
    commitment = hmac.new(dek, COMMIT_LABEL + aad, hashlib.sha256).digest()
    check(hmac.compare_digest(commitment, unb64(doc["commitment"], "commitment")),
          "this DEK is not the envelope's DEK (commitment mismatch): wrong DEK, or altered")
    nonce, ciphertext = unb64(doc["nonce"], "nonce"), unb64(doc["ciphertext"], "ciphertext")
    check(len(nonce) == 12 and len(ciphertext) == header["size"] + 16, "wrong length")
    try:
        data = AESGCM(dek).decrypt(nonce, ciphertext, aad)
    except InvalidTag:
        fail(5, "authentication failed: the envelope was altered, truncated or moved")
    check(hmac.compare_digest(hashlib.sha256(data).hexdigest(), header["sha256"]),
          "decrypted bytes do not match the header's SHA-256")
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
            view = view[os.write(fd, view):]
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
    parser = argparse.ArgumentParser(description="Open a keyvault v1 envelope by hand.")
    parser.add_argument("envelope")
    parser.add_argument("--out", required=True, help="key file to create (never overwritten)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--dek-hex-file", metavar="FILE", help="the DEK as 64 hex digits")
    source.add_argument("--age-plaintext", metavar="FILE", help="the 64 bytes age -d printed")
    source.add_argument("--passphrase-env", metavar="VAR", help="env var with the passphrase")
    args = parser.parse_args(argv)
    doc = load_envelope(args.envelope)
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
    print(f"  {'source:':<12}private/{shown(header['source_name'])} "
          f"(mode {header['source_mode']:04o})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
