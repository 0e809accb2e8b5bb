"""A restore cut short at each step of moving files into place, or of undoing that.

Every ``link``, ``rename`` and ``unlink`` the restore makes is counted; a fault
is injected right after the n-th one, for every n: an exception raised there (as
if a signal were not held back), or a real SIGINT sent to the process or to
another thread. Whatever the step, the trust directory must end exactly as it
was: the replaced file's original bytes under its name, no aside copy, no new
file, no temporary file.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fixtures.host import tree

from keyvault.cli import app as cli_app
from keyvault.errors import IntegrityError
from keyvault.trust import restore as restore_mod
from keyvault.trust.restore import Action, RestoreItem, apply_restore

pytestmark = pytest.mark.proves("T8", "B40")

ID_A = "a" * 64
ID_B = "b" * 64
STEPS = ("link", "rename", "unlink")


def items(tag: bytes = b"new") -> list[RestoreItem]:
    return [
        RestoreItem(f"{ID_A}.key", tag + b"-a\n"),
        RestoreItem(f"tuf_keys/example.com/app/{ID_B}.key", tag + b"-b\n"),
    ]


def trust_with_old_a(tmp_path: Path) -> Path:
    """A trust directory where the first item replaces a file and the second creates one."""
    trust = tmp_path / "trust"
    (trust / "private" / "tuf_keys" / "example.com" / "app").mkdir(parents=True)
    (trust / "private" / f"{ID_A}.key").write_bytes(b"old-a\n")
    return trust


class Steps:
    """Counts the restore's link/rename/unlink calls; runs ``fault`` after the n-th."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, at: int, fault: Callable[[], None]) -> None:
        self.count, self.at, self.fault = 0, at, fault
        for name in STEPS:
            monkeypatch.setattr(os, name, self._counted(getattr(os, name)))

    def _counted(self, real: Callable[..., Any]) -> Callable[..., Any]:
        def step(*args: Any, **kwargs: Any) -> Any:
            result = real(*args, **kwargs)
            self.count += 1
            if self.count == self.at:
                self.fault()
            return result

        return step


def failing_verify(self: restore_mod._Transaction) -> None:
    raise IntegrityError("private/x.key does not read back as written")


class OtherThread:
    """Another thread of this process, blocking no signal (like a worker pool's).

    ``interrupt()`` has it send SIGINT to itself and waits until it has: its C handler
    has then run there, and CPython runs the Python handler on the main thread next.
    """

    def __init__(self) -> None:
        self.asked, self.sent, self.stopping = threading.Event(), threading.Event(), False
        self.thread = threading.Thread(target=self._run, name="other")
        self.thread.start()

    def _run(self) -> None:
        while True:
            self.asked.wait()
            self.asked.clear()
            if self.stopping:
                return
            signal.pthread_kill(threading.get_ident(), signal.SIGINT)
            self.sent.set()

    def interrupt(self) -> None:
        self.sent.clear()
        self.asked.set()
        self.sent.wait()

    def stop(self) -> None:
        self.stopping = True
        self.asked.set()
        self.thread.join()


@pytest.fixture
def other_thread() -> Iterator[OtherThread]:
    other = OtherThread()
    yield other
    other.stop()


@pytest.mark.parametrize("at", range(1, 5))
def test_an_exception_after_any_step_of_the_commit_undoes_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, at: int
) -> None:
    """Even unheld (a signal handler raising at once), the undo puts the original back.

    Before: a KeyboardInterrupt right after the rename into place made the undo
    delete the aside copy, the only original left, and one right after the new file
    was linked left it behind.
    """
    trust = trust_with_old_a(tmp_path)
    before = tree(trust)

    def interrupt() -> None:
        raise KeyboardInterrupt

    steps = Steps(monkeypatch, at, interrupt)
    with pytest.raises(KeyboardInterrupt):
        apply_restore(trust, items(), force=True)
    assert steps.count >= at
    assert tree(trust) == before


