"""n-gram models and mixtures through every language-model route, and their faults."""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Iterator
from pathlib import Path

import arpa
import pytest
import torch
from fastapi.testclient import TestClient

from app.main import create_app
from models.bundle import load_bundle, save_bundle
from models.mixture import Mixture, MixtureConfig, fit_gate, gate_inputs
from models.ngram_lm import NgramConfig, NgramLM, count_ngrams
from tests.app.conftest import assert_error, make_settings, wait_ready
from tests.conftest import TINY_TEXT


@pytest.fixture(scope="module")
def ngram_dir(checkpoint_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """char-gru from the shared bundles, n-gram models of its training text, a mixture of
    the two, and a mixture whose component is missing."""
    root = tmp_path_factory.mktemp("ngram-checkpoints")
    shutil.copytree(checkpoint_dir / "char-gru", root / "char-gru")
    gru = load_bundle(root / "char-gru")
    assert gru.tokenizer is not None
    ids = gru.tokenizer.encode(TINY_TEXT * 3).ids
    V = len(gru.tokenizer.vocab)
    cut = len(ids) * 9 // 10
    for name, order, smoothing in [("char-kn", 4, "kn"), ("char-mle", 3, "mle")]:
        model = NgramLM(NgramConfig(V, order, smoothing), count_ngrams(ids[:cut], order, V))  # type: ignore[arg-type]
        save_bundle(root / name, model, gru.tokenizer, {"order": order}, {"val_ppl": 3.0})
    kn = load_bundle(root / "char-kn")
    config = MixtureConfig(
        V, ("char-gru", "char-kn"), (gru.config_sha256, kn.config_sha256), (0, 4)
    )
    mixture = Mixture(config, [gru.model, kn.model])  # type: ignore[list-item]
    ppl = fit_gate(mixture, gate_inputs(mixture, torch.tensor(ids[cut:])))
    save_bundle(root / "char-mix", mixture, gru.tokenizer, {}, {"val_ppl": ppl})
    config = MixtureConfig(V, ("char-gru", "gone-kn"), (gru.config_sha256, "0" * 64), (0, 4))
    save_bundle(root / "bad-mix", Mixture(config, [gru.model, kn.model]), gru.tokenizer)  # type: ignore[list-item]
    return root


@pytest.fixture(scope="module")
def client(ngram_dir: Path) -> Iterator[TestClient]:
    with TestClient(create_app(make_settings(ngram_dir))) as c:
        wait_ready(c)
        yield c


def test_models_list_kind_order_smoothing_and_held_out_perplexity(client: TestClient) -> None:
    cards = {m["id"]: m for m in client.get("/v1/models").json()["data"]}
    assert cards["char-kn"]["kind"] == "ngram"
    assert (cards["char-kn"]["order"], cards["char-kn"]["smoothing"]) == (4, "kn")
    assert cards["char-kn"]["val_perplexity"] == 3.0
    assert cards["char-mix"]["kind"] == "mixture"
    assert cards["char-mix"]["components"] == ["char-gru", "char-kn"]
    assert cards["char-mix"]["val_perplexity"] > 1
    assert "bad-mix" not in cards


def test_a_mixture_missing_its_component_is_reported_and_the_rest_serve(client: TestClient) -> None:
    ready = client.get("/ready").json()
    bundles = {b["name"]: b for b in ready["bundles"]}
    assert bundles["bad-mix"]["state"] == "failed"
    assert "component 'gone-kn' is not loaded" in bundles["bad-mix"]["reason"]
    assert all(b["state"] == "ready" for n, b in bundles.items() if n != "bad-mix")
    r = client.post("/v1/generate", json={"model": "bad-mix", "prefix": "the"})
    assert_error(r, 404, "model", "gone-kn")


@pytest.mark.parametrize("model", ["char-kn", "char-mle", "char-mix"])
def test_generation_is_seed_exact_alone_batched_and_streamed(
    client: TestClient, model: str
) -> None:
    body = {"model": model, "prefix": "the time ", "max_new_tokens": 30, "temperature": 0.9}
    alone = client.post("/v1/generate", json={**body, "seed": 7}).json()["choices"][0]["text"]
    many = client.post("/v1/generate", json={**body, "seed": 7, "n": 3}).json()["choices"]
    assert len(alone) == 30 and alone in [c["text"] for c in many]
    greedy = client.post("/v1/generate", json={**body, "temperature": 0}).json()
    assert len(greedy["choices"][0]["text"]) == 30
    with client.stream("POST", "/v1/generate", json={**body, "seed": 7, "stream": True}) as r:
        events = [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: {")]
    assert "".join(e["text"] for e in events[1:-1] if e["index"] == 0) == alone


def test_mle_probability_zero_is_reported_plainly(client: TestClient) -> None:
    body = {"model": "char-mle", "text": "the time traveller timf", "return_tokens": True}
    r = client.post("/v1/perplexity", json=body)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["perplexity"] is None and out["cross_entropy"] is None and out["infinite"] is True
    zero = out["zero_probability"]
    assert zero["token"] == "f" and "never follows 'im'" in zero["reason"]
    assert "mle" in zero["reason"] and zero["position"] == len("the time traveller tim")
    assert out["tokens"][zero["position"] - 1]["logprob"] is None  # the first is not scored
    fine = client.post("/v1/perplexity", json={"model": "char-mle", "text": "the time"}).json()
    assert fine["infinite"] is False and fine["perplexity"] >= 1


def test_completions_echo_logprobs_of_a_zero_probability_token(client: TestClient) -> None:
    body = {"model": "char-mle", "prompt": "the timf", "max_tokens": 0, "echo": True, "logprobs": 1}
    r = client.post("/v1/completions", json=body)
    assert r.status_code == 200, r.text
    logprobs = r.json()["choices"][0]["logprobs"]["token_logprobs"]
    assert logprobs[0] is None and -9999.0 in logprobs


def test_breakdown_shows_counts_and_backoff(client: TestClient, ngram_dir: Path) -> None:
    body = {"model": "char-kn", "text": "the timq", "breakdown": True}
    out = client.post("/v1/perplexity", json=body).json()
    rows = out["breakdown"]
    assert [r["token"] for r in rows] == [*"he tim", "<unk>"]
    h = rows[0]  # 'h' after 't'
    assert [c["n"] for c in h["counts"]] == [1, 2]
    assert h["counts"][1]["context"] == "t" and h["counts"][1]["count"] > 0
    assert h["backoff_order"] == 2
    assert rows[5]["order"] == 4 and rows[5]["backoff_order"] == 4  # 'm' after 'ti'
    q = rows[-1]  # 'q' is not even in the vocabulary: <unk>, never seen
    assert q["order"] == 4 and q["backoff_order"] == 0 and q["probability"] > 0
    total = sum(math.log(r["probability"]) for r in rows)
    assert out["cross_entropy"] == pytest.approx(-total / len(rows), rel=1e-5)


def test_same_counts_at_another_order_or_smoothing(client: TestClient) -> None:
    text = "the time traveller"
    base = {"model": "char-kn", "text": text}
    kn4 = client.post("/v1/perplexity", json=base).json()["perplexity"]
    kn2 = client.post("/v1/perplexity", json={**base, "order": 2}).json()["perplexity"]
    laplace = client.post("/v1/perplexity", json={**base, "smoothing": "laplace"}).json()
    assert kn2 > kn4 and laplace["perplexity"] != kn4


@pytest.mark.parametrize(
    ("change", "status", "param", "words"),
    [
        ({"smoothing": "witten-bell"}, 422, "smoothing", ["mle", "modified-kn"]),
        ({"order": 5}, 422, "order", ["at most 4"]),
        ({"order": 0}, 422, "order", ["1"]),
        ({"order": 17}, 422, "order", ["16"]),
        ({"model": "char-gru", "breakdown": True}, 422, "breakdown", ["n-gram"]),
        ({"model": "char-gru", "smoothing": "kn"}, 422, "smoothing", ["n-gram"]),
    ],
)
def test_bad_ngram_fields(client: TestClient, change: dict, status: int, param: str, words) -> None:
    body = {"model": "char-kn", "text": "the time", **change}
    assert_error(client.post("/v1/perplexity", json=body), status, param, *words)


def test_tokenize_works_for_ngram_models(client: TestClient) -> None:
    r = client.post("/v1/tokenize", json={"model": "char-kn", "text": "The time"})
    assert r.status_code == 200, r.text


def test_arpa_route(client: TestClient, tmp_path: Path) -> None:
    r = client.get("/v1/models/char-kn/arpa")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    path = tmp_path / "kn.arpa"
    path.write_text(r.text)
    reader = arpa.loadf(str(path))[0]
    ours = client.post(
        "/v1/perplexity", json={"model": "char-kn", "text": "the ti", "return_tokens": True}
    ).json()["tokens"]
    words = ["t", "h", "e", "<sp>", "t", "i"]
    for i, token in enumerate(ours, 1):
        theirs = reader.log_p(tuple(words[max(0, i - 3) : i + 1]))
        assert theirs == pytest.approx(token["logprob"] / math.log(10), abs=1e-5)
    assert_error(client.get("/v1/models/char-gru/arpa"), 409, "model_id", "no ARPA form")
    assert_error(client.get("/v1/models/char-mix/arpa"), 409, "model_id", "mixture")
    assert_error(client.get("/v1/models/char-mle/arpa"), 409, "model_id", "probability 0")
    assert_error(client.get("/v1/models/nope/arpa"), 404, "model")


def test_compare_lines_up_each_models_surprisal(client: TestClient) -> None:
    body = {"models": ["char-gru", "char-kn", "char-mle"], "text": "the timf"}
    r = client.post("/v1/compare", json=body)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["tokens"] == list("he timf")
    rows = {m["model"]: m for m in out["models"]}
    assert all(len(m["surprisal"]) == 7 for m in rows.values())
    assert rows["char-mle"]["surprisal"][-1] is None and rows["char-mle"]["perplexity"] is None
    ppl = client.post("/v1/perplexity", json={"model": "char-kn", "text": "the timf"}).json()
    bits = rows["char-kn"]["surprisal"]
    assert 2 ** (sum(bits) / len(bits)) == pytest.approx(ppl["perplexity"], rel=1e-6)
    plot = client.post("/v1/compare/plot", json={**body, "format": "svg"})
    assert plot.status_code == 200 and plot.headers["content-type"] == "image/svg+xml"
    png = client.post("/v1/compare/plot", json=body)
    assert png.content[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    ("models", "status", "param", "words"),
    [
        (["char-kn"], 422, "models", ["at least 2"]),
        (["char-kn", "char-kn"], 422, "models", ["distinct"]),
        (["char-kn", "nope"], 404, "model", ["nope"]),
    ],
)
def test_compare_bad_models(client: TestClient, models, status: int, param: str, words) -> None:
    r = client.post("/v1/compare", json={"models": models, "text": "the time"})
    assert_error(r, status, param, *words)
