"""GET /metrics: Prometheus text format, one registry per app, every name in docs/metrics.md."""

from __future__ import annotations

import re
from pathlib import Path

from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from app.main import create_app
from tests.app.conftest import make_settings, wait_ready

DOCS = Path(__file__).resolve().parents[2] / "docs" / "metrics.md"


def scrape(client: TestClient) -> dict[tuple[str, frozenset], float]:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


def value(samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def test_requests_are_counted_by_route_template_and_status(client: TestClient) -> None:
    route = {"method": "GET", "route": "/v1/models/{model_id}"}
    before = scrape(client)
    client.get("/v1/models/char-gru")
    client.get("/v1/models/char-lstm")
    client.get("/v1/models/nothing-here")
    client.get("/no/such/path")
    after = scrape(client)
    for status, more in (("200", 2), ("404", 1)):
        name = "rnnlm_http_requests_total"
        assert (
            value(after, name, **route, status=status) - value(before, name, **route, status=status)
            == more
        )
    count = "rnnlm_http_request_duration_seconds_count"
    assert value(after, count, **route) - value(before, count, **route) == 3
    unmatched = {"method": "GET", "route": "unmatched", "status": "404"}
    assert value(after, "rnnlm_http_requests_total", **unmatched) >= 1
    assert not any("/no/such/path" in str(labels) for _, labels in after)


def test_tokens_generated_and_scored_and_time_to_first_token(client: TestClient) -> None:
    model = {"model": "char-lstm"}
    before = scrape(client)
    client.post("/v1/generate", json={"prefix": "the ", "n": 2, "max_new_tokens": 10})
    client.post("/v1/perplexity", json={"text": "the time traveller"})  # 17 scored
    client.post(
        "/v1/completions", json={"prompt": "the time", "max_tokens": 3, "echo": True, "logprobs": 0}
    )  # 7 scored, 3 generated
    after = scrape(client)

    def grew(name: str) -> float:
        return value(after, name, **model) - value(before, name, **model)

    assert grew("rnnlm_tokens_generated_total") == 23
    assert grew("rnnlm_tokens_scored_total") == 24
    assert grew("rnnlm_time_to_first_token_seconds_count") == 2
    assert grew("rnnlm_scheduler_steps_total") >= 10


def test_gauges_sampled_from_the_schedulers_and_registry(client: TestClient) -> None:
    samples = scrape(client)
    assert value(samples, "rnnlm_bundles_loaded", state="ready") == 5
    assert value(samples, "rnnlm_bundles_loaded", state="failed") == 1
    for model in ("char-lstm", "char-gru", "word-gru"):
        assert ("rnnlm_scheduler_queue_depth", frozenset({("model", model)})) in samples
        assert value(samples, "rnnlm_scheduler_batch_size", model=model) == 0  # idle


def test_metrics_answer_while_loading_and_apps_keep_their_own(checkpoint_dir, slow_loading):
    settings = make_settings(checkpoint_dir)
    with TestClient(create_app(settings)) as a, TestClient(create_app(settings)) as b:
        a.get("/ready")
        loading = scrape(a)
        assert value(loading, "rnnlm_bundles_loaded", state="ready") == 0
        ready = {"method": "GET", "route": "/ready", "status": "503"}
        assert value(loading, "rnnlm_http_requests_total", **ready) == 1
        assert value(scrape(b), "rnnlm_http_requests_total", **ready) == 0  # its own registry
        slow_loading.set()
        wait_ready(a)


def test_every_metric_is_documented(client: TestClient) -> None:
    client.post("/v1/generate", json={"prefix": "the ", "max_new_tokens": 2})
    client.post("/v1/perplexity", json={"text": "the time"})  # every labelled family has samples
    documented = set(re.findall(r"`(rnnlm_[a-z_]+)`", DOCS.read_text()))
    families = text_string_to_metric_families(client.get("/metrics").text)
    exposed = {
        f"{f.name}_total" if f.type == "counter" else f.name
        for f in families
        if not f.name.endswith("_created")  # prometheus-client's own timestamps
    }
    assert exposed == documented
