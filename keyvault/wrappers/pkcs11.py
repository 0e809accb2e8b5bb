"""The HSM wrapper: the DEK sealed inside a PKCS#11 token under a non-extractable key.

Addressed by an RFC 7512 URI (see :mod:`keyvault.wrappers.pkcs11_uri`)::

    pkcs11:token=keyvault;object=team-a-kek?module-path=/usr/lib/softhsm/libsofthsm2.so

Mechanisms, by the key the URI names (recorded in the entry, checked on unwrap):

``pkcs11-aes-gcm`` (preferred for an AES-256 key)
    ``C_Encrypt`` with ``CKM_AES_GCM``, a random 96-bit IV, a 128-bit tag and
    ``canonical_json(context)`` as associated data. Many tokens, SoftHSM2
    among them, cannot ``C_WrapKey`` with GCM but encrypt with it.
``pkcs11-aes-kwp`` (an AES key on a token without GCM, or ``mechanism = "aes-kwp"``)
    ``C_WrapKey`` with ``CKM_AES_KEY_WRAP_PAD`` (RFC 5649) of a transient
    session object holding ``DEK || SHA-256(canonical_json(context)) || salt``.
    KWP has no associated data, so the context is bound the way the age
    wrapper binds it, and the envelope commitment binds the rest. KWP is
    deterministic: the 16 random salt bytes make two wraps of one DEK differ.
``pkcs11-rsa-oaep`` (an RSA key pair of at least 2048 bits)
    ``C_Encrypt`` with ``CKM_RSA_PKCS_OAEP`` of ``DEK || SHA-256(context)``,
    with SHA-256 where the token accepts it, else SHA-1 (SoftHSM2 2.6.1);
    the hash is recorded. OAEP labels are not used: token support is spotty.

Only ``wrap`` demands a non-extractable token key; ``unwrap`` works with
whatever key the URI names, so a recovery is never blocked by policy.

Sessions: one logged-in read/write session per (module, token) in the
process, shared by every wrapper on that token and reused across a bulk
operation; it is closed (logout) when the last wrapper using it closes.
PKCS#11 logs in per application and token, and a logout ends the login of
every session, so sharing is the only correct way for two wrappers (a
rewrap between two keys of one token) to coexist. Calls on the session are
serialized by a lock; python-pkcs11 holds its own operation lock as well.

PIN, first found: ``pin-value`` in the URI (accepted, with a warning),
``pin-source`` in the URI (a file), ``KEYVAULT_PKCS11_PIN``, ``[pkcs11]
pin_source`` in the config, the token's PIN pad, a prompt. A failed login
is remembered: a bulk restore with a wrong PIN tries the token once, not
once per key (tokens lock the PIN after a few failures). The PIN never
appears in an error, a log line, a repr or a recorded URI.

Module, first found: ``module-path`` in the URI, ``KEYVAULT_PKCS11_MODULE``,
``[pkcs11] module`` in the config. SoftHSM2 reads ``SOFTHSM2_CONF`` from the
process environment when the module is first loaded.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import os
import stat
import threading
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self, TypeVar

from keyvault import fsutil
from keyvault.canonical import canonical_json
from keyvault.errors import (
    AccessDeniedError,
    BackendUnavailableError,
    ConflictError,
    IntegrityError,
    KeyvaultError,
    NotFoundError,
    UsageError,
)
from keyvault.plugins import BackendOptions
from keyvault.wrappers.base import DEK_SIZE, ParamValue, WrappedKey, b64, context_digest
from keyvault.wrappers.pkcs11_uri import (
    Pkcs11Uri,
    canonical_key_uri,
    check_key_uri,
    parse_pkcs11_uri,
    require_key,
)

ENV_MODULE = "KEYVAULT_PKCS11_MODULE"
ENV_PIN = "KEYVAULT_PKCS11_PIN"
ALG_GCM, ALG_KWP, ALG_OAEP = "pkcs11-aes-gcm", "pkcs11-aes-kwp", "pkcs11-rsa-oaep"
#: ``[pkcs11] mechanism`` values: force one mechanism for new wraps.
MECHANISM_SETTINGS = {"aes-gcm": ALG_GCM, "aes-kwp": ALG_KWP, "rsa-oaep": ALG_OAEP}
CKM_NAMES = {ALG_GCM: "CKM_AES_GCM", ALG_KWP: "CKM_AES_KEY_WRAP_PAD", ALG_OAEP: "CKM_RSA_PKCS_OAEP"}
OAEP_HASHES = ("sha256", "sha1")
IV_SIZE, TAG_BITS = 12, 128
MIN_RSA_BITS = 2048
RSA_BITS = 3072
_DIGEST_SIZE = 32
_SEALED_SIZE = DEK_SIZE + _DIGEST_SIZE
_KWP_SALT_SIZE = 16
_KWP_BLOB_SIZE = _SEALED_SIZE + _KWP_SALT_SIZE + 8
_MAX_PIN_FILE = 4096
_COMMON_PARAMS = {"mechanism", "token", "key_label"}
_PARAMS = {
    ALG_GCM: _COMMON_PARAMS | {"iv", "tag_bits"},
    ALG_KWP: _COMMON_PARAMS | {"bound"},
    ALG_OAEP: _COMMON_PARAMS | {"hash", "bound"},
}
_OPTIONAL_PARAMS = {"key_id"}
_BOUND = "sha256-context"
_CREATE_HINT = "create it with: keyvault hsm create-key '{uri}'  (see docs/hsm.md)"
_MODULE_HINT = (
    f"give the module with module-path= in the URI, {ENV_MODULE}, or [pkcs11] "
    "module in the config (SoftHSM2: /usr/lib/softhsm/libsofthsm2.so)"
)
_PIN_HINT = (
    f"give the user PIN with pin-source=/path/to/file in the URI, {ENV_PIN}, "
    "[pkcs11] pin_source in the config, or run in a terminal to be asked"
)

T = TypeVar("T")


# --- typed errors ---------------------------------------------------------------


class Pkcs11ModuleError(BackendUnavailableError):
    """The PKCS#11 module (shared library) is not configured or cannot be loaded."""


