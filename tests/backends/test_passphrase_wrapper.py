"""PassphraseWrapper: the wrapper contract, passphrase sources, cost, the allow-list."""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
from contracts.wrapper_contract import CONTEXT, WrapperContract
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from keyvault.canonical import canonical_json
from keyvault.errors import AccessDeniedError, IntegrityError, UsageError
from keyvault.plugins import BackendOptions
from keyvault.wrappers import open_wrapper
from keyvault.wrappers import passphrase as pw
from keyvault.wrappers.base import WrappedKey, Wrapper

from .conftest import TEST_SCRYPT_N

PASSPHRASE = "correct horse battery staple"
DEK = bytes(range(32))
FAST = {"passphrase": {"scrypt_n": TEST_SCRYPT_N}}


class Prompt:
    """A person at a terminal: answers with ``answers`` in turn, records each question."""

    def __init__(self, *answers: str) -> None:
        self.answers = list(answers)
        self.asked: list[tuple[str, bool]] = []

    def __call__(self, prompt: str, *, confirm: bool = False) -> str:
        self.asked.append((prompt, confirm))
        return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]


def env_wrapper(passphrase: str = PASSPHRASE, uri: str = "passphrase:") -> pw.PassphraseWrapper:
    options = BackendOptions(env={"KEYVAULT_PASSPHRASE": passphrase}, settings=FAST)
    return pw.PassphraseWrapper.from_uri(uri, options)


def prompt_wrapper(prompt: Prompt, uri: str = "passphrase:") -> pw.PassphraseWrapper:
    return pw.PassphraseWrapper.from_uri(uri, BackendOptions(prompt=prompt, settings=FAST))


@pytest.fixture
def derivations(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int, int]]:
    """Counts scrypt runs (n, r, p), still deriving for real."""
    calls: list[tuple[int, int, int]] = []
    real = pw.derive_kek

    def counting(passphrase: bytes, salt: bytes, n: int, r: int, p: int) -> bytes:
        calls.append((n, r, p))
        return real(passphrase, salt, n, r, p)

    monkeypatch.setattr(pw, "derive_kek", counting)
    return calls


class TestPassphraseWrapperContract(WrapperContract):
    @pytest.fixture
    def wrapper(self) -> Iterator[Wrapper]:
        w = env_wrapper()
        yield w
        w.close()

    @pytest.fixture
    def secret_strings(self) -> list[str]:
        return [PASSPHRASE, PASSPHRASE.encode().hex(), "horse battery"]


# -- URIs and settings -----------------------------------------------------------------


@pytest.mark.parametrize(
    "uri", ["passphrase:", "passphrase:laptop", "passphrase:team-a-2", "passphrase:" + "a" * 32]
)
def test_uri_preserved(uri: str) -> None:
    assert env_wrapper(uri=uri).uri == uri


def test_registry_builds_a_passphrase_wrapper() -> None:
    w = open_wrapper("passphrase:ops", BackendOptions(settings=FAST))
    assert isinstance(w, pw.PassphraseWrapper) and w.uri == "passphrase:ops"


@pytest.mark.parametrize(
    "uri",
    [
        "passphrase",
        "passphrase:Laptop",
        "passphrase:a/b",
        "passphrase://x",
        "passphrase:" + "a" * 33,
        "passphrase:a b",
        "passphrase:a:b",
        "pass:x",
    ],
)
def test_bad_uri_refused(uri: str) -> None:
    with pytest.raises(UsageError):
        pw.PassphraseWrapper.from_uri(uri, BackendOptions())


@pytest.mark.parametrize("n", [2**13, 2**21, 3 * 2**14, 0, -(2**14), True, "16384", 16384.0])
def test_scrypt_n_setting_allow_list(n: Any) -> None:
    with pytest.raises(UsageError) as info:
        pw.PassphraseWrapper.from_uri(
            "passphrase:", BackendOptions(settings={"passphrase": {"scrypt_n": n}})
        )
    assert "scrypt_n" in info.value.message


def test_default_cost(derivations: list[tuple[int, int, int]]) -> None:
    w = pw.PassphraseWrapper.from_uri(
        "passphrase:", BackendOptions(env={"KEYVAULT_PASSPHRASE": PASSPHRASE})
    )
    assert repr(w) == "PassphraseWrapper('passphrase:', n=131072)"
    assert w.wrap(DEK, CONTEXT).params["n"] == 2**17
    assert derivations == [(2**17, 8, 1)]


