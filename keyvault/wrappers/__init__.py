"""Key-encryption-key providers ("wrappers"), chosen by URI.

See :mod:`keyvault.wrappers.base` for the protocol. Backend modules are
imported on first use only.
"""

from __future__ import annotations

from typing import cast

from keyvault.plugins import BackendOptions, load_class
from keyvault.wrappers.base import WrappedKey, Wrapper

WRAPPER_FOR_SCHEME: dict[str, str] = {
    "age": "keyvault.wrappers.age:AgeWrapper",
    "passphrase": "keyvault.wrappers.passphrase:PassphraseWrapper",
    "awskms": "keyvault.wrappers.awskms:AwsKmsWrapper",
    "transit": "keyvault.wrappers.transit:TransitWrapper",
    "pkcs11": "keyvault.wrappers.pkcs11:Pkcs11Wrapper",
}


def open_wrapper(uri: str, options: BackendOptions) -> Wrapper:
    """Build the wrapper a URI names (the URI is its whole public configuration)."""
    cls = load_class(WRAPPER_FOR_SCHEME, "wrapper", uri)
    return cast(Wrapper, cls.from_uri(uri, options))


def check_wrapper_uri(uri: str) -> None:
    """Raise UsageError if ``uri`` is malformed for its scheme; no backend is contacted.

    Used to tell a corrupt envelope (a wrapped entry naming a URI that could
    never have been written) from one that is simply wrapped for someone else.
    """
    from keyvault.errors import BackendUnavailableError

    try:
        cls = load_class(WRAPPER_FOR_SCHEME, "wrapper", uri)
    except BackendUnavailableError:
        return  # cannot judge without the optional SDK; the scheme itself is known
    check = getattr(cls, "check_uri", None)
    if check is not None:
        check(uri)


def canonical_wrapper_uri(uri: str) -> str:
    """The form envelopes record ``uri`` under (e.g. a pkcs11: URI without module or PIN)."""
    check_wrapper_uri(uri)
    from keyvault.errors import BackendUnavailableError

    try:
        cls = load_class(WRAPPER_FOR_SCHEME, "wrapper", uri)
    except BackendUnavailableError:
        return uri
    canonical = getattr(cls, "canonical_uri", None)
    return str(canonical(uri)) if canonical is not None else uri


__all__ = [
    "WRAPPER_FOR_SCHEME",
    "WrappedKey",
    "Wrapper",
    "canonical_wrapper_uri",
    "check_wrapper_uri",
    "open_wrapper",
]