class TokenNotFoundError(NotFoundError):
    """No token (or more than one) matches the URI."""


class PinError(AccessDeniedError):
    """The token refused the PIN."""


class PinLockedError(PinError):
    """The user PIN is locked: only the token's security officer can unlock it."""


class KeyNotFoundError(NotFoundError):
    """No usable key on the token matches the URI."""


class MechanismNotSupportedError(UsageError):
    """The token or the key cannot do the mechanism needed."""


class PinInUriWarning(UserWarning):
    """A ``pin-value`` was given in a URI (visible in process lists, history, config files)."""


# --- counters (tests prove one session per bulk operation) ------------------------

_COUNTS_LOCK = threading.Lock()
_COUNTS = {"sessions_opened": 0, "logins": 0, "sessions_closed": 0}


def session_counts() -> dict[str, int]:
    """Sessions opened, login attempts and sessions closed by this process so far."""
    with _COUNTS_LOCK:
        return dict(_COUNTS)


def _count(name: str) -> None:
    with _COUNTS_LOCK:
        _COUNTS[name] += 1


# --- modules and shared sessions -------------------------------------------------


@dataclass
class _Module:
    """One loaded PKCS#11 module and the logged-in sessions open on its tokens."""

    path: str
    lib: Any
    lock: threading.RLock = field(default_factory=threading.RLock)
    sessions: dict[int, _SharedSession] = field(default_factory=dict)


@dataclass
class _SharedSession:
    """A logged-in session on one token, shared by the wrappers that use that token."""

    module: _Module
    slot_id: int
    token_label: str
    session: Any
    users: int = 0
    lock: threading.RLock = field(default_factory=threading.RLock)


_MODULES: dict[str, _Module] = {}
_MODULES_LOCK = threading.Lock()


def _load_module(path: str) -> _Module:
    """The module at ``path``, loaded once per process (python-pkcs11 keeps it loaded)."""
    with _MODULES_LOCK:
        module = _MODULES.get(path)
        if module is not None:
            return module
        try:
            st = Path(path).stat()
        except OSError:
            raise Pkcs11ModuleError(
                f"PKCS#11 module {path} does not exist or is not readable", hint=_MODULE_HINT
            ) from None
        if not stat.S_ISREG(st.st_mode):
            raise Pkcs11ModuleError(f"PKCS#11 module {path} is not a file", hint=_MODULE_HINT)
        fsutil.refuse_if_others_can_change(path, st, "PKCS#11 module")  # code we would run
        pkcs11 = _import_pkcs11()
        try:
            lib = pkcs11.lib(path)
        except pkcs11.exceptions.PKCS11Error as exc:
            raise Pkcs11ModuleError(
                f"PKCS#11 module {path} could not be loaded or initialised ({type(exc).__name__})",
                hint="check that it is a PKCS#11 library for this machine's architecture; "
                "SoftHSM2 also needs SOFTHSM2_CONF naming a readable config",
            ) from None
        module = _MODULES[path] = _Module(path, lib)
        return module


def _import_pkcs11() -> Any:
    try:
        import pkcs11
        import pkcs11.exceptions
    except ImportError:
        raise BackendUnavailableError(
            "the pkcs11: wrapper needs the Python package 'python-pkcs11'",
            hint="install it with: pip install 'keyvault[hsm]'",
        ) from None
    return pkcs11


def _find_token(module: _Module, uri: Pkcs11Uri) -> Any:
    """The one token the URI names; reloads the module's slot list once if it is missing."""
    tokens = _tokens_reloading(module, uri)
    if len(tokens) > 1:
        raise TokenNotFoundError(
            f"{len(tokens)} tokens match the {uri.token_description()} in {module.path}",
            hint="add serial= or slot-id= to the URI (keyvault hsm list shows them)",
        )
    if not tokens:
        present = ", ".join(repr(t.label) for t in _all_tokens(module)) or "none"
        raise TokenNotFoundError(
            f"no {uri.token_description()} in PKCS#11 module {module.path} "
            f"(tokens present: {present})",
            hint="check the token label, or initialise one (softhsm2-util --init-token); "
            "keyvault hsm list shows the tokens",
        )
    return tokens[0]


def _tokens_reloading(module: _Module, uri: Pkcs11Uri) -> list[Any]:
    """The tokens matching ``uri``; if none, the slot list is reloaded once and searched again.

    Tokens initialised after the module loaded stay invisible until C_Initialize
    runs again; that ends every open session, so it is done only when none is open.
    """
    pkcs11 = _import_pkcs11()
    tokens = _matching_tokens(module, uri)
    if not tokens and not module.sessions:
        with suppress(pkcs11.exceptions.PKCS11Error):
            module.lib.reinitialize()
        tokens = _matching_tokens(module, uri)
    return tokens


def _all_tokens(module: _Module) -> list[Any]:
    pkcs11 = _import_pkcs11()
    tokens = []
    try:
        slots = module.lib.get_slots(token_present=True)
    except pkcs11.exceptions.PKCS11Error as exc:
        raise _translate(exc, f"listing the slots of {module.path}") from None
    for slot in slots:
        try:
            tokens.append(slot.get_token())
        except (pkcs11.exceptions.TokenNotPresent, pkcs11.exceptions.TokenNotRecognised):
            continue
        except pkcs11.exceptions.PKCS11Error as exc:
            raise _translate(exc, f"reading the token in slot {slot.slot_id}") from None
    return tokens


def _matching_tokens(module: _Module, uri: Pkcs11Uri) -> list[Any]:
    found = []
    for token in _all_tokens(module):
        if uri.token is not None and token.label != uri.token:
            continue
        if uri.serial is not None and _serial(token) != uri.serial:
            continue
        if uri.slot_id is not None and token.slot.slot_id != uri.slot_id:
            continue
        found.append(token)
    return found


def _serial(token: Any) -> str:
    return bytes(token.serial).decode("ascii", "replace").strip()


