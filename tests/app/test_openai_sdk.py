"""End to end with the official `openai` package against uvicorn in a real process."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
from openai import OpenAI

from models.bundle import load_bundle
from models.generate import SamplingParams, generate
from models.score import score_ids


@pytest.fixture(scope="module")
def sdk(server: str) -> Iterator[OpenAI]:
    with OpenAI(base_url=f"{server}/v1", api_key="x", max_retries=0, timeout=60) as client:
        yield client


def test_models_list(sdk: OpenAI) -> None:
    models = {m.id: m for m in sdk.models.list()}
    assert {"char-lstm", "char-gru", "word-gru", "sine-mlp"} <= set(models)
    assert models["char-lstm"].object == "model" and models["char-lstm"].owned_by == "rnnlm"
    assert sdk.models.retrieve("char-gru").id == "char-gru"


def test_plain_and_n_completions(sdk: OpenAI) -> None:
    one = sdk.completions.create(
        model="char-lstm", prompt="the time ", max_tokens=20, temperature=0
    )
    assert one.object == "text_completion" and one.model == "char-lstm"
    assert one.choices[0].finish_reason == "length" and len(one.choices[0].text) == 20
    assert one.usage is not None and one.usage.completion_tokens == 20
    many = sdk.completions.create(
        model="char-lstm", prompt=["the ", "it "], n=3, max_tokens=10, seed=1
    )
    assert [c.index for c in many.choices] == list(range(6))
    assert len({c.text for c in many.choices[:3]}) > 1  # seeds 1, 2, 3 differ


def test_streaming_joins_to_the_plain_text(sdk: OpenAI) -> None:
    body = {"model": "char-gru", "prompt": "machine ", "max_tokens": 24, "seed": 4}
    plain = sdk.completions.create(**body).choices[0].text  # type: ignore[call-overload]
    chunks = list(sdk.completions.create(**body, stream=True))  # type: ignore[call-overload]
    assert "".join(c.choices[0].text for c in chunks) == plain
    assert chunks[-1].choices[0].finish_reason == "length"


def test_echo_logprobs_score_the_prompt_like_score_ids(sdk: OpenAI, checkpoint_dir: Path) -> None:
    prompt = "The time traveller smiled round at us"
    out = sdk.completions.create(
        model="char-lstm", prompt=prompt, max_tokens=0, echo=True, logprobs=1
    )
    logprobs = out.choices[0].logprobs
    assert logprobs is not None and logprobs.token_logprobs is not None
    bundle = load_bundle(checkpoint_dir / "char-lstm")
    ids = bundle.tokenizer.encode(prompt).ids
    expected = score_ids(bundle.model, ids, return_logprobs=True).token_logprobs
    assert logprobs.token_logprobs[0] is None
    assert logprobs.token_logprobs[1:] == pytest.approx(expected, abs=1e-6)
    assert out.choices[0].text == "the time traveller smiled round at us"


def test_unknown_model_is_not_found(sdk: OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        sdk.completions.create(model="gpt-3.5-turbo-instruct", prompt="hi")
    assert "char-lstm" in caught.value.message
    assert caught.value.body["code"] == "model_not_found"  # type: ignore[index]


def test_unsupported_field_is_unprocessable(sdk: OpenAI) -> None:
    with pytest.raises(openai.UnprocessableEntityError) as caught:
        sdk.completions.create(model="char-lstm", prompt="hi", suffix="the end")
    assert caught.value.body["param"] == "suffix"  # type: ignore[index]


def test_openai_sampling_fields(sdk: OpenAI, checkpoint_dir: Path) -> None:
    """presence_penalty, frequency_penalty, logit_bias, best_of and logprobs, as OpenAI
    defines them, through the official client."""
    bundle = load_bundle(checkpoint_dir / "char-lstm")
    tokenizer = bundle.tokenizer
    assert tokenizer is not None
    prompt = "the time "
    base = {"model": "char-lstm", "prompt": prompt, "max_tokens": 40, "temperature": 0}
    plain = sdk.completions.create(**base).choices[0].text  # type: ignore[call-overload]
    penalties = {"presence_penalty": 1.0, "frequency_penalty": 0.5}
    penalized = sdk.completions.create(**base, **penalties).choices[0].text  # type: ignore[call-overload]
    params = SamplingParams(temperature=0, max_new_tokens=40, **penalties)  # type: ignore[arg-type]
    ids = tokenizer.encode(prompt).ids
    assert (
        penalized == generate(bundle.model, ids, [params], tokenizer.detokenizer)[0].text != plain
    )

    e = tokenizer.vocab.token_to_idx["e"]
    banned = sdk.completions.create(**base, logit_bias={str(e): -100}).choices[0].text  # type: ignore[call-overload]
    assert len(banned) == 40 and "e" not in banned

    sampled = {"model": "char-lstm", "prompt": prompt, "max_tokens": 20, "seed": 7, "logprobs": 2}
    four = sdk.completions.create(**sampled, n=4).choices  # type: ignore[call-overload]
    totals = [sum(c.logprobs.token_logprobs) for c in four]
    best = sdk.completions.create(**sampled, n=1, best_of=4).choices[0]  # type: ignore[call-overload]
    assert best.text == four[totals.index(max(totals))].text
    assert best.logprobs is not None and len(best.logprobs.top_logprobs[0]) >= 2
    assert sum(best.logprobs.token_logprobs) == pytest.approx(max(totals), abs=1e-6)
