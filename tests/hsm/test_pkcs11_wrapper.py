"""Pkcs11Wrapper on SoftHSM2: the contract for each mechanism, keys, PINs, typed errors."""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import pytest
from contracts.wrapper_contract import CONTEXT, WrapperContract
from fixtures.softhsm import SoftHsm

from keyvault.canonical import canonical_json
from keyvault.errors import AccessDeniedError, ConflictError, IntegrityError, KeyvaultError
from keyvault.plugins import BackendOptions
from keyvault.wrappers import open_wrapper
from keyvault.wrappers.base import DEK_SIZE, Wrapper
from keyvault.wrappers.pkcs11 import (
    ALG_GCM,
    ALG_KWP,
    ALG_OAEP,
    KeyNotFoundError,
    MechanismNotSupportedError,
    PinError,
    PinInUriWarning,
    PinLockedError,
    Pkcs11ModuleError,
    Pkcs11Wrapper,
    TokenNotFoundError,
    _translate,
    create_key,
    list_keys,
    list_tokens,
    read_pin_file,
    session_counts,
)

DEK = bytes(range(DEK_SIZE))


def make(
    hsm: SoftHsm,
    obj: str = "aes-kek",
    *,
    pin: str | None = None,
    mechanism: str | None = None,
    token: str | None = None,
) -> Pkcs11Wrapper:
    return Pkcs11Wrapper(hsm.uri(obj, token=token), hsm.options(pin), mechanism=mechanism)


class _Contract(WrapperContract):
    obj = "aes-kek"
    mechanism: str | None = None

    @pytest.fixture
    def wrapper(self, softhsm: SoftHsm) -> Iterator[Wrapper]:
        w = make(softhsm, self.obj, mechanism=self.mechanism)
        yield w
        w.close()

    @pytest.fixture
    def secret_strings(self, softhsm: SoftHsm) -> list[str]:
        return [softhsm.pin, softhsm.so_pin]


class TestAesGcmContract(_Contract):
    pass


class TestAesKwpContract(_Contract):
    mechanism = "aes-kwp"


class TestRsaOaepContract(_Contract):
    obj = "rsa-kek"


# --- round trips and what is recorded ------------------------------------------------


@pytest.mark.parametrize(
    ("obj", "mechanism", "alg", "ckm"),
    [
        ("aes-kek", None, ALG_GCM, "CKM_AES_GCM"),
        ("aes-kek", "aes-kwp", ALG_KWP, "CKM_AES_KEY_WRAP_PAD"),
        ("rsa-kek", None, ALG_OAEP, "CKM_RSA_PKCS_OAEP"),
    ],
)
def test_round_trip_records_the_mechanism(
    softhsm: SoftHsm, obj: str, mechanism: str | None, alg: str, ckm: str
) -> None:
    w = make(softhsm, obj, mechanism=mechanism)
    try:
        wrapped = w.wrap(DEK, CONTEXT)
        assert w.unwrap(wrapped, CONTEXT) == DEK
    finally:
        w.close()
    assert wrapped.uri == softhsm.key_uri(obj)
    assert wrapped.alg == alg
    assert wrapped.params["mechanism"] == ckm
    assert wrapped.params["token"] == softhsm.token
    assert wrapped.params["key_label"] == obj
    assert len(str(wrapped.params["key_id"])) == 32
    if alg == ALG_GCM:
        assert wrapped.params["tag_bits"] == 128 and len(wrapped.blob) == 48
    if alg == ALG_OAEP:
        # SoftHSM2 2.6.1 refuses OAEP with SHA-256 (SoftHSMv2#474): the probe falls back.
        assert wrapped.params["hash"] == "sha1" and len(wrapped.blob) == 384


def test_gcm_uses_the_canonical_context_as_aad(softhsm: SoftHsm) -> None:
    """The token's GCM output is plain AES-GCM: the IV and AAD are what the docs say."""
    w = make(softhsm)
    try:
        wrapped = w.wrap(DEK, CONTEXT)
        assert wrapped.to_json()["params"]["iv"]
        other = dict(CONTEXT, **{"keyvault:role": "snapshot"})
        with pytest.raises(IntegrityError):
            w.unwrap(wrapped, other)
        assert canonical_json(CONTEXT)  # the AAD; wrong AAD refused above
    finally:
        w.close()


