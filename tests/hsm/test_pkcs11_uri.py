"""RFC 7512 URI parsing: no module is loaded (B20)."""

from __future__ import annotations

import sys

import pytest

from keyvault.errors import UsageError
from keyvault.wrappers import check_wrapper_uri
from keyvault.wrappers.pkcs11_uri import (
    Pkcs11Uri,
    canonical_key_uri,
    check_key_uri,
    parse_pkcs11_uri,
)

pytestmark = pytest.mark.proves("B20")

PIN = "s3cret-PIN-value"


def test_full_uri_parses() -> None:
    parsed = parse_pkcs11_uri(
        "pkcs11:token=My%20Token;serial=cd16a7e26e85dd65;slot-id=7;object=team-a%2Fkek;"
        "id=%01%ab;type=secret-key?module-path=/usr/lib/x.so&pin-source=file:///run/pin"
    )
    assert parsed == Pkcs11Uri(
        token="My Token",
        serial="cd16a7e26e85dd65",
        slot_id=7,
        object="team-a/kek",
        id=b"\x01\xab",
        type="secret-key",
        module_path="/usr/lib/x.so",
        pin_source="/run/pin",
    )


@pytest.mark.parametrize(
    "spelling",
    [
        "pkcs11:token=kv;object=kek",
        "pkcs11:object=kek;token=kv",
        "PKCS11:token=%6B%76;object=k%65k",
        "pkcs11:token=kv;object=kek?module-path=/usr/lib/softhsm/libsofthsm2.so",
        f"pkcs11:token=kv;object=kek?pin-value={PIN}",
        "pkcs11:token=kv;object=kek?pin-source=/etc/kv/pin",
    ],
)
def test_one_canonical_key_uri(spelling: str) -> None:
    assert canonical_key_uri(spelling) == "pkcs11:token=kv;object=kek"


def test_canonical_encoding() -> None:
    uri = canonical_key_uri("pkcs11:object=a%20b;id=%0a%FF;token=t:x")
    assert uri == "pkcs11:token=t%3Ax;object=a%20b;id=%0A%FF"
    check_key_uri(uri)


def test_pin_value_is_never_shown() -> None:
    parsed = parse_pkcs11_uri(f"pkcs11:token=kv;object=kek?pin-value={PIN}")
    assert parsed.pin_value == PIN
    assert PIN not in repr(parsed) and PIN not in parsed.key_uri


@pytest.mark.parametrize(
    "uri",
    [
        "pkcs11:token=kv;object=kek;bogus=1",
        "pkcs11:token=kv;object=kek?bogus=1",
        "pkcs11:token=kv;token=kv2;object=kek",
        "pkcs11:token=kv;object",
        "pkcs11:token=;object=kek",
        "pkcs11:token=kv;object=k ek",
        "pkcs11:token=kv;object=%zz",
        "pkcs11:token=kv;object=kek;slot-id=-1",
        "pkcs11:token=kv;object=kek;type=cert",
        "pkcs11:token=kv;object=%ff%fe",
        "pkcs11:token=aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa;object=kek",
        "pkcs11:token=kv;object=kek?module-path=relative/x.so",
        "pkcs11:token=kv;object=kek?pin-source=relative",
        "pkcs11:token=kv;object=kek?pin-source=file://host/pin",
        "pkcs11:token=kv;object=kek%00",
        "pkcs11:token=kv;object=kek\n",
        "pkcs11x:token=kv;object=kek",
    ],
)
def test_bad_uris_refused(uri: str) -> None:
    with pytest.raises(UsageError):
        parse_pkcs11_uri(uri)


@pytest.mark.parametrize(
    "uri",
    [
        f"pkcs11:token=kv;object=kek;bad=1?pin-value={PIN}",
        f"pkcs11:token=kv;object=kek?pin-value={PIN}&pin-value={PIN}",
        f"pkcs11:token=kv;object=kek?pin-value={PIN}%",
        f"pkcs11:token=kv;object=kek?{PIN}=x",
        f"pkcs11:token=kv;object=kek?pin-value={PIN}&module-path=rel",
    ],
)
def test_errors_never_echo_a_pin(uri: str) -> None:
    with pytest.raises(UsageError) as info:
        parse_pkcs11_uri(uri)
    assert PIN not in str(info.value) and PIN not in repr(info.value.to_dict())


@pytest.mark.parametrize(
    "uri",
    [
        "pkcs11:token=kv;object=kek?module-path=/x.so",  # query: not canonical
        "pkcs11:object=kek;token=kv",  # order: not canonical
        "pkcs11:object=kek",  # no token
        "pkcs11:token=kv",  # no key
        "pkcs11:token=kv;object=kek;type=public",  # cannot unwrap
    ],
)
def test_recorded_uri_must_be_a_canonical_key_uri(uri: str) -> None:
    with pytest.raises(UsageError):
        check_key_uri(uri)


def test_check_wrapper_uri_needs_no_module(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "pkcs11", raising=False)
    check_wrapper_uri("pkcs11:token=kv;object=kek")
    with pytest.raises(UsageError):
        check_wrapper_uri("pkcs11:token=kv;object=kek;nope=1")
    assert "pkcs11" not in sys.modules
