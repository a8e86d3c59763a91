"""What evaluation harnesses need: vLLM's tokenizer endpoints, token-id prompts scored as the
text they stand for, eval-sized caps (still bounded and counted), cleanup reported or refused.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.schemas.completions import MAX_PROMPT_TOKENS, MAX_PROMPTS, MAX_REQUEST_TOKENS
from tests.app.conftest import assert_error, make_settings, wait_ready

TEXT = "the time traveller for so it will be convenient to speak of him"


def ok(response) -> dict:
    assert response.status_code == 200, response.text
    return response.json()


def ids_of(client: TestClient, text: str, model: str = "char-lstm") -> list[int]:
    return ok(client.post(f"/models/{model}/tokenize", json={"prompt": text}))["tokens"]


def scored(client: TestClient, prompt: object, model: str = "char-lstm", **kw) -> dict:
    body = {"model": model, "prompt": prompt, "max_tokens": 0, "echo": True, "logprobs": 2}
    return ok(client.post("/v1/completions", json={**body, **kw}))


# --- vLLM's tokenizer endpoints ------------------------------------------------------------


def test_tokenizer_info_describes_the_real_vocabulary(client: TestClient) -> None:
    info = ok(client.get("/tokenizer_info"))
    assert info["model"] == "char-lstm" and info["level"] == "char"
    assert info["normalize"] == "book" and info["tokenizer_class"] == "rnnlm-book-char"
    vocab = ok(client.post("/v1/tokenize", json={"text": "the time"}))
    assert info["vocab"][0] == "<unk>" and info["vocab_size"] == len(info["vocab"])
    assert [info["vocab"][i] for i in vocab["ids"]] == list("the time")
    assert info["unk_token"] == "<unk>" and info["added_tokens_decoder"] == {
        "0": {"content": "<unk>", "special": True}
    }
    # a text starts after a separator (a space at the book's char level); no end-of-text
    assert info["bos_token"] == " " and info["eos_token"] is None
    assert info["add_bos_token"] is False and info["model_max_length"] == MAX_PROMPT_TOKENS
    word = ok(client.get("/tokenizer_info", params={"model": "word-gru"}))
    assert word["level"] == "word" and word["bos_token"] is None
    assert word == ok(client.get("/models/word-gru/tokenizer_info"))
    assert_error(client.get("/tokenizer_info", params={"model": "sine-mlp"}), 404, "model")
    assert_error(client.get("/models/nope/tokenizer_info"), 404, "model")


def test_tokenize_and_detokenize_in_vllms_shapes(client: TestClient) -> None:
    out = ok(client.post("/tokenize", json={"prompt": "The Time!", "add_special_tokens": False}))
    assert set(out) == {"count", "max_model_len", "tokens", "token_strs"}
    assert out["count"] == len(out["tokens"]) == 9 and out["token_strs"] is None
    assert out["tokens"] == ok(client.post("/v1/tokenize", json={"text": "The Time!"}))["ids"]
    assert ok(client.post("/detokenize", json={"tokens": out["tokens"]})) == {"prompt": "the time "}
    strs = ok(client.post("/tokenize", json={"prompt": "ab", "return_token_strs": True}))
    assert strs["token_strs"] == ["a", "b"]
    words = ok(client.post("/models/word-gru/tokenize", json={"prompt": "The time traveller"}))
    back = ok(client.post("/models/word-gru/detokenize", json={"tokens": words["tokens"]}))
    assert back == {"prompt": "the time traveller"}


def test_tokenizer_endpoint_errors_name_the_field(client: TestClient) -> None:
    size = ok(client.get("/tokenizer_info"))["vocab_size"]
    assert_error(client.post("/detokenize", json={"tokens": [1, size]}), 422, "tokens.1", str(size))
    assert_error(client.post("/tokenize", json={"prompt": 3}), 422, "prompt")
    assert_error(client.post("/tokenize", json={"messages": []}), 422, None, "messages")
    body = {"model": "char-gru", "prompt": "a"}
    assert_error(client.post("/models/char-lstm/tokenize", json=body), 422, "model", "path")
    assert_error(client.post("/models/Bad Name/tokenize", json={"prompt": "a"}), 422, "model_id")


# --- token-id prompts ----------------------------------------------------------------------


@pytest.mark.parametrize("model", ["char-lstm", "word-gru"])
def test_token_ids_are_scored_exactly_as_their_text(client: TestClient, model: str) -> None:
    ids = ids_of(client, TEXT, model)
    as_text, as_ids = scored(client, TEXT, model), scored(client, ids, model)
    assert as_ids["choices"] == as_text["choices"]
    assert (
        as_ids["usage"]
        == as_text["usage"]
        == {
            "prompt_tokens": len(ids),
            "completion_tokens": 0,
            "total_tokens": len(ids),
        }
    )
    # several prompts are scored side by side in one batched pass: the same to float32's
    # last digits
    batch = scored(client, [ids, ids[:5]], model)["choices"]
    alone = as_text["choices"][0]["logprobs"]
    assert batch[0]["text"] == as_text["choices"][0]["text"]
    assert batch[1]["logprobs"]["tokens"] == alone["tokens"][:5]
    for choice, n in zip(batch, (len(ids), 5), strict=True):
        assert choice["logprobs"]["token_logprobs"][0] is None
        expected = alone["token_logprobs"][1:n]
        assert choice["logprobs"]["token_logprobs"][1:] == pytest.approx(expected, rel=1e-5)


def test_token_ids_generate_like_text(client: TestClient) -> None:
    body = {"max_tokens": 12, "temperature": 0, "logprobs": 1}
    text = ok(client.post("/v1/completions", json={"prompt": "the time ", **body}))
    ids = ok(client.post("/v1/completions", json={"prompt": ids_of(client, "the time "), **body}))
    assert ids["choices"] == text["choices"]


@pytest.mark.parametrize(
    ("prompt", "words"),
    [
        ([1, 2, 10_000], ["prompt 0, position 2", "10000", "vocabulary"]),
        ([[1, 2], [3, 99, 4]], ["prompt 1, position 1", "99"]),
        ([1, -1], ["prompt 0, position 1", "-1"]),
        ([[1], [2.5]], ["prompt 1, position 0", "2.5"]),
        ([1, True], ["position 1", "True"]),
        ([[1], []], ["prompt 1", "empty"]),
        ([[1], "a"], ["prompt 1", "not a list"]),
        (["a", 1], ["prompt 1", "not a text"]),
        (["a", ""], ["prompt 1", "empty"]),
        ([], ["empty list"]),
        ({"a": 1}, ["a text, a list of texts"]),
    ],
)
def test_bad_prompts_name_the_prompt_and_position(client, prompt, words) -> None:
    error = assert_error(client.post("/v1/completions", json={"prompt": prompt}), 422, "prompt")
    for word in words:
        assert word in error["message"], error


# --- caps ----------------------------------------------------------------------------------


def test_caps_are_what_lm_eval_sends_and_still_bounded(client: TestClient) -> None:
    body = {"max_tokens": 0}
    # lm-eval's common --batch_size 32 with max_length=8192, and the largest single prompt
    assert ok(client.post("/v1/completions", json={"prompt": [[1] * 8191] * 32, **body}))
    assert ok(client.post("/v1/completions", json={"prompt": [1] * MAX_PROMPT_TOKENS, **body}))
    assert ok(client.post("/v1/completions", json={"prompt": [[1]] * MAX_PROMPTS, **body}))
    too_many = {"prompt": [[1]] * (MAX_PROMPTS + 1), **body}
    assert_error(client.post("/v1/completions", json=too_many), 422, "prompt", f"{MAX_PROMPTS}")
    too_long = {"prompt": [1] * (MAX_PROMPT_TOKENS + 1), **body}
    error = assert_error(client.post("/v1/completions", json=too_long), 422, "prompt")
    assert f"at most {MAX_PROMPT_TOKENS}" in error["message"]
    text = {"prompt": "a" * (MAX_PROMPT_TOKENS + 1), **body}
    assert_error(client.post("/v1/completions", json=text), 422, "prompt", "characters")
    count = MAX_REQUEST_TOKENS // MAX_PROMPT_TOKENS + 1
    total = {"prompt": [[1] * MAX_PROMPT_TOKENS] * count, **body}
    assert_error(client.post("/v1/completions", json=total), 422, "prompt", str(MAX_REQUEST_TOKENS))


def test_many_prompts_count_against_the_scheduler_limits(checkpoint_dir: Path) -> None:
    settings = make_settings(checkpoint_dir, max_batch_size=8, max_queue=0)
    with TestClient(create_app(settings)) as c:
        wait_ready(c)
        body = {"prompt": [[1, 2]] * 9, "max_tokens": 1}
        response = c.post("/v1/completions", json=body)
        assert_error(response, 503, None, "capacity")
        assert int(response.headers["retry-after"]) >= 1
        assert len(ok(c.post("/v1/completions", json={**body, "prompt": [[1, 2]] * 8}))["choices"])


# --- cleanup: reported, or refused ---------------------------------------------------------


def test_cleanup_of_a_text_prompt_is_reported(client: TestClient) -> None:
    out = scored(client, ["the time ", "The Time!", "ab<|endoftext|>"])
    assert out["prompt_cleanup"] == [
        {"index": 1, "cleaned": "the time ", "first_change": 0},
        {"index": 2, "cleaned": "ab endoftext ", "first_change": 2},
    ]
    assert out["choices"][1]["text"] == "the time "
    assert scored(client, "the time ")["prompt_cleanup"] is None
    assert scored(client, ids_of(client, "The Time!"))["prompt_cleanup"] is None


def test_cleanup_of_a_stop_string_is_reported(client: TestClient) -> None:
    """lm-eval's usual stop, a blank line, is a single space under the book's rule: the
    response says so (generation then ends at the first space)."""
    body = {"prompt": ids_of(client, "the time "), "max_tokens": 20, "temperature": 0}
    out = ok(client.post("/v1/completions", json={**body, "stop": ["\n\n", "machine"]}))
    assert out["stop_cleanup"] == [{"index": 0, "cleaned": " "}]
    assert " " not in out["choices"][0]["text"]
    assert ok(client.post("/v1/completions", json={**body, "stop": "was"}))["stop_cleanup"] is None


def test_cleanup_report_leads_a_stream(client: TestClient) -> None:
    body = {"prompt": "The Time", "max_tokens": 3, "stream": True, "echo": True}
    with client.stream("POST", "/v1/completions", json=body) as r:
        events = [line[6:] for line in r.iter_lines() if line.startswith("data: ")]
    chunks = [json.loads(e) for e in events[:-1]]
    assert chunks[0]["prompt_cleanup"] == [{"index": 0, "cleaned": "the time", "first_change": 0}]
    assert all(c["prompt_cleanup"] is None for c in chunks[1:])
    assert all(c["stop_cleanup"] is None for c in chunks)


def test_strict_cleanup_refuses_a_changed_prompt_or_stop(client: TestClient) -> None:
    strict = {"strict_cleanup": True, "max_tokens": 2}
    response = client.post("/v1/completions", json={"prompt": ["ok ", "The end"], **strict})
    error = assert_error(response, 422, "prompt", "prompt 1", "character 0")
    assert "'The end'" in error["message"] and "'the end'" in error["message"]
    stop = {"prompt": "ok ", "stop": ["ok", "\n\n"], **strict}
    assert_error(client.post("/v1/completions", json=stop), 422, "stop.1", "'\\n\\n'", "' '")
    assert ok(client.post("/v1/completions", json={"prompt": "the time ", **strict}))
    assert ok(client.post("/v1/completions", json={"prompt": ids_of(client, "The!"), **strict}))


# --- one model's own base URL --------------------------------------------------------------


def test_scoped_completions_serve_the_model_in_the_path(client: TestClient) -> None:
    ids = ids_of(client, TEXT, "word-gru")
    body = {"prompt": ids, "max_tokens": 0, "echo": True, "logprobs": 0}
    scoped = ok(client.post("/models/word-gru/v1/completions", json=body))
    assert scoped["model"] == "word-gru"
    assert scoped["choices"] == scored(client, ids, "word-gru", logprobs=0)["choices"]
    mismatch = {**body, "model": "char-lstm"}
    response = client.post("/models/word-gru/v1/completions", json=mismatch)
    assert_error(response, 422, "model", "path")
    assert_error(client.post("/models/sine-mlp/v1/completions", json=body), 404, "model")


def test_api_key_guards_the_tokenizer_and_scoped_routes(checkpoint_dir: Path) -> None:
    with TestClient(create_app(make_settings(checkpoint_dir, api_key="s3cret"))) as c:
        wait_ready(c)
        key = {"Authorization": "Bearer s3cret"}
        for method, path, body in [
            ("GET", "/tokenizer_info", None),
            ("POST", "/tokenize", {"prompt": "a"}),
            ("POST", "/detokenize", {"tokens": [1]}),
            ("POST", "/models/char-lstm/v1/completions", {"prompt": [1], "max_tokens": 1}),
        ]:
            assert_error(c.request(method, path, json=body), 401)
            assert c.request(method, path, json=body, headers=key).status_code == 200
