"""POST /v1/completions: OpenAI's legacy completions over the tiny bundles."""

import json
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from models.bundle import load_bundle
from models.score import score_ids
from tests.app.conftest import assert_error, make_settings, wait_ready


def complete(client: TestClient, **body) -> dict:
    response = client.post("/v1/completions", json=body)
    assert response.status_code == 200, response.text
    return response.json()


def generate_text(client: TestClient, **body) -> str:
    response = client.post("/v1/generate", json=body)
    assert response.status_code == 200, response.text
    return response.json()["choices"][0]["text"]


def test_greedy_completion_is_the_generate_text(client: TestClient) -> None:
    out = complete(client, model="char-gru", prompt="The Time ", max_tokens=30, temperature=0)
    assert out["object"] == "text_completion" and out["id"].startswith("cmpl-")
    assert out["model"] == "char-gru" and isinstance(out["created"], int)
    expected = generate_text(
        client, model="char-gru", prefix="the time ", max_new_tokens=30, temperature=0
    )
    assert out["choices"] == [
        {"index": 0, "text": expected, "logprobs": None, "finish_reason": "length"}
    ]
    assert out["usage"] == {"prompt_tokens": 9, "completion_tokens": 30, "total_tokens": 39}


def test_prompt_list_and_n_are_prompt_major_and_seeded(client: TestClient) -> None:
    out = complete(
        client, model="char-gru", prompt=["the ", "machine "], n=3, max_tokens=20, seed=7
    )
    assert [c["index"] for c in out["choices"]] == list(range(6))
    for p, prefix in enumerate(["the ", "machine "]):
        for i in range(3):
            # choice i of a prompt samples with seed + i, as /v1/generate does
            alone = generate_text(
                client, model="char-gru", prefix=prefix, seed=7 + i, max_new_tokens=20
            )
            assert out["choices"][p * 3 + i]["text"] == alone
    assert out["usage"]["prompt_tokens"] == 4 + 8
    assert out["usage"]["completion_tokens"] == 6 * 20


def test_echo_logprobs_without_generation_score_the_prompt(client: TestClient, checkpoint_dir):
    prompt = "The Time Traveller (for so it will be convenient"
    out = complete(client, prompt=prompt, max_tokens=0, echo=True, logprobs=3)
    bundle = load_bundle(checkpoint_dir / "char-lstm")
    encoded = bundle.tokenizer.encode(prompt)
    expected = score_ids(bundle.model, encoded.ids, return_logprobs=True)
    (choice,) = out["choices"]
    assert choice["text"] == encoded.cleaned and choice["finish_reason"] == "length"
    lp = choice["logprobs"]
    assert lp["tokens"] == list(encoded.cleaned)
    assert lp["text_offset"] == list(range(len(encoded.cleaned)))
    assert lp["token_logprobs"][0] is None and lp["top_logprobs"][0] is None
    assert lp["token_logprobs"][1:] == pytest.approx(expected.token_logprobs, abs=1e-6)
    for token, logprob, top in zip(
        lp["tokens"][1:], lp["token_logprobs"][1:], lp["top_logprobs"][1:], strict=True
    ):
        assert 3 <= len(top) <= 4 and top[token] == logprob  # 3 likeliest + the actual one
        assert max(top.values()) >= logprob
    assert out["usage"] == {
        "prompt_tokens": len(encoded.ids),
        "completion_tokens": 0,
        "total_tokens": len(encoded.ids),
    }


def test_generated_logprobs_score_like_the_text_they_spell(client: TestClient, checkpoint_dir):
    out = complete(client, prompt="the time ", max_tokens=25, echo=True, logprobs=1, seed=3)
    (choice,) = out["choices"]
    lp = choice["logprobs"]
    assert choice["text"].startswith("the time ") and "".join(lp["tokens"]) == choice["text"]
    assert lp["text_offset"] == list(range(len(choice["text"])))
    bundle = load_bundle(checkpoint_dir / "char-lstm")
    ids = bundle.tokenizer.encode(choice["text"]).ids
    expected = score_ids(bundle.model, ids, return_logprobs=True).token_logprobs
    assert lp["token_logprobs"][1:] == pytest.approx(expected, abs=1e-4)


def test_word_level_tokens_keep_their_spaces(client: TestClient) -> None:
    out = complete(
        client, model="word-gru", prompt="The time traveller", max_tokens=3, echo=True, logprobs=0
    )
    lp = out["choices"][0]["logprobs"]
    assert lp["tokens"][:3] == ["the", " time", " traveller"]
    assert lp["text_offset"][:4] == [0, 3, 8, 18]
    assert all(len(top) == 1 for top in lp["top_logprobs"][1:])  # logprobs=0: the token only
    assert "".join(lp["tokens"]) == out["choices"][0]["text"]