# -- where the passphrase comes from (B14, B15) ----------------------------------------------


@pytest.mark.proves("B15")
def test_empty_env_passphrase_refused() -> None:
    w = pw.PassphraseWrapper.from_uri(
        "passphrase:",
        BackendOptions(env={"KEYVAULT_PASSPHRASE": ""}, prompt=Prompt("unused"), settings=FAST),
    )
    with pytest.raises(UsageError) as info:
        w.wrap(DEK, CONTEXT)
    assert "KEYVAULT_PASSPHRASE" in info.value.message


def test_env_wins_over_the_prompt() -> None:
    prompt = Prompt("typed")
    w = pw.PassphraseWrapper.from_uri(
        "passphrase:",
        BackendOptions(env={"KEYVAULT_PASSPHRASE": PASSPHRASE}, prompt=prompt, settings=FAST),
    )
    wrapped = w.wrap(DEK, CONTEXT)
    assert prompt.asked == []
    assert env_wrapper().unwrap(wrapped, CONTEXT) == DEK


def test_no_source_at_all() -> None:
    w = pw.PassphraseWrapper.from_uri("passphrase:", BackendOptions(settings=FAST))
    with pytest.raises(UsageError) as info:
        w.wrap(DEK, CONTEXT)
    assert info.value.message == "no passphrase: set KEYVAULT_PASSPHRASE or run in a terminal"


def test_empty_typed_passphrase_refused() -> None:
    with pytest.raises(UsageError):
        prompt_wrapper(Prompt("")).wrap(DEK, CONTEXT)


def test_one_prompt_and_one_derivation_for_a_bulk_backup(
    derivations: list[tuple[int, int, int]],
) -> None:
    prompt = Prompt(PASSPHRASE)
    w = prompt_wrapper(prompt, "passphrase:laptop")
    wrapped = [w.wrap(bytes([i]) * 32, CONTEXT) for i in range(20)]
    assert prompt.asked == [("Passphrase for passphrase:laptop", True)]
    assert derivations == [(TEST_SCRYPT_N, 8, 1)]
    assert len({x.params["salt"] for x in wrapped}) == 1
    assert len({x.params["nonce"] for x in wrapped}) == 20


def test_unwraps_ask_once_and_derive_once_per_salt(derivations: list[tuple[int, int, int]]) -> None:
    first_run, second_run = env_wrapper(), env_wrapper()
    run1 = [first_run.wrap(bytes([i]) * 32, CONTEXT) for i in range(3)]
    run2 = [second_run.wrap(bytes([i]) * 32, CONTEXT) for i in range(3)]
    derivations.clear()
    prompt = Prompt(PASSPHRASE)
    w = prompt_wrapper(prompt)
    assert [w.unwrap(x, CONTEXT) for x in run1 + run2] == [bytes([i]) * 32 for i in range(3)] * 2
    assert prompt.asked == [("Passphrase for passphrase:", False)]
    assert len(derivations) == 2


@pytest.mark.proves("B14")
def test_wrong_passphrase_is_access_denied_and_asks_again() -> None:
    wrapped = env_wrapper().wrap(DEK, CONTEXT)
    prompt = Prompt("wrong guess", PASSPHRASE)
    w = prompt_wrapper(prompt)
    with pytest.raises(AccessDeniedError) as info:
        w.unwrap(wrapped, CONTEXT)
    assert "wrong passphrase" in info.value.message
    assert "wrong guess" not in str(info.value) and PASSPHRASE not in str(info.value)
    assert w.unwrap(wrapped, CONTEXT) == DEK
    assert len(prompt.asked) == 2


@pytest.mark.proves("B14")
def test_wrong_env_passphrase() -> None:
    wrapped = env_wrapper().wrap(DEK, CONTEXT)
    with pytest.raises(AccessDeniedError) as info:
        env_wrapper("Correct horse battery staple").unwrap(wrapped, CONTEXT)
    assert "KEYVAULT_PASSPHRASE" in str(info.value)


