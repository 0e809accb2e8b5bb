"""Lazy URI-scheme registries shared by wrappers and stores.

A registry maps a URI scheme to ``"module:Class"``. The module is imported on
first use only, so ``keyvault --help`` and the core never load boto3, hvac or
pkcs11. A missing optional dependency becomes a clear error naming the extra
to install.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from keyvault.breaker import NEVER, Breaker
from keyvault.errors import BackendUnavailableError, UsageError
from keyvault.redact import shown_uri

#: Python modules that belong to an optional extra, and the extra's name.
SDK_EXTRAS = {"boto3": "aws", "botocore": "aws", "hvac": "vault", "pkcs11": "hsm"}


class SecretPrompt(Protocol):
    """Asks a person for a secret (no echo). Raises when nobody can answer."""

    def __call__(self, prompt: str, *, confirm: bool = False) -> str: ...


@dataclass(frozen=True)
class BackendOptions:
    """What a backend may know about its environment, built once by the config layer.

    Backends never read ``os.environ`` themselves (SDKs that read their own
    standard variables, like boto3, are the exception). Secrets are reached
    through ``prompt`` or ``env`` at the moment they are needed, never kept
    in a field that a ``repr`` would show.
    """

    env: Mapping[str, str] = field(default_factory=dict, repr=False)
    age_identity_files: tuple[Path, ...] = ()
    prompt: SecretPrompt | None = field(default=None, repr=False)
    settings: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    #: The run's circuit breaker (keyvault.breaker): backends report down signals to it
    #: and ask it before each attempt; the session sets it, tests and tools may not.
    breaker: Breaker = field(default=NEVER, repr=False, compare=False)

    def for_scheme(self, scheme: str) -> Mapping[str, Any]:
        return self.settings.get(scheme, {})


def uri_scheme(uri: str) -> str:
    """The scheme of a wrapper or store URI; ``age1...`` recipients are scheme ``age``."""
    if not isinstance(uri, str) or not uri or len(uri) > 2048 or not uri.isprintable():
        raise UsageError("invalid URI: empty, too long or containing control characters")
    if uri.startswith("age1") and ":" not in uri:
        return "age"
    scheme, sep, _ = uri.partition(":")
    if not sep or not scheme:
        raise UsageError(
            f"invalid URI {shown_uri(uri)}: expected scheme:..., or an age1... recipient"
        )
    return scheme.lower()


def load_class(registry: Mapping[str, str], kind: str, uri: str) -> Any:
    """Import the class registered for the URI's scheme."""
    scheme = uri_scheme(uri)
    target = registry.get(scheme)
    if target is None:
        known = ", ".join(sorted(registry))
        raise UsageError(
            f"unknown {kind} URI scheme {scheme!r} in {shown_uri(uri)}; known: {known}"
        )
    module_name, _, class_name = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = (exc.name or "").split(".")[0]
        extra = SDK_EXTRAS.get(missing)
        if extra is None:
            if missing and module_name.startswith(missing):
                raise BackendUnavailableError(
                    f"the {scheme}: {kind} is not available in this version of keyvault"
                ) from None
            raise BackendUnavailableError(
                f"the {scheme}: {kind} needs the Python package {missing!r}, which is missing",
                hint="reinstall keyvault with its dependencies",
            ) from None
        raise BackendUnavailableError(
            f"the {scheme}: {kind} needs the Python package {missing!r}",
            hint=f"install it with: pip install 'keyvault[{extra}]'",
        ) from None
    return getattr(module, class_name)
