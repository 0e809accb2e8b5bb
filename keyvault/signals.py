"""Hold SIGINT and SIGTERM back while a few file-system steps must run to the end.

A restore moves files into place and, on failure, moves them back; a Ctrl-C
landing between two of those steps would leave a half-done state (T8). Inside
:func:`held` both signals are blocked for this thread (``pthread_sigmask``),
and, on the main thread, their Python handlers are swapped for ones that only
note the signal: CPython runs handlers on the main thread even when the
kernel delivered the signal to another thread that does not block it. When
the block ends the handlers and the mask are put back and every noted
signal is raised again, so Ctrl-C still interrupts, just after the steps.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator
from types import FrameType

HELD = (signal.SIGINT, signal.SIGTERM)


class Terminated(BaseException):
    """SIGTERM, raised like Ctrl-C by the CLI's handler: restores roll back and drills
    write their report before the process ends."""


_Handler = Callable[[int, FrameType | None], object] | int | signal.Handlers | None


class Held:
    """What arrived while held; ``pending()`` tells the block to undo its work."""

    def __init__(self) -> None:
        self.noted: list[int] = []

    def note(self, signum: int, frame: FrameType | None) -> None:
        if signum not in self.noted:
            self.noted.append(signum)

    def pending(self) -> bool:
        """True if SIGINT or SIGTERM arrived since the block began and is not ignored."""
        waiting = signal.sigpending()
        return bool(self.noted) or any(
            s in waiting and signal.getsignal(s) is not signal.SIG_IGN for s in HELD
        )


@contextlib.contextmanager
def held() -> Iterator[Held]:
    """Block SIGINT and SIGTERM for the ``with`` body; deliver them when it ends."""
    state = Held()
    swapped: dict[signal.Signals, _Handler] = {}
    if threading.current_thread() is threading.main_thread():
        for signum in HELD:  # Python handlers only: the default or SIG_IGN wait in the mask
            if callable(signal.getsignal(signum)):
                swapped[signum] = signal.signal(signum, state.note)
    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, HELD)
    try:
        yield state
    finally:
        # Still swapped while unblocking: a signal that waited is noted, then raised below.
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
        for signum, handler in swapped.items():
            signal.signal(signum, handler)
        for noted in state.noted:
            signal.raise_signal(noted)
