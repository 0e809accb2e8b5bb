"""A run's circuit breaker: once a backend is known to be down, start no new keys.

A sealed Vault, a stopped S3 service or a hung KMS fails every key the same
way, and each key used to wait out its own retries and timeouts: 400 keys
against a sealed OpenBao took 67 s to fail. One breaker per run (a
:class:`~keyvault.ops.session.Session`) counts *down* signals in a row across
all of the run's keys and requests: connection refused or reset, connect and
read timeouts, a sealed or failing server (5xx). Any answer in between resets
the count. At ``threshold`` in a row it opens: backends refuse further
attempts of the requests in flight (no more retries), and the run's loops
start no new key, reporting it as *not attempted* (exit 6). Nothing of a key
not attempted is read or written, so a re-run continues where this one stopped.

Throttling (KMS ThrottlingException, S3 SlowDown, Vault 429) is never a down
signal: a throttling backend is up and asks to be paced (the drill's pacing,
#20), not given up on. Backends report through :meth:`Breaker.down` and
:meth:`Breaker.up`, and ask :meth:`Breaker.check` before each attempt.
"""

from __future__ import annotations

import threading

from keyvault.errors import BackendUnavailableError, KeyvaultError, ThrottledError

#: Down signals in a row (no answer in between) that open the breaker.
DEFAULT_THRESHOLD = 5


class BackendDownError(BackendUnavailableError):
    """The run's breaker is open: this key or request was not attempted (exit 6)."""


class Breaker:
    """Thread-safe; one per run. ``threshold`` 0: never opens."""

    def __init__(self, threshold: int = DEFAULT_THRESHOLD) -> None:
        self.threshold = threshold
        self._lock = threading.Lock()
        self._in_a_row = 0
        self._reason: str | None = None

    @property
    def is_open(self) -> bool:
        return self._reason is not None

    def down(self, what: str) -> None:
        """A request found the backend down (``what``: which backend, how; no secrets)."""
        with self._lock:
            self._in_a_row += 1
            if self.threshold and self._in_a_row >= self.threshold and self._reason is None:
                self._reason = f"{self._in_a_row} failures in a row, the last: {what[:300]}"

    def up(self) -> None:
        """A backend answered (even with an error of its own): it is not down."""
        with self._lock:
            if self._reason is None:
                self._in_a_row = 0

    def note(self, error: KeyvaultError | None) -> None:
        """A key's outcome: a down error counts (for backends that report nothing)."""
        if error is None:
            self.up()
        elif is_down(error) and not isinstance(error, BackendDownError):
            self.down(error.message)

    def reset(self) -> None:
        """A new run (the daemon's next cycle) starts with the breaker closed."""
        with self._lock:
            self._in_a_row, self._reason = 0, None

    def check(self) -> None:
        """Before an attempt: BackendDownError once the breaker is open (a key in flight
        stops there; what it wrote before is whole, what it had not written is not)."""
        if self._reason is not None:
            raise BackendDownError(
                f"gave up: a backend is down ({self._reason})",
                hint="re-run when the backend is back",
            )

    def skip(self) -> BackendDownError:
        """The error to report for a key the run does not start."""
        return BackendDownError(
            f"not attempted: a backend is down ({self._reason})",
            hint="nothing of it was read or written; re-run when the backend is back, and "
            "the run continues where this one stopped",
        )


class NotAttemptedError(BackendUnavailableError):
    """An all-or-nothing run (restore, fetch, exec) a backend ended before it started
    every key: it says how many it never started (``not_attempted`` in the --json error)."""

    def __init__(self, message: str, *, hint: str | None, not_attempted: int) -> None:
        super().__init__(message, hint=hint)
        self.not_attempted = not_attempted


def stopped_early(
    exc: BackendUnavailableError, skipped: int, total: int
) -> BackendUnavailableError:
    """A backend ended an all-or-nothing run, so nothing was written: the error that
    says so, and how many of the ``total`` keys it never started (``skipped``)."""
    if skipped <= 0:
        return exc
    stopped = NotAttemptedError(
        f"{exc.message}; {skipped} of {total} keys were not attempted and nothing was written",
        hint=exc.hint or "re-run when the backend is back",
        not_attempted=skipped,
    )
    stopped.wrapper, stopped.audited = exc.wrapper, exc.audited
    return stopped


def is_down(error: BaseException) -> bool:
    """A backend-unavailable error that is not throttling."""
    return isinstance(error, BackendUnavailableError) and not isinstance(error, ThrottledError)


#: The breaker of code that runs outside a session (it never opens).
NEVER = Breaker(threshold=0)
