"""Bounded CPU work off the event loop (scoring, n-gram counting, forecast fitting).

`slots` jobs run at once in worker threads and up to `2 * slots` more may wait; beyond
that a request is refused at once with 503 and Retry-After, never queued without bound.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from app.errors import Overloaded

T = TypeVar("T")


class JobRunner:
    def __init__(self, slots: int) -> None:
        self.slots = slots
        self.limit = 3 * slots
        self.pending = 0
        self._semaphore = asyncio.Semaphore(slots)
        self._executor = ThreadPoolExecutor(slots, thread_name_prefix="job")

    async def run(self, fn: Callable[..., T], *args: object) -> T:
        if self.pending >= self.limit:
            raise Overloaded(f"{self.pending} CPU jobs are running or waiting; retry shortly")
        self.pending += 1
        try:
            async with self._semaphore:
                loop = asyncio.get_running_loop()
                return await loop.run_in_executor(self._executor, fn, *args)
        finally:
            self.pending -= 1

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
