"""Bounded concurrency for bulk work against remote stores and key services.

At most ``limit`` items run at once, as many more wait queued behind them, and
at most ``4 * limit`` results wait to be handed back in input order, so memory
stays flat in the number of keys. Threads share the session's one store client
and one client per wrapper (their connection pools are sized for this).
"""

from __future__ import annotations

import functools
import queue
from collections.abc import Callable, Generator, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

In = TypeVar("In")
Out = TypeVar("Out")

DEFAULT_CONCURRENCY = 8
MAX_CONCURRENCY = 64


def bounded_map(
    fn: Callable[[In], Out],
    items: Iterable[In],
    limit: int,
    *,
    on_abort: Callable[[], None] | None = None,
) -> Generator[Out, None, None]:
    """``map(fn, items)`` with at most ``limit`` calls running; input order kept.

    A worker that finishes takes the next queued item at once: the calls do not wait
    for the consumer, which hands results on and queues more when it gets to it (in a
    restore it also stages each key, and the request threads would otherwise idle
    while it does). An exception from ``fn`` propagates once the calls in flight
    have finished; callers that want per-item failures catch inside ``fn``. When
    the map ends early (an exception, Ctrl-C, the consumer stopping), the calls
    still queued are cancelled (a worker may have taken one just before), then
    ``on_abort`` runs, before the calls in flight are waited for: it can tell them
    to give up a long wait.
    """
    limit = max(1, min(limit, MAX_CONCURRENCY))
    if limit == 1:
        yield from map(fn, items)
        return
    with ThreadPoolExecutor(max_workers=limit, thread_name_prefix="keyvault") as pool:
        try:
            yield from _pooled(pool, fn, items, limit)
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)  # the queued: no more start
            if on_abort is not None:
                on_abort()
            raise


def _pooled(
    pool: ThreadPoolExecutor, fn: Callable[[In], Out], items: Iterable[In], limit: int
) -> Generator[Out, None, None]:
    source = iter(items)
    # Each call reports its own end on this queue: one cheap get() per result, where
    # concurrent.futures.wait() would hook into and out of every pending call each time.
    finished: queue.SimpleQueue[int] = queue.SimpleQueue()
    pending: dict[int, Future[Out]] = {}
    done: dict[int, Out] = {}
    next_in = next_out = 0
    exhausted = False
    while True:
        # A slow first item must not stall the rest: finished results may wait for
        # their turn (up to 4x the limit of them) while new items start. Up to the limit
        # more wait queued in the pool, so a worker never waits for this loop.
        while not exhausted and len(pending) < 2 * limit and len(pending) + len(done) < 4 * limit:
            try:
                item = next(source)
            except StopIteration:
                exhausted = True
                break
            future = pending[next_in] = pool.submit(fn, item)
            future.add_done_callback(functools.partial(_report, finished, next_in))
            next_in += 1
        if next_out in done:
            yield done.pop(next_out)
            next_out += 1
            continue
        if not pending:
            return
        index = finished.get()
        done[index] = pending.pop(index).result()


def _report(finished: queue.SimpleQueue[int], index: int, _future: Future[Out]) -> None:
    finished.put(index)
