"""Data-parallel training under torchrun (2 gloo ranks on the CPU) against one process.

The process tests launch `python -m torch.distributed.run --standalone --nproc-per-node 2`
(torchrun) exactly as a user does, on the tiny training run: a few seconds each.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from models.bundle import load_bundle
from models.rnn import LMConfig, build_model
from models.score import score_ids
from tests.conftest import ROOT, TINY_RUN, tiny_train_config
from training.batches import random_batches, sequential_batches
from training.config import TrainConfig
from training.distributed import Ranks, score_part
from training.errors import TrainingError
from training.flags import flags_by_setting
from training.loop import train

# Relative L2 distance allowed between a tensor trained by 2 ranks and by 1 process: the
# ranks sum the same gradients in another order, nothing more.
TOLERANCE = 1e-5


def flags(config: TrainConfig) -> list[str]:
    """The command line of `config`'s settings (those the tiny run sets, plus out/corpus)."""
    by_setting = flags_by_setting(TrainConfig)
    settings = config.settings()
    names = ["out", "corpus", *TINY_RUN, "sampling"]
    return [part for name in names for part in (by_setting[name], str(settings[name]))]


def torchrun(args: list[str], *, script: str = "-m training", **env: str) -> str:
    """Run a 2-rank job on the CPU; returns its output, failing the test on a hang."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += ["--nproc-per-node", "2", *script.split(), "--threads", "1", "lm", *args]
    run = subprocess.run(
        command,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), **env},
        capture_output=True,
        text=True,
        timeout=120,  # a rank left waiting for a failed one would hang here
    )
    output = run.stdout + run.stderr
    if env.get("RNNLM_TEST_FAILING_RANK") is None:
        assert run.returncode == 0, output
    else:
        assert run.returncode != 0, output
    return output


def train_alone(config: TrainConfig, resume: bool = False) -> dict[str, Any]:
    """One process, one thread: as each rank runs."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return train(config, resume=resume)
    finally:
        torch.set_num_threads(threads)


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = load_file(str(a / "weights.safetensors")), load_file(str(b / "weights.safetensors"))
    assert wa.keys() == wb.keys()
    for name in wa:
        distance = float((wa[name] - wb[name]).norm() / wb[name].norm())
        assert distance <= TOLERANCE, f"{name}: relative distance {distance:.2e}"


def val_ppl(out: Path) -> list[float]:
    return [e["val_ppl"] for e in load_bundle(out).metrics["epochs"]]


@pytest.mark.system  # torchrun: make test-system
def test_two_ranks_train_the_weights_of_one_process_and_resume_on_one(
    tmp_path: Path, tiny_corpus: Path
) -> None:
    alone = tiny_train_config(tmp_path / "alone" / "tiny", tiny_corpus)
    ranks = alone.replace(out=tmp_path / "ranks" / "tiny")
    torchrun(flags(ranks))
    train_alone(alone)
    assert_same_weights(ranks.out, alone.out)
    assert val_ppl(ranks.out) == pytest.approx(val_ppl(alone.out), rel=TOLERANCE)
    assert load_bundle(ranks.out).config["training"]["data_parallel_ranks"] == 2
    assert "data_parallel_ranks" not in load_bundle(alone.out).config["training"]

    # The resume state written by rank 0 continues in one process as the 2-rank job would.
    train_alone(ranks.replace(epochs=3), resume=True)
    train_alone(alone.replace(epochs=3), resume=True)
    assert_same_weights(ranks.out, alone.out)
    assert len(val_ppl(ranks.out)) == 3


@pytest.mark.system  # torchrun: make test-system
def test_a_one_process_run_resumes_on_two_ranks(tmp_path: Path, tiny_corpus: Path) -> None:
    whole = tiny_train_config(tmp_path / "whole" / "tiny", tiny_corpus, sampling="sequential")
    split = whole.replace(out=tmp_path / "split" / "tiny", epochs=1)
    train_alone(whole)
    train_alone(split)
    output = torchrun([*flags(split.replace(epochs=2)), "--resume"])
    assert "resuming" in output
    assert_same_weights(split.out, whole.out)
    assert val_ppl(split.out) == pytest.approx(val_ppl(whole.out), rel=TOLERANCE)


@pytest.mark.system  # torchrun: make test-system
def test_a_failing_rank_stops_the_others_with_its_message(
    tmp_path: Path, tiny_corpus: Path
) -> None:
    config = tiny_train_config(tmp_path / "ck" / "tiny", tiny_corpus)
    script = str(Path(__file__).with_name("failing_rank.py"))
    output = torchrun(flags(config), script=script, RNNLM_TEST_FAILING_RANK="1")
    assert "error: rank 1 of 2: rank 1 cannot read its minibatches" in output
    root_cause = output.split("Root Cause")[1]  # torchrun's summary of the job
    assert "rank      : 1" in root_cause
    assert "OSError: rank 1 cannot read its minibatches" in root_cause
    assert not config.out.exists()  # rank 0 never saw an epoch end


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Long scoring passes of a tiny model: one thread keeps each step from waiting on a
    second one that a busy machine has descheduled."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.usefixtures("one_thread")
def test_ranks_score_their_shares_of_the_validation_windows() -> None:
    torch.manual_seed(0)
    model = build_model(LMConfig("gru", 30, 16))
    for n in (2, 100, 2049, 4200):  # one window, just two, three
        ids = torch.randint(0, 30, (n,))
        alone = score_ids(model, ids)
        for world_size in (2, 3, 4):
            parts = [score_part(model, ids, Ranks(r, world_size)) for r in range(world_size)]
            assert sum(count for _, count in parts) == alone.count
            assert sum(nll for nll, _ in parts) == pytest.approx(alone.nll, rel=1e-6)


@pytest.mark.parametrize("batcher", [random_batches, sequential_batches])
def test_the_ranks_rows_make_up_each_global_minibatch(batcher) -> None:
    corpus = torch.arange(5000)
    whole = list(batcher(corpus, 12, 7, torch.Generator().manual_seed(3)))
    shares = [
        list(batcher(corpus, 12, 7, torch.Generator().manual_seed(3), Ranks(r, 4).rows(12)))
        for r in range(4)
    ]
    for i, (X, Y) in enumerate(whole):
        assert torch.equal(torch.cat([share[i][0] for share in shares]), X)
        assert torch.equal(torch.cat([share[i][1] for share in shares]), Y)


def test_the_global_minibatch_must_split_evenly() -> None:
    with pytest.raises(TrainingError, match="--batch-size 10 is the global minibatch"):
        Ranks(0, 4).rows(10)
