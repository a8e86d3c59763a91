"""lm-evaluation-harness as a real client: `lm_eval --model local-completions` against a live
server, offline, on the repository's local tasks (evaluation/tasks) with data written here.

Its byte perplexity must equal the one the service's own /v1/perplexity gives, and its
per-choice log-likelihoods of a multiple-choice task the /v1/completions echo scores.
"""

from __future__ import annotations

import glob
import json
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import httpx
import pytest

from evaluation.data import cloze_items, documents, write_jsonl
from models.text import clean_corpus
from tests.conftest import ROOT, TINY_TEXT

pytestmark = pytest.mark.lmeval

OFFLINE = {
    "HF_DATASETS_OFFLINE": "1",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
}


def run_lm_eval(workdir: Path, model_args: str, tasks: str, *extra: str) -> dict[str, Any]:
    """Run the lm_eval CLI in `workdir` (where evaluation/data/ is); its results and samples."""
    out = Path(tempfile.mkdtemp(prefix="out-", dir=workdir))
    command = [
        sys.executable,
        "-m",
        "lm_eval",
        "--model",
        "local-completions",
        "--model_args",
        model_args,
        "--include_path",
        str(ROOT / "evaluation" / "tasks"),
        "--tasks",
        tasks,
        "--output_path",
        str(out),
        "--log_samples",
        *extra,
    ]
    env = {**os.environ, **OFFLINE, "HF_HOME": str(workdir / "hf")}
    done = subprocess.run(
        command, cwd=workdir, env=env, capture_output=True, text=True, timeout=600, check=False
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]
    assert "Using remote tokenizer" in done.stderr, done.stderr[-3000:]
    [results] = glob.glob(str(out / "**" / "results_*.json"), recursive=True)
    samples = {
        task: [json.loads(line) for line in Path(path).read_text().splitlines()]
        for task in tasks.split(",")
        for path in glob.glob(str(out / "**" / f"samples_{task}_*.jsonl"), recursive=True)
    }
    return {"results": json.loads(Path(results).read_text())["results"], "samples": samples}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Local task data, as `python -m evaluation.data` writes it, from a short text."""
    root = tmp_path_factory.mktemp("lm-eval")
    docs = documents(clean_corpus(TINY_TEXT), max_chars=300)[:4]
    write_jsonl(root / "evaluation" / "data" / "heldout.jsonl", ({"text": d} for d in docs))
    write_jsonl(root / "evaluation" / "data" / "cloze.jsonl", cloze_items(docs, 6))
    return root


def service_byte_perplexity(server: str, model: str, docs: list[str]) -> float:
    """exp(-log-likelihood / UTF-8 bytes), each document scored by /v1/perplexity after the
    model's start token (what lm-eval puts before a document to score its first token)."""
    bos = httpx.get(f"{server}/models/{model}/tokenizer_info").json()["bos_token"]
    total = 0.0
    for doc in docs:
        body = {"model": model, "text": doc, "context": bos}
        total += httpx.post(f"{server}/v1/perplexity", json=body, timeout=60).json()["log_prob"]
    return math.exp(-total / sum(len(d.encode()) for d in docs))


def echo_loglikelihood(server: str, model: str, context: str, continuation: str) -> float:
    """log p(continuation | context) from /v1/completions echo, as a text prompt."""
    count = httpx.post(f"{server}/v1/tokenize", json={"model": model, "text": context})
    body = {
        "model": model,
        "prompt": context + continuation,
        "max_tokens": 0,
        "echo": True,
        "logprobs": 0,
    }
    out = httpx.post(f"{server}/v1/completions", json=body, timeout=60).json()
    return sum(out["choices"][0]["logprobs"]["token_logprobs"][count.json()["count"] :])


def test_lm_eval_with_default_settings_matches_the_service(server: str, workdir: Path) -> None:
    model = "char-lstm"
    run = run_lm_eval(
        workdir, f"model={model},base_url={server}/v1/completions", "rnnlm_heldout,rnnlm_cloze"
    )
    docs = [s["doc"]["text"] for s in run["samples"]["rnnlm_heldout"]]
    assert len(docs) == 4
    lm_eval_ppl = run["results"]["rnnlm_heldout"]["byte_perplexity,none"]
    assert math.isclose(lm_eval_ppl, service_byte_perplexity(server, model, docs), rel_tol=1e-6)

    cloze = run["samples"]["rnnlm_cloze"]
    assert len(cloze) == 6
    correct = 0
    for sample in cloze:
        doc = sample["doc"]
        lm_eval_lls = [float(ll) for ll, _ in sample["filtered_resps"]]
        echo_lls = [
            echo_loglikelihood(server, model, doc["context"], " " + choice)
            for choice in doc["choices"]
        ]
        for a, b in zip(lm_eval_lls, echo_lls, strict=True):
            assert math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9), (lm_eval_lls, echo_lls)
        correct += max(range(len(echo_lls)), key=echo_lls.__getitem__) == doc["answer"]
    assert run["results"]["rnnlm_cloze"]["acc,none"] == pytest.approx(correct / len(cloze))


def test_lm_eval_batched_long_windows_and_a_model_of_its_own(server: str, workdir: Path) -> None:
    """`--batch_size 32` with `max_length=8192`, through one model's own base URL (so the
    remote tokenizer is that model's: /models/{id}/tokenize)."""
    model = "char-gru"
    run = run_lm_eval(
        workdir,
        f"model={model},base_url={server}/models/{model}/v1/completions,max_length=8192",
        "rnnlm_heldout",
        "--batch_size",
        "32",
    )
    docs = [s["doc"]["text"] for s in run["samples"]["rnnlm_heldout"]]
    lm_eval_ppl = run["results"]["rnnlm_heldout"]["byte_perplexity,none"]
    assert math.isclose(lm_eval_ppl, service_byte_perplexity(server, model, docs), rel_tol=1e-6)
