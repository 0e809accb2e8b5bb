"""The contract every Wrapper passes (age, passphrase, KMS, Transit, PKCS#11).

Usage::

    class TestMyWrapper(WrapperContract):
        @pytest.fixture
        def wrapper(self) -> Iterator[Wrapper]: ...       # wraps and unwraps
        @pytest.fixture
        def secret_strings(self) -> list[str]: ...        # must never be shown

The cases follow ``keyvault/wrappers/base.py``: a round trip, the context
binding (T6), tamper detection (T2, B23, B27), the DEK size, and no secret in
a repr or an error message (T7).
"""

from __future__ import annotations

import base64
import os
from dataclasses import replace

import pytest

from keyvault.errors import IntegrityError, KeyvaultError, UsageError
from keyvault.wrappers.base import DEK_SIZE, WrappedKey, Wrapper

CONTEXT = {
    "keyvault:team": "team-a",
    "keyvault:gun": "registry.example.com/team-a/app",
    "keyvault:role": "targets",
    "keyvault:key_id": "ab" * 32,
}


# T6: a wrapped DEK is bound to all four facts; changing any one of them is refused.
OTHER_CONTEXTS = {
    "team": dict(CONTEXT, **{"keyvault:team": "team-b"}),
    "gun": dict(CONTEXT, **{"keyvault:gun": "registry.example.com/team-a/app2"}),
    "role": dict(CONTEXT, **{"keyvault:role": "snapshot"}),
    "key_id": dict(CONTEXT, **{"keyvault:key_id": "ab" * 31 + "ac"}),
    "extra": dict(CONTEXT, **{"keyvault:extra": "x"}),
    "missing": {k: v for k, v in CONTEXT.items() if k != "keyvault:gun"},
    "empty": {},
}


def flipped(blob: bytes, index: int) -> bytes:
    data = bytearray(blob)
    data[index] ^= 0x01
    return bytes(data)


def shown_forms(data: bytes) -> list[str]:
    return [data.hex(), base64.b64encode(data).decode()]


class WrapperContract:
    """Tests every Wrapper must pass; a subclass provides ``wrapper`` and ``secret_strings``."""

    def test_round_trip(self, wrapper: Wrapper) -> None:
        dek = os.urandom(DEK_SIZE)
        wrapped = wrapper.wrap(dek, CONTEXT)
        assert wrapper.unwrap(wrapped, CONTEXT) == dek

    def test_wrapped_key_describes_itself(self, wrapper: Wrapper) -> None:
        dek = os.urandom(DEK_SIZE)
        wrapped = wrapper.wrap(dek, CONTEXT)
        assert wrapped.uri == wrapper.uri
        assert dict(wrapped.context) == CONTEXT
        assert wrapped.alg and wrapped.blob
        assert dek not in wrapped.blob
        doc = wrapped.to_json()
        assert set(doc) == {"uri", "alg", "wrapped", "context", "params"}

    def test_each_wrap_is_fresh(self, wrapper: Wrapper) -> None:
        dek = os.urandom(DEK_SIZE)
        assert wrapper.wrap(dek, CONTEXT).blob != wrapper.wrap(dek, CONTEXT).blob

    def test_many_keys(self, wrapper: Wrapper) -> None:
        deks = [os.urandom(DEK_SIZE) for _ in range(5)]
        wrapped = [wrapper.wrap(d, CONTEXT) for d in deks]
        assert [wrapper.unwrap(w, CONTEXT) for w in wrapped] == deks

    @pytest.mark.parametrize("case", list(OTHER_CONTEXTS))
    @pytest.mark.proves("T6")
    def test_wrong_context_refused(self, wrapper: Wrapper, case: str) -> None:
        wrapped = wrapper.wrap(os.urandom(DEK_SIZE), CONTEXT)
        with pytest.raises(IntegrityError):
            wrapper.unwrap(wrapped, OTHER_CONTEXTS[case])

    @pytest.mark.parametrize("where", ["first", "middle", "last"])
    @pytest.mark.proves("T2", "B23")
    def test_tampered_blob_refused(self, wrapper: Wrapper, where: str) -> None:
        wrapped = wrapper.wrap(os.urandom(DEK_SIZE), CONTEXT)
        index = {"first": 0, "middle": len(wrapped.blob) // 2, "last": -1}[where]
        with pytest.raises(IntegrityError):
            wrapper.unwrap(replace(wrapped, blob=flipped(wrapped.blob, index)), CONTEXT)

    @pytest.mark.parametrize("cut", [1, 16])
    @pytest.mark.proves("T2")
    def test_truncated_blob_refused(self, wrapper: Wrapper, cut: int) -> None:
        wrapped = wrapper.wrap(os.urandom(DEK_SIZE), CONTEXT)
        with pytest.raises(IntegrityError):
            wrapper.unwrap(replace(wrapped, blob=wrapped.blob[:-cut]), CONTEXT)

    @pytest.mark.proves("T15")
    def test_foreign_algorithm_refused(self, wrapper: Wrapper) -> None:
        wrapped = wrapper.wrap(os.urandom(DEK_SIZE), CONTEXT)
        with pytest.raises(IntegrityError):
            wrapper.unwrap(replace(wrapped, alg="none"), CONTEXT)

    @pytest.mark.parametrize("size", [0, DEK_SIZE - 1, DEK_SIZE + 1])
    @pytest.mark.proves("B27")
    def test_dek_of_wrong_size_refused(self, wrapper: Wrapper, size: int) -> None:
        with pytest.raises((ValueError, UsageError)):
            wrapper.wrap(os.urandom(size), CONTEXT)

    @pytest.mark.proves("T7")
    def test_no_secret_in_reprs_or_errors(
        self, wrapper: Wrapper, secret_strings: list[str]
    ) -> None:
        dek = os.urandom(DEK_SIZE)
        wrapped = wrapper.wrap(dek, CONTEXT)
        shown = [repr(wrapper), str(wrapper), repr(wrapped)]
        for bad in (replace(wrapped, blob=flipped(wrapped.blob, -1)), replace(wrapped, alg="none")):
            with pytest.raises(KeyvaultError) as info:
                wrapper.unwrap(bad, CONTEXT)
            shown += [str(info.value), repr(info.value), str(info.value.to_dict())]
        forbidden = [*secret_strings, *shown_forms(dek), *shown_forms(wrapped.blob)]
        for text in shown:
            for secret in forbidden:
                assert secret not in text

    @pytest.mark.proves("T7")
    def test_wrapped_key_repr_hides_blob(self, wrapper: Wrapper) -> None:
        wrapped = wrapper.wrap(os.urandom(DEK_SIZE), CONTEXT)
        assert "blob" not in repr(wrapped)
        assert isinstance(wrapped, WrappedKey)

    def test_close_is_safe(self, wrapper: Wrapper) -> None:
        wrapper.close()
        wrapper.close()
