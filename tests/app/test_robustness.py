"""Caps, hostile input, auth, overload and time limits, through the real app."""

from __future__ import annotations

import threading
import time

import pytest
from fastapi.testclient import TestClient
from pydantic import TypeAdapter, ValidationError

from app.main import create_app
from app.schemas import Text
from tests.app.conftest import assert_error, make_settings, wait_ready


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


def active(c: TestClient, name: str) -> int:
    bundles = {b["name"]: b for b in c.get("/ready").json()["bundles"]}
    return int(bundles[name]["active_sequences"])


def test_overload_is_503_with_retry_after(checkpoint_dir) -> None:
    settings = make_settings(checkpoint_dir, max_batch_size=1, max_queue=0)
    with TestClient(create_app(settings)) as c:
        wait_ready(c)
        done = threading.Event()

        def long_generation() -> None:
            c.post("/v1/generate", json={"prefix": "a", "max_new_tokens": 400, "temperature": 0})
            done.set()

        worker = threading.Thread(target=long_generation)
        worker.start()
        deadline = time.monotonic() + 10
        while active(c, "char-lstm") == 0:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        started = time.perf_counter()
        r = c.post("/v1/generate", json={"prefix": "a", "max_new_tokens": 5, "model": "char-lstm"})
        assert time.perf_counter() - started < 1.0  # refused at once, not queued
        assert_error(r, 503, None, "capacity")
        assert int(r.headers["retry-after"]) >= 1
        worker.join(60)
        assert done.is_set()


def test_timeouts_answer_504_and_free_the_work(checkpoint_dir) -> None:
    with TestClient(create_app(make_settings(checkpoint_dir, request_timeout_s=0.2))) as c:
        wait_ready(c)
        r = c.post("/v1/generate", json={"prefix": "a", "max_new_tokens": 2000, "n": 4})
        assert_error(r, 504, None, "limit")
        deadline = time.monotonic() + 5
        while any(b.get("active_sequences") for b in c.get("/ready").json()["bundles"]):
            assert time.monotonic() < deadline, "timed-out sequences were never dropped"
            time.sleep(0.02)
        r = c.post("/v1/perplexity", json={"text": "the time machine " * 11000})
        assert_error(r, 504, None, "limit")
