"""A drill's pace: at most ``rate`` requests a second to KMS, Transit or the HSM, and
patience (not failure) when the service says "slow down".

A drill of 100,000 keys sends one unwrap per key and wrapper; KMS's request
quota for symmetric cryptographic operations is shared by every caller in the
account and Region, so a drill must not take it from production. One
:class:`TokenBucket` (one token, refilled at ``rate``: requests are at least
``1/rate`` s apart, whatever the number of threads) gates every request: a
wrapper with ``pace(gate)`` (KMS, Transit) calls the gate before each request it
sends, its SDK's own retries included; any other remote wrapper (PKCS#11) takes
one token per unwrap. Local wrappers (age, passphrase) are not paced.

A :class:`~keyvault.errors.ThrottledError` (KMS ``ThrottlingException``,
Vault HTTP 429) is not a failure of the key: the unwrap waits a jittered,
exponentially growing pause (every worker waits: the bucket is held), then is
tried again. A key whose pauses add up to more than ``max_wait`` seconds is
given up as :data:`THROTTLED` with the reason, never failed, and a later
``drill --resume`` checks it. Throttling says the service is up: it is never
counted as a backend that is down.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from keyvault.errors import ThrottledError, UsageError
from keyvault.keyring import WrappedKey, Wrapper

#: Requests a second a drill sends to one key service unless told otherwise. The
#: smallest default AWS KMS quota for symmetric cryptographic operations (Decrypt,
#: Encrypt, ...) is 5,500 a second, shared by the whole account and Region; Vault has
#: no rate limit until an operator sets one (sys/quotas/rate-limit). 100 leaves the
#: quota to production and drills 100,000 keys in about 17 minutes.
DEFAULT_RATE = 100.0
MAX_RATE = 10_000.0
#: The longest one key waits in pauses for a throttling service before it is given up.
DEFAULT_MAX_WAIT = 120.0
#: The first pause after a throttling answer, doubled each time up to MAX_PAUSE.
FIRST_PAUSE = 0.1
MAX_PAUSE = 10.0
#: What a drill reports for a key given up after throttling (not "failed").
THROTTLED = "not-checked (throttled)"
#: Wrappers whose unwrap is a request to a service.
REMOTE_SCHEMES = ("awskms", "transit", "pkcs11")

Clock = Callable[[], float]
Sleep = Callable[[float], None]


def check_rate(value: object, what: str = "--rate") -> float:
    """A rate in requests a second: a number above 0 and at most MAX_RATE."""
    try:
        rate = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise UsageError(
            f"{what} must be a number of requests a second, not {str(value)[:20]!r}"
        ) from None
    if not 0 < rate <= MAX_RATE:  # also refuses NaN
        raise UsageError(
            f"{what} must be above 0 and at most {MAX_RATE:g} requests a second, not {rate:g}"
        )
    return rate


class TokenBucket:
    """Hands out request slots at most ``rate`` a second to any number of threads.

    A bucket of one token: each slot is at least ``1/rate`` s after the one before,
    so no window of T seconds holds more than ``T * rate + 1`` requests. ``clock``
    and ``sleep`` are injectable so that tests can check the slots without timing.
    """

    def __init__(
        self, rate: float, *, clock: Clock = time.monotonic, sleep: Sleep = time.sleep
    ) -> None:
        self.interval = 1.0 / check_rate(rate)
        self.rate = rate
        self._clock, self._sleep = clock, sleep
        self._lock = threading.Lock()
        self._next: float | None = None
        self.taken = 0
        self.first: float | None = None
        self.last: float | None = None

    def take(self) -> float:
        """Wait for the next free slot and return its time (the caller sends then).

        The waiting is done holding the lock, and the next slot counts from the time the
        wait really ended: a thread woken late cannot bunch with the one after it.
        """
        with self._lock:
            now = self._clock()
            while self._next is not None and now < self._next:
                self._sleep(self._next - now)
                now = self._clock()
            self._next = now + self.interval
            self.taken += 1
            self.first = now if self.first is None else self.first
            self.last = now
            return now

    def hold(self, seconds: float) -> None:
        """No slot for anyone during the next ``seconds`` (a throttling service)."""
        with self._lock:
            until = self._clock() + seconds
            self._next = until if self._next is None else max(self._next, until)

    def achieved(self) -> float | None:
        """Requests a second between the first slot and the last (None: fewer than two)."""
        if self.first is None or self.last is None or self.taken < 2:
            return None
        span = self.last - self.first
        return (self.taken - 1) / span if span > 0 else None


@dataclass
class PaceStats:
    """What a drill reports of its pace."""

    rate: float
    requests: int
    achieved_rate: float | None
    throttled: int  # throttling answers that reached the drill
    backoff_s: float
    keys_throttled: int  # keys given up after max_wait

    def to_json(self) -> dict[str, Any]:
        return {
            "rate": self.rate,
            "requests": self.requests,
            "achieved_rate": (None if self.achieved_rate is None else round(self.achieved_rate, 2)),
            "throttled": self.throttled,
            "backoff_s": round(self.backoff_s, 3),
            "keys_throttled": self.keys_throttled,
        }


class GivenUpError(ThrottledError):
    """A key whose unwrap stayed throttled for longer than the pacer's max_wait."""


