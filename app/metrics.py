"""Prometheus metrics, one registry per app (docs/metrics.md lists every name).

Counters and histograms are updated where things happen (the request middleware, the
scheduler's first-token callback, scoring). Gauges and the generated-token count are read
from the schedulers and the registry when Prometheus scrapes, so the decoding loop carries
no metrics code. A per-app `CollectorRegistry` (not prometheus-client's global one) lets
several apps live in one process, as they do in the tests.
"""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Callable, Iterator, Mapping
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from app.registry import Registry
from app.scheduler import Scheduler

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
TTFT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
BUNDLE_STATES = ("ready", "failed")


class Observed(Protocol):
    """What the scrape-time metrics read (the lifespan's services)."""

    @property
    def schedulers(self) -> Mapping[str, Scheduler]: ...

    @property
    def registry(self) -> Registry: ...


class Metrics:
    def __init__(self, observed: Callable[[], Observed | None]) -> None:
        """`observed` returns what to read at scrape time, or None before the lifespan."""
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "rnnlm_http_requests",
            "HTTP requests answered, by method, route template and status",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "rnnlm_http_request_duration_seconds",
            "Time from request to the end of the response body (streams included)",
            ["method", "route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.time_to_first_token = Histogram(
            "rnnlm_time_to_first_token_seconds",
            "Time from a generation request's arrival at the scheduler to its first token",
            ["model"],
            buckets=TTFT_BUCKETS,
            registry=self.registry,
        )
        self.tokens_scored = Counter(
            "rnnlm_tokens_scored",
            "Tokens scored by teacher forcing (perplexity, echoed completion prompts)",
            ["model"],
            registry=self.registry,
        )
        self.registry.register(_Sampled(observed))


class _Sampled(Collector):
    """Values read from the live schedulers and registry at scrape time."""

    def __init__(self, observed: Callable[[], Observed | None]) -> None:
        self.observed = observed

    def collect(self) -> Iterator[Metric]:
        generated = CounterMetricFamily(
            "rnnlm_tokens_generated", "Tokens sampled by the decoder", labels=["model"]
        )
        steps = CounterMetricFamily(
            "rnnlm_scheduler_steps", "Batched decoding steps run", labels=["model"]
        )
        queue = GaugeMetricFamily(
            "rnnlm_scheduler_queue_depth",
            "Sequences waiting for a place in the decoding batch",
            labels=["model"],
        )
        batch = GaugeMetricFamily(
            "rnnlm_scheduler_batch_size", "Sequences in the decoding batch now", labels=["model"]
        )
        bundles = GaugeMetricFamily(
            "rnnlm_bundles_loaded",
            "Bundles found in the checkpoint directory, by state",
            labels=["state"],
        )
        observed = self.observed()
        states: Tally[str] = Tally()
        if observed is not None:
            for name, scheduler in sorted(observed.schedulers.items()):
                generated.add_metric([name], scheduler.tokens_generated)
                steps.add_metric([name], scheduler.steps)
                queue.add_metric([name], scheduler.queued)
                batch.add_metric([name], scheduler.active)
            states.update(e.state for e in observed.registry.entries.values())
        for state in BUNDLE_STATES:
            bundles.add_metric([state], states[state])
        yield from (generated, steps, queue, batch, bundles)
