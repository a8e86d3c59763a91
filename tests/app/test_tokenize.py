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


def test_tokenize_and_models_show_each_bundles_rule(client: TestClient) -> None:
    book = client.post("/v1/tokenize", json={"model": "char-lstm", "text": "Hi!"}).json()
    assert book["tokenizer"]["normalize"] == "book" and book["cleaned"] == "hi "
    raw = client.post("/v1/tokenize", json={"model": "byte-gru", "text": "Hé!\n"}).json()
    assert raw["tokenizer"] == {
        "normalize": "none",
        "level": "byte",
        "line_join": "space",
        "description": "normalize none: the text as given, after NFC, byte level",
    }
    assert raw["cleaned"] == "Hé!\n" and raw["ids"] == list("Hé!\n".encode())
    assert raw["tokens"] == ["H", "<0xC3>", "<0xA9>", "!", "\n"] and raw["unknown_tokens"] == 0
    back = client.post("/v1/detokenize", json={"model": "byte-gru", "ids": raw["ids"]}).json()
    assert back["text"] == "Hé!\n"
    cards = {m["id"]: m for m in client.get("/v1/models").json()["data"]}
    assert cards["byte-gru"]["kind"] == "byte-lm" and cards["byte-gru"]["vocab_size"] == 256
    assert cards["char-lstm"]["tokenizer"]["normalize"] == "book"
    assert cards["sine-mlp"]["tokenizer"] is None


def test_stop_strings_a_model_can_never_generate_are_refused(client: TestClient) -> None:
    refused = client.post("/v1/generate", json={"prefix": "the ", "stop": ["the", "The End."]})
    assert_error(refused, 422, "stop.1", "never be generated", "a-z")
    ok = client.post(
        "/v1/generate",
        json={
            "model": "byte-gru",
            "prefix": "The ",
            "stop": ["The End.", "€"],
            "max_new_tokens": 5,
        },
    )
    assert ok.status_code == 200, ok.text
    cleaned = client.post(
        "/v1/completions",
        json={"model": "char-lstm", "prompt": "the ", "stop": ["\n\n"], "max_tokens": 3},
    )
    assert cleaned.status_code == 200  # completions apply the bundle's rule to stop strings


def test_detokenize_takes_tokens_as_vllm_names_them(client: TestClient) -> None:
    ids = post(client, "/v1/tokenize", text="the time machine")["ids"]
    by_tokens = post(client, "/v1/detokenize", tokens=ids)
    assert by_tokens == post(client, "/v1/detokenize", ids=ids)
    assert by_tokens["text"] == "the time machine"
    size = client.get("/v1/models/char-lstm").json()["vocab_size"]
    assert_error(client.post("/v1/detokenize", json={"tokens": [1, size]}), 422, "tokens.1")
    both = client.post("/v1/detokenize", json={"ids": ids, "tokens": ids})
    assert_error(both, 422, None, "exactly one", "ids", "tokens")
    assert_error(client.post("/v1/detokenize", json={}), 422, None, "exactly one")
