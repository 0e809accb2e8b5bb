"""Canonical JSON: the one serialization that is authenticated.

Sorted keys, no whitespace, UTF-8, no NaN/Infinity. Used for the envelope
header (the AES-GCM associated data and the commitment input) and for the
wrap contexts that backends without native context binding seal beside the DEK.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any


def canonical_json(value: Mapping[str, Any]) -> bytes:
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")
