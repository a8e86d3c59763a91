import math

import pytest
import torch
from fastapi.testclient import TestClient

from models.bundle import load_bundle
from tests.app.conftest import assert_error

TEXT = "The Time Traveller smiled round at us. Then, still smiling faintly, he said"


def independent_nll(checkpoint_dir, ids: list[int], first: int) -> list[float]:
    model = load_bundle(checkpoint_dir / "char-lstm").model
    with torch.no_grad():
        logits, _ = model(torch.tensor([ids]))
    logp = torch.log_softmax(logits[0].double(), dim=-1)
    return [-float(logp[t - 1, ids[t]]) for t in range(first, len(ids))]


def test_perplexity_matches_an_independent_computation(client: TestClient, checkpoint_dir) -> None:
    body = client.post("/v1/perplexity", json={"text": TEXT, "return_tokens": True}).json()
    tokenizer = load_bundle(checkpoint_dir / "char-lstm").tokenizer
    ids = tokenizer.encode(TEXT).ids
    nll = independent_nll(checkpoint_dir, ids, 1)
    assert body["tokens_scored"] == len(ids) - 1 == len(body["tokens"])
    assert body["cross_entropy"] == pytest.approx(sum(nll) / len(nll), rel=1e-5)
    assert body["perplexity"] == pytest.approx(math.exp(sum(nll) / len(nll)), rel=1e-5)
    assert body["bits_per_token"] == pytest.approx(body["cross_entropy"] / math.log(2))
    assert "".join(t["token"] for t in body["tokens"]) == tokenizer.encode(TEXT).cleaned[1:]
    assert [t["logprob"] for t in body["tokens"]] == pytest.approx([-x for x in nll], abs=1e-4)


def test_context_is_read_not_scored(client: TestClient, checkpoint_dir) -> None:
    body = client.post("/v1/perplexity", json={"context": "the time ", "text": "traveller"}).json()
    tokenizer = load_bundle(checkpoint_dir / "char-lstm").tokenizer
    ids = tokenizer.encode("the time ").ids + tokenizer.encode("traveller").ids
    nll = independent_nll(checkpoint_dir, ids, 9)
    assert body["tokens_scored"] == 9
    assert body["cross_entropy"] == pytest.approx(sum(nll) / 9, rel=1e-5)


def test_unknown_words_are_counted(client: TestClient) -> None:
    body = client.post(
        "/v1/perplexity", json={"model": "word-gru", "text": "the zyzzyva time"}
    ).json()
    assert body["unknown_tokens"] == 1 and body["tokens_scored"] == 2


def test_limits(client: TestClient) -> None:
    assert_error(
        client.post("/v1/perplexity", json={"text": "a"}), 422, "text", "at least one token"
    )
    assert_error(client.post("/v1/perplexity", json={"text": "a" * 200_001}), 422, "text", "200000")
    assert_error(
        client.post("/v1/perplexity", json={"text": "ab", "context": "a" * 20_001}), 422, "context"
    )
    assert_error(
        client.post("/v1/perplexity", json={"text": "ab", "return_tokens": "yes"}),
        422,
        "return_tokens",
    )
