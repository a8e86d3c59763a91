"""The CPU-job runner: bounded, and a slot stays taken while its job still runs."""

from __future__ import annotations

import asyncio
import threading

import pytest

from app.errors import Overloaded
from app.jobs import JobRunner
from tests.app.conftest import PATIENCE_S


def test_a_slot_is_held_until_the_job_itself_ends() -> None:
    release = threading.Event()
    first_running = threading.Event()
    started: list[str] = []

    def job(name: str) -> str:
        started.append(name)
        first_running.set()
        release.wait(PATIENCE_S)
        return name

    async def main() -> None:
        runner = JobRunner(slots=1)
        first = asyncio.create_task(runner.run(job, "first"))
        assert await asyncio.to_thread(first_running.wait, PATIENCE_S)
        first.cancel()  # its caller gives up (a timeout, a client gone) ...
        with pytest.raises(asyncio.CancelledError):
            await first
        second = asyncio.create_task(runner.run(job, "second"))
        await asyncio.sleep(0)  # one turn of the loop: `second` runs up to its first wait
        assert runner.pending == 2 and not second.done()
        assert started == ["first"]  # ... but the job runs on and keeps its slot
        release.set()
        assert await asyncio.wait_for(second, PATIENCE_S) == "second"
        assert started == ["first", "second"] and runner.pending == 0

    asyncio.run(main())


def test_past_the_waiting_bound_jobs_are_refused() -> None:
    release = threading.Event()

    async def main() -> None:
        runner = JobRunner(slots=1)
        held = [asyncio.create_task(runner.run(release.wait, PATIENCE_S)) for _ in range(3)]
        await asyncio.sleep(0)  # one turn of the loop: each task runs up to its first wait
        assert runner.pending == runner.limit == 3
        with pytest.raises(Overloaded):
            await runner.run(release.wait, PATIENCE_S)
        release.set()
        await asyncio.gather(*held)
        assert runner.pending == 0

    asyncio.run(main())
