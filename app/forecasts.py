"""The sine experiment for the forecast routes: the committed forecaster for the book's
parameters, a fresh (bounded) fit for any others, and a small cache of recent results."""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import asdict

from models.bundle import Bundle
from models.forecast import Forecaster, ForecastResult, SineConfig, run_experiment

CACHE_SIZE = 32


class Forecasts:
    def __init__(self, bundles: dict[str, Bundle]) -> None:
        self.bundles = bundles  # ready forecaster bundles by name
        self._cache: OrderedDict[tuple[object, ...], tuple[str, ForecastResult]] = OrderedDict()
        self._lock = threading.Lock()

    def _bundle_for(self, config: SineConfig) -> tuple[str, Forecaster] | None:
        for name, bundle in sorted(self.bundles.items()):
            trained = bundle.config.get("training", {}).get("sine")
            if trained is not None and SineConfig(**trained) == config:
                assert isinstance(bundle.model, Forecaster)
                return name, bundle.model
        return None

    def run(self, config: SineConfig, k_steps: tuple[int, ...]) -> tuple[str, ForecastResult]:
        """Blocking: call from a worker thread. Returns (model source, result)."""
        key = (*asdict(config).values(), k_steps)
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        found = self._bundle_for(config)
        if found is not None:
            name, model = found
            _, result = run_experiment(config, model, k_steps)
        else:
            name = "fitted"
            _, result = run_experiment(config, None, k_steps)
        with self._lock:
            self._cache[key] = (name, result)
            while len(self._cache) > CACHE_SIZE:
                self._cache.popitem(last=False)
        return name, result
