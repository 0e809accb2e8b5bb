"""A drill's pace: the token bucket never hands out more than the rate, throttling answers
pause and retry instead of failing, and a key that stays throttled is given up (not failed).

The clock is a fake one that the bucket's own sleeps move forward: no timed assertion.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Mapping

import pytest

from keyvault.errors import BackendUnavailableError, ThrottledError, UsageError
from keyvault.keyring import WrappedKey
from keyvault.ops.pacing import GivenUpError, Pacer, PacingStoppedError, TokenBucket, check_rate


class FakeClock:
    """Time that passes only when someone sleeps (thread-safe)."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.lock = threading.Lock()
        self.slept: list[float] = []

    def __call__(self) -> float:
        with self.lock:
            return self.now

    def sleep(self, seconds: float) -> None:
        with self.lock:
            self.slept.append(seconds)
            self.now = max(self.now, self.now + seconds)


def _max_in_window(times: list[float], window: float) -> int:
    times = sorted(times)
    return max(sum(1 for t in times[i:] if t < start + window) for i, start in enumerate(times))


@pytest.mark.parametrize("rate", [1.0, 7.5, 100.0, 5000.0])
def test_the_bucket_never_hands_out_more_than_the_rate(rate: float) -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate, clock=clock, sleep=clock.sleep)
    slots = [bucket.take() for _ in range(500)]
    gaps = [b - a for a, b in itertools.pairwise(slots)]
    assert min(gaps) >= 1 / rate - 1e-9
    assert _max_in_window(slots, 1.0) <= rate + 1
    assert bucket.taken == 500
    achieved = bucket.achieved()
    assert achieved is not None and achieved <= rate * (1 + 1e-9)


def test_threads_share_one_bucket_and_together_stay_under_the_rate() -> None:
    clock = FakeClock()
    bucket = TokenBucket(50.0, clock=clock, sleep=clock.sleep)
    slots: list[float] = []
    lock = threading.Lock()

    def worker() -> None:
        for _ in range(100):
            slot = bucket.take()
            with lock:
                slots.append(slot)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(slots) == 800 and len(set(slots)) == 800  # no two requests share a slot
    ordered = sorted(slots)
    assert min(b - a for a, b in itertools.pairwise(ordered)) >= 1 / 50 - 1e-9


def test_a_hold_delays_every_later_slot() -> None:
    clock = FakeClock()
    bucket = TokenBucket(10.0, clock=clock, sleep=clock.sleep)
    first = bucket.take()
    bucket.hold(3.0)
    assert bucket.take() >= first + 3.0


@pytest.mark.parametrize("value", [0, -1, "fast", float("nan"), 10_001])
def test_a_rate_out_of_range_is_a_usage_error(value: object) -> None:
    with pytest.raises(UsageError, match="--rate"):
        check_rate(value)


class Scripted:
    """A remote wrapper (pkcs11: scheme, no pace hook) whose first ``throttles`` unwraps
    are throttled."""

    uri = "pkcs11:token=t;object=k"

    def __init__(self, throttles: int, error: type[Exception] = ThrottledError) -> None:
        self.throttles, self.error, self.calls = throttles, error, 0

    def wrap(self, dek: bytes, context: Mapping[str, str]) -> WrappedKey:
        raise AssertionError("not used")

    def unwrap(self, wrapped: WrappedKey, context: Mapping[str, str]) -> bytes:
        self.calls += 1
        if self.calls <= self.throttles:
            raise self.error("Rate exceeded")
        return b"k" * 32

    def close(self) -> None:
        pass


WRAPPED = WrappedKey("pkcs11:token=t;object=k", "alg", b"blob", {}, {})


def test_throttling_pauses_and_retries_without_failing() -> None:
    clock = FakeClock()
    pacer = Pacer(20.0, clock=clock, sleep=clock.sleep, jitter=lambda ceiling: ceiling)
    inner = Scripted(throttles=4)
    assert pacer.wrap(inner).unwrap(WRAPPED, {}) == b"k" * 32
    stats = pacer.stats()
    assert (inner.calls, stats.throttled, stats.keys_throttled, stats.requests) == (5, 4, 0, 5)
    assert stats.backoff_s == pytest.approx(0.1 + 0.2 + 0.4 + 0.8)  # exponential pauses
    assert sum(clock.slept) >= stats.backoff_s  # the pauses were waited, not only counted


def test_a_key_throttled_past_the_bounded_wait_is_given_up() -> None:
    clock = FakeClock()
    pacer = Pacer(
        20.0, max_wait=5.0, clock=clock, sleep=clock.sleep, jitter=lambda ceiling: ceiling
    )
    inner = Scripted(throttles=1000)
    with pytest.raises(GivenUpError, match="still throttled after"):
        pacer.wrap(inner).unwrap(WRAPPED, {})
    stats = pacer.stats()
    assert stats.keys_throttled == 1 and stats.backoff_s <= 5.0
    assert inner.calls < 1000  # bounded: it stopped trying


def test_a_backend_that_is_down_is_not_retried() -> None:
    """Only 'slow down' is retried; a backend that is down fails at once (another module
    decides whether to stop the run)."""
    clock = FakeClock()
    pacer = Pacer(20.0, clock=clock, sleep=clock.sleep)
    inner = Scripted(throttles=3, error=BackendUnavailableError)
    with pytest.raises(BackendUnavailableError):
        pacer.wrap(inner).unwrap(WRAPPED, {})
    assert inner.calls == 1 and pacer.stats().throttled == 0


def test_local_wrappers_are_not_paced() -> None:
    class Local(Scripted):
        uri = "age1qqqq"

    inner = Local(throttles=0)
    assert Pacer(1.0).wrap(inner) is inner


def test_stopping_ends_every_wait_at_once() -> None:
    """Ctrl-C mid-drill: a worker waiting out a long throttling pause gives it up (the
    drill's report then says the key was not finished)."""
    pacer = Pacer(1.0)  # the real, interruptible sleep
    pacer.bucket.take()
    pacer.bucket.hold(3600)
    outcome: list[str] = []

    def wait() -> None:
        try:
            pacer.bucket.take()
            outcome.append("slept an hour")
        except PacingStoppedError:
            outcome.append("stopped")

    worker = threading.Thread(target=wait)
    worker.start()
    pacer.stop()
    worker.join(timeout=600)
    assert outcome == ["stopped"]
    with pytest.raises(PacingStoppedError):  # and nothing new starts
        pacer.wrap(Scripted(throttles=0)).unwrap(WRAPPED, {})


def test_the_default_backoff_rests_between_half_the_ceiling_and_the_ceiling() -> None:
    """Equal jitter: a throttled service always gets some rest (with full jitter a pause
    could be ~0 s, a retry at once into the same 429)."""
    pauses = [Pacer()._jitter(1.0) for _ in range(2000)]
    assert all(0.5 <= p <= 1.0 for p in pauses)
    assert max(pauses) - min(pauses) > 0.25  # still spread, so workers do not retry in step
