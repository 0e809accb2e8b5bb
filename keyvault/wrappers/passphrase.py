"""The laptop default wrapper: a key-encryption key derived from a passphrase.

``KEK = scrypt(passphrase, salt, n, r=8, p=1)`` (n = 2**17 unless configured),
and the DEK is sealed with AES-256-GCM under the KEK with a random 96-bit
nonce and the canonical context as associated data (T6). The wrapped entry's
params carry everything needed to recover by hand with ``cryptography`` alone::

    {"kdf": "scrypt", "salt": b64(16), "n": n, "r": 8, "p": 1,
     "nonce": b64(12), "check": b64(16)}

Why ``check``: GCM alone cannot tell a wrong passphrase from a tampered
envelope, yet a person must be told "wrong passphrase" (AccessDeniedError,
exit 4: retype it) apart from "this backup was altered" (IntegrityError,
exit 5: use another version). ``check = HMAC-SHA256(KEK,
"keyvault/v1/passphrase-check")[:16]`` answers that: a mismatch means a
wrong passphrase (or an altered salt/check, which the message admits); a
match followed by a GCM failure means the blob, nonce or context was changed.
It gives an offline guesser nothing the GCM tag does not already give: each
guess still costs one scrypt.

Cost: one salt and one derivation per wrapper instance for all wraps of a run
(a bulk backup must not pay scrypt per key); derived KEKs are cached by
(salt, n, r, p) for unwraps. The passphrase is kept, in a buffer wiped by
``close()``, for as long as the wrapper lives, so a restore of keys backed up
in many runs (many salts) asks once. On unwrap, parameters beyond what
keyvault writes are refused before any derivation: n below 2**14, not a power
of two or above the cap; r != 8; p above 2 or n * p above the cap; wrong
sizes. The cap is 2**18 (twice the default: 256 MiB, about a second per
salt), or this machine's own ``scrypt_n`` if higher, so an envelope never
makes a reader pay more than its own settings do (a hostile n = 2**20, p = 4
cost 1 GiB and over 10 s per salt): no downgrade, no memory bomb (T10, T15).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
import threading
import unicodedata
from collections.abc import Mapping
from typing import Self

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from keyvault.canonical import canonical_json
from keyvault.errors import AccessDeniedError, IntegrityError, UsageError
from keyvault.plugins import BackendOptions
from keyvault.wrappers.base import DEK_SIZE, ParamValue, WrappedKey, b64

ALG = "scrypt-aes256gcm"
ENV_VAR = "KEYVAULT_PASSPHRASE"
DEFAULT_N = 2**17
MIN_N, MAX_N = 2**14, 2**20
#: The largest n an envelope may ask for unless this machine writes a larger one itself.
UNWRAP_MAX_N = 2**18
SCRYPT_R = 8
SCRYPT_P = 1
MAX_P = 2  # headroom over the p = 1 keyvault writes; n * p stays within the cap
SALT_SIZE, NONCE_SIZE, CHECK_SIZE = 16, 12, 16
_TAG_SIZE = 16
_PARAM_KEYS = frozenset({"kdf", "salt", "n", "r", "p", "nonce", "check"})
_CHECK_LABEL = b"keyvault/v1/passphrase-check"
_LABEL = re.compile(r"[a-z0-9-]{1,32}")


class PassphraseWrapper:
    """Wrap under a passphrase-derived KEK; ``passphrase:`` or ``passphrase:<label>``."""

    def __init__(self, uri: str, options: BackendOptions, *, n: int = DEFAULT_N) -> None:
        self._uri = parse_uri(uri)
        self._options = options
        self._n = _check_cost(n)
        self._lock = threading.Lock()
        self._passphrase: bytearray | None = None
        self._wrap_salt: bytes | None = None
        self._keks: dict[tuple[bytes, int, int, int], bytes] = {}

    @classmethod
    def check_uri(cls, uri: str) -> None:
        """UsageError unless ``uri`` is a canonical ``passphrase:[<label>]`` URI."""
        if parse_uri(uri) != uri:
            raise UsageError(f"passphrase wrapper URI {uri[:80]!r} is not in canonical form")

    @classmethod
    def from_uri(cls, uri: str, options: BackendOptions) -> Self:
        n = options.for_scheme("passphrase").get("scrypt_n", DEFAULT_N)
        return cls(uri, options, n=n)

    @property
    def uri(self) -> str:
        return self._uri

    def __repr__(self) -> str:
        return f"PassphraseWrapper({self._uri!r}, n={self._n})"

    def wrap(self, dek: bytes, context: Mapping[str, str]) -> WrappedKey:
        if len(dek) != DEK_SIZE:
            raise ValueError(f"a DEK is {DEK_SIZE} bytes")
        with self._lock:
            if self._wrap_salt is None:
                salt = os.urandom(SALT_SIZE)
                self._kek(salt, self._n, SCRYPT_R, SCRYPT_P, confirm=True)
                self._wrap_salt = salt
            salt = self._wrap_salt
            kek = self._keks[(salt, self._n, SCRYPT_R, SCRYPT_P)]
        nonce = os.urandom(NONCE_SIZE)
        blob = AESGCM(kek).encrypt(nonce, bytes(dek), canonical_json(context))
        params: dict[str, ParamValue] = {
            "kdf": "scrypt",
            "salt": b64(salt),
            "n": self._n,
            "r": SCRYPT_R,
            "p": SCRYPT_P,
            "nonce": b64(nonce),
            "check": b64(_check_value(kek)),
        }
        return WrappedKey(self._uri, ALG, blob, dict(context), params)

    def unwrap(self, wrapped: WrappedKey, context: Mapping[str, str]) -> bytes:
        salt, n, r, p, nonce, check = self._parse(wrapped)
        with self._lock:
            kek = self._kek(salt, n, r, p, confirm=False)
            if not hmac.compare_digest(_check_value(kek), check):
                self._forget()  # a person may retype it on the next key
                raise AccessDeniedError(
                    f"wrong passphrase for {self._uri} (or the wrapped key's salt was altered)",
                    hint=f"retype it, or check {ENV_VAR}",
                )
        try:
            dek = AESGCM(kek).decrypt(nonce, wrapped.blob, canonical_json(context))
        except InvalidTag:
            raise IntegrityError(
                f"the key wrapped for {self._uri} was altered or is bound to another key's "
                "context (team, GUN, role or key ID); the passphrase is right"
            ) from None
        if len(dek) != DEK_SIZE:
            raise IntegrityError(f"the key wrapped for {self._uri} has the wrong length")
        return dek

    def close(self) -> None:
        with self._lock:
            self._forget()
            self._wrap_salt = None

    def _kek(self, salt: bytes, n: int, r: int, p: int, *, confirm: bool) -> bytes:
        """The KEK for these parameters: cached, else derived (asking for the passphrase once)."""
        key = (salt, n, r, p)
        if key not in self._keks:
            if self._passphrase is None:
                self._passphrase = bytearray(self._ask(confirm=confirm))
            self._keks[key] = derive_kek(bytes(self._passphrase), salt, n, r, p)
        return self._keks[key]

    def _ask(self, *, confirm: bool) -> bytes:
        env = self._options.env
        if ENV_VAR in env:
            value = env[ENV_VAR]
            if not value:
                raise UsageError(
                    f"{ENV_VAR} is set but empty",
                    hint="set it to the passphrase, or unset it to be asked",
                )
        elif self._options.prompt is not None:
            value = self._options.prompt(f"Passphrase for {self._uri}", confirm=confirm)
            if not value:
                raise UsageError(f"empty passphrase for {self._uri} refused")
        else:
            raise UsageError(f"no passphrase: set {ENV_VAR} or run in a terminal")
        # NFC: the same passphrase typed on macOS (NFD input) and Linux must derive the same KEK.
        return unicodedata.normalize("NFC", value).encode("utf-8")

    def _forget(self) -> None:
        if self._passphrase is not None:
            self._passphrase[:] = bytes(len(self._passphrase))
            self._passphrase = None
        self._keks.clear()
        self._wrap_salt = None

    def _parse(self, wrapped: WrappedKey) -> tuple[bytes, int, int, int, bytes, bytes]:
        """Salt, n, r, p, nonce, check; IntegrityError for anything off the allow-list."""
        params = wrapped.params
        if wrapped.alg != ALG or set(params) != _PARAM_KEYS or params["kdf"] != "scrypt":
            raise self._refused("an unknown algorithm or parameter set")
        n, r, p = params["n"], params["r"], params["p"]
        if type(n) is not int or type(r) is not int or type(p) is not int:
            raise self._refused("non-integer scrypt parameters")
        cap = max(UNWRAP_MAX_N, self._n)
        if not MIN_N <= n <= cap or n & (n - 1):
            raise self._refused(
                f"scrypt n={n} (this machine opens powers of two from {MIN_N} to {cap})"
            )
        # Memory is 128 * n * r, time grows with n * r * p: neither beyond the cap's.
        if r != SCRYPT_R or not 1 <= p <= MAX_P or n * p > cap:
            raise self._refused(
                f"scrypt r={r}, p={p} at n={n} (this machine opens r="
                f"{SCRYPT_R}, p up to {MAX_P} and n * p up to {cap})"
            )
        salt = self._bytes_param(params, "salt", SALT_SIZE)
        nonce = self._bytes_param(params, "nonce", NONCE_SIZE)
        check = self._bytes_param(params, "check", CHECK_SIZE)
        if len(wrapped.blob) != DEK_SIZE + _TAG_SIZE:
            raise self._refused("a wrapped blob of the wrong length")
        return salt, n, r, p, nonce, check

    def _bytes_param(self, params: Mapping[str, ParamValue], name: str, size: int) -> bytes:
        value = params[name]
        try:
            raw = base64.b64decode(str(value).encode("ascii"), validate=True)
        except (binascii.Error, UnicodeEncodeError):
            raw = b""
        if not isinstance(value, str) or len(raw) != size:
            raise self._refused(f"a {name} that is not {size} base64 bytes")
        return raw

    def _refused(self, what: str) -> IntegrityError:
        return IntegrityError(
            f"the key wrapped for {self._uri} has {what}; refused (tampering or a downgrade)"
        )


def parse_uri(uri: str) -> str:
    """The canonical ``passphrase:[<label>]`` URI; UsageError for anything else."""
    scheme, sep, label = uri.partition(":") if isinstance(uri, str) else ("", "", "")
    if scheme.lower() != "passphrase" or not sep or (label and not _LABEL.fullmatch(label)):
        raise UsageError(
            f"invalid passphrase wrapper URI {str(uri)[:80]!r}",
            hint="use passphrase: or passphrase:<label> with a label of 1-32 "
            "lower-case letters, digits and hyphens",
        )
    return f"passphrase:{label}"


def derive_kek(passphrase: bytes, salt: bytes, n: int, r: int, p: int) -> bytes:
    """scrypt to a 32-byte AES key (a module function so tests can count derivations)."""
    return Scrypt(salt=salt, length=32, n=n, r=r, p=p).derive(passphrase)


def _check_cost(n: object) -> int:
    if type(n) is not int or not MIN_N <= n <= MAX_N or n & (n - 1):
        raise UsageError(
            f"passphrase.scrypt_n must be a power of two from {MIN_N} to {MAX_N}",
            hint=f"the default is {DEFAULT_N}",
        )
    return n


def _check_value(kek: bytes) -> bytes:
    return hmac.new(kek, _CHECK_LABEL, hashlib.sha256).digest()[:CHECK_SIZE]
