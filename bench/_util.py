"""Shared by the benchmark scripts: the machine description, timing, the book, a live server."""

from __future__ import annotations

import contextlib
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path

import torch

from scripts.book import find_book
from scripts.live_server import LiveServer, live_server

ROOT = Path(__file__).resolve().parents[1]


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    gpu = f", GPU {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    return (
        f"{os.cpu_count()} CPUs ({cpu}){gpu}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} torch threads, Python {platform.python_version()}"
    )


def best_of(fn: Callable[[], object], repeat: int = 3) -> float:
    """Fastest of `repeat` runs, in seconds (the least disturbed by other load)."""
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def book_path() -> Path:
    """The book's corpus: RNNLM_DATA_DIR, the cache, or a verified download (scripts/book.py)."""
    return find_book(download=True)


def serve(env: dict[str, str] | None = None) -> contextlib.AbstractContextManager[LiveServer]:
    """The service on the committed bundles; it finds named corpora as `make serve` does."""
    return live_server(ROOT / "checkpoints", env)
