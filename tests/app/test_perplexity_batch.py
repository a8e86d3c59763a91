"""/v1/perplexity beyond one text: lists, per-line documents, file uploads, zero probability."""

import dataclasses
import math

import pytest
import torch
from fastapi.testclient import TestClient

from tests.app.conftest import assert_error

DOC = (
    "The Time Traveller smiled round at us.\n"
    "\n"
    "Then, still smiling faintly, he said:\r\n"
    "a\n"
    "Clearly any real body must have extension in four directions\n"
)


def score(client: TestClient, **body) -> dict:
    response = client.post("/v1/perplexity", json=body)
    assert response.status_code == 200, response.text
    return response.json()


def same_score(item: dict, alone: dict) -> None:
    assert item["tokens_scored"] == alone["tokens_scored"]
    assert item["unknown_tokens"] == alone["unknown_tokens"]
    assert item["perplexity"] == pytest.approx(alone["perplexity"], rel=1e-5)
    assert item["log_prob"] == pytest.approx(alone["log_prob"], rel=1e-5)


@pytest.mark.parametrize("model", ["char-lstm", "word-gru", "byte-gru"])
def test_a_list_of_texts_scores_each_as_alone_with_a_token_weighted_total(client, model) -> None:
    texts = ["the time traveller", "Smiled round at us!", "he said the time", "x y"]
    body = score(client, model=model, texts=texts)
    assert body["mode"] == "texts" and [r["index"] for r in body["results"]] == [0, 1, 2, 3]
    for text, item in zip(texts, body["results"], strict=True):
        same_score(item, score(client, model=model, text=text))
    nll = sum(-r["log_prob"] for r in body["results"])
    count = sum(r["tokens_scored"] for r in body["results"])
    assert body["tokens_scored"] == count and body["log_prob"] == pytest.approx(-nll)
    assert body["perplexity"] == pytest.approx(math.exp(nll / count), rel=1e-6)
    assert body["infinite"] is False and body["zero_probability"] is None


@pytest.mark.parametrize("model", ["char-lstm", "byte-gru"])
def test_per_line_mode_equals_one_call_per_line(client, model) -> None:
    body = score(client, model=model, text=DOC, per_line=True)
    assert body["mode"] == "lines"
    lines = ["The Time Traveller smiled round at us.", "", "Then, still smiling faintly, he said:"]
    lines += ["a", "Clearly any real body must have extension in four directions"]
    assert [r["line"] for r in body["results"]] == [1, 2, 3, 4, 5]
    for line, item in zip(lines, body["results"], strict=True):
        if line in ("", "a"):  # nothing to score: listed, not an error
            assert item["skipped"] and item["perplexity"] is None and item["tokens_scored"] == 0
        else:
            assert item["skipped"] is None
            same_score(item, score(client, model=model, text=line))


def test_per_line_with_context_and_tokens(client) -> None:
    body = score(client, text="time traveller\nmachine", per_line=True, context="the ")
    for line, item in zip(["time traveller", "machine"], body["results"], strict=True):
        alone = score(client, text=line, context="the ", return_tokens=True)
        same_score(item, alone)
    with_tokens = score(client, texts=["the time"], return_tokens=True)["results"][0]["tokens"]
    assert "".join(t["token"] for t in with_tokens) == "he time"


@pytest.mark.parametrize("per_line", [False, True])
def test_an_uploaded_file_scores_as_the_same_text_sent_as_json(client, per_line) -> None:
    files = {"file": ("doc.txt", DOC.encode(), "text/plain")}
    form = {"per_line": str(per_line).lower(), "model": "char-lstm"}
    upload = client.post("/v1/perplexity", files=files, data=form)
    assert upload.status_code == 200, upload.text
    as_json = score(client, model="char-lstm", text=DOC, per_line=per_line)
    assert upload.json() == as_json


def test_a_byte_model_scores_any_bytes_and_char_models_name_the_bad_offset(client) -> None:
    data = b"caf\xc3\xa9 ok\n\xff\xfe binary tail\n"
    files = {"file": ("x.bin", data, "application/octet-stream")}
    body = client.post("/v1/perplexity", files=files, data={"model": "byte-gru"}).json()
    assert body["tokens_scored"] == len(data) - 1 and body["unknown_tokens"] == 0
    for model in ("char-lstm", "word-gru"):
        bad = client.post("/v1/perplexity", files=files, data={"model": model})
        assert_error(bad, 422, "file", "byte offset 9", "0xFF")


