"""The CPU-job runner: bounded, and a slot stays taken while its job still runs."""

from __future__ import annotations

import asyncio
import threading

import pytest

from app.errors import Overloaded
from app.jobs import JobRunner


def test_a_slot_is_held_until_the_job_itself_ends() -> None:
    release = threading.Event()
    started: list[str] = []

    def job(name: str) -> str:
        started.append(name)
        release.wait(10)
        return name

    async def main() -> None:
        runner = JobRunner(slots=1)
        first = asyncio.create_task(runner.run(job, "first"))
        await asyncio.sleep(0.05)
        first.cancel()  # its caller gives up (a timeout, a client gone) ...
        second = asyncio.create_task(runner.run(job, "second"))
        await asyncio.sleep(0.1)
        assert started == ["first"]  # ... but the job runs on and keeps its slot
        release.set()
        assert await asyncio.wait_for(second, 10) == "second"
        assert runner.pending == 0

    asyncio.run(main())


def test_past_the_waiting_bound_jobs_are_refused() -> None:
    release = threading.Event()

    async def main() -> None:
        runner = JobRunner(slots=1)
        held = [asyncio.create_task(runner.run(release.wait, 10)) for _ in range(3)]
        await asyncio.sleep(0.05)
        with pytest.raises(Overloaded):
            await runner.run(release.wait, 10)
        release.set()
        await asyncio.gather(*held)

    asyncio.run(main())
