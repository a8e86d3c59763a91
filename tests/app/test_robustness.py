"""Caps, hostile input, auth, overload and time limits, through the real app."""

from __future__ import annotations

import threading

import pytest
from fastapi.testclient import TestClient
from pydantic import TypeAdapter, ValidationError

from app.main import create_app
from app.schemas import Text
from tests.app.conftest import (
    PATIENCE_S,
    ModelGate,
    assert_error,
    make_settings,
    wait_ready,
    wait_until,
)


def test_oversized_bodies_get_413_before_being_read(client: TestClient) -> None:
    big = b'{"prefix": "' + b"a" * (3 * 1024 * 1024) + b'"}'
    r = client.post("/v1/generate", content=big, headers={"content-type": "application/json"})
    assert_error(r, 413, None, "larger than")

    def chunks():  # no Content-Length: the limit applies while reading
        yield b'{"text": "'
        for _ in range(40):
            yield b"b" * 100_000
        yield b'"}'

    r = client.post("/v1/ngrams", content=chunks(), headers={"content-type": "application/json"})
    assert_error(r, 413)


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b'{"prefix": "caf\xe9"}', 400),  # not UTF-8
        (b'{"prefix": "a"', 400),  # truncated
        (b"[1, 2]", 422),
        (b'{"prefix": "a\\u0000b"}', 422),
        (b'{"prefix": "a\\ud800"}', 422),
        (b'{"prefix": null}', 422),
    ],
)
def test_hostile_bodies(client: TestClient, raw: bytes, status: int) -> None:
    r = client.post("/v1/generate", content=raw, headers={"content-type": "application/json"})
    assert_error(r, status)


def test_control_characters_name_the_field(client: TestClient) -> None:
    r = client.post("/v1/perplexity", json={"text": "ok\x07 text"})
    assert_error(r, 422, "text", "U+0007", "position 2")
    assert client.post("/v1/perplexity", json={"text": "tabs\tand\nnewlines"}).status_code == 200


@pytest.mark.parametrize("tail", ["", " and \u00e9t\u00e9"])  # the ASCII fast path and the regex
def test_exactly_the_control_characters_are_refused(tail: str) -> None:
    text = TypeAdapter(Text)
    for code in range(128):
        allowed = chr(code) in "\t\n\r" or 0x20 <= code < 0x7F
        value = f"ok{chr(code)}{tail}"
        if allowed:
            assert text.validate_python(value) == value
        else:
            with pytest.raises(ValidationError, match=f"U\\+{code:04X} at position 2"):
                text.validate_python(value)


def test_api_key_guards_v1_only(checkpoint_dir) -> None:
    with TestClient(create_app(make_settings(checkpoint_dir, api_key="s3cret"))) as c:
        wait_ready(c)
        assert_error(c.get("/v1/models"), 401, None, "Authorization")
        assert_error(c.get("/v1/models", headers={"Authorization": "Bearer nope"}), 401)
        assert_error(c.post("/v1/generate", json={"bad": 1}), 401)  # auth before validation
        assert c.get("/v1/models", headers={"Authorization": "Bearer s3cret"}).status_code == 200
        for open_path in ("/health", "/ready", "/docs", "/openapi.json"):
            assert c.get(open_path).status_code == 200
        schemes = c.get("/openapi.json").json()["components"]["securitySchemes"]
        assert schemes["HTTPBearer"]["scheme"] == "bearer"


def active(c: TestClient) -> int:
    return sum(b.get("active_sequences", 0) for b in c.get("/ready").json()["bundles"])


def test_overload_is_503_with_retry_after(checkpoint_dir, model_gate: ModelGate) -> None:
    settings = make_settings(checkpoint_dir, max_batch_size=1, max_queue=0)
    with TestClient(create_app(settings)) as c:
        wait_ready(c)
        with model_gate.closed():
            worker = threading.Thread(
                target=c.post,
                args=("/v1/generate",),
                kwargs={"json": {"prefix": "a", "max_new_tokens": 5, "model": "char-lstm"}},
            )
            worker.start()
            assert model_gate.entered.wait(PATIENCE_S)  # the one batch place is taken
            body = {"prefix": "a", "max_new_tokens": 5, "model": "char-lstm"}
            r = c.post("/v1/generate", json=body)  # refused at once: the gate is still shut
            assert_error(r, 503, None, "capacity")
            assert int(r.headers["retry-after"]) >= 1
        worker.join(PATIENCE_S)
        assert not worker.is_alive()
        wait_until(lambda: active(c) == 0, "the first generation never left the batch")
        assert c.post("/v1/generate", json=body).status_code == 200  # room again


def test_timeouts_answer_504_and_free_the_work(checkpoint_dir, model_gate: ModelGate) -> None:
    with TestClient(create_app(make_settings(checkpoint_dir, request_timeout_s=0.2))) as c:
        wait_ready(c)
        with model_gate.closed():  # the models never finish within the limit
            r = c.post("/v1/generate", json={"prefix": "a", "max_new_tokens": 20, "n": 4})
            assert_error(r, 504, None, "limit")
            r = c.post("/v1/perplexity", json={"text": "the time machine"})
            assert_error(r, 504, None, "limit")
        wait_until(lambda: active(c) == 0, "timed-out sequences were never dropped")
