"""Tiny real bundles (trained for seconds on a short text) and a client over create_app."""

from __future__ import annotations

import contextlib
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.registry import Registry
from app.settings import Settings
from models.forecast import SineConfig
from models.rnn import RNNLM, LanguageModel, RNNScratch
from scripts.live_server import LiveServer, live_server
from tests.conftest import DATA_DIR, TINY_TEXT, build_once, tiny_train_config
from training.loop import train
from training.sine import train_sine


def tiny_bundles(corpus: Path) -> dict[str, Callable[[Path], object]]:
    """How each tiny bundle the app tests serve is trained (seconds each on a CPU)."""
    return {
        "char-lstm": lambda out: train(
            tiny_train_config(out, corpus, arch="lstm", num_layers=2, dropout=0.1)
        ),
        "char-gru": lambda out: train(tiny_train_config(out, corpus)),
        "word-gru": lambda out: train(
            tiny_train_config(out, corpus, level="word", num_steps=4, batch_size=4)
        ),
        "byte-gru": lambda out: train(
            tiny_train_config(out, corpus, normalize="none", level="byte", epochs=1)
        ),
        "sine-mlp": lambda out: train_sine(SineConfig(), out),
    }


@pytest.fixture(scope="session")
def checkpoint_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny bundles and a broken one, in a directory of this session's own. They are
    trained once per test run (the xdist workers share the training, `build_once`), then
    copied, so what one session does to its directory no other sees."""
    texts = build_once(tmp_path_factory, "tiny-corpus", {"tiny.txt": write_tiny_corpus})
    trained = build_once(tmp_path_factory, "tiny-bundles", tiny_bundles(texts / "tiny.txt"))
    root = tmp_path_factory.mktemp("checkpoints")
    shutil.copytree(
        trained, root, ignore=shutil.ignore_patterns(".*.lock", ".*.built"), dirs_exist_ok=True
    )
    broken = root / "broken"
    broken.mkdir()
    (broken / "config.json").write_text('{"format_version": 99}')
    return root


def write_tiny_corpus(path: Path) -> None:
    path.write_text(TINY_TEXT * 3)


def make_settings(checkpoint_dir: Path, **kw: object) -> Settings:
    defaults: dict[str, object] = {
        "data_dir": DATA_DIR,
        "cache_dir": checkpoint_dir.parent / "cache",
        "allow_download": False,
    }
    return Settings(checkpoint_dir=checkpoint_dir, **(defaults | kw))  # type: ignore[arg-type]


# How long a test waits for something that takes milliseconds before calling it a failure:
# generous, so that a machine many times slower than this one still passes.
PATIENCE_S = 120.0


def wait_ready(client: TestClient) -> None:
    """Block until the app under `client` has loaded its bundles (its own `loaded` event)."""
    services = client.app.state.services  # type: ignore[attr-defined]

    async def loaded() -> None:
        with anyio.fail_after(PATIENCE_S):
            await services.loaded.wait()

    assert client.portal is not None, "use the TestClient as a context manager"
    client.portal.call(loaded)


def wait_until(condition: Callable[[], bool], what: str, timeout: float = PATIENCE_S) -> None:
    """Poll `condition` until it holds: for state only another process or thread changes
    and that nothing signals. The interval only sets how soon a success is seen."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.01)


@pytest.fixture
def slow_loading(monkeypatch: pytest.MonkeyPatch) -> Iterator[threading.Event]:
    """Apps created in the test stay loading (503 on /ready) until the event is set."""
    gate = threading.Event()
    real = Registry.load_all

    def slow_load(self: Registry) -> None:
        gate.wait(PATIENCE_S)
        real(self)

    monkeypatch.setattr(Registry, "load_all", slow_load)
    yield gate
    gate.set()


class ModelGate:
    """Holds every language model's forward pass and decoding step while closed.

    A test that needs a request still running (a full batch, a time limit passing) closes
    the gate: the request then runs exactly until the test opens it, on any machine.
    `closed(only=model)` holds that one model and lets every other pass.
    `entered` is set once a model call is waiting at the closed gate.
    """

    def __init__(self) -> None:
        self.entered = threading.Event()
        self._open = threading.Event()
        self._open.set()
        self._only: LanguageModel | None = None

    @contextlib.contextmanager
    def closed(self, only: LanguageModel | None = None) -> Iterator[ModelGate]:
        self.entered.clear()
        self._only = only
        self._open.clear()
        try:
            yield self
        finally:
            self.open()

    def open(self) -> None:
        self._open.set()

    def pass_through(self, model: LanguageModel) -> None:
        if not self._open.is_set() and self._only in (None, model):
            self.entered.set()
            assert self._open.wait(PATIENCE_S), "the test never opened the model gate"


@pytest.fixture
def model_gate(monkeypatch: pytest.MonkeyPatch) -> Iterator[ModelGate]:
    gate = ModelGate()
    for cls in (RNNLM, RNNScratch):
        for method in ("forward", "step"):
            real = getattr(cls, method)

            def gated(self: LanguageModel, *args: Any, _real: Any = real, **kw: Any) -> Any:
                gate.pass_through(self)
                return _real(self, *args, **kw)

            monkeypatch.setattr(cls, method, gated)
    yield gate
    gate.open()


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


def server_env(**extra: str) -> dict[str, str]:
    """A live server reads the book from where the tests found it, and never downloads;
    `extra`: RNNLM_* settings of the test."""
    env = {"RNNLM_ALLOW_DOWNLOAD": "false"}
    if DATA_DIR is not None:
        env["RNNLM_DATA_DIR"] = str(DATA_DIR)
    return env | extra


@contextlib.contextmanager
def running_server(checkpoint_dir: Path, **env: str) -> Iterator[LiveServer]:
    """The service (`python -m app`) serving the tiny bundles as a real process on a free
    port, for the block."""
    with live_server(checkpoint_dir, server_env(**env)) as server:
        yield server


@pytest.fixture(scope="session")
def server(checkpoint_dir: Path) -> Iterator[str]:
    """The base URL of a live server shared by the end-to-end tests."""
    with running_server(checkpoint_dir) as live:
        yield live.url


def active_sequences(url: str) -> int:
    bundles = httpx.get(f"{url}/ready", timeout=5).json()["bundles"]
    return sum(b.get("active_sequences", 0) for b in bundles)
