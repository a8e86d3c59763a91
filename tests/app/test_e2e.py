"""End to end: uvicorn as a real process on a free port, every endpoint over HTTP."""

from __future__ import annotations

import json
import signal
import socket
import sys
import threading
from pathlib import Path

import httpx
import pytest

from scripts import live_server
from scripts.live_server import main as live_server_main
from scripts.live_server import start
from tests.app.conftest import active_sequences, png_size, server_env, wait_until

pytestmark = pytest.mark.system  # processes of its own: make test-system


def test_every_endpoint_over_http(server: str) -> None:
    with httpx.Client(base_url=server, timeout=60) as c:
        assert c.get("/health").json()["status"] == "ok"
        assert c.get("/ready").json()["default_model"] == "char-lstm"
        assert {m["id"] for m in c.get("/v1/models").json()["data"]} >= {"char-lstm", "sine-mlp"}
        gen = c.post(
            "/v1/generate", json={"prefix": "time ", "temperature": 0, "max_new_tokens": 20}
        )
        assert gen.status_code == 200 and gen.json()["choices"][0]["tokens"] == 20
        assert "x-request-id" in gen.headers
        ppl = c.post("/v1/perplexity", json={"text": "the time traveller"}).json()
        assert ppl["tokens_scored"] == 17 and ppl["perplexity"] > 1
        ngrams = c.post("/v1/ngrams", json={"text": "a b a", "n": 2, "top_k": 1}).json()
        assert ngrams["tables"][0]["entries"][0] == {
            "tokens": ["a", "b"],
            "count": 1,
            "frequency": 0.5,
        }
        plot = c.post("/v1/ngrams/plot", json={"text": "a b a", "width": 320, "height": 240})
        assert png_size(plot.content) == (320, 240)
        assert c.post("/v1/forecast", json={}).json()["model"] == "sine-mlp"
        plot = c.post("/v1/forecast/plot", json={"format": "svg"})
        assert plot.headers["content-type"] == "image/svg+xml"
        docs = c.get("/docs").text
        assert "/static/docs/swagger-ui-bundle.js" in docs and "cdn" not in docs.lower()
        assert c.get("/static/docs/swagger-ui-bundle.js").status_code == 200
        assert "/v1/generate" in c.get("/openapi.json").json()["paths"]


def test_the_books_tables_over_http(server: str, book_path: Path) -> None:
    with httpx.Client(base_url=server, timeout=60) as c:
        ngrams = c.post("/v1/ngrams", json={"corpus": "timemachine", "n": 1, "top_k": 1}).json()
        assert ngrams["tables"][0]["entries"][0] == {
            "tokens": ["the"],
            "count": 2261,
            "frequency": 2261 / 32775,
        }
        assert png_size(c.get("/v1/ngrams/plot?width=320&height=240").content) == (320, 240)


def test_server_sent_events_over_http(server: str) -> None:
    body = {"prefix": "the ", "temperature": 0, "max_new_tokens": 15}
    plain = httpx.post(f"{server}/v1/generate", json=body, timeout=60).json()["choices"][0]["text"]
    events = []
    with httpx.stream(
        "POST", f"{server}/v1/generate", json={**body, "stream": True}, timeout=60
    ) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if line.startswith("data: "):
                events.append(line[6:])
    assert events[-1] == "[DONE]"
    deltas = [json.loads(e) for e in events[1:-2]]
    assert "".join(d["text"] for d in deltas) == plain and len(deltas) == 15


def test_a_client_that_disconnects_mid_stream_stops_its_generation(server: str) -> None:
    body = {"prefix": "a", "max_new_tokens": 2000, "temperature": 0, "stream": True, "n": 3}
    with httpx.stream("POST", f"{server}/v1/generate", json=body, timeout=60) as r:
        for i, _ in enumerate(r.iter_lines()):
            if i == 6:
                assert active_sequences(server) == 3
                break  # leaving the block closes the connection
    wait_until(lambda: active_sequences(server) == 0, "generation went on after the client left")


def test_sigterm_lets_in_flight_requests_finish(checkpoint_dir: Path) -> None:
    live = start(checkpoint_dir, server_env())
    process, url = live.process, live.url
    events: list[str] = []
    started = threading.Event()

    def stream() -> None:
        body = {"prefix": "the ", "max_new_tokens": 300, "temperature": 0, "stream": True}
        with httpx.stream("POST", f"{url}/v1/generate", json=body, timeout=60) as r:
            for line in r.iter_lines():
                if line.startswith("data: "):
                    events.append(line[6:])
                    started.set()

    worker = threading.Thread(target=stream)
    worker.start()
    try:
        assert started.wait(30)
        process.send_signal(signal.SIGTERM)
        worker.join(60)
        assert events[-1] == "[DONE]"  # the in-flight stream ran to its end
        deltas = [json.loads(e) for e in events[1:-2]]
        assert sum(1 for d in deltas if d["text"]) == 300
        with pytest.raises(httpx.TransportError):  # no new connections once draining
            httpx.get(f"{url}/health", timeout=2)
        # uvicorn re-raises the signal after its graceful shutdown: exit by SIGTERM is clean.
        assert process.wait(timeout=30) in (0, -signal.SIGTERM)
    finally:
        live.close()


def test_the_live_server_command_hands_back_the_commands_status(
    checkpoint_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """scripts/fuzz.sh runs schemathesis this way: a failing run must fail the script.

    The first free port it is given is bound by someone else by the time the server starts
    (as a parallel test worker may do): the server starts again on another."""
    probe = (
        "import os, sys, httpx; "
        "assert os.environ['RNNLM_URL'] == sys.argv[1]; "
        "assert httpx.get(sys.argv[1] + '/ready').status_code == 200; "
        "assert not sys.argv[1].endswith(':' + sys.argv[2]); "
        "sys.exit(3)"
    )
    argv = ["--checkpoint-dir", str(checkpoint_dir), "--env", "RNNLM_ALLOW_DOWNLOAD=false"]
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        ports = iter([port, live_server.free_port()])
        monkeypatch.setattr(live_server, "free_port", lambda: next(ports))
        command = [sys.executable, "-c", probe, "{url}", str(port)]
        assert live_server_main([*argv, "--", *command]) == 3