def _acquire_session(module: _Module, uri: Pkcs11Uri, options: BackendOptions) -> _SharedSession:
    """The logged-in session for the URI's token: the shared one, or a new one."""
    pkcs11 = _import_pkcs11()
    with module.lock:
        token = _find_token(module, uri)
        slot_id = int(token.slot.slot_id)
        shared = module.sessions.get(slot_id)
        if shared is None:
            flags = token.flags
            if flags & pkcs11.TokenFlag.USER_PIN_LOCKED:
                raise _pin_locked(token.label)
            rw = not flags & pkcs11.TokenFlag.WRITE_PROTECTED
            secret = _obtain_pin(uri, options, token)
            _count("logins")
            try:
                session = token.open(rw=rw, user_pin=secret)
            except pkcs11.exceptions.PKCS11Error as exc:
                raise _translate(exc, f"logging in to token {token.label!r}") from None
            finally:
                del secret
            _count("sessions_opened")
            shared = module.sessions[slot_id] = _SharedSession(
                module, slot_id, token.label, session
            )
        shared.users += 1
        return shared


def _release_session(shared: _SharedSession) -> None:
    pkcs11 = _import_pkcs11()
    module = shared.module
    with module.lock:
        shared.users -= 1
        if shared.users > 0:
            return
        module.sessions.pop(shared.slot_id, None)
        with shared.lock:
            # A failure means the session is gone already (token removed, module reinitialised).
            with suppress(pkcs11.exceptions.PKCS11Error):
                shared.session.close()
            _count("sessions_closed")


# --- the wrapper -------------------------------------------------------------------


@dataclass(frozen=True)
class _Keys:
    """The token objects a URI names: an AES key, or an RSA key pair."""

    kind: str  # "aes" or "rsa"
    label: str
    key_id: bytes
    secret: Any = None
    public: Any = None
    private: Any = None
    extractable: bool = False
    bits: int = 0