class PacingStoppedError(Exception):
    """The drill is ending (Ctrl-C, SIGTERM, an error): a paced call gives up its wait.

    Not a KeyvaultError: the key it was for is reported as not finished, not failed."""


class Pacer:
    """One per drill: the bucket every paced request takes a slot from, and the backoff."""

    def __init__(
        self,
        rate: float = DEFAULT_RATE,
        *,
        max_wait: float = DEFAULT_MAX_WAIT,
        clock: Clock = time.monotonic,
        sleep: Sleep | None = None,
        jitter: Callable[[float], float] | None = None,
    ) -> None:
        self._stopped = threading.Event()
        self.bucket = TokenBucket(rate, clock=clock, sleep=sleep or self._sleep)
        self.max_wait = max_wait
        # Equal jitter: between half the ceiling and the ceiling. A throttled service
        # always gets some rest, and workers pausing at once do not retry in step.
        self._jitter = jitter or (lambda ceiling: random.uniform(ceiling / 2, ceiling))  # noqa: S311
        self._lock = threading.Lock()
        self.throttled = 0
        self.backoff_s = 0.0
        self.keys_throttled = 0

    def stop(self) -> None:
        """Every wait, now and later, ends at once with PacingStoppedError."""
        self._stopped.set()

    def _sleep(self, seconds: float) -> None:
        if self._stopped.wait(seconds):
            raise PacingStoppedError

    def wrap(self, wrapper: Wrapper) -> Wrapper:
        """``wrapper`` with its unwraps paced, or itself if it calls no service."""
        scheme = wrapper.uri.partition(":")[0].lower()
        if scheme not in REMOTE_SCHEMES:
            return wrapper
        pace = getattr(wrapper, "pace", None)
        if pace is not None:
            pace(self.bucket.take)  # every request it sends, retries included
            return PacedWrapper(wrapper, self, gated=True)
        return PacedWrapper(wrapper, self, gated=False)

    def call(self, fn: Callable[[], bytes], *, gated: bool) -> bytes:
        """``fn()`` (one unwrap), paced; a throttling answer pauses every worker and is
        retried, until this key has waited ``max_wait`` seconds."""
        waited = 0.0
        attempt = 0
        while True:
            if self._stopped.is_set():
                raise PacingStoppedError
            if not gated:
                self.bucket.take()
            try:
                return fn()
            except ThrottledError as exc:
                pause = self._jitter(min(MAX_PAUSE, FIRST_PAUSE * 2**attempt))
                attempt += 1
                with self._lock:
                    self.throttled += 1
                    if waited + pause > self.max_wait:
                        self.keys_throttled += 1
                        raise GivenUpError(
                            f"still throttled after {attempt} attempts and "
                            f"{waited:.1f} s of pauses ({exc.message})",
                            hint="re-run later with --resume, or a lower --rate",
                        ) from None
                    self.backoff_s += pause
                waited += pause
                self.bucket.hold(pause)

    def stats(self) -> PaceStats:
        return PaceStats(
            self.bucket.rate,
            self.bucket.taken,
            self.bucket.achieved(),
            self.throttled,
            self.backoff_s,
            self.keys_throttled,
        )


class PacedWrapper:
    """A wrapper whose unwraps go through a :class:`Pacer` (the rest is passed on)."""

    def __init__(self, inner: Wrapper, pacer: Pacer, *, gated: bool) -> None:
        self._inner, self._pacer, self._gated = inner, pacer, gated

    @property
    def uri(self) -> str:
        return self._inner.uri

    def wrap(self, dek: bytes, context: Mapping[str, str]) -> WrappedKey:
        return self._inner.wrap(dek, context)

    def unwrap(self, wrapped: WrappedKey, context: Mapping[str, str]) -> bytes:
        return self._pacer.call(lambda: self._inner.unwrap(wrapped, context), gated=self._gated)

    def close(self) -> None:
        self._inner.close()

    def __repr__(self) -> str:
        return f"PacedWrapper({self._inner!r})"


def configured_pacer(settings: Mapping[str, Mapping[str, Any]], rate: float | None = None) -> Pacer:
    """The pacer ``--rate`` (else ``[drill] rate``, else DEFAULT_RATE) and ``[drill]
    max_wait`` ask for."""
    section = settings.get("drill", {})
    chosen = (
        check_rate(rate)
        if rate is not None
        else check_rate(section.get("rate", DEFAULT_RATE), "[drill] rate")
    )
    max_wait = section.get("max_wait", DEFAULT_MAX_WAIT)
    if (
        isinstance(max_wait, bool)
        or not isinstance(max_wait, int | float)
        or not (0 <= max_wait <= 86_400)
    ):
        raise UsageError("[drill] max_wait must be a number of seconds from 0 to 86400")
    return Pacer(chosen, max_wait=float(max_wait))