def test_wrong_context_with_the_right_passphrase_is_integrity() -> None:
    wrapped = env_wrapper().wrap(DEK, CONTEXT)
    with pytest.raises(IntegrityError) as info:
        env_wrapper().unwrap(wrapped, dict(CONTEXT, **{"keyvault:role": "snapshot"}))
    assert "passphrase is right" in info.value.message


def test_unicode_passphrases_are_normalised() -> None:
    wrapped = env_wrapper("caf\u00e9 \u00fcber").wrap(DEK, CONTEXT)  # NFC, as typed on Linux
    assert env_wrapper("cafe\u0301 u\u0308ber").unwrap(wrapped, CONTEXT) == DEK  # NFD (macOS)


def test_close_forgets_the_passphrase() -> None:
    wrapped = env_wrapper().wrap(DEK, CONTEXT)
    prompt = Prompt(PASSPHRASE)
    w = prompt_wrapper(prompt)
    w.unwrap(wrapped, CONTEXT)
    w.close()
    w.unwrap(wrapped, CONTEXT)
    assert len(prompt.asked) == 2


def test_unwrap_then_wrap_reuses_the_checked_passphrase() -> None:
    wrapped = env_wrapper().wrap(DEK, CONTEXT)
    prompt = Prompt(PASSPHRASE)
    w = prompt_wrapper(prompt)
    w.unwrap(wrapped, CONTEXT)
    w.wrap(DEK, CONTEXT)
    assert prompt.asked == [("Passphrase for passphrase:", False)]


# -- the format: recoverable with cryptography alone -------------------------------------------


def test_manual_recovery() -> None:
    wrapped = env_wrapper().wrap(DEK, CONTEXT)
    p = wrapped.params
    assert set(p) == {"kdf", "salt", "n", "r", "p", "nonce", "check"}
    assert (wrapped.alg, p["kdf"], p["n"], p["r"], p["p"]) == (
        "scrypt-aes256gcm",
        "scrypt",
        TEST_SCRYPT_N,
        8,
        1,
    )
    salt = base64.b64decode(str(p["salt"]))
    nonce = base64.b64decode(str(p["nonce"]))
    assert (len(salt), len(nonce), len(wrapped.blob)) == (16, 12, 48)
    kek = Scrypt(salt=salt, length=32, n=TEST_SCRYPT_N, r=8, p=1).derive(PASSPHRASE.encode())
    check = hmac.new(kek, b"keyvault/v1/passphrase-check", hashlib.sha256).digest()[:16]
    assert base64.b64decode(str(p["check"])) == check
    assert AESGCM(kek).decrypt(nonce, wrapped.blob, canonical_json(CONTEXT)) == DEK


# -- the parameter allow-list (T10, T15) -------------------------------------------------------


def b64(size: int) -> str:
    return base64.b64encode(b"\1" * size).decode()


BAD_PARAMS: list[tuple[str, dict[str, Any]]] = [
    ("n too small", {"n": 2**13}),
    ("n too large", {"n": 2**21}),
    ("n huge", {"n": 2**40}),
    ("n not a power of two", {"n": 3 * 2**14}),
    ("n bool", {"n": True}),
    ("n str", {"n": "16384"}),
    ("r low", {"r": 1}),
    ("r high", {"r": 1024}),
    ("p zero", {"p": 0}),
    ("p five", {"p": 5}),
    ("p three", {"p": 3}),
    ("kdf", {"kdf": "pbkdf2"}),
    ("short salt", {"salt": b64(8)}),
    ("long salt", {"salt": b64(32)}),
    ("salt not b64", {"salt": "%%%%"}),
    ("salt int", {"salt": 5}),
    ("long nonce", {"nonce": b64(16)}),
    ("short check", {"check": b64(8)}),
    ("extra", {"extra": "x"}),
]


@pytest.mark.parametrize(("case", "change"), BAD_PARAMS, ids=[c for c, _ in BAD_PARAMS])
@pytest.mark.proves("T10", "T15")
def test_params_outside_the_allow_list_refused_before_scrypt(
    derivations: list[tuple[int, int, int]], case: str, change: dict[str, Any]
) -> None:
    wrapped = env_wrapper().wrap(DEK, CONTEXT)
    derivations.clear()
    bad = replace(wrapped, params={**wrapped.params, **change})
    with pytest.raises(IntegrityError):
        env_wrapper().unwrap(bad, CONTEXT)
    assert derivations == []


