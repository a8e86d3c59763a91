import json

import pytest
from fastapi.testclient import TestClient

from models.bundle import load_bundle
from models.generate import SamplingParams, generate
from tests.app.conftest import assert_error


def gen(client: TestClient, **body):
    response = client.post("/v1/generate", json=body)
    assert response.status_code == 200, response.text
    return response.json()


def test_greedy_matches_the_core_decoder(client: TestClient, checkpoint_dir) -> None:
    body = gen(client, prefix="The Time-Traveller ", temperature=0, max_new_tokens=40)
    assert body["prefix"] == "the time traveller "
    assert body["model"] == "char-lstm" and body["unknown_tokens"] == 0
    bundle = load_bundle(checkpoint_dir / "char-lstm")
    ids = bundle.tokenizer.encode("the time traveller ").ids
    expected = generate(
        bundle.model,
        ids,
        [SamplingParams(temperature=0, max_new_tokens=40)],
        bundle.tokenizer.detokenizer,
    )[0].text
    choice = body["choices"][0]
    assert choice == {"index": 0, "text": expected, "tokens": 40, "finish_reason": "length"}
    assert body["usage"] == {"prompt_tokens": 19, "completion_tokens": 40, "total_tokens": 59}


def test_same_seed_same_text_and_n_choices(client: TestClient) -> None:
    a = gen(client, prefix="time ", seed=5, n=3, max_new_tokens=30, model="char-gru")
    b = gen(client, prefix="time ", seed=5, n=1, max_new_tokens=30, model="char-gru")
    assert [c["index"] for c in a["choices"]] == [0, 1, 2]
    assert a["choices"][0]["text"] == b["choices"][0]["text"]
    assert len({c["text"] for c in a["choices"]}) == 3
    c = gen(client, prefix="time ", seed=6, max_new_tokens=30, model="char-gru")
    assert c["choices"][0]["text"] != b["choices"][0]["text"]
    assert isinstance(gen(client, prefix="time ")["seed"], int)  # a random seed is reported


def test_stop_strings_end_generation(client: TestClient) -> None:
    free = gen(client, prefix="the ", temperature=0, max_new_tokens=60)["choices"][0]["text"]
    stop = free[10:13]
    cut = gen(client, prefix="the ", temperature=0, max_new_tokens=60, stop=[stop])["choices"][0]
    assert cut["finish_reason"] == "stop"
    assert cut["text"] == free[: free.index(stop)]


def stream(client: TestClient, **body) -> list:
    with client.stream("POST", "/v1/generate", json={**body, "stream": True}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in response.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"
    return [json.loads(line[6:]) for line in lines[:-1]]


@pytest.mark.parametrize("extra", [{"temperature": 0}, {"seed": 11, "n": 2, "top_k": 5}])
def test_streamed_tokens_join_to_the_plain_text(client: TestClient, extra) -> None:
    body = {"prefix": "machine ", "max_new_tokens": 25, **extra}
    plain = gen(client, **body)
    events = stream(client, **body)
    head, deltas, usage = events[0], events[1:-1], events[-1]
    assert head["prefix"] == "machine "
    for choice in plain["choices"]:
        mine = [d for d in deltas if d["index"] == choice["index"]]
        assert "".join(d["text"] for d in mine) == choice["text"]
        assert len(mine) == 25  # one event per token
        assert mine[-1]["finish_reason"] == "length"
    assert usage["usage"] == plain["usage"]


def test_word_level_model(client: TestClient) -> None:
    body = gen(client, model="word-gru", prefix="The time", temperature=0, max_new_tokens=5)
    text = body["choices"][0]["text"]
    assert text.startswith(" ") and len(text.split()) == 5
    assert_error(
        client.post("/v1/generate", json={"model": "word-gru", "prefix": "!!"}), 422, "prefix"
    )


@pytest.mark.parametrize(
    ("body", "param", "words"),
    [
        ({"prefix": ""}, "prefix", ["at least 1"]),
        ({"prefix": "a" * 4001}, "prefix", ["4000"]),
        ({"prefix": "a", "max_new_tokens": 2001}, "max_new_tokens", ["2000"]),
        ({"prefix": "a", "max_new_tokens": 0}, "max_new_tokens", ["1"]),
        ({"prefix": "a", "max_new_tokens": "5"}, "max_new_tokens", ["integer"]),
        ({"prefix": "a", "temperature": 5.5}, "temperature", ["5"]),
        ({"prefix": "a", "top_p": 0}, "top_p", ["greater than 0"]),
        ({"prefix": "a", "top_k": 1001}, "top_k", ["1000"]),
        ({"prefix": "a", "n": 17}, "n", ["16"]),
        ({"prefix": "a", "seed": -1}, "seed", ["0"]),
        ({"prefix": "a", "stop": ["a", "b", "c", "d", "e"]}, "stop", ["4"]),
        ({"prefix": "a", "stop": ["The"]}, "stop.0", ["a-z", "never be generated"]),
        ({"prefix": "a", "stop": [""]}, "stop", ["1 to 64"]),
        ({"prefix": "a", "model": "../etc"}, "model", ["pattern"]),
        ({"prefix": "a", "colour": "red"}, "colour", ["Extra inputs"]),
        ({"prompt": "a"}, "prefix", ["required"]),
    ],
)
def test_invalid_requests_name_the_field_and_limit(client: TestClient, body, param, words) -> None:
    assert_error(client.post("/v1/generate", json=body), 422, param, *words)


def test_unknown_model_and_bad_json(client: TestClient) -> None:
    assert_error(
        client.post("/v1/generate", json={"prefix": "a", "model": "gpt"}), 404, "model", "char-gru"
    )
    assert_error(
        client.post("/v1/generate", json={"prefix": "a", "model": "sine-mlp"}), 404, "model"
    )
    bad = client.post(
        "/v1/generate", content=b"{oops", headers={"content-type": "application/json"}
    )
    assert_error(bad, 400, "body", "JSON")


JS_MAX_SAFE_INTEGER = 2**53 - 1  # the largest integer a JavaScript number holds exactly


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/generate", {"prefix": "time ", "max_new_tokens": 3}),
        ("/v1/completions", {"prompt": "time ", "max_tokens": 3}),
    ],
)
def test_seeds_stay_within_what_javascript_holds_exactly(client: TestClient, path, body) -> None:
    assert client.post(path, json={**body, "seed": JS_MAX_SAFE_INTEGER}).status_code == 200
    too_big = client.post(path, json={**body, "seed": JS_MAX_SAFE_INTEGER + 1})
    assert_error(too_big, 422, "seed", str(JS_MAX_SAFE_INTEGER))


def test_the_largest_seed_comes_back_exactly_and_random_seeds_fit_in_a_double(
    client: TestClient,
) -> None:
    body = {"prefix": "time ", "max_new_tokens": 3, "n": 2}
    out = gen(client, **body, seed=JS_MAX_SAFE_INTEGER)
    assert out["seed"] == JS_MAX_SAFE_INTEGER
    random_seeds = [gen(client, **body)["seed"] for _ in range(20)]
    assert all(0 <= s <= JS_MAX_SAFE_INTEGER for s in random_seeds), random_seeds