def test_each_mechanism_refuses_the_others_entries(softhsm: SoftHsm) -> None:
    gcm, kwp = make(softhsm), make(softhsm, mechanism="aes-kwp")
    try:
        a, b = gcm.wrap(DEK, CONTEXT), kwp.wrap(DEK, CONTEXT)
        with pytest.raises(IntegrityError):
            gcm.unwrap(replace(a, alg=ALG_KWP), CONTEXT)
        with pytest.raises(IntegrityError):
            kwp.unwrap(replace(b, params={**b.params, "mechanism": "CKM_AES_GCM"}), CONTEXT)
        assert gcm.unwrap(b, CONTEXT) == DEK  # unwrap follows the recorded mechanism
        assert kwp.unwrap(a, CONTEXT) == DEK
    finally:
        gcm.close()
        kwp.close()


@pytest.mark.parametrize("param", ["iv", "tag_bits", "token", "mechanism", "extra"])
def test_tampered_params_refused(softhsm: SoftHsm, param: str) -> None:
    w = make(softhsm)
    try:
        wrapped = w.wrap(DEK, CONTEXT)
        params = dict(wrapped.params)
        tampered: dict[str, str | int] = {
            "iv": "AAAA",
            "tag_bits": 96,
            "token": 7,
            "mechanism": "CKM_X",
            "extra": "x",
        }
        params[param] = tampered[param]
        with pytest.raises(IntegrityError):
            w.unwrap(replace(wrapped, params=params), CONTEXT)
    finally:
        w.close()


# --- keys ----------------------------------------------------------------------------


def test_created_keys_are_non_extractable_token_objects(softhsm: SoftHsm) -> None:
    aes = softhsm.raw_key_attributes("aes-kek")
    assert aes["SECRET_KEY"] == {
        "class": aes["SECRET_KEY"]["class"],
        "token": True,
        "extractable": False,
        "sensitive": True,
    }
    rsa = softhsm.raw_key_attributes("rsa-kek")
    assert rsa["PRIVATE_KEY"]["extractable"] is False
    assert rsa["PRIVATE_KEY"]["sensitive"] is True and rsa["PRIVATE_KEY"]["token"] is True
    assert "PUBLIC_KEY" in rsa


def test_envelope_of_one_key_does_not_open_with_another(softhsm: SoftHsm) -> None:
    label = softhsm.unique("second")
    create_key(softhsm.uri(label), softhsm.options())
    first, second = make(softhsm), make(softhsm, label)
    other_token = make(softhsm, token=softhsm.other_token)  # same label, other token
    try:
        wrapped = first.wrap(DEK, CONTEXT)
        for foreign in (second, other_token):
            # As if the entry had been recorded under the other URI: the CKA_ID differs.
            with pytest.raises(KeyNotFoundError, match="CKA_ID"):
                foreign.unwrap(replace(wrapped, uri=foreign.uri), CONTEXT)
            # Without the recorded CKA_ID the token itself refuses (GCM tag).
            params = {k: v for k, v in wrapped.params.items() if k != "key_id"}
            with pytest.raises(IntegrityError):
                foreign.unwrap(replace(wrapped, uri=foreign.uri, params=params), CONTEXT)
        assert first.unwrap(wrapped, CONTEXT) == DEK
    finally:
        for w in (first, second, other_token):
            w.close()


def test_create_key_refuses_a_duplicate_label(softhsm: SoftHsm) -> None:
    with pytest.raises(ConflictError):
        create_key(softhsm.uri("aes-kek"), softhsm.options())


def test_create_and_list_keys(softhsm: SoftHsm) -> None:
    label = softhsm.unique("listed")
    info = create_key(softhsm.uri(label), softhsm.options(), kind="aes")
    assert info.kind == "aes-256" and not info.extractable
    assert info.mechanism == "CKM_AES_GCM"
    assert info.uri.startswith(softhsm.key_uri(label) + ";id=%")
    keys = {
        k.label: k
        for k in list_keys(
            softhsm.uri("x", module=True).replace(";object=x", ""), softhsm.options()
        )
    }
    assert keys[label] == info
    assert keys["rsa-kek"].kind == "rsa-3072" and keys["rsa-kek"].mechanism == "CKM_RSA_PKCS_OAEP"
    w = Pkcs11Wrapper(info.uri, softhsm.options())  # the URI create-key prints works as is
    try:
        assert w.unwrap(w.wrap(DEK, CONTEXT), CONTEXT) == DEK
        assert w.uri == info.uri
    finally:
        w.close()


