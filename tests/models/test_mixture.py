"""The mixture: its formula, its fit, and its bundle's faults at load time."""

import json
from pathlib import Path

import pytest
import torch

from models.bundle import Bundle, BundleError, components_of, load_bundle, save_bundle
from models.mixture import Mixture, MixtureConfig, fit_gate, gate_inputs
from models.ngram_lm import NgramConfig, NgramLM, count_ngrams
from models.score import score_ids
from models.text import Tokenizer, Vocab
from tests.conftest import TINY_TEXT, tiny_lm


@pytest.fixture
def ids(char_tokenizer: Tokenizer) -> list[int]:
    return char_tokenizer.encode(TINY_TEXT).ids


@pytest.fixture
def parts(ids: list[int]) -> tuple[torch.nn.Module, NgramLM]:
    return tiny_lm("gru"), NgramLM(NgramConfig(28, 4, "kn"), count_ngrams(ids[:800], 4, 28))


def mixture_of(parts: tuple[torch.nn.Module, NgramLM], context: bool = True) -> Mixture:
    config = MixtureConfig(28, ("gru", "kn"), ("a" * 64, "b" * 64), (0, 4), context)
    return Mixture(config, list(parts))  # type: ignore[arg-type]


def test_mixture_is_the_weighted_sum_of_probabilities(parts, ids: list[int]) -> None:
    mixture = mixture_of(parts)
    torch.manual_seed(0)
    with torch.no_grad():
        mixture.gate_weight.normal_(0, 0.3)
        mixture.gate_bias.normal_(0, 0.3)
    X = torch.tensor([ids[:30]])
    with torch.no_grad():
        got, _ = mixture(X)
        _, features, _ = mixture.components_forward(X)
        weights = mixture.weights(features)  # (1, T, 2)
        expected = (
            weights[..., :1] * torch.softmax(parts[0](X)[0], -1)
            + weights[..., 1:] * parts[1](X)[0].exp()
        )
    assert 0.05 < weights[..., 0].mean() < 0.95  # a gate that really mixes
    torch.testing.assert_close(got.exp(), expected, rtol=1e-4, atol=1e-6)
    state = mixture.begin_state(1)
    steps = []
    with torch.no_grad():
        for t in range(X.shape[1]):
            logits, state = mixture.step(X[:, t], state)
            steps.append(logits)
    torch.testing.assert_close(torch.stack(steps, 1), got, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("context", [False, True])
def test_fit_is_at_least_as_good_as_either_component(parts, ids: list[int], context: bool) -> None:
    held_out = torch.tensor(ids[800:1400])
    mixture = mixture_of(parts, context)
    ppl = fit_gate(mixture, gate_inputs(mixture, held_out))
    alone = [score_ids(p, held_out.tolist()).perplexity for p in parts]
    assert ppl <= min(alone) * 1.001
    assert score_ids(mixture, held_out.tolist()).perplexity == pytest.approx(ppl, rel=1e-5)
    again = mixture_of(parts, context)
    assert fit_gate(again, gate_inputs(again, held_out)) == ppl  # deterministic


def save_components(tmp_path: Path, parts, tokenizer: Tokenizer) -> dict[str, Bundle]:
    save_bundle(tmp_path / "gru", parts[0], tokenizer)
    save_bundle(tmp_path / "kn", parts[1], tokenizer)
    return {n: load_bundle(tmp_path / n) for n in ("gru", "kn")}


def save_mixture(tmp_path: Path, parts, tokenizer: Tokenizer, loaded: dict[str, Bundle]) -> Path:
    config = MixtureConfig(
        28, ("gru", "kn"), (loaded["gru"].config_sha256, loaded["kn"].config_sha256), (0, 4)
    )
    save_bundle(tmp_path / "mix", Mixture(config, list(parts)), tokenizer)
    return tmp_path / "mix"


def test_bundle_round_trip_names_its_components(tmp_path: Path, parts, char_tokenizer) -> None:
    loaded = save_components(tmp_path, parts, char_tokenizer)
    path = save_mixture(tmp_path, parts, char_tokenizer, loaded)
    assert components_of(path) == ["gru", "kn"]
    mix = load_bundle(path, components=loaded)
    assert mix.kind == "mixture" and mix.tokenizer is not None
    weights = json.loads((path / "config.json").read_text())
    assert weights["model"]["component_sha256"][1] == loaded["kn"].config_sha256
    X = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        torch.testing.assert_close(mix.model(X)[0], mixture_of(parts)(X)[0])


def test_load_faults_name_the_component_and_the_reason(
    tmp_path: Path, parts, char_tokenizer: Tokenizer
) -> None:
    loaded = save_components(tmp_path, parts, char_tokenizer)
    path = save_mixture(tmp_path, parts, char_tokenizer, loaded)
    with pytest.raises(BundleError, match="component 'kn' is not loaded"):
        load_bundle(path, components={"gru": loaded["gru"]})
    # A component retrained since the mixture was fit: its config (and hash) changed.
    save_bundle(tmp_path / "kn", parts[1], char_tokenizer, training={"again": True})
    with pytest.raises(BundleError, match="component 'kn' changed since the mixture was fit"):
        load_bundle(path, components={**loaded, "kn": load_bundle(tmp_path / "kn")})
    # Same hash claimed, other vocabulary.
    other = Tokenizer(Vocab(["<unk>", *"zyxwvutsrqponmlkjihgfedcba "]))
    save_bundle(tmp_path / "kn2", parts[1], other)
    swapped = load_bundle(tmp_path / "kn2")
    swapped.config_sha256 = loaded["kn"].config_sha256
    with pytest.raises(BundleError, match="component 'kn' has a different vocabulary"):
        load_bundle(path, components={**loaded, "kn": swapped})
    mix = load_bundle(path, components=loaded)
    with pytest.raises(BundleError, match="component 'gru' is a mixture"):
        load_bundle(path, components={**loaded, "gru": mix})
