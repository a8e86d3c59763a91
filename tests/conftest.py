"""Shared fixtures: the book's corpus (when this machine has it), tiny texts and models.

Tests that need the book take the `book_path` or `book_text` fixture. Without the book
(a fresh clone, offline) they skip, saying what is missing and how to supply it; with
`CI=true` a missing book fails them instead, so CI always runs every test.
"""

from __future__ import annotations

import os

# One intra-op thread for the tests and the servers they start (children inherit it): the
# tiny models' ops are too small to split, and a second OpenMP team per process only spins
# against the other processes of the suite (docs/benchmarks.md, "Test suite"). Set before
# torch is imported; a value already in the environment wins.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import shutil
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest
import torch
from filelock import FileLock, Timeout

from models.rnn import LMConfig, build_model
from models.text import Tokenizer, Vocab
from scripts.book import find_book, missing_reason
from training.config import TrainConfig

ROOT = Path(__file__).resolve().parents[1]
BOOK_MISSING = missing_reason()
# The directory the service under test reads named corpora from (None: it has none).
DATA_DIR: Path | None = None if BOOK_MISSING else find_book().parent

TINY_TEXT = (
    "The Time Traveller (for so it will be convenient to speak of him) was expounding a "
    "recondite matter to us. His grey eyes shone and twinkled, and his usually pale face "
    "was flushed and animated. The fire burned brightly, and the soft radiance of the "
    "incandescent lights in the lilies of silver caught the bubbles that flashed and "
    "passed in our glasses.\n"
) * 6


# The tiny training run every test trains (a second or two on a CPU); a test overrides
# only the settings it is about.
TINY_RUN = {
    "arch": "gru",
    "num_hiddens": 32,
    "embed_size": 16,
    "batch_size": 8,
    "num_steps": 16,
    "epochs": 2,
    "lr": 0.01,
    "optimizer": "adam",
    "device": "cpu",
}


def tiny_train_config(out: Path, corpus: Path, **settings: object) -> TrainConfig:
    return TrainConfig.build(out=out, corpus=str(corpus), **(TINY_RUN | settings))


def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The temporary directory of this whole test run: under pytest-xdist, the one the
    workers' own directories share (the pattern of the xdist docs), else pytest's own."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


def build_once(
    tmp_path_factory: pytest.TempPathFactory,
    name: str,
    builds: Mapping[str, Callable[[Path], object]],
) -> Path:
    """`run_dir/name`, holding `builds[k](run_dir/name/k)` for every k, each built once per
    test run whichever worker asks first.

    Each entry has a lock of its own: a worker first builds the entries no one else is
    building, then waits for the rest, so two workers split the work rather than one
    waiting for the other. A finished entry is marked by a stamp, so an entry a crashed
    worker left half-built is built again.
    """
    root = run_dir(tmp_path_factory) / name
    root.mkdir(exist_ok=True)

    def build(key: str, timeout: float) -> bool:
        try:
            with FileLock(root / f".{key}.lock", timeout=timeout):
                stamp = root / f".{key}.built"
                if not stamp.exists():
                    shutil.rmtree(root / key, ignore_errors=True)
                    builds[key](root / key)
                    stamp.touch()
        except Timeout:
            return False
        return True

    waiting = [key for key in builds if not build(key, timeout=0)]
    for key in waiting:
        build(key, timeout=-1)
    return root


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("true", "1")


@pytest.fixture(scope="session")
def book_path() -> Path:
    if BOOK_MISSING:
        if in_ci():
            pytest.fail(f"CI runs every test, and this one {BOOK_MISSING}", pytrace=False)
        pytest.skip(BOOK_MISSING)
    return find_book()


@pytest.fixture(scope="session")
def book_text(book_path: Path) -> str:
    return book_path.read_text(encoding="utf-8")


@pytest.fixture
def tiny_corpus(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.txt"
    path.write_text(TINY_TEXT)
    return path


@pytest.fixture(scope="session")
def char_tokenizer() -> Tokenizer:
    return Tokenizer(Vocab.build(list("abcdefghijklmnopqrstuvwxyz ")))


def tiny_lm(arch: str, vocab_size: int = 28, seed: int = 0, **kw: int | float):
    torch.manual_seed(seed)
    return build_model(LMConfig(arch, vocab_size, kw.pop("num_hiddens", 16), **kw)).eval()  # type: ignore[arg-type]
