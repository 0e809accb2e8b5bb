"""The versions index a bulk restore reads while the listing goes on (no server).

A fake listing hands the index one page at a time, when the test says so: what a
waiter sees is checked at each step, never by timing.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator

from keyvault.errors import AccessDeniedError, BackendUnavailableError
from keyvault.ops.versionindex import VersionIndex
from keyvault.stores.base import ObjectVersion, VersionPage

#: How long a test waits for a thread that should already be done: a hang guard only.
GUARD = 60


class Listing:
    """Pages handed out one by one; ``asked`` tells that the index took the previous page
    in and asks for the next (it asks only once it has published the previous one)."""

    def __init__(self) -> None:
        self._next: queue.SimpleQueue[VersionPage | BaseException | None] = queue.SimpleQueue()
        self.asked = threading.Semaphore(0)
        self.closed = threading.Event()

    def pages(self) -> Iterator[VersionPage]:
        try:
            while True:
                self.asked.release()
                item = self._next.get()
                if item is None:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            self.closed.set()

    def send(self, item: VersionPage | BaseException | None, *, more: bool = True) -> None:
        """Hand out one page (an error, or the end); after a page the index is to ask for
        more (``more``), wait until it does: it has taken that page in."""
        self._next.put(item)
        if isinstance(item, VersionPage) and more:
            assert self.asked.acquire(timeout=GUARD)


def page(before: str | None, *names: str, deleted: tuple[str, ...] = ()) -> VersionPage:
    listed = {n: [_version(n, f"{n}-v2", True), _version(n, f"{n}-v1", False)] for n in names}
    listed |= {n: [_version(n, f"{n}-v1", False)] for n in deleted}  # a deletion on top
    return VersionPage(listed, before)


def _version(name: str, version: str, latest: bool) -> ObjectVersion:
    return ObjectVersion(name, version, 10, None, latest)


def started(listing: Listing) -> VersionIndex:
    index = VersionIndex(listing.pages()).start()
    assert listing.asked.acquire(timeout=GUARD)  # the thread asks for page 1
    return index


class Waiter:
    """``call()`` in a thread of its own: its answer, or its error."""

    def __init__(self, call: Callable[[], object]) -> None:
        self.answer: object = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(call,), daemon=True)
        self._thread.start()

    def _run(self, call: Callable[[], object]) -> None:
        try:
            self.answer = call()
        except BaseException as exc:  # the test looks at it
            self.error = exc

    def joined(self) -> Waiter:
        self._thread.join(GUARD)
        assert not self._thread.is_alive(), "the waiter was never released"
        return self

    @property
    def done(self) -> bool:
        return not self._thread.is_alive()


def test_a_name_on_page_two_waits_until_page_two_is_in() -> None:
    listing = Listing()
    index = started(listing)
    waiter = Waiter(lambda: index.wait("k/m"))
    listing.send(page("k/l", "k/a", "k/b"))
    # page 1 is in (the index asked for page 2): its names answer, k/m does not yet
    assert Waiter(lambda: index.wait("k/a")).joined().answer == ("k/a-v2", "k/a-v1")
    assert not waiter.done
    listing.send(page("k/x", "k/l", "k/m"))
    assert waiter.joined().answer == ("k/m-v2", "k/m-v1")
    listing.send(page(None, "k/x"))
    listing.send(None)
    assert listing.closed.wait(GUARD)
    assert index.wait("k/x") == ("k/x-v2", "k/x-v1")


def test_a_page_that_passed_a_name_without_it_says_not_listed_before_the_end() -> None:
    listing = Listing()
    index = started(listing)
    listing.send(page("k/m", "k/a", "k/d"))
    # k/c sorts before k/m, so the listing has passed it: answered now, not at the end
    assert Waiter(lambda: index.wait("k/c")).joined().answer is None
    later = Waiter(lambda: index.wait("k/n"))
    assert not later.done
    listing.send(None)
    assert later.joined().answer is None and later.error is None


def test_an_error_on_page_two_reaches_every_waiter() -> None:
    listing = Listing()
    index = started(listing)
    waiters = [Waiter(lambda: index.wait("k/z")) for _ in range(3)]
    listing.send(page("k/m", "k/a"))
    denied = AccessDeniedError("store s3://b/p: cannot list the versions under k/: access denied")
    listing.send(denied)
    assert all(w.joined().error is denied for w in waiters)  # as the listing said, exit 4
    assert index.wait("k/a") == ("k/a-v2", "k/a-v1")  # what page 1 listed stays known
    assert listing.closed.wait(GUARD)


def test_a_deletion_on_top_is_not_listed() -> None:
    listing = Listing()
    index = started(listing)
    listing.send(page(None, "k/a", deleted=("k/b",)))
    listing.send(None)
    assert index.wait("k/b") is None  # read on its own, as a key the listing did not hold
    assert index.wait("k/a") == ("k/a-v2", "k/a-v1")


def test_closing_wakes_the_waiters_and_ends_the_listing() -> None:
    listing = Listing()
    index = started(listing)
    waiter = Waiter(lambda: index.wait("k/z"))
    index.close()
    assert isinstance(waiter.joined().error, BackendUnavailableError)
    listing.send(page("k/m", "k/a"), more=False)  # the page in flight: the thread stops
    assert listing.closed.wait(GUARD)
