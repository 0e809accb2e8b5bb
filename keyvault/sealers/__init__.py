"""Sealing keys chosen by what ``[sealing] key`` names: a file path, or a backend URI.

A path is the embedded default, an Ed25519 key file (:mod:`keyvault.sealing`).
A URI keeps the private half in a backend that signs on request: the module
for its scheme is imported on first use only, like wrappers and stores.
"""

from __future__ import annotations

from pathlib import Path
from typing import cast

from keyvault.plugins import BackendOptions, load_class
from keyvault.sealing import Ed25519FileSealer, Sealer

SEALER_FOR_SCHEME: dict[str, str] = {
    "awskms": "keyvault.sealers.awskms:AwsKmsSealer",
    "transit": "keyvault.sealers.transit:TransitSealer",
}


def is_backend_sealer(spec: str) -> bool:
    """True when ``spec`` names a backend key (``scheme://...``), not a key file."""
    return "://" in spec and not spec.startswith("file://")


def open_sealer(spec: str, options: BackendOptions) -> Sealer:
    """The sealer ``spec`` names: ``awskms:///alias/x``, ``transit://mount/key``, or a path."""
    if is_backend_sealer(spec):
        cls = load_class(SEALER_FOR_SCHEME, "sealer", spec)
        return cast(Sealer, cls.from_uri(spec, options))
    return Ed25519FileSealer.load(Path(spec.removeprefix("file://")))


__all__ = ["SEALER_FOR_SCHEME", "is_backend_sealer", "open_sealer"]