def test_list_tokens_needs_no_pin(softhsm: SoftHsm) -> None:
    tokens = list_tokens(f"pkcs11:?module-path={softhsm.module}", BackendOptions())
    labels = {t.label for t in tokens}
    assert {softhsm.token, softhsm.other_token} <= labels
    ours = [t for t in tokens if t.label in (softhsm.token, softhsm.other_token)]
    assert all(t.initialized and not t.pin_locked and t.serial for t in ours)
    assert any(not t.initialized for t in tokens)  # SoftHSM2 keeps one free slot


def test_extractable_key_refused_for_wrapping(softhsm: SoftHsm) -> None:
    import pkcs11

    label = softhsm.unique("extractable")
    tok = pkcs11.lib(softhsm.module).get_token(token_label=softhsm.token)
    with tok.open(user_pin=softhsm.pin, rw=True) as s:
        s.generate_key(
            pkcs11.KeyType.AES,
            256,
            label=label,
            store=True,
            template={pkcs11.Attribute.EXTRACTABLE: True},
        )
    w = make(softhsm, label)
    try:
        with pytest.raises(KeyvaultError, match="extractable"):
            w.wrap(DEK, CONTEXT)
    finally:
        w.close()


# --- typed errors --------------------------------------------------------------------


@pytest.mark.proves("B39")
def test_wrong_pin_is_access_denied_and_tried_once(softhsm: SoftHsm) -> None:
    w = make(softhsm, pin="wrong-pin-0000")
    before = session_counts()
    try:
        for _ in range(5):
            with pytest.raises(PinError) as info:
                w.wrap(DEK, CONTEXT)
            assert info.value.exit_code == 4
            assert "wrong-pin-0000" not in str(info.value) and softhsm.pin not in str(info.value)
    finally:
        w.close()
    assert session_counts()["logins"] - before["logins"] == 1


def test_token_not_found_names_the_tokens_present(softhsm: SoftHsm) -> None:
    w = make(softhsm, token="no-such-token")
    with pytest.raises(TokenNotFoundError) as info:
        w.wrap(DEK, CONTEXT)
    assert info.value.exit_code == 3 and softhsm.token in str(info.value)


def test_key_not_found_says_how_to_create_it(softhsm: SoftHsm) -> None:
    w = make(softhsm, "no-such-key")
    try:
        with pytest.raises(KeyNotFoundError) as info:
            w.wrap(DEK, CONTEXT)
        assert info.value.exit_code == 3 and "hsm create-key" in str(info.value)
    finally:
        w.close()


@pytest.mark.parametrize("module", ["/nonexistent/libp11.so", "/etc/hostname"])
def test_module_not_loadable(softhsm: SoftHsm, module: str) -> None:
    uri = softhsm.uri(module=False) + f"?module-path={module}"
    w = Pkcs11Wrapper(uri, BackendOptions(env={"KEYVAULT_PKCS11_PIN": softhsm.pin}))
    with pytest.raises(Pkcs11ModuleError) as info:
        w.wrap(DEK, CONTEXT)
    assert info.value.exit_code == 6 and module in str(info.value)


def test_a_module_others_can_write_is_never_loaded(softhsm: SoftHsm, tmp_path: Path) -> None:
    """The module is code keyvault runs with key bytes in memory: only its owner or root may
    change it (issue 17 item 9)."""
    copy = tmp_path / "libsofthsm2-copy.so"
    copy.write_bytes(Path(softhsm.module).read_bytes())
    copy.chmod(0o777)
    uri = softhsm.uri(module=False) + f"?module-path={copy}"
    w = Pkcs11Wrapper(uri, BackendOptions(env={"KEYVAULT_PKCS11_PIN": softhsm.pin}))
    try:
        with pytest.raises(AccessDeniedError) as info:
            w.wrap(DEK, CONTEXT)
        assert info.value.exit_code == 4 and f"chmod go-w {copy}" in str(info.value.hint)
        copy.chmod(0o755)
        assert w.unwrap(w.wrap(DEK, CONTEXT), CONTEXT) == DEK
    finally:
        w.close()


def test_no_module_configured(softhsm: SoftHsm) -> None:
    w = Pkcs11Wrapper(softhsm.key_uri(), BackendOptions())  # a restore may not need it
    good = make(softhsm)
    try:
        wrapped = good.wrap(DEK, CONTEXT)
    finally:
        good.close()
    with pytest.raises(Pkcs11ModuleError, match="KEYVAULT_PKCS11_MODULE") as info:
        w.unwrap(wrapped, CONTEXT)
    assert info.value.exit_code == 6


