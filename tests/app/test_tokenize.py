"""POST /v1/tokenize and /v1/detokenize with the bundles' own vocabularies."""

import pytest
from fastapi.testclient import TestClient

from tests.app.conftest import assert_error


def post(client: TestClient, path: str, **body) -> dict:
    response = client.post(path, json=body)
    assert response.status_code == 200, response.text
    return response.json()


def test_tokenize_cleans_and_counts_unknown_tokens(client: TestClient) -> None:
    out = post(client, "/v1/tokenize", model="word-gru", text="The Time-Traveller zyzzyva!")
    assert out["model"] == "word-gru"
    assert out["cleaned"] == "the time traveller zyzzyva "
    assert out["tokens"] == ["the", "time", "traveller", "zyzzyva"]
    assert out["count"] == 4 and out["unknown_tokens"] == 1
    assert out["ids"][3] == 0 and 0 not in out["ids"][:3]


@pytest.mark.parametrize("model", ["char-lstm", "word-gru"])
def test_detokenize_inverts_tokenize(client: TestClient, model: str) -> None:
    text = "the time traveller was expounding a recondite matter"
    ids = post(client, "/v1/tokenize", model=model, text=text)["ids"]
    assert post(client, "/v1/detokenize", model=model, ids=ids) == {"model": model, "text": text}


def test_default_model_and_empty_inputs(client: TestClient) -> None:
    assert post(client, "/v1/tokenize", text="")["ids"] == []
    assert post(client, "/v1/detokenize", ids=[]) == {"model": "char-lstm", "text": ""}


def test_ids_outside_the_vocabulary_are_422_naming_the_id(client: TestClient) -> None:
    size = client.get("/v1/models/char-lstm").json()["vocab_size"]
    response = client.post("/v1/detokenize", json={"ids": [1, 2, size]})
    assert_error(response, 422, "ids.2", str(size), f"0 to {size - 1}")
    assert_error(client.post("/v1/detokenize", json={"ids": [1, -1]}), 422, "ids.1")
    assert_error(client.post("/v1/detokenize", json={"ids": ["a"]}), 422, "ids.0")


def test_size_limits_and_unknown_models(client: TestClient) -> None:
    assert_error(client.post("/v1/tokenize", json={"text": "a" * 200_001}), 422, "text")
    assert_error(client.post("/v1/detokenize", json={"ids": [1] * 200_001}), 422, "ids")
    response = client.post("/v1/tokenize", json={"model": "sine-mlp", "text": "a"})
    assert_error(response, 404, "model")
