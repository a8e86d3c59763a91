"""Tiny real bundles (trained for seconds on a short text) and a client over create_app."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.registry import Registry
from app.settings import Settings
from models.forecast import SineConfig
from tests.conftest import DATA_DIR, TINY_TEXT, tiny_train_config
from training.loop import train
from training.sine import train_sine


@pytest.fixture(scope="session")
def checkpoint_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("checkpoints")
    corpus = root.parent / "tiny-corpus.txt"
    corpus.write_text(TINY_TEXT * 3)
    train(tiny_train_config(root / "char-lstm", corpus, arch="lstm", num_layers=2, dropout=0.1))
    train(tiny_train_config(root / "char-gru", corpus))
    train(tiny_train_config(root / "word-gru", corpus, level="word", num_steps=4, batch_size=4))
    train(tiny_train_config(root / "byte-gru", corpus, normalize="none", level="byte", epochs=1))
    train_sine(SineConfig(), root / "sine-mlp")
    broken = root / "broken"
    broken.mkdir()
    (broken / "config.json").write_text('{"format_version": 99}')
    return root


def make_settings(checkpoint_dir: Path, **kw: object) -> Settings:
    defaults: dict[str, object] = {
        "data_dir": DATA_DIR,
        "cache_dir": checkpoint_dir.parent / "cache",
        "allow_download": False,
    }
    return Settings(checkpoint_dir=checkpoint_dir, **(defaults | kw))  # type: ignore[arg-type]


def wait_ready(client: TestClient, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while client.get("/ready").status_code != 200:
        assert time.monotonic() < deadline, "service never became ready"
        time.sleep(0.02)


@pytest.fixture
def slow_loading(monkeypatch: pytest.MonkeyPatch) -> threading.Event:
    """Apps created in the test stay loading (503 on /ready) until the event is set."""
    gate = threading.Event()
    real = Registry.load_all

    def slow_load(self: Registry) -> None:
        gate.wait(10)
        real(self)

    monkeypatch.setattr(Registry, "load_all", slow_load)
    return gate


@pytest.fixture(scope="module")
def client(checkpoint_dir: Path) -> Iterator[TestClient]:
    with TestClient(create_app(make_settings(checkpoint_dir))) as c:
        wait_ready(c)
        yield c


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def assert_error(response, status: int, param: str | None = None, *words: str) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    if param is not None:
        assert error["param"] == param, error
    for word in words:
        assert word in error["message"], error
    return error


ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(checkpoint_dir: Path) -> tuple[subprocess.Popen[bytes], str]:
    """uvicorn serving the tiny bundles as a real process on a free port, once /ready is 200."""
    port = free_port()
    env = {
        **os.environ,
        "RNNLM_CHECKPOINT_DIR": str(checkpoint_dir),
        "RNNLM_DATA_DIR": str(DATA_DIR),
        "RNNLM_ALLOW_DOWNLOAD": "false",
        "RNNLM_LOG_LEVEL": "warning",
    }
    command = [sys.executable, "-m", "uvicorn", "--factory", "app.main:create_app"]
    command += ["--host", "127.0.0.1", "--port", str(port), "--timeout-graceful-shutdown", "30"]
    process = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while True:
        if process.poll() is not None:
            raise AssertionError(process.stdout.read().decode() if process.stdout else "exited")
        try:
            if httpx.get(f"{url}/ready", timeout=1).status_code == 200:
                return process, url
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            process.kill()
            raise AssertionError("server did not become ready")
        time.sleep(0.1)


@contextlib.contextmanager
def running_server(checkpoint_dir: Path) -> Iterator[str]:
    """A live server's base URL for the block; the process is stopped after it."""
    process, url = start_server(checkpoint_dir)
    try:
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.fixture(scope="session")
def server(checkpoint_dir: Path) -> Iterator[str]:
    """The base URL of a live server shared by the end-to-end tests."""
    with running_server(checkpoint_dir) as url:
        yield url


def active_sequences(url: str) -> int:
    bundles = httpx.get(f"{url}/ready", timeout=5).json()["bundles"]
    return sum(b.get("active_sequences", 0) for b in bundles)