def test_upload_errors(client) -> None:
    def upload(data: bytes, **form):
        return client.post("/v1/perplexity", files={"file": ("f.txt", data)}, data=form)

    assert_error(upload(b""), 422, "file", "empty")
    assert_error(upload(b" \n\t\r\n  "), 422, "file", "only whitespace")
    long_line = b"short line\n" + b"a" * 200_001 + b"\n"
    assert_error(upload(long_line, per_line="true"), 422, "file", "line 2", "200000")
    assert_error(upload(b"the time", per_line="maybe"), 422, "per_line")
    assert_error(upload(b"the time", model="no-such"), 404, "model")
    no_file = client.post("/v1/perplexity", files={"other": ("f.txt", b"x")})
    assert_error(no_file, 422, "file", "form field 'file'")


def test_json_errors_name_the_item(client) -> None:
    assert_error(client.post("/v1/perplexity", json={"texts": ["the time", "a"]}), 422, "texts.1")
    too_long = {"texts": ["ok ok", "a" * 200_001]}
    assert_error(client.post("/v1/perplexity", json=too_long), 422, "texts.1", "200000")
    assert_error(client.post("/v1/perplexity", json={"texts": ["ok", ""]}), 422, "texts.1")
    both = {"text": "the time", "texts": ["the time"]}
    assert_error(client.post("/v1/perplexity", json=both), 422, None, "exactly one")
    assert_error(client.post("/v1/perplexity", json={}), 422, None, "exactly one")
    lines = {"texts": ["the time"], "per_line": True}
    assert_error(client.post("/v1/perplexity", json=lines), 422, None, "per_line")
    blank = {"text": "a\n\nb\n", "per_line": True}
    assert_error(client.post("/v1/perplexity", json=blank), 422, "text", "no line")
    assert_error(
        client.post(
            "/v1/perplexity", content=b'{"text": ', headers={"content-type": "application/json"}
        ),
        400,
        "body",
    )
    long_doc = {"text": ("the time machine " * 12 + "\n") * 1500, "per_line": True}
    assert score(client, **long_doc)["tokens_scored"] > 200_000  # over one text's cap: lines


class ZeroAfterT(torch.nn.Module):
    """A model that never predicts "e" after "t" (probability 0, as an unsmoothed n-gram)."""

    def __init__(self, inner, t: int, e: int) -> None:
        super().__init__()
        self.inner, self.t, self.e = inner, t, e
        self.config = inner.config

    def forward(self, X, state=None):
        logits, state = self.inner(X, state)
        logits = torch.log_softmax(logits.float(), dim=-1)
        return logits.masked_fill(
            (self.t == X).unsqueeze(-1) & self._is_e(logits), -math.inf
        ), state

    def _is_e(self, logits):
        return torch.arange(logits.shape[-1]) == self.e


def test_zero_probability_is_reported_not_infinite_json(client) -> None:
    services = client.app.state.services  # type: ignore[attr-defined]
    lm = services.language_models["char-gru"]
    vocab = lm.tokenizer.vocab.token_to_idx
    zero = dataclasses.replace(lm, model=ZeroAfterT(lm.model, vocab["t"], vocab["e"]))
    services.language_models["zero-gru"] = zero
    try:
        body = score(client, model="zero-gru", texts=["a cat sat", "tea time", "water"])
        ok, bad, worse = body["results"]
        assert ok["infinite"] is False and ok["perplexity"] > 1
        assert bad["infinite"] is True and bad["perplexity"] is None and bad["log_prob"] is None
        assert bad["zero_probability"]["position"] == 1
        assert bad["zero_probability"]["token"] == "e"
        assert "probability 0" in bad["zero_probability"]["reason"]
        assert worse["zero_probability"]["position"] == 3
        assert body["infinite"] is True and body["perplexity"] is None
        assert body["zero_probability"]["item"] == 1
        single = score(client, model="zero-gru", text="tea time")
        assert single["infinite"] and single["zero_probability"]["position"] == 1
    finally:
        del services.language_models["zero-gru"]
