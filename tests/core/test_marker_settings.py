"""``[vault] change_marker`` and ``full_check_every``: off by default, a bad interval is
a usage error (exit 2) naming the setting."""

from __future__ import annotations

import pytest

from keyvault.errors import UsageError
from keyvault.ops.marker import marker_settings


def test_off_by_default_with_a_daily_full_check() -> None:
    settings = marker_settings({})
    assert (settings.on, settings.every) == (False, 86400)


@pytest.mark.parametrize(("text", "seconds"), [("30s", 30), ("30m", 1800), ("7d", 604800)])
def test_an_interval_is_a_number_and_a_unit(text: str, seconds: int) -> None:
    settings = marker_settings({"vault": {"change_marker": True, "full_check_every": text}})
    assert (settings.on, settings.every) == (True, seconds)


@pytest.mark.parametrize("text", ["24", "0h", "1y", "-1h", "1.5h", " 1h", 24])
def test_a_bad_interval_is_a_usage_error(text: object) -> None:
    with pytest.raises(UsageError) as raised:
        marker_settings({"vault": {"full_check_every": text}})
    assert "full_check_every" in raised.value.message and raised.value.exit_code == 2
