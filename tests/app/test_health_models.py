from fastapi.testclient import TestClient

from app.main import create_app
from tests.app.conftest import assert_error, make_settings, wait_ready


def test_health_and_ready_list_every_bundle(client: TestClient) -> None:
    assert client.get("/health").json() == {"status": "ok"}
    ready = client.get("/ready")
    assert ready.status_code == 200
    body = ready.json()
    states = {b["name"]: b["state"] for b in body["bundles"]}
    assert states == {
        "broken": "failed",
        "byte-gru": "ready",
        "char-gru": "ready",
        "char-lstm": "ready",
        "sine-mlp": "ready",
        "word-gru": "ready",
    }
    broken = next(b for b in body["bundles"] if b["name"] == "broken")
    assert "not an rnnlm bundle" in broken["reason"] or "format" in broken["reason"]
    assert body["status"] == "degraded" and body["default_model"] == "char-lstm"


def test_ready_is_503_until_the_bundles_are_loaded(checkpoint_dir, slow_loading) -> None:
    with TestClient(create_app(make_settings(checkpoint_dir))) as c:
        assert c.get("/health").status_code == 200
        assert c.get("/ready").status_code == 503
        early = c.post("/v1/generate", json={"prefix": "the "})
        assert_error(early, 503, None, "loading")
        assert "retry-after" in early.headers
        slow_loading.set()
        wait_ready(c)


def test_models_list_is_openai_shaped_with_metadata(client: TestClient) -> None:
    body = client.get("/v1/models").json()
    assert body["object"] == "list"
    cards = {m["id"]: m for m in body["data"]}
    assert set(cards) == {"byte-gru", "char-gru", "char-lstm", "sine-mlp", "word-gru"}
    lstm = cards["char-lstm"]
    assert (
        lstm["object"] == "model" and lstm["kind"] == "char-lm" and lstm["architecture"] == "lstm"
    )
    assert lstm["vocab_size"] == 25 and lstm["parameters"] > 1000 and lstm["device"] == "cpu"
    assert lstm["val_perplexity"] > 1 and lstm["train_perplexity"] > 1 and lstm["default"]
    assert cards["sine-mlp"]["kind"] == "forecaster" and cards["sine-mlp"]["vocab_size"] is None
    assert client.get("/v1/models/char-gru").json()["id"] == "char-gru"


def test_unknown_and_broken_models_are_404_with_the_known_names(client: TestClient) -> None:
    error = assert_error(client.get("/v1/models/nope"), 404, "model", "char-lstm")
    assert error["code"] == "model_not_found"
    assert_error(client.get("/v1/models/broken"), 404, "model", "newer")
    assert_error(client.get("/v1/models/..%2F..%2Fetc"), 404)
