"""bounded_map: order, the concurrency limit, the bound on queued work, failures, early stop."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from keyvault.ops.parallel import MAX_CONCURRENCY, bounded_map


def test_results_come_back_in_input_order_whatever_finishes_first() -> None:
    def slow_for_small(i: int) -> int:
        time.sleep(0.002 * (20 - i))  # the first items finish last
        return i * i

    assert list(bounded_map(slow_for_small, range(20), 8)) == [i * i for i in range(20)]


@pytest.mark.parametrize("limit", [1, 3, 8])
def test_never_more_than_the_limit_running(limit: int) -> None:
    lock = threading.Lock()
    running = peak = 0

    side_by_side = threading.Barrier(limit, timeout=60)

    def work(i: int) -> int:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        if i < limit:  # the first `limit` calls meet here: they do run side by side
            side_by_side.wait()
        time.sleep(0.003)
        with lock:
            running -= 1
        return i

    assert list(bounded_map(work, range(40), limit)) == list(range(40))
    assert peak == limit


def test_the_limit_is_capped() -> None:
    names: set[str] = set()
    barrier = threading.Barrier(MAX_CONCURRENCY, timeout=60)

    def work(i: int) -> int:
        names.add(threading.current_thread().name)
        barrier.wait()  # only MAX_CONCURRENCY can ever meet here at once
        return i

    assert len(list(bounded_map(work, range(2 * MAX_CONCURRENCY), 10 * MAX_CONCURRENCY))) == (
        2 * MAX_CONCURRENCY
    )
    assert len(names) == MAX_CONCURRENCY


def test_the_input_is_pulled_lazily_so_memory_stays_flat() -> None:
    """Only a bounded number of items are taken from the input ahead of the consumer."""
    pulled = 0

    def source() -> Iterator[int]:
        nonlocal pulled
        for i in range(10_000):
            pulled += 1
            yield i

    results = bounded_map(lambda i: i, source(), 4)
    for consumed, _ in enumerate(results, start=1):
        assert pulled - consumed <= 4 * 4 + 1
        if consumed == 100:
            break
    results.close()
    assert pulled < 200


def test_a_slow_first_item_does_not_stall_the_others() -> None:
    release = threading.Event()
    finished: list[int] = []

    def work(i: int) -> int:
        if i == 0:
            assert release.wait(5)
        else:
            finished.append(i)
            if len(finished) == 10:
                release.set()  # ten later items got done while the first was stuck
        return i

    assert list(bounded_map(work, range(11), 4)) == list(range(11))
    assert release.is_set()


def test_the_workers_go_on_while_the_consumer_is_busy() -> None:
    """A worker that finishes starts the next item without waiting for the consumer to
    come back for a result (a restore's consumer stages each key meanwhile)."""
    finished: list[int] = []
    lock = threading.Lock()
    five_done = threading.Event()

    def work(i: int) -> int:
        with lock:
            finished.append(i)
            if len(finished) >= 2 * 2 + 1:
                five_done.set()
        return i

    results = bounded_map(work, range(100), 2)
    assert next(results) == 0
    # The consumer holds on to item 0: with only the running calls queued, no more than
    # three items (0 and the two started when 0 was handed back) could finish meanwhile.
    assert five_done.wait(10), f"only {sorted(finished)} finished while the consumer was busy"
    results.close()


def test_an_exception_propagates_and_later_items_are_not_started() -> None:
    started: list[int] = []

    def work(i: int) -> int:
        started.append(i)
        if i == 2:
            raise ValueError("boom")
        return i

    with pytest.raises(ValueError, match="boom"):
        list(bounded_map(work, range(1000), 2))
    assert len(started) < 100


def test_closing_early_waits_for_running_calls_and_starts_no_more() -> None:
    started: list[int] = []
    lock = threading.Lock()

    def work(i: int) -> int:
        with lock:
            started.append(i)
        time.sleep(0.002)
        return i

    before = set(threading.enumerate())
    results = bounded_map(work, range(1000), 4)
    assert next(results) == 0
    results.close()
    count = len(started)
    # Nothing can run on after close(): it returned only once the pool's threads ended.
    assert set(threading.enumerate()) <= before
    assert len(started) == count < 100


def test_an_early_end_tells_the_running_calls_before_waiting_for_them() -> None:
    """on_abort runs before the calls in flight are waited for (a drill's pacing gives up
    its pauses then): the running call sees it, instead of waiting out its own wait."""
    told = threading.Event()
    started = threading.Event()
    seen: list[bool] = []

    def work(i: int) -> int:
        if i == 1:
            started.set()
            seen.append(told.wait(600))  # True only if on_abort ran while this waited
        return i

    results = bounded_map(work, range(4), 2, on_abort=told.set)
    assert next(results) == 0
    started.wait(600)
    results.close()  # the consumer stops early (as a Ctrl-C in it would)
    assert seen == [True]
