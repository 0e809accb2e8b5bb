"""Structured logs: one JSON object per line on stderr.

Only the fields a caller names are written, and callers pass identifiers
(key IDs, roles, GUNs, paths, error kinds, keyvault error messages, which
never hold secrets), never key bytes, passphrases or tokens. The stream is
shared by threads; a lock keeps lines whole.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from typing import TextIO

from keyvault.redact import redact

Field = str | int | float | bool | None | list[str]


class EventLog:
    """Writes ``{"ts", "level", "event", ...fields}`` lines."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream
        self._lock = threading.Lock()

    def info(self, event: str, **fields: Field) -> None:
        self.write("info", event, fields)

    def warning(self, event: str, **fields: Field) -> None:
        self.write("warning", event, fields)

    def error(self, event: str, **fields: Field) -> None:
        self.write("error", event, fields)

    def write(self, level: str, event: str, fields: dict[str, Field]) -> None:
        now = time.time()
        millis = int(now % 1 * 1000)
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{millis:03d}Z"
        record: dict[str, Field] = {"ts": stamp, "level": level, "event": event}
        record.update({k: v for k, v in fields.items() if v is not None})
        line = redact(json.dumps(record, ensure_ascii=True, separators=(",", ":")))
        stream = self._stream or sys.stderr
        with self._lock:
            try:
                stream.write(line + "\n")
                stream.flush()
            except (OSError, ValueError):  # stderr closed: the daemon keeps working
                pass
