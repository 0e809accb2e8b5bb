"""The run's circuit breaker: what opens it, what never does, and that a run ends it."""

from __future__ import annotations

from pathlib import Path

import pytest

from keyvault.breaker import BackendDownError, Breaker
from keyvault.config import load_config
from keyvault.errors import BackendUnavailableError, ThrottledError, UsageError
from keyvault.ops.session import Session


def is_open(breaker: Breaker) -> bool:
    """Read through a call: mypy narrows ``breaker.is_open`` after an assert, and would
    take the line after the next state change for unreachable."""
    return breaker.is_open


def test_it_opens_after_failures_in_a_row_only() -> None:
    breaker = Breaker(threshold=3)
    breaker.down("a")
    breaker.down("b")
    breaker.up()  # an answer in between: the count starts again
    breaker.down("c")
    breaker.down("d")
    assert not breaker.is_open
    breaker.down("e")
    assert is_open(breaker)
    with pytest.raises(BackendDownError, match="3 failures in a row, the last: e"):
        breaker.check()
    assert "not attempted" in breaker.skip().message and breaker.skip().exit_code == 6


def test_throttling_and_other_errors_never_count() -> None:
    breaker = Breaker(threshold=1)
    breaker.note(ThrottledError("slow down"))
    breaker.note(UsageError("bad"))
    breaker.note(BackendDownError("a key refused by the open breaker is no new signal"))
    assert not breaker.is_open
    breaker.note(BackendUnavailableError("connection refused"))
    assert breaker.is_open


def test_zero_never_opens() -> None:
    breaker = Breaker(threshold=0)
    for _ in range(100):
        breaker.down("x")
    assert not breaker.is_open


def test_a_session_starts_each_run_with_a_closed_breaker(tmp_path: Path) -> None:
    """The daemon keeps one Session and closes it after each cycle: an outage in one
    cycle must not stop the next."""
    config = load_config(None, {"HOME": str(tmp_path), "KEYVAULT_STORE": "file:///nowhere"})
    session = Session(config)
    assert session.breaker.threshold == 5  # the default give_up_after
    for _ in range(5):
        session.breaker.down("sealed")
    assert session.breaker.is_open and session.options().breaker is session.breaker
    session.close()
    assert not session.breaker.is_open


def test_give_up_after_is_checked(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[keyvault]\ngive_up_after = -1\n")
    with pytest.raises(UsageError, match="give_up_after"):
        load_config(path, {"HOME": str(tmp_path)})
    path.write_text("[keyvault]\ngive_up_after = 0\n")
    assert load_config(path, {"HOME": str(tmp_path)}).give_up_after == 0


def test_reset_closes_it_for_the_clients_that_hold_it() -> None:
    breaker = Breaker(threshold=1)
    breaker.down("x")
    breaker.reset()
    breaker.check()  # no refusal: the same object, held by the run's clients, is closed
    assert not breaker.is_open
