"""Generation controls through the service: bounds, seeds alone or batched, logprobs, beams.

How each control transforms the model's logits is checked against references in
tests/models/test_controls.py and test_beams.py; here: that the service hands them to
the engine intact, keeps seeded texts identical whatever else decodes beside them and
whether they stream, and answers bad values with a 422 naming the field.
"""

from __future__ import annotations

import asyncio
import json

import pytest
from fastapi.testclient import TestClient

from app import streams
from app.scheduler import Scheduler
from app.schemas.generate import GenerateRequest, GenerateResponse
from models.bundle import load_bundle
from models.generate import SamplingParams, generate
from tests.app.conftest import assert_error

# One body per control (sampled unless it says temperature 0), as a client sends them.
CONTROLS: dict[str, dict[str, object]] = {
    "repetition_penalty": {"repetition_penalty": 1.5, "penalty_window": 32},
    "presence_penalty": {"presence_penalty": 1.0},
    "frequency_penalty": {"frequency_penalty": 0.5, "temperature": 0.7},
    "no_repeat_ngram_size": {"no_repeat_ngram_size": 4, "temperature": 0},
    "penalize_prompt": {"presence_penalty": 1.5, "penalize_prompt": True},
    "min_p": {"min_p": 0.1},
    "typical_p": {"typical_p": 0.7},
    "top_k_top_p": {"top_k": 5, "top_p": 0.8},
    "logit_bias": {"logit_bias": {"e": -100, " ": 2.0, "3": 1.5}},
    "logprobs": {"logprobs": 3, "top_k": 10},
}


def gen(client: TestClient, **body: object) -> dict:
    response = client.post("/v1/generate", json=body)
    assert response.status_code == 200, response.text
    return response.json()