def stream(client: TestClient, **body) -> list[dict]:
    with client.stream("POST", "/v1/completions", json={**body, "stream": True}) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in response.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"
    return [json.loads(line[6:]) for line in lines[:-1]]


def test_stream_chunks_join_to_the_plain_completion(client: TestClient) -> None:
    body = {"prompt": ["the ", "time "], "n": 2, "max_tokens": 15, "seed": 5, "logprobs": 2}
    plain = complete(client, **body, echo=True)
    chunks = stream(client, **body, echo=True, stream_options={"include_usage": True})
    assert {c["object"] for c in chunks} == {"text_completion"}
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == plain["usage"]
    for choice in plain["choices"]:
        mine = [c["choices"][0] for c in chunks[:-1] if c["choices"][0]["index"] == choice["index"]]
        assert "".join(c["text"] for c in mine) == choice["text"]
        assert mine[0]["text"] in ("the ", "time ")  # the echo comes first
        assert [c["finish_reason"] for c in mine] == [None] * (len(mine) - 1) + ["length"]
        for key in ("tokens", "token_logprobs", "top_logprobs", "text_offset"):
            joined = [x for c in mine if c["logprobs"] for x in c["logprobs"][key]]
            assert joined == about(choice["logprobs"][key]), key


def about(values: list[Any]) -> list[Any]:
    """Log-probabilities equal up to float rounding (rows may join the batch a step apart,
    and a matrix product's rounding depends on the batch size); None and text exact."""
    return [pytest.approx(x, rel=1e-5) if isinstance(x, float | dict) else x for x in values]


def test_stop_strings_are_cleaned_like_the_prompt(client: TestClient) -> None:
    free = complete(client, prompt="the ", max_tokens=60, temperature=0)["choices"][0]["text"]
    first_space = free.index(" ")
    for stop in ("\n", ["?!", "\n\n"]):  # non-letters clean to a space: a word boundary
        out = complete(client, prompt="the ", max_tokens=60, temperature=0, stop=stop)
        assert out["choices"][0] == {
            "index": 0,
            "text": free[:first_space],
            "logprobs": None,
            "finish_reason": "stop",
        }
    word = free[first_space + 1 : first_space + 3]
    upper = complete(client, prompt="the ", max_tokens=60, temperature=0, stop=word.upper())
    assert upper["choices"][0]["text"] == free[: free.index(word)]


def test_neutral_values_of_the_openai_fields_change_nothing(client: TestClient) -> None:
    body = {"prompt": "the ", "max_tokens": 12, "n": 2, "seed": 3}
    neutral = {
        "best_of": 2,
        "user": "someone",
        "presence_penalty": 0,
        "frequency_penalty": 0.0,
        "suffix": None,
        "logit_bias": {},
        "stream_options": None,
    }
    assert [c["text"] for c in complete(client, **body)["choices"]] == [
        c["text"] for c in complete(client, **body, **neutral)["choices"]
    ]


def test_suffix_is_not_supported(client: TestClient) -> None:
    response = client.post("/v1/completions", json={"prompt": "the ", "suffix": "the end"})
    assert_error(response, 422, "suffix", "not supported")


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"prompt": "the ", "logprobs": 6}, "logprobs"),
        ({"prompt": "the ", "max_tokens": 2001}, "max_tokens"),
        ({"prompt": ""}, "prompt"),
        ({"prompt": []}, "prompt"),
        ({"prompt": [1, "the "]}, "prompt"),
        ({"prompt": "the ", "stop": ""}, "stop"),
        ({"prompt": ["a"] * 8, "n": 9}, "n"),
        ({"prompt": "the ", "temperature": 2.5}, "temperature"),
        ({"prompt": "the ", "tools": []}, "tools"),
        ({"prompt": "the ", "presence_penalty": 2.5}, "presence_penalty"),
        ({"prompt": "the ", "frequency_penalty": -2.01}, "frequency_penalty"),
        ({"prompt": "the ", "logit_bias": {"3": 101}}, "logit_bias"),
        ({"prompt": "the ", "best_of": 17}, "best_of"),
        ({"prompt": "the ", "n": 3, "best_of": 2}, "best_of"),
        ({"prompt": "the ", "best_of": 2, "stream": True}, "best_of"),
        ({"prompt": ["a"] * 5, "best_of": 13}, "best_of"),
        ({"prompt": "the ", "min_p": 0}, "min_p"),
        ({"prompt": "the ", "num_beams": 2, "temperature": 0.5}, "num_beams"),
    ],
)
def test_invalid_requests_name_the_field(client: TestClient, body, param) -> None:
    error = assert_error(client.post("/v1/completions", json=body), 422)
    assert error["param"].split(".")[0] == param, error
    assert error["type"] == "invalid_request_error"