def test_module_from_config_and_pin_from_file(softhsm: SoftHsm, tmp_path: Path) -> None:
    pin_file = tmp_path / "pin"
    pin_file.write_text(softhsm.pin + "\n")
    pin_file.chmod(0o600)
    options = BackendOptions(
        settings={"pkcs11": {"module": softhsm.module, "pin_source": str(pin_file)}}
    )
    w = open_wrapper(softhsm.key_uri(), options)
    try:
        assert w.unwrap(w.wrap(DEK, CONTEXT), CONTEXT) == DEK
    finally:
        w.close()


def test_pin_file_must_be_private(tmp_path: Path) -> None:
    pin_file = tmp_path / "pin"
    pin_file.write_text("1234")
    pin_file.chmod(0o644)
    with pytest.raises(AccessDeniedError, match="chmod 600"):
        read_pin_file(str(pin_file))


def test_pin_value_accepted_with_a_warning(softhsm: SoftHsm) -> None:
    uri = softhsm.uri(query={"pin-value": softhsm.pin})
    with pytest.warns(PinInUriWarning) as record:
        w = Pkcs11Wrapper(uri, BackendOptions())
    try:
        assert w.uri == softhsm.key_uri() and softhsm.pin not in repr(w)
        wrapped = w.wrap(DEK, CONTEXT)
        assert softhsm.pin not in str(wrapped.to_json())
    finally:
        w.close()
    assert all(softhsm.pin not in str(r.message) for r in record)


def test_prompt_is_used_last(softhsm: SoftHsm) -> None:
    asked: list[str] = []

    def ask(prompt: str, *, confirm: bool = False) -> str:
        asked.append(prompt)
        return softhsm.pin

    options = BackendOptions(env={"KEYVAULT_PKCS11_MODULE": softhsm.module}, prompt=ask)
    w = Pkcs11Wrapper(softhsm.key_uri(), options)
    try:
        w.wrap(DEK, CONTEXT)
        w.wrap(DEK, CONTEXT)
    finally:
        w.close()
    assert asked == [f"User PIN for PKCS#11 token {softhsm.token!r}"]


def test_mechanism_not_supported(softhsm: SoftHsm) -> None:
    w = make(softhsm, "rsa-kek", mechanism="aes-gcm")
    try:
        with pytest.raises(MechanismNotSupportedError):
            w.wrap(DEK, CONTEXT)
    finally:
        w.close()
    oaep = make(softhsm, "rsa-kek")
    try:
        wrapped = oaep.wrap(DEK, CONTEXT)
        forced = replace(wrapped, params={**wrapped.params, "hash": "sha256"})
        with pytest.raises(MechanismNotSupportedError, match="SHA256"):
            oaep.unwrap(forced, CONTEXT)
    finally:
        oaep.close()


def test_pin_locked_mapping() -> None:
    """SoftHSM2 never locks a PIN, so the mapping of CKR_PIN_LOCKED is checked directly."""
    import pkcs11.exceptions as e

    locked = _translate(e.PinLocked(), "logging in to token 'kv'")
    assert isinstance(locked, PinLockedError) and locked.exit_code == 4
    assert "security officer" in str(locked)
    assert isinstance(_translate(e.PinIncorrect(), "x"), PinError)
    assert isinstance(_translate(e.MechanismInvalid(), "x"), MechanismNotSupportedError)
    assert _translate(e.DeviceError(), "x").exit_code == 6


# --- sessions ------------------------------------------------------------------------


def test_wrappers_on_one_token_share_one_login(softhsm: SoftHsm) -> None:
    before = session_counts()
    a, b = make(softhsm), make(softhsm, "rsa-kek")
    a.wrap(DEK, CONTEXT)
    b.wrap(DEK, CONTEXT)
    a.close()  # the shared session stays logged in for b
    assert b.unwrap(b.wrap(DEK, CONTEXT), CONTEXT) == DEK
    b.close()
    after = session_counts()
    assert after["sessions_opened"] - before["sessions_opened"] == 1
    assert after["sessions_closed"] - before["sessions_closed"] == 1


def test_threads_share_the_session(softhsm: SoftHsm) -> None:
    w = make(softhsm, "rsa-kek")

    def work(_: int) -> None:
        for _ in range(10):
            dek = os.urandom(DEK_SIZE)
            assert w.unwrap(w.wrap(dek, CONTEXT), CONTEXT) == dek

    before = session_counts()
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(work, range(8)))  # a failure in any thread is raised here
    w.close()
    assert session_counts()["sessions_opened"] - before["sessions_opened"] == 1


def test_no_warning_without_pin_value(softhsm: SoftHsm) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        make(softhsm).close()