def stream(client: TestClient, **body: object) -> list[dict]:
    with client.stream("POST", "/v1/generate", json={**body, "stream": True}) as response:
        assert response.status_code == 200, response.read()
        lines = [line for line in response.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"
    return [json.loads(line[6:]) for line in lines[:-1]]


@pytest.mark.parametrize("name", list(CONTROLS))
def test_streamed_or_not_same_text_and_logprobs(client: TestClient, name: str) -> None:
    body = {"prefix": "the time ", "max_new_tokens": 30, "seed": 21, "n": 2, **CONTROLS[name]}
    plain = gen(client, **body)["choices"]
    events = stream(client, **body)[1:-1]
    for choice in plain:
        mine = [e for e in events if e["index"] == choice["index"]]
        assert "".join(e["text"] for e in mine) == choice["text"]
        if "logprobs" in body:
            assert [t for e in mine for t in e["logprobs"]] == choice["logprobs"]
            assert mine[-1]["logprob"] == pytest.approx(choice["logprob"])
        else:
            assert "logprobs" not in choice and "logprobs" not in mine[0]


def engine_run(bundle, jobs: list[tuple[list[int], list[SamplingParams], bool]]) -> list[list[str]]:
    """Submit each job to one engine as the previous one is decoding: texts per job."""

    async def main() -> list[list[str]]:
        scheduler = Scheduler(
            name="m", model=bundle.model, tokenizer=bundle.tokenizer, max_batch=64, max_queue=64
        )
        scheduler.start()
        try:
            requests = []
            for prefix, params, stream in jobs:
                requests.append(scheduler.submit(prefix, params, stream=stream))
                if stream:  # the next job joins once this one has decoded a step
                    first = await requests[-1].queue.get()
                    requests[-1].queue.put_nowait(first)
            out = await streams.collect(requests, timeout=120)
            return [[c.text for c in completions] for completions in out]
        finally:
            await scheduler.stop()

    return asyncio.run(main())


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("name", list(CONTROLS))
def test_same_seed_same_text_alone_or_batched(checkpoint_dir, name: str, stream: bool) -> None:
    bundle = load_bundle(checkpoint_dir / "char-lstm")
    tokenizer = bundle.tokenizer
    body = GenerateRequest(prefix="the time ", max_new_tokens=25, seed=5, **CONTROLS[name])
    params = body.to_params(5, tokenizer, ())
    prefix = tokenizer.encode("the time ").ids
    alone = [t.text for t in generate(bundle.model, prefix, params, tokenizer.detokenizer)]
    others = [
        ([5, 6, 7], [SamplingParams(seed=1, max_new_tokens=40, repetition_penalty=1.3)], True),
        ([9] * 12, [SamplingParams(seed=2, top_k=3), SamplingParams(temperature=0)], True),
        ([4], [SamplingParams(temperature=0, num_beams=3, max_new_tokens=30)] * 2, False),
        ([3, 3], [SamplingParams(seed=3, max_new_tokens=8, logprobs=2)], stream),
    ]
    texts = engine_run(bundle, [*others[:2], (prefix, params, stream), *others[2:]])
    assert texts[2] == alone


def test_beam_search_through_the_service(client: TestClient, checkpoint_dir) -> None:
    body = {"prefix": "the time ", "max_new_tokens": 20, "num_beams": 4, "n": 3, "stop": ["e "]}
    out = gen(client, **body, logprobs=1)
    bundle = load_bundle(checkpoint_dir / "char-lstm")
    ids = bundle.tokenizer.encode("the time ").ids
    params = [SamplingParams(temperature=0, num_beams=4, max_new_tokens=20, stop=("e ",))] * 3
    expected = generate(bundle.model, ids, params, bundle.tokenizer.detokenizer)
    assert [c["text"] for c in out["choices"]] == [b.text for b in expected]
    assert [c["logprob"] for c in out["choices"]] == pytest.approx([b.logprob for b in expected])
    for choice in out["choices"]:  # the beam's total is its tokens' log-probabilities' sum
        assert sum(t["logprob"] for t in choice["logprobs"]) == pytest.approx(choice["logprob"])
    again = gen(client, **body, seed=99)  # deterministic: no seed matters
    assert [c["text"] for c in again["choices"]] == [c["text"] for c in out["choices"]]


@pytest.fixture(scope="module")
def vocab_size(checkpoint_dir) -> int:
    return len(load_bundle(checkpoint_dir / "char-lstm").tokenizer.vocab)


def test_logprobs_cover_the_whole_vocabulary(client: TestClient, vocab_size: int) -> None:
    out = gen(client, prefix="the ", max_new_tokens=5, temperature=0, logprobs=1000)
    GenerateResponse.model_validate(out)  # the plain-JSON lists match their documented schema
    for token in out["choices"][0]["logprobs"]:
        assert len(token["top"]) == vocab_size  # every token of the vocabulary, best first
        assert token["top"][0] == {k: token[k] for k in ("token", "id", "logprob")}  # greedy
        assert [t["logprob"] for t in token["top"]] == sorted(
            (t["logprob"] for t in token["top"]), reverse=True
        )
    text = out["choices"][0]["text"]
    assert "".join(t["token"] for t in out["choices"][0]["logprobs"]) == text


def test_logit_bias_bans_and_favours_by_text_or_id(client: TestClient, checkpoint_dir) -> None:
    a = load_bundle(checkpoint_dir / "char-lstm").tokenizer.vocab.token_to_idx["a"]
    body = {"prefix": "the time ", "max_new_tokens": 60, "temperature": 0}
    banned = gen(client, **body, logit_bias={"e": -100, str(a): -100})["choices"][0]["text"]
    assert "e" not in banned and "a" not in banned and len(banned) == 60
    spaced = gen(client, **body, logit_bias={" ": 5})["choices"][0]["text"]
    assert spaced.count(" ") > gen(client, **body)["choices"][0]["text"].count(" ")


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"repetition_penalty": 0}, "repetition_penalty"),
        ({"repetition_penalty": 10.5}, "repetition_penalty"),
        ({"presence_penalty": 2.5}, "presence_penalty"),
        ({"frequency_penalty": -3}, "frequency_penalty"),
        ({"min_p": 0}, "min_p"),
        ({"min_p": 1.01}, "min_p"),
        ({"typical_p": 0}, "typical_p"),
        ({"typical_p": 1.5}, "typical_p"),
        ({"no_repeat_ngram_size": 21}, "no_repeat_ngram_size"),
        ({"no_repeat_ngram_size": -1}, "no_repeat_ngram_size"),
        ({"penalty_window": 9000}, "penalty_window"),
        ({"penalize_prompt": "yes"}, "penalize_prompt"),
        ({"num_beams": 0}, "num_beams"),
        ({"num_beams": 17}, "num_beams"),
        ({"length_penalty": 11}, "length_penalty"),
        ({"logprobs": 1001}, "logprobs"),
        ({"logprobs": -1}, "logprobs"),
        ({"logit_bias": {"e": 100.5}}, "logit_bias"),
        ({"logit_bias": {str(i): 1 for i in range(301)}}, "logit_bias"),
        ({"num_beams": 2, "temperature": 0.8}, "num_beams"),
        ({"num_beams": 2, "top_k": 5}, "num_beams"),
        ({"num_beams": 2, "stream": True}, "num_beams"),
        ({"num_beams": 2, "n": 3}, "n"),
        ({"n": 16, "max_new_tokens": 2000, "logprobs": 100}, "logprobs"),
    ],
)
def test_bad_controls_are_422_naming_the_field(client: TestClient, extra, param) -> None:
    response = client.post("/v1/generate", json={"prefix": "the ", **extra})
    error = assert_error(response, 422)
    assert error["param"].split(".")[0] == param, error


