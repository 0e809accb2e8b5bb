"""Timestamps as every --json document writes them: ISO-8601 in UTC, ``2026-01-31T12:00:00Z``.

One format for every command, so a consumer parses a ``created``, an ``expires``
or a ``last_success`` the same way (Unix seconds stay inside keyvault's own files).
"""

from __future__ import annotations

from datetime import UTC, datetime


def iso_utc(seconds: float) -> str:
    """Unix time as ISO-8601 UTC, to the second."""
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def iso_utc_or_none(seconds: float | None) -> str | None:
    return None if seconds is None else iso_utc(seconds)