class Pkcs11Wrapper:
    """Wrap under one key of one PKCS#11 token; strict: unwrap only what this key wrapped."""

    def __init__(self, uri: str, options: BackendOptions, *, mechanism: str | None = None) -> None:
        self._parsed = parse_pkcs11_uri(uri)
        require_key(self._parsed)
        _warn_pin_value(self._parsed)
        self._uri = self._parsed.key_uri
        self._options = options
        settings = options.for_scheme("pkcs11")
        choice = mechanism if mechanism is not None else settings.get("mechanism")
        if choice is not None and choice not in MECHANISM_SETTINGS:
            raise UsageError(
                f"unknown pkcs11 mechanism {str(choice)[:20]!r}; choose one of "
                f"{', '.join(MECHANISM_SETTINGS)}"
            )
        self._forced = MECHANISM_SETTINGS[choice] if choice is not None else None
        self._lock = threading.Lock()
        self._shared: _SharedSession | None = None
        self._keys: _Keys | None = None
        self._wrap_alg: str | None = None
        self._oaep_hash: str | None = None
        self._failure: KeyvaultError | None = None

    @classmethod
    def from_uri(cls, uri: str, options: BackendOptions) -> Self:
        return cls(uri, options)

    @classmethod
    def check_uri(cls, uri: str) -> None:
        """UsageError unless ``uri`` is a canonical key URI; no module is loaded."""
        check_key_uri(uri)

    @classmethod
    def canonical_uri(cls, uri: str) -> str:
        """The key URI any accepted spelling of ``uri`` is recorded under."""
        return canonical_key_uri(uri)

    @property
    def uri(self) -> str:
        return self._uri

    def __repr__(self) -> str:
        return f"Pkcs11Wrapper({self._uri!r})"

    # wrap / unwrap ------------------------------------------------------------

    def wrap(self, dek: bytes, context: Mapping[str, str]) -> WrappedKey:
        if len(dek) != DEK_SIZE:
            raise ValueError(f"a DEK is {DEK_SIZE} bytes")
        with self._token() as (shared, keys):
            self._check_wrapping_key(keys)
            alg = self._choose_alg(shared, keys)
            params: dict[str, ParamValue] = {
                "mechanism": CKM_NAMES[alg],
                "token": shared.token_label,
                "key_label": keys.label,
            }
            if keys.key_id:
                params["key_id"] = keys.key_id.hex()
            if alg == ALG_GCM:
                iv = os.urandom(IV_SIZE)
                blob = self._call(
                    lambda: keys.secret.encrypt(
                        bytes(dek),
                        mechanism=_mech().AES_GCM,
                        mechanism_param=_gcm_params(iv, context),
                    ),
                    "AES-GCM encryption",
                )
                params.update(iv=b64(iv), tag_bits=TAG_BITS)
            elif alg == ALG_KWP:
                sealed = bytes(dek) + context_digest(context) + os.urandom(_KWP_SALT_SIZE)
                blob = self._kwp_wrap(shared, keys, sealed)
                params["bound"] = _BOUND
            else:
                digest = self._oaep_hash or "sha1"
                blob = self._call(
                    lambda: keys.public.encrypt(
                        bytes(dek) + context_digest(context),
                        mechanism=_mech().RSA_PKCS_OAEP,
                        mechanism_param=_oaep_params(digest),
                    ),
                    "RSA-OAEP encryption",
                )
                params.update(hash=digest, bound=_BOUND)
        return WrappedKey(self._uri, alg, bytes(blob), dict(context), params)

    def unwrap(self, wrapped: WrappedKey, context: Mapping[str, str]) -> bytes:
        alg, params = self._parse(wrapped)
        with self._token() as (shared, keys):
            self._check_same_key(keys, params, alg)
            if alg == ALG_GCM:
                self._require_mechanism(shared, alg)
                iv = _unb64(params["iv"])
                plain = self._decrypt(
                    lambda: keys.secret.decrypt(
                        wrapped.blob,
                        mechanism=_mech().AES_GCM,
                        mechanism_param=_gcm_params(iv, context),
                    )
                )
                if len(plain) != DEK_SIZE:
                    raise self._altered("has the wrong length")
                return bytes(plain)
            if alg == ALG_KWP:
                self._require_mechanism(shared, alg)
                value = self._kwp_unwrap(shared, keys, wrapped.blob)
                if len(value) != _SEALED_SIZE + _KWP_SALT_SIZE:
                    raise self._altered("has the wrong length")
                sealed = value[:_SEALED_SIZE]
            else:
                self._require_mechanism(shared, alg)
                digest = str(params["hash"])
                sealed = self._decrypt(
                    lambda: keys.private.decrypt(
                        wrapped.blob,
                        mechanism=_mech().RSA_PKCS_OAEP,
                        mechanism_param=_oaep_params(digest),
                    ),
                    oaep_hash=digest,
                )
        if len(sealed) != _SEALED_SIZE:
            raise self._altered("has the wrong length")
        if not hmac.compare_digest(sealed[DEK_SIZE:], context_digest(context)):
            raise IntegrityError(
                f"the key wrapped for {self._uri} is bound to another key's "
                "context (team, GUN, role or key ID)"
            )
        return bytes(sealed[:DEK_SIZE])

    def close(self) -> None:
        with self._lock:
            shared, self._shared, self._keys = self._shared, None, None
            self._wrap_alg = self._oaep_hash = None
            self._failure = None
        if shared is not None:
            _release_session(shared)

    # sessions and keys --------------------------------------------------------

    @contextmanager
    def _token(self) -> Iterator[tuple[_SharedSession, _Keys]]:
        """The shared logged-in session and this URI's keys, under the session lock."""
        with self._lock:
            if self._failure is not None:
                raise self._failure  # the same wrong PIN is not tried again
            if self._shared is None:
                module = _load_module(_module_path(self._parsed, self._options))
                try:
                    self._shared = _acquire_session(module, self._parsed, self._options)
                except (PinError, TokenNotFoundError, Pkcs11ModuleError) as exc:
                    self._failure = exc
                    raise
            shared = self._shared
            with shared.lock:
                if self._keys is None:
                    self._keys = _find_keys(shared, self._parsed)
                yield shared, self._keys

    def _check_wrapping_key(self, keys: _Keys) -> None:
        if keys.extractable:
            raise UsageError(
                f"the key at {self._uri} is extractable (CKA_EXTRACTABLE is true); keyvault "
                "wraps only under keys that cannot leave the token",
                hint="create a new key with keyvault hsm create-key, which makes it "
                "non-extractable",
            )

    def _choose_alg(self, shared: _SharedSession, keys: _Keys) -> str:
        if self._wrap_alg is not None:
            return self._wrap_alg
        offered = _mechanisms(shared)
        mech = _mech()
        if keys.kind == "rsa":
            candidates = [ALG_OAEP]
        else:
            candidates = [
                a
                for a, m, capability in (
                    (ALG_GCM, mech.AES_GCM, "ENCRYPT"),
                    (ALG_KWP, mech.AES_KEY_WRAP_PAD, "WRAP"),
                )
                if m in offered and _attr(keys.secret, capability, default=True)
            ]
        if self._forced is not None:
            if self._forced not in candidates:
                raise MechanismNotSupportedError(
                    f"{CKM_NAMES[self._forced]} is not available with the {keys.kind.upper()} "
                    f"key at {self._uri} on token {shared.token_label!r}",
                    hint="remove [pkcs11] mechanism from the config, or use a key and token "
                    "that offer it",
                )
            candidates = [self._forced]
        if not candidates or (keys.kind == "rsa" and mech.RSA_PKCS_OAEP not in offered):
            raise MechanismNotSupportedError(
                f"token {shared.token_label!r} offers none of the mechanisms keyvault wraps "
                f"with for the {keys.kind.upper()} key at {self._uri} (AES-GCM or AES key wrap "
                "with padding for AES keys, RSA-OAEP for RSA keys)",
                hint="use an AES-256 key on a token that offers CKM_AES_GCM or "
                "CKM_AES_KEY_WRAP_PAD, or an RSA key pair",
            )
        if candidates[0] == ALG_OAEP:
            self._oaep_hash = self._probe_oaep_hash(keys)
        self._wrap_alg = candidates[0]
        return candidates[0]

    def _probe_oaep_hash(self, keys: _Keys) -> str:
        """SHA-256 if the token accepts it for OAEP, else SHA-1 (SoftHSM2 2.6.1)."""
        pkcs11 = _import_pkcs11()
        refused = (
            pkcs11.exceptions.ArgumentsBad,
            pkcs11.exceptions.MechanismParamInvalid,
            pkcs11.exceptions.MechanismInvalid,
        )
        for digest in OAEP_HASHES:
            try:
                keys.public.encrypt(
                    b"keyvault-oaep-probe",
                    mechanism=_mech().RSA_PKCS_OAEP,
                    mechanism_param=_oaep_params(digest),
                )
            except refused:
                continue
            except pkcs11.exceptions.PKCS11Error as exc:
                raise _translate(exc, "RSA-OAEP encryption") from None
            return digest
        raise MechanismNotSupportedError(
            f"token offers RSA-OAEP with neither SHA-256 nor SHA-1 for the key at {self._uri}"
        )

    def _require_mechanism(self, shared: _SharedSession, alg: str) -> None:
        if getattr(_mech(), CKM_NAMES[alg][len("CKM_") :]) not in _mechanisms(shared):
            raise MechanismNotSupportedError(
                f"this DEK was wrapped with {CKM_NAMES[alg]}, which token "
                f"{shared.token_label!r} does not offer",
                hint="open it on a token (or module version) that offers that mechanism",
            )

    def _check_same_key(self, keys: _Keys, params: Mapping[str, ParamValue], alg: str) -> None:
        if (alg == ALG_OAEP) != (keys.kind == "rsa"):
            raise KeyNotFoundError(
                f"the key at {self._uri} is an {keys.kind.upper()} key, but this DEK was "
                f"wrapped with {CKM_NAMES[alg]}: the URI now names another key",
                hint="restore the original key on the token, or use another wrapper",
            )
        recorded = params.get("key_id")
        if recorded is not None and recorded != keys.key_id.hex():
            raise KeyNotFoundError(
                f"the key at {self._uri} has CKA_ID {keys.key_id.hex() or '(none)'}, but this "
                f"DEK was wrapped under CKA_ID {str(recorded)[:64]}: the original key was "
                "replaced, or the URI now matches another key",
                hint="restore the original key on the token, or use another wrapper",
            )

    def _kwp_wrap(self, shared: _SharedSession, keys: _Keys, sealed: bytes) -> bytes:
        pkcs11 = _import_pkcs11()
        a = pkcs11.Attribute
        template = {
            a.CLASS: pkcs11.ObjectClass.SECRET_KEY,
            a.KEY_TYPE: pkcs11.KeyType.GENERIC_SECRET,
            a.VALUE: sealed,
            a.TOKEN: False,
            a.EXTRACTABLE: True,
            a.SENSITIVE: False,
            a.PRIVATE: True,
        }
        transient = self._call(
            lambda: shared.session.create_object(template), "creating a session object"
        )
        try:
            return bytes(
                self._call(
                    lambda: keys.secret.wrap_key(transient, mechanism=_mech().AES_KEY_WRAP_PAD),
                    "AES key wrap",
                )
            )
        finally:
            _destroy(transient)

    def _kwp_unwrap(self, shared: _SharedSession, keys: _Keys, blob: bytes) -> bytes:
        pkcs11 = _import_pkcs11()
        if len(blob) != _KWP_BLOB_SIZE:
            raise self._altered("has the wrong length")
        a = pkcs11.Attribute
        transient = self._decrypt(
            lambda: keys.secret.unwrap_key(
                pkcs11.ObjectClass.SECRET_KEY,
                pkcs11.KeyType.GENERIC_SECRET,
                blob,
                mechanism=_mech().AES_KEY_WRAP_PAD,
                store=False,
                template={a.SENSITIVE: False, a.EXTRACTABLE: True, a.PRIVATE: True},
            )
        )
        try:
            return bytes(self._call(lambda: transient[a.VALUE], "reading the unwrapped value"))
        finally:
            _destroy(transient)

    def _call(self, action: Callable[[], T], what: str) -> T:
        pkcs11 = _import_pkcs11()
        try:
            return action()
        except pkcs11.exceptions.PKCS11Error as exc:
            raise _translate(exc, f"{what} with the key at {self._uri}") from None

    def _decrypt(self, action: Callable[[], T], oaep_hash: str | None = None) -> T:
        """Run a decryption; an authentication failure is an IntegrityError."""
        pkcs11 = _import_pkcs11()
        e = pkcs11.exceptions
        try:
            return action()
        except (
            e.GeneralError,
            e.EncryptedDataInvalid,
            e.EncryptedDataLenRange,
            e.WrappedKeyInvalid,
            e.WrappedKeyLenRange,
            e.DataInvalid,
            e.DataLenRange,
        ):
            raise self._altered(
                "does not decrypt with the token key: it was altered, "
                "truncated, wrapped under another key, or bound to another "
                "key's context"
            ) from None
        except (e.ArgumentsBad, e.MechanismParamInvalid, e.MechanismInvalid):
            detail = f" with {oaep_hash.upper()}" if oaep_hash else ""
            raise MechanismNotSupportedError(
                f"the token refuses the mechanism{detail} this DEK was wrapped with",
                hint="open it on a token (or module version) that offers it",
            ) from None
        except e.PKCS11Error as exc:
            raise _translate(exc, f"unwrapping with the key at {self._uri}") from None

    def _altered(self, what: str) -> IntegrityError:
        return IntegrityError(f"the key wrapped for {self._uri} {what}")

    def _parse(self, wrapped: WrappedKey) -> tuple[str, Mapping[str, ParamValue]]:
        """The algorithm and params; IntegrityError for anything this wrapper never writes."""
        alg, params = wrapped.alg, wrapped.params
        expected = _PARAMS.get(alg)
        if expected is None or not expected <= set(params) <= expected | _OPTIONAL_PARAMS:
            raise self._refused("an algorithm or parameter set this wrapper never writes")
        if params["mechanism"] != CKM_NAMES[alg]:
            raise self._refused("a mechanism that does not match its algorithm")
        if not all(isinstance(params[k], str) for k in ("token", "key_label")):
            raise self._refused("a non-text token or key label")
        key_id = params.get("key_id")
        if key_id is not None and not _is_hex(key_id):
            raise self._refused("a key_id that is not hex")
        if alg == ALG_GCM:
            if params["tag_bits"] != TAG_BITS or len(_unb64(params["iv"])) != IV_SIZE:
                raise self._refused("a GCM IV or tag size off the allow-list")
            if len(wrapped.blob) != DEK_SIZE + TAG_BITS // 8:
                raise self._altered("has the wrong length")
        else:
            if params["bound"] != _BOUND:
                raise self._refused("an unknown context binding")
        if alg == ALG_OAEP and params["hash"] not in OAEP_HASHES:
            raise self._refused("an OAEP hash off the allow-list")
        return alg, params

    def _refused(self, what: str) -> IntegrityError:
        return IntegrityError(
            f"the key wrapped for {self._uri} has {what}; refused (tampering or a downgrade)"
        )