@pytest.mark.parametrize("key", ["é", "<pad>", "VOCAB", "99999", "-1", "ee"])
def test_unknown_logit_bias_tokens_name_the_vocabulary_size(
    client: TestClient, vocab_size: int, key: str
) -> None:
    key = key.replace("VOCAB", str(vocab_size))  # the first id past the vocabulary
    response = client.post("/v1/generate", json={"prefix": "the ", "logit_bias": {key: 1}})
    assert_error(response, 422, "logit_bias", repr(key), f"{vocab_size} tokens")


def test_logit_bias_on_completions_takes_ids_only(client: TestClient, vocab_size: int) -> None:
    response = client.post("/v1/completions", json={"prompt": "the ", "logit_bias": {"e": 1}})
    assert_error(response, 422, "logit_bias", "'e'", f"{vocab_size} tokens")
    past = {str(vocab_size): 1}
    response = client.post("/v1/completions", json={"prompt": "the ", "logit_bias": past})
    assert_error(response, 422, "logit_bias", f"{vocab_size} tokens")


def test_banning_every_token_is_422(client: TestClient, vocab_size: int) -> None:
    everything = {str(i): -100 for i in range(1, vocab_size)}
    response = client.post("/v1/generate", json={"prefix": "the ", "logit_bias": everything})
    assert_error(response, 422, "logit_bias", "every token")


def test_best_of_returns_the_most_likely_candidates(client: TestClient) -> None:
    body = {"prompt": ["the ", "time "], "max_tokens": 15, "seed": 3, "logprobs": 0}
    four = client.post("/v1/completions", json={**body, "n": 4}).json()["choices"]
    best = client.post("/v1/completions", json={**body, "n": 2, "best_of": 4}).json()
    for p in range(2):
        candidates = four[4 * p : 4 * p + 4]
        totals = [sum(c["logprobs"]["token_logprobs"]) for c in candidates]
        ranked = sorted(range(4), key=lambda i: -totals[i])[:2]
        assert [c["text"] for c in best["choices"][2 * p : 2 * p + 2]] == [
            candidates[i]["text"] for i in ranked
        ]
    assert [c["index"] for c in best["choices"]] == [0, 1, 2, 3]
    assert best["usage"]["completion_tokens"] == 8 * 15  # every candidate was decoded
    plain = client.post("/v1/completions", json={**body, "n": 1, "best_of": 4, "logprobs": None})
    assert plain.json()["choices"][0]["logprobs"] is None  # ranked, but not asked to show