COSTLY: list[tuple[str, dict[str, Any]]] = [
    ("n 2**20: 1 GiB", {"n": 2**20}),
    ("n 2**19: 512 MiB", {"n": 2**19}),
    ("p 4", {"p": 4}),
    ("p 2 at the cap: twice its time", {"n": 2**18, "p": 2}),
    ("p 3", {"p": 3}),
]


@pytest.mark.parametrize(("case", "change"), COSTLY, ids=[c for c, _ in COSTLY])
@pytest.mark.proves("T10", "T15")
def test_costlier_scrypt_than_keyvault_writes_is_refused_before_deriving(
    derivations: list[tuple[int, int, int]], case: str, change: dict[str, Any]
) -> None:
    """A hostile envelope cost 1 GiB and over 10 s per salt (n = 2**20, p = 4 were allowed).

    Refused with exit 5, and no scrypt runs at all, so the refusal itself is cheap."""
    wrapped = env_wrapper().wrap(DEK, CONTEXT)
    derivations.clear()
    bad = replace(wrapped, params={**wrapped.params, **change})
    with pytest.raises(IntegrityError, match="refused") as info:
        env_wrapper().unwrap(bad, CONTEXT)
    assert info.value.exit_code == 5
    assert derivations == []


def test_keyvaults_own_costs_still_open(derivations: list[tuple[int, int, int]]) -> None:
    """What keyvault writes opens, up to the cap (2**18, above the 2**17 default)."""
    assert env_wrapper().unwrap(env_wrapper().wrap(DEK, CONTEXT), CONTEXT) == DEK
    options = BackendOptions(
        env={"KEYVAULT_PASSPHRASE": PASSPHRASE},
        settings={"passphrase": {"scrypt_n": pw.UNWRAP_MAX_N}},
    )
    writer = pw.PassphraseWrapper.from_uri("passphrase:", options)
    reader = env_wrapper()  # configured for the small test cost: still opens it
    assert reader.unwrap(writer.wrap(DEK, CONTEXT), CONTEXT) == DEK
    assert derivations.count((pw.UNWRAP_MAX_N, 8, 1)) == 2  # wrapped, then unwrapped


@pytest.mark.parametrize("missing", ["kdf", "salt", "n", "r", "p", "nonce", "check"])
@pytest.mark.proves("T15")
def test_missing_param_refused(missing: str) -> None:
    wrapped = env_wrapper().wrap(DEK, CONTEXT)
    params = {k: v for k, v in wrapped.params.items() if k != missing}
    with pytest.raises(IntegrityError):
        env_wrapper().unwrap(replace(wrapped, params=params), CONTEXT)


def test_larger_allowed_costs_still_open() -> None:
    w = env_wrapper()
    wrapped = w.wrap(DEK, CONTEXT)
    salt = base64.b64decode(str(wrapped.params["salt"]))
    kek = Scrypt(salt=salt, length=32, n=2**15, r=8, p=2).derive(PASSPHRASE.encode())
    nonce = b"\2" * 12
    check = hmac.new(kek, b"keyvault/v1/passphrase-check", hashlib.sha256).digest()[:16]
    params = {
        **wrapped.params,
        "n": 2**15,
        "p": 2,
        "nonce": base64.b64encode(nonce).decode(),
        "check": base64.b64encode(check).decode(),
    }
    blob = AESGCM(kek).encrypt(nonce, DEK, canonical_json(CONTEXT))
    assert w.unwrap(WrappedKey(w.uri, pw.ALG, blob, CONTEXT, params), CONTEXT) == DEK


def test_altered_salt_reads_as_a_wrong_passphrase() -> None:
    wrapped = env_wrapper().wrap(DEK, CONTEXT)
    bad = replace(wrapped, params={**wrapped.params, "salt": b64(16)})
    with pytest.raises(AccessDeniedError) as info:
        env_wrapper().unwrap(bad, CONTEXT)
    assert "salt was altered" in info.value.message


def test_altered_nonce_is_integrity() -> None:
    wrapped = env_wrapper().wrap(DEK, CONTEXT)
    bad = replace(wrapped, params={**wrapped.params, "nonce": b64(12)})
    with pytest.raises(IntegrityError):
        env_wrapper().unwrap(bad, CONTEXT)