# --- key lookup, creation, listing ---------------------------------------------------


def _find_keys(shared: _SharedSession, uri: Pkcs11Uri) -> _Keys:
    pkcs11 = _import_pkcs11()
    oc = pkcs11.ObjectClass
    wanted = {
        "secret-key": (oc.SECRET_KEY,),
        "private": (oc.PRIVATE_KEY, oc.PUBLIC_KEY),
        None: (oc.SECRET_KEY, oc.PRIVATE_KEY, oc.PUBLIC_KEY),
    }[uri.type]
    found: dict[Any, list[Any]] = {}
    for cls in wanted:
        found[cls] = _objects(shared, uri, cls)
    secrets, privates, publics = (
        found.get(oc.SECRET_KEY, []),
        found.get(oc.PRIVATE_KEY, []),
        found.get(oc.PUBLIC_KEY, []),
    )
    where = f"token {shared.token_label!r}"
    if secrets and privates:
        raise KeyNotFoundError(
            f"{uri.key_uri} matches both a secret key and a private key on {where}",
            hint="add type=secret-key or type=private",
        )
    if len(secrets) > 1 or len(privates) > 1:
        raise KeyNotFoundError(
            f"{uri.key_uri} matches {max(len(secrets), len(privates))} keys on {where}",
            hint="add id= to the URI to pick one (keyvault hsm list shows the IDs)",
        )
    if secrets:
        key = secrets[0]
        if key.key_type != pkcs11.KeyType.AES or _attr(key, "VALUE_LEN", 0) != 32:
            raise MechanismNotSupportedError(
                f"the secret key at {uri.key_uri} is not an AES-256 key",
                hint="keyvault wraps with AES-256 or RSA (>= 2048 bits) keys; create one with "
                "keyvault hsm create-key",
            )
        return _Keys(
            "aes",
            key.label or "",
            _attr(key, "ID", b""),
            secret=key,
            extractable=bool(_attr(key, "EXTRACTABLE", True)),
            bits=256,
        )
    if privates:
        private = privates[0]
        if private.key_type != pkcs11.KeyType.RSA:
            raise MechanismNotSupportedError(
                f"the private key at {uri.key_uri} is not an RSA key",
                hint="keyvault wraps with AES-256 or RSA (>= 2048 bits) keys",
            )
        public = _matching_public(shared, uri, private, publics)
        bits = int(_attr(public, "MODULUS_BITS", 0))
        if bits < MIN_RSA_BITS:
            raise MechanismNotSupportedError(
                f"the RSA key at {uri.key_uri} has {bits} bits; keyvault needs at least "
                f"{MIN_RSA_BITS}",
                hint="create a new key with keyvault hsm create-key --type rsa",
            )
        return _Keys(
            "rsa",
            private.label or "",
            _attr(private, "ID", b""),
            public=public,
            private=private,
            extractable=bool(_attr(private, "EXTRACTABLE", True)),
            bits=bits,
        )
    raise KeyNotFoundError(
        f"no AES secret key or RSA private key matches {uri.key_uri} on {where}"
        + (" (only a public key does)" if publics else ""),
        hint=_CREATE_HINT.format(uri=uri.key_uri),
    )