def test_unknown_model_and_empty_prompt_errors_are_openai_shaped(client: TestClient) -> None:
    response = client.post("/v1/completions", json={"model": "gpt-4", "prompt": "hi"})
    error = assert_error(response, 404, "model", "char-lstm")
    assert error["code"] == "model_not_found"
    response = client.post("/v1/completions", json={"model": "word-gru", "prompt": "42 !"})
    assert_error(response, 422, "prompt", "no tokens")


def test_running_out_of_time_is_504_or_an_error_event(checkpoint_dir, model_gate) -> None:
    with TestClient(create_app(make_settings(checkpoint_dir, request_timeout_s=0.05))) as c:
        wait_ready(c)
        body = {"prompt": ["the ", "time "], "max_tokens": 20}
        with model_gate.closed():  # the models never finish within the limit
            assert_error(c.post("/v1/completions", json=body), 504, None, "request limit")
            *_, last = stream(c, **body)  # the stream still ends with [DONE]
        assert last["error"]["code"] == "timeout" and last["error"]["type"] == "timeout_error"


def byte_token(b: int) -> str:
    """OpenAI's name for a token that is not text on its own: `bytes:\\xNN`."""
    return chr(b) if b < 0x80 else f"bytes:\\x{b:02x}"


def char_of_each_byte(data: bytes) -> list[int]:
    """For valid UTF-8: the index (in characters) of the character each byte belongs to."""
    return [i for i, ch in enumerate(data.decode()) for _ in ch.encode()]


def test_byte_level_logprobs_name_bytes_and_offsets_count_characters(client: TestClient) -> None:
    prompt = "Hé€😀!"
    data = prompt.encode()
    # High bytes favoured, so the generated text holds bytes that are not characters alone
    # (whole characters, cut-off ones read as U+FFFD).
    bias = {str(b): 12 for b in (0xC3, 0xA9, 0xE2, 0x82, 0xAC)}
    body = {"model": "byte-gru", "prompt": prompt, "max_tokens": 24, "seed": 1, "logprobs": 2}
    out = complete(client, **body, echo=True, logit_bias=bias)
    (choice,) = out["choices"]
    lp, text = choice["logprobs"], choice["text"]
    n = len(data)
    assert text.startswith(prompt)
    assert lp["tokens"][:n] == [byte_token(b) for b in data]
    assert lp["text_offset"][:n] == char_of_each_byte(data)  # [0, 1, 1, 2, 2, 2, 3, ...]
    generated = lp["tokens"][n:]
    assert len(generated) == 24
    new_chars = set(text[len(prompt) :])
    assert "\ufffd" in new_chars and any(c != "\ufffd" and not c.isascii() for c in new_chars)
    offsets = lp["text_offset"][n:]
    assert offsets[0] == len(prompt) and offsets == sorted(offsets)
    assert max(offsets) < len(text)
    for token, offset in zip(generated, offsets, strict=True):
        if token.startswith("bytes:"):  # a byte of the non-ASCII character it starts at
            byte = int(token[-2:], 16)
            assert text[offset] == "\ufffd" or byte in text[offset].encode()
        else:
            assert text[offset] == token
    for top, token, logprob in zip(
        lp["top_logprobs"][1:], lp["tokens"][1:], lp["token_logprobs"][1:], strict=True
    ):
        assert top[token] == logprob and all(k.startswith("bytes:\\x") or len(k) == 1 for k in top)
    # The same in a stream, and without echo the generated tokens alone, at the same offsets.
    chunks = [c["choices"][0] for c in stream(client, **body, echo=True, logit_bias=bias)]
    assert "".join(c["text"] for c in chunks) == text
    for key in ("tokens", "text_offset"):
        assert [x for c in chunks if c["logprobs"] for x in c["logprobs"][key]] == lp[key]
    alone = complete(client, **body, logit_bias=bias)["choices"][0]
    assert alone["text"] == text[len(prompt) :]
    assert alone["logprobs"]["tokens"] == generated
    assert alone["logprobs"]["text_offset"] == [o - len(prompt) for o in offsets]