@pytest.mark.parametrize("at", range(1, 7))
def test_a_signal_after_any_step_of_commit_or_undo_leaves_the_directory_as_it_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, at: int
) -> None:
    """A real SIGINT after step ``at`` of a restore whose read-back fails (steps 5 and 6
    are the undo): it waits until the moves, or the undo, are complete."""
    check_signal_after(tmp_path, monkeypatch, at, lambda: to_main_thread(signal.SIGINT))


@pytest.mark.parametrize("at", range(1, 7))
def test_a_signal_landing_on_another_thread_waits_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, other_thread: OtherThread, at: int
) -> None:
    """The kernel hands a process's signal to any thread not blocking it, and CPython
    then raises KeyboardInterrupt on the main thread, mask or not."""
    check_signal_after(tmp_path, monkeypatch, at, other_thread.interrupt)


def to_main_thread(signum: int) -> None:
    """The process's signal as the kernel hands it to the main thread. Aimed at that thread
    on purpose: threads left by other tests in this process do not block it, and one of
    them taking it is the case of test_a_signal_landing_on_another_thread_waits_too."""
    main = threading.main_thread().ident
    assert main is not None
    signal.pthread_kill(main, signum)


def check_signal_after(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, at: int, deliver: Callable[[], None]
) -> None:
    trust = trust_with_old_a(tmp_path)
    before = tree(trust)
    steps = Steps(monkeypatch, at, deliver)
    monkeypatch.setattr(restore_mod._Transaction, "verify", failing_verify)
    with pytest.raises((KeyboardInterrupt, IntegrityError)):
        apply_restore(trust, items(), force=True)
    assert steps.count >= at  # 4 steps into place, 2 to undo: each one is reached
    assert tree(trust) == before


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
@pytest.mark.parametrize("at", range(1, 5))
def test_a_signal_during_a_good_restore_undoes_it_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, at: int, signum: int
) -> None:
    """Ctrl-C, or SIGTERM with the CLI's handler: the restore is undone whole (no half
    restore, and no finished one reported as interrupted with its aside copies unnamed)."""
    trust = trust_with_old_a(tmp_path)
    before = tree(trust)
    steps = Steps(monkeypatch, at, lambda: to_main_thread(signum))
    previous = signal.signal(signal.SIGTERM, cli_app._on_sigterm)
    try:
        with pytest.raises((KeyboardInterrupt, cli_app._Terminated)):
            apply_restore(trust, items(), force=True)
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert steps.count >= at
    assert tree(trust) == before


def test_an_ignored_sigint_does_not_stop_the_restore(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``nohup``-like: SIGINT ignored by the caller is not a reason to undo anything."""
    trust = trust_with_old_a(tmp_path)
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        Steps(monkeypatch, 2, lambda: os.kill(os.getpid(), signal.SIGINT))
        result = apply_restore(trust, items(), force=True)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert [p.action for p in result.planned] == [Action.REPLACE, Action.CREATE]
    assert (trust / "private" / f"{ID_A}.key").read_bytes() == b"new-a\n"


def test_two_forced_restores_in_the_same_second_keep_both_old_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: the second restore's aside name was the first one's, so it failed with
    'appeared while restoring ... another process is writing keys'."""

    class Frozen(datetime):
        @classmethod
        def now(cls, tz: Any = None) -> Frozen:
            return cls(2030, 1, 2, 3, 4, 5, tzinfo=UTC)

    monkeypatch.setattr(restore_mod, "datetime", Frozen)
    trust = trust_with_old_a(tmp_path)
    first = apply_restore(trust, items(b"one"), force=True)
    second = apply_restore(trust, items(b"two"), force=True)
    private = trust / "private"
    assert (private / f"{ID_A}.key").read_bytes() == b"two-a\n"
    (aside_1,) = first.kept_aside
    aside_2, aside_b = second.kept_aside  # the second replaces the first one's new file too
    assert aside_1 != aside_2
    assert (private / aside_b).read_bytes() == b"one-b\n"
    for aside in (aside_1, aside_2):
        assert aside.startswith(f"{ID_A}.key.keyvault-old-20300102T030405Z-")
    assert (private / aside_1).read_bytes() == b"old-a\n"
    assert (private / aside_2).read_bytes() == b"one-a\n"
