"""Bounded CPU work off the event loop (scoring, n-gram counting, forecast fitting).

`slots` jobs run at once in worker threads and up to `2 * slots` more may wait; beyond
that a request is refused at once with 503 and Retry-After, never queued without bound.

Threads and torch: every thread that runs torch ops keeps its own OpenMP team of workers
for as long as it lives, and on a small machine a live team slows the others
(docs/benchmarks.md has the figures). So each model's decoding has one long-lived thread
(its scheduler's, app/scheduler.py: a thread per model, so that one model's step never
waits for another's), and everything else runs in a thread that exits when its job is
done, taking its team with it. Every thread uses the process's intra-op thread count
(`RNNLM_TORCH_THREADS`, torch's own default without it): k models decoding at once run
k teams, which docs/architecture.md weighs for a small machine.

Jobs run at a lower CPU priority (JOB_NICENESS, where the system allows it, as on Linux)
than decoding and the event loop: a long job then slows the streams and the quick answers
around it less, and still gets every CPU cycle they leave (bench/noisy_neighbour.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

from app.errors import Overloaded

T = TypeVar("T")

JOB_NICENESS = 10


def _lower_priority() -> None:
    """This thread (and the torch workers it starts) at JOB_NICENESS, where supported."""
    with contextlib.suppress(AttributeError, OSError):  # not Linux, or not permitted
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), JOB_NICENESS)


def _as_job(fn: Callable[..., T], *args: object) -> T:
    _lower_priority()
    return fn(*args)


def start_in_fresh_thread(fn: Callable[..., T], *args: object) -> Future[T]:
    """Start `fn(*args)` in a thread of its own that exits once it returns."""
    executor = ThreadPoolExecutor(1, thread_name_prefix="job")
    future = executor.submit(fn, *args)
    executor.shutdown(wait=False)  # the thread finishes this one job, then exits
    return future


async def in_fresh_thread(fn: Callable[..., T], *args: object) -> T:
    return await asyncio.wrap_future(start_in_fresh_thread(fn, *args))


class JobRunner:
    """A slot is held until its job's thread is done, not just until its caller stops
    waiting: a timed-out or disconnected request cannot make room for more CPU work than
    `slots` while its job still runs (scoring jobs stop at the next segment)."""

    def __init__(self, slots: int) -> None:
        self.slots = slots
        self.limit = 3 * slots
        self.pending = 0
        self._semaphore = asyncio.Semaphore(slots)

    async def run(self, fn: Callable[..., T], *args: object) -> T:
        if self.pending >= self.limit:
            raise Overloaded(f"{self.pending} CPU jobs are running or waiting; retry shortly")
        self.pending += 1
        try:
            await self._semaphore.acquire()
        except BaseException:
            self.pending -= 1
            raise
        loop = asyncio.get_running_loop()

        def finished(_: Future[T]) -> None:
            with contextlib.suppress(RuntimeError):  # the loop closed first: nothing to free
                loop.call_soon_threadsafe(self._release)

        future = start_in_fresh_thread(_as_job, fn, *args)
        future.add_done_callback(finished)
        return await asyncio.wrap_future(future)

    def _release(self) -> None:
        self.pending -= 1
        self._semaphore.release()