def _matching_public(
    shared: _SharedSession, uri: Pkcs11Uri, private: Any, publics: list[Any]
) -> Any:
    """The public half of ``private``: same CKA_ID (else same label) and same modulus."""
    pkcs11 = _import_pkcs11()
    if not publics:
        key_id = bytes(_attr(private, "ID", b""))
        twin = Pkcs11Uri(id=key_id) if key_id else Pkcs11Uri(object=private.label)
        publics = _objects(shared, twin, pkcs11.ObjectClass.PUBLIC_KEY)
    modulus = _attr(private, "MODULUS", None)
    for public in publics:
        if modulus is None or _attr(public, "MODULUS", None) == modulus:
            return public
    raise KeyNotFoundError(
        f"the RSA private key at {uri.key_uri} has no matching public key on the token",
        hint="import the public key with the same label and CKA_ID, or create a new pair",
    )


def _objects(shared: _SharedSession, uri: Pkcs11Uri, cls: Any) -> list[Any]:
    pkcs11 = _import_pkcs11()
    a = pkcs11.Attribute
    query: dict[Any, Any] = {a.CLASS: cls}
    if uri.object is not None:
        query[a.LABEL] = uri.object
    if uri.id is not None:
        query[a.ID] = uri.id
    try:
        return list(shared.session.get_objects(query))
    except pkcs11.exceptions.PKCS11Error as exc:
        raise _translate(exc, f"searching token {shared.token_label!r}") from None


def _attr(obj: Any, name: str, default: Any) -> Any:
    pkcs11 = _import_pkcs11()
    try:
        return obj[getattr(pkcs11.Attribute, name)]
    except (pkcs11.exceptions.PKCS11Error, KeyError, NotImplementedError):
        return default


def _destroy(obj: Any) -> None:
    pkcs11 = _import_pkcs11()
    with suppress(pkcs11.exceptions.PKCS11Error):  # a session object ends with its session
        obj.destroy()


def _mechanisms(shared: _SharedSession) -> set[Any]:
    pkcs11 = _import_pkcs11()
    try:
        return set(shared.session.token.slot.get_mechanisms())
    except pkcs11.exceptions.PKCS11Error as exc:
        raise _translate(exc, f"listing the mechanisms of token {shared.token_label!r}") from None


@dataclass(frozen=True)
class KeyInfo:
    """A wrapping key on a token, as ``keyvault hsm list`` and ``create-key`` report it."""

    uri: str
    token: str
    label: str
    key_id: str
    kind: str
    extractable: bool
    mechanism: str | None

    def to_json(self) -> dict[str, Any]:
        return {
            "uri": self.uri,
            "token": self.token,
            "label": self.label,
            "id": self.key_id,
            "type": self.kind,
            "extractable": self.extractable,
            "mechanism": self.mechanism,
        }


@dataclass(frozen=True)
class TokenInfo:
    """A token in a slot, as ``keyvault hsm list`` reports it (no login needed)."""

    uri: str
    label: str
    serial: str
    slot_id: int
    manufacturer: str
    model: str
    initialized: bool
    pin_locked: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "uri": self.uri,
            "label": self.label,
            "serial": self.serial,
            "slot_id": self.slot_id,
            "manufacturer": self.manufacturer,
            "model": self.model,
            "initialized": self.initialized,
            "pin_locked": self.pin_locked,
        }


def list_tokens(uri: str, options: BackendOptions) -> list[TokenInfo]:
    """The tokens of the module (the URI may be just ``pkcs11:`` plus module-path)."""
    pkcs11 = _import_pkcs11()
    parsed = parse_pkcs11_uri(uri)
    module = _load_module(_module_path(parsed, options))
    with module.lock:
        # A named token must exist (exit 3, listing the labels present); else list them all.
        tokens = (
            [_find_token(module, parsed)]
            if parsed.names_token
            else _tokens_reloading(module, parsed)
        )
    flags = pkcs11.TokenFlag
    return [
        TokenInfo(
            uri=Pkcs11Uri(token=t.label).key_uri,
            label=t.label,
            serial=_serial(t),
            slot_id=int(t.slot.slot_id),
            manufacturer=t.manufacturer_id.strip(),
            model=t.model.strip(),
            initialized=bool(t.flags & flags.TOKEN_INITIALIZED),
            pin_locked=bool(t.flags & flags.USER_PIN_LOCKED),
        )
        for t in tokens
    ]


