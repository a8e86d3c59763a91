"""The sine experiment for the forecast routes: the committed forecaster for the book's
parameters, a fresh (bounded) fit for any others, and a cache of the last results.

A fit runs as one CPU job (app/jobs.py) however many requests ask for it at once: they
share it. It stops at its next minibatch when no request waits for it any more (each
gives up at the request time limit, or when its client leaves), so an abandoned fit
costs no one else a job slot.
"""

from __future__ import annotations

import asyncio
import functools
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import asdict, dataclass

from app.errors import Timeout
from app.jobs import JobRunner
from models.bundle import Bundle
from models.forecast import Forecaster, ForecastResult, SineConfig, run_experiment

CACHE_SIZE = 32  # results (each at most a few hundred kB: T <= 4000, 8 horizons)

Key = tuple[object, ...]
Outcome = tuple[str, ForecastResult]  # (model source, result)


@dataclass(eq=False)
class _Fit:
    """A computation in progress and the requests waiting for it."""

    future: asyncio.Future[Outcome]
    stop: threading.Event
    waiters: int = 0


class Forecasts:
    def __init__(self, bundles: dict[str, Bundle], jobs: JobRunner) -> None:
        self.bundles = bundles  # ready forecaster bundles by name
        self.jobs = jobs
        self._cache: OrderedDict[Key, Outcome] = OrderedDict()
        self._running: dict[Key, _Fit] = {}

    def waiters(self) -> int:
        """Requests waiting for a computation now."""
        return sum(fit.waiters for fit in self._running.values())

    async def run(self, config: SineConfig, k_steps: tuple[int, ...], timeout: float) -> Outcome:
        """The experiment's result within `timeout` seconds (Timeout past it)."""
        key = (*asdict(config).values(), k_steps)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        fit = self._running.get(key)
        if fit is None:
            stop = threading.Event()
            job = self.jobs.run(self._compute, config, k_steps, stop.is_set)
            fit = self._running[key] = _Fit(asyncio.ensure_future(job), stop)
            fit.future.add_done_callback(functools.partial(self._finished, key))
        fit.waiters += 1
        try:
            return await asyncio.wait_for(asyncio.shield(fit.future), timeout)
        except TimeoutError:
            raise Timeout(
                f"the forecast ran past the {timeout:g} s request limit", code="timeout"
            ) from None
        finally:
            fit.waiters -= 1
            if not fit.waiters and not fit.future.done():
                fit.stop.set()  # the worker stops at its next minibatch
                fit.future.cancel()  # and a job still waiting for a slot never starts

    def _finished(self, key: Key, future: asyncio.Future[Outcome]) -> None:
        self._running.pop(key, None)
        if future.cancelled() or future.exception() is not None:
            return  # an error reaches the requests waiting; none are left after a stop
        self._cache[key] = future.result()
        while len(self._cache) > CACHE_SIZE:
            self._cache.popitem(last=False)

    def _bundle_for(self, config: SineConfig) -> tuple[str, Forecaster] | None:
        for name, bundle in sorted(self.bundles.items()):
            trained = bundle.config.get("training", {}).get("sine")
            if trained is not None and SineConfig(**trained) == config:
                assert isinstance(bundle.model, Forecaster)
                return name, bundle.model
        return None

    def _compute(
        self, config: SineConfig, k_steps: tuple[int, ...], should_stop: Callable[[], bool]
    ) -> Outcome:
        """Blocking (a job's thread): the committed model's predictions, or a fresh fit."""
        found = self._bundle_for(config)
        if found is not None:
            name, model = found
            return name, run_experiment(config, model, k_steps)[1]
        return "fitted", run_experiment(config, None, k_steps, should_stop=should_stop)[1]
