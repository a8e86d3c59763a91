"""Decoding precision through the service: the server's setting, a request's field, what
/v1/models reports, scoring in fp32 unless asked, and seeded texts that do not depend on
what decodes beside them in the same precision.

How each precision computes is checked in tests/models/test_precision.py.
"""

from __future__ import annotations

import asyncio

import pytest
import torch
from fastapi.testclient import TestClient

from app import streams
from app.main import create_app
from app.scheduler import Scheduler
from app.settings import Settings
from models.bundle import load_bundle
from models.generate import SamplingParams, generate
from models.precision import PRECISIONS, with_precision
from tests.app.conftest import assert_error, make_settings, wait_ready

BODY = {"prefix": "the time ", "max_new_tokens": 30, "seed": 11, "temperature": 0.9}


def gen(client: TestClient, **body: object) -> dict:
    response = client.post("/v1/generate", json=body)
    assert response.status_code == 200, response.text
    return response.json()


def expected(checkpoint_dir, precision: str, n: int = 1) -> list[str]:
    """The core decoder's texts for BODY with `precision` weights, the request alone."""
    bundle = load_bundle(checkpoint_dir / "char-lstm")
    model = with_precision(bundle.model, precision)  # type: ignore[arg-type]
    ids = bundle.tokenizer.encode(BODY["prefix"]).ids
    params = [SamplingParams(temperature=0.9, seed=11 + i, max_new_tokens=30) for i in range(n)]
    return [d.text for d in generate(model, ids, params, bundle.tokenizer.detokenizer)]


def test_models_report_the_servers_precision_and_the_choices(client: TestClient) -> None:
    cards = {m["id"]: m for m in client.get("/v1/models").json()["data"]}
    assert cards["char-lstm"]["precision"] == "fp32"
    assert cards["char-lstm"]["precisions"] == list(PRECISIONS)  # the CPU offers all three
    assert cards["sine-mlp"]["precision"] is None  # not a language model


@pytest.mark.parametrize("precision", PRECISIONS)
def test_a_request_decodes_with_the_precision_it_names(
    client: TestClient, checkpoint_dir, precision: str
) -> None:
    out = gen(client, **BODY, precision=precision, model="char-lstm")
    assert out["precision"] == precision
    assert [c["text"] for c in out["choices"]] == expected(checkpoint_dir, precision)


def test_lighter_weights_give_other_texts_than_fp32(client: TestClient) -> None:
    """The field is not ignored: over a few seeds int8's sampled texts part from fp32's."""
    texts = {
        p: [gen(client, **{**BODY, "seed": s}, precision=p)["choices"][0]["text"] for s in range(8)]
        for p in ("fp32", "int8")
    }
    assert texts["fp32"] != texts["int8"]


def test_unknown_precision_is_a_422_naming_the_field(client: TestClient) -> None:
    response = client.post("/v1/generate", json={**BODY, "precision": "fp16"})
    assert_error(response, 422, "precision")
    response = client.post(
        "/v1/completions", json={"prompt": "the ", "max_tokens": 3, "precision": "int4"}
    )
    assert_error(response, 422, "precision")


def test_completions_take_a_precision(client: TestClient) -> None:
    body = {"prompt": "the time ", "max_tokens": 12, "seed": 3, "temperature": 0}
    plain = client.post("/v1/completions", json=body)
    light = client.post("/v1/completions", json={**body, "precision": "bf16"})
    assert plain.status_code == light.status_code == 200, light.text
    assert len(light.json()["choices"][0]["text"]) == 12


def test_scoring_is_fp32_unless_asked(client: TestClient) -> None:
    text = {"text": "the time traveller was expounding a recondite matter to us"}
    default = client.post("/v1/perplexity", json=text).json()["perplexity"]
    fp32 = client.post("/v1/perplexity", json={**text, "precision": "fp32"}).json()["perplexity"]
    int8 = client.post("/v1/perplexity", json={**text, "precision": "int8"}).json()["perplexity"]
    assert default == fp32
    assert int8 == pytest.approx(fp32, rel=0.05) and int8 != fp32
    assert_error(client.post("/v1/perplexity", json={**text, "precision": "x"}), 422, "precision")


def test_the_server_setting_is_every_requests_default(checkpoint_dir) -> None:
    settings = make_settings(checkpoint_dir, precision="int8", default_model="char-lstm")
    with TestClient(create_app(settings)) as client:
        wait_ready(client)
        card = client.get("/v1/models/char-lstm").json()
        assert card["precision"] == "int8"
        out = gen(client, **BODY)
        assert out["precision"] == "int8"
        assert [c["text"] for c in out["choices"]] == expected(checkpoint_dir, "int8")
        text = {"text": "the time traveller"}
        scored = client.post("/v1/perplexity", json=text).json()["perplexity"]
        fp32 = client.post("/v1/perplexity", json={**text, "precision": "fp32"})
        assert scored == fp32.json()["perplexity"]  # scoring stays fp32 unless asked
        # Another precision decodes in a scheduler of its own, visible in the metrics.
        assert gen(client, **BODY, precision="fp32")["precision"] == "fp32"
        metrics = client.get("/metrics").text
        assert 'rnnlm_scheduler_batch_size{model="char-lstm@fp32"}' in metrics


def test_an_unknown_server_precision_is_refused() -> None:
    with pytest.raises(ValueError, match="precision"):
        Settings(precision="fp16")  # type: ignore[arg-type]


def test_batch_limits_depend_on_the_device() -> None:
    assert Settings().batch_limits(torch.device("cuda")) == (1024, 4096)
    assert Settings().batch_limits(torch.device("cpu")) == (64, 256)
    mine = Settings(max_batch_size=8, max_queue=3)
    assert mine.batch_limits(torch.device("cuda")) == (8, 3)


@pytest.mark.parametrize("precision", ["bf16", "int8"])
def test_same_seed_same_text_alone_or_batched_in_the_engine(checkpoint_dir, precision) -> None:
    """One engine in `precision`: a seeded request among others that join before and
    after it (other prefixes, lengths, controls) decodes as it does alone."""
    bundle = load_bundle(checkpoint_dir / "char-lstm")
    model = with_precision(bundle.model, precision)
    ids = bundle.tokenizer.encode(BODY["prefix"]).ids
    params = [SamplingParams(temperature=0.9, seed=11, max_new_tokens=30)]
    alone = [d.text for d in generate(model, ids, params, bundle.tokenizer.detokenizer)]
    others = [
        ([5, 6, 7], [SamplingParams(seed=1, max_new_tokens=40, top_k=5)] * 3),
        ([9] * 12, [SamplingParams(seed=2, top_p=0.8), SamplingParams(temperature=0)]),
        ([4], [SamplingParams(seed=s, max_new_tokens=20) for s in range(20)]),
    ]

    async def main() -> list[str]:
        scheduler = Scheduler(
            name="m", model=model, tokenizer=bundle.tokenizer, max_batch=64, max_queue=64
        )
        scheduler.start()
        try:
            requests = []
            for prefix, ps in [*others[:2], (ids, params), *others[2:]]:
                requests.append(scheduler.submit(prefix, ps, stream=True))
                first = await requests[-1].queue.get()  # the next joins a step later
                requests[-1].queue.put_nowait(first)
            out = await streams.collect(requests, timeout=120)
            return [c.text for c in out[2]]
        finally:
            await scheduler.stop()

    assert asyncio.run(main()) == alone