def list_keys(uri: str, options: BackendOptions) -> list[KeyInfo]:
    """The AES secret keys and RSA private keys on the URI's token (logs in)."""
    pkcs11 = _import_pkcs11()
    parsed = parse_pkcs11_uri(uri)
    if not parsed.names_token:
        raise UsageError("name the token to list its keys: pkcs11:token=<label>")
    probe = _TokenAccess(parsed, options)
    try:
        shared = probe.open()
        with shared.lock:
            offered = _mechanisms(shared)
            found = []
            for cls in (pkcs11.ObjectClass.SECRET_KEY, pkcs11.ObjectClass.PRIVATE_KEY):
                for obj in _objects(shared, Pkcs11Uri(object=parsed.object, id=parsed.id), cls):
                    found.append(_key_info(shared, obj, offered))
        return sorted(found, key=lambda k: (k.label, k.key_id))
    finally:
        probe.close()


def create_key(uri: str, options: BackendOptions, *, kind: str = "aes") -> KeyInfo:
    """Generate a labelled, non-extractable AES-256 key or RSA-3072 pair on the token.

    A missing ``id=`` gets a random 16-byte CKA_ID, so the key URI stays unique
    even if another key is later given the same label. Refuses (ConflictError)
    when a key with that label or ID already exists.
    """
    pkcs11 = _import_pkcs11()
    parsed = parse_pkcs11_uri(uri)
    require_key(parsed)
    if parsed.object is None:
        raise UsageError("give the new key a label: object=<label> in the URI")
    if kind not in ("aes", "rsa"):
        raise UsageError(f"key type must be aes or rsa, not {kind[:10]!r}")
    key_id = parsed.id if parsed.id is not None else os.urandom(16)
    probe = _TokenAccess(parsed, options)
    try:
        shared = probe.open()
        with shared.lock:
            oc = pkcs11.ObjectClass
            for cls in (oc.SECRET_KEY, oc.PRIVATE_KEY, oc.PUBLIC_KEY):
                for query in (Pkcs11Uri(object=parsed.object), Pkcs11Uri(id=key_id)):
                    if _objects(shared, query, cls):
                        raise ConflictError(
                            f"token {shared.token_label!r} already holds a key with label "
                            f"{parsed.object!r} or CKA_ID {key_id.hex()}; nothing was created",
                            hint="choose another object= label (keyvault hsm list shows the keys)",
                        )
            if not shared.session.rw:
                raise AccessDeniedError(f"token {shared.token_label!r} is write-protected")
            obj = _generate(shared, kind, parsed.object, key_id)
            return _key_info(shared, obj, _mechanisms(shared))
    finally:
        probe.close()


def _generate(shared: _SharedSession, kind: str, label: str, key_id: bytes) -> Any:
    pkcs11 = _import_pkcs11()
    a, flag = pkcs11.Attribute, pkcs11.MechanismFlag
    locked = {a.EXTRACTABLE: False, a.SENSITIVE: True, a.PRIVATE: True, a.MODIFIABLE: False}
    try:
        if kind == "aes":
            return shared.session.generate_key(
                pkcs11.KeyType.AES,
                256,
                label=label,
                id=key_id,
                store=True,
                capabilities=flag.ENCRYPT | flag.DECRYPT | flag.WRAP | flag.UNWRAP,
                template=locked,
            )
        _, private = shared.session.generate_keypair(
            pkcs11.KeyType.RSA,
            RSA_BITS,
            label=label,
            id=key_id,
            store=True,
            capabilities=flag.ENCRYPT | flag.DECRYPT | flag.WRAP | flag.UNWRAP,
            public_template={a.MODIFIABLE: False},
            private_template=locked,
        )
        return private
    except pkcs11.exceptions.PKCS11Error as exc:
        raise _translate(exc, f"generating a key on token {shared.token_label!r}") from None


def _key_info(shared: _SharedSession, obj: Any, offered: set[Any]) -> KeyInfo:
    pkcs11 = _import_pkcs11()
    mech = _mech()
    key_id = bytes(_attr(obj, "ID", b""))
    label = obj.label or ""
    if obj.key_type == pkcs11.KeyType.AES:
        kind = f"aes-{int(_attr(obj, 'VALUE_LEN', 0)) * 8}"
        mechanism = next(
            (
                CKM_NAMES[alg]
                for alg, m in ((ALG_GCM, mech.AES_GCM), (ALG_KWP, mech.AES_KEY_WRAP_PAD))
                if m in offered
            ),
            None,
        )
        if kind != "aes-256":
            mechanism = None
    elif obj.key_type == pkcs11.KeyType.RSA:
        bits = int(_attr(obj, "MODULUS_BITS", 0)) or len(_attr(obj, "MODULUS", b"")) * 8
        kind = f"rsa-{bits}"
        mechanism = CKM_NAMES[ALG_OAEP] if mech.RSA_PKCS_OAEP in offered else None
    else:
        kind, mechanism = str(getattr(obj.key_type, "name", obj.key_type)).lower(), None
    uri = Pkcs11Uri(token=shared.token_label, object=label or None, id=key_id or None).key_uri
    return KeyInfo(
        uri=uri,
        token=shared.token_label,
        label=label,
        key_id=key_id.hex(),
        kind=kind,
        extractable=bool(_attr(obj, "EXTRACTABLE", True)),
        mechanism=mechanism,
    )


class _TokenAccess:
    """A short-lived holder of the shared session, for listing and creating keys."""

    def __init__(self, parsed: Pkcs11Uri, options: BackendOptions) -> None:
        _warn_pin_value(parsed)
        self._parsed, self._options = parsed, options
        self._shared: _SharedSession | None = None

    def open(self) -> _SharedSession:
        module = _load_module(_module_path(self._parsed, self._options))
        self._shared = _acquire_session(module, self._parsed, self._options)
        return self._shared

    def close(self) -> None:
        if self._shared is not None:
            _release_session(self._shared)
            self._shared = None


# --- configuration: module and PIN ---------------------------------------------------


def _module_path(parsed: Pkcs11Uri, options: BackendOptions) -> str:
    path = (
        parsed.module_path
        or options.env.get(ENV_MODULE)
        or options.for_scheme("pkcs11").get("module")
    )
    if not path:
        raise Pkcs11ModuleError(
            "no PKCS#11 module configured for the pkcs11: wrapper", hint=_MODULE_HINT
        )
    if not str(path).startswith("/"):
        raise Pkcs11ModuleError(
            f"PKCS#11 module path {str(path)[:200]!r} is not absolute", hint=_MODULE_HINT
        )
    return str(path)


def _warn_pin_value(parsed: Pkcs11Uri) -> None:
    if parsed.pin_value is not None:
        warnings.warn(
            PinInUriWarning(
                "a pkcs11: URI carries pin-value: it is visible in process lists, shell "
                f"history and config files; prefer pin-source=FILE or {ENV_PIN}"
            ),
            stacklevel=4,
        )


def _obtain_pin(parsed: Pkcs11Uri, options: BackendOptions, token: Any) -> Any:
    """The user PIN (or the PIN-pad marker) for logging in to ``token``."""
    pkcs11 = _import_pkcs11()
    found = _read_pin(parsed, options)
    if found is not None:
        return found
    if token.flags & pkcs11.TokenFlag.PROTECTED_AUTHENTICATION_PATH:
        return pkcs11.PROTECTED_AUTH
    if options.prompt is not None:
        value = options.prompt(f"User PIN for PKCS#11 token {token.label!r}")
        if not value:
            raise UsageError("empty PIN refused", hint=_PIN_HINT)
        return value
    raise UsageError(f"no PIN for PKCS#11 token {token.label!r}", hint=_PIN_HINT)


def _read_pin(parsed: Pkcs11Uri, options: BackendOptions) -> str | None:
    """The PIN from the URI, the environment or a PIN file; None to ask the token or a person."""
    if parsed.pin_value is not None:
        return parsed.pin_value
    if parsed.pin_source is not None:
        return read_pin_file(parsed.pin_source)
    if ENV_PIN in options.env:
        value = options.env[ENV_PIN]
        if not value:
            raise UsageError(
                f"{ENV_PIN} is set but empty",
                hint="set it to the token's user PIN, or unset it to be asked",
            )
        return value
    configured = options.for_scheme("pkcs11").get("pin_source")
    if configured:
        return read_pin_file(str(configured))
    return None


def read_pin_file(path: str) -> str:
    """A PIN file: one line (a final newline is dropped), private to its owner."""
    raw = fsutil.read_private_file(path, "PIN file", _MAX_PIN_FILE, missing_hint=_PIN_HINT)
    text = raw.decode("utf-8", "replace")
    text = text[:-1] if text.endswith("\n") else text
    text = text[:-1] if text.endswith("\r") else text
    if not text or "\n" in text:
        raise UsageError(f"PIN file {path} must hold the PIN on a single line")
    return text


# --- helpers -------------------------------------------------------------------------


def _translate(exc: BaseException, doing: str) -> KeyvaultError:
    """A keyvault error for a PKCS#11 error: the class name only, never the SDK's text."""
    name = type(exc).__name__
    if name in ("PinIncorrect", "PinInvalid", "PinLenRange"):
        return PinError(
            f"the token refused the user PIN while {doing}",
            hint="check the PIN (" + _PIN_HINT.removeprefix("give ") + ")",
        )
    if name == "PinLocked":
        return _pin_locked(doing)
    if name == "PinExpired":
        return PinError(
            f"the user PIN has expired ({doing})", hint="set a new user PIN with the token's tools"
        )
    if name in ("UserPinNotInitialized",):
        return PinError(
            f"the token has no user PIN yet ({doing})",
            hint="initialise it (softhsm2-util --init-token ... --pin)",
        )
    if name in (
        "MechanismInvalid",
        "MechanismParamInvalid",
        "KeyFunctionNotPermitted",
        "KeyTypeInconsistent",
        "FunctionNotSupported",
    ):
        return MechanismNotSupportedError(f"the token does not support what {doing} needs ({name})")
    if name in ("TokenNotPresent", "TokenNotRecognised", "DeviceRemoved", "SlotIDInvalid"):
        return TokenNotFoundError(f"the token went away while {doing} ({name})")
    if name in ("KeyHandleInvalid", "ObjectHandleInvalid"):
        return KeyNotFoundError(f"the key disappeared from the token while {doing}")
    if name in (
        "UserNotLoggedIn",
        "SessionHandleInvalid",
        "SessionClosed",
        "CryptokiNotInitialized",
    ):
        return BackendUnavailableError(
            f"the token session ended while {doing} ({name})", hint="run the command again"
        )
    if name in ("KeyUnextractable", "KeyNotWrappable"):
        return MechanismNotSupportedError(f"the token refused {doing} ({name})")
    return BackendUnavailableError(f"the PKCS#11 module failed while {doing} ({name})")


def _pin_locked(where: str) -> PinLockedError:
    return PinLockedError(
        f"the user PIN of {where} is locked after too many wrong PINs",
        hint="the token's security officer must unlock or reset it "
        "(e.g. softhsm2-util, or the HSM vendor's tool)",
    )


def _mech() -> Any:
    return _import_pkcs11().Mechanism


def _gcm_params(iv: bytes, context: Mapping[str, str]) -> Any:
    from pkcs11.mechanisms import GCMParams

    return GCMParams(iv, canonical_json(context), TAG_BITS)


def _oaep_params(digest: str) -> tuple[Any, Any, None]:
    pkcs11 = _import_pkcs11()
    if digest == "sha256":
        return (pkcs11.Mechanism.SHA256, pkcs11.MGF.SHA256, None)
    return (pkcs11.Mechanism.SHA_1, pkcs11.MGF.SHA1, None)


def _unb64(value: ParamValue) -> bytes:
    if not isinstance(value, str):
        return b""
    try:
        return base64.b64decode(value.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        return b""


def _is_hex(value: ParamValue) -> bool:
    if not isinstance(value, str) or len(value) > 2 * 64 or len(value) % 2:
        return False
    try:
        bytes.fromhex(value)
    except ValueError:
        return False
    return True
