import pytest
import torch

from models.generate import SamplingParams, generate
from models.mixture import Mixture, MixtureConfig
from models.ngram_lm import NgramConfig, NgramLM, count_ngrams
from models.precision import PRECISIONS, Int8Linear, LightRNN, with_precision
from models.rnn import LanguageModel
from models.score import score_ids
from models.text import Tokenizer
from tests.conftest import tiny_lm

LIGHT = ("bf16", "int8")
ARCHS = [
    ("lstm", {"num_layers": 2, "embed_size": 8}),
    ("lstm", {"num_layers": 1}),
    ("gru", {"num_layers": 2}),
    ("gru", {"embed_size": 8}),
    ("rnn", {"num_layers": 2}),
    ("rnn_scratch", {}),
]


def _model(arch: str, kw: dict[str, int]) -> LanguageModel:
    return tiny_lm(arch, num_hiddens=48, **kw)


@pytest.mark.parametrize("precision", LIGHT)
@pytest.mark.parametrize(("arch", "kw"), ARCHS)
def test_lighter_weights_compute_the_same_function(
    arch: str, kw: dict[str, int], precision: str
) -> None:
    model = _model(arch, kw)
    light = with_precision(model, precision)  # type: ignore[arg-type]
    assert isinstance(light, LightRNN)
    X = torch.randint(0, 28, (3, 25))
    with torch.no_grad():
        ref, ref_state = model(X)
        out, state = light(X)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, ref, atol=0.02, rtol=0.02)
    for s, r in zip(state, ref_state, strict=True):
        assert s.shape == r.shape and s.dtype == torch.float32
        torch.testing.assert_close(s, r, atol=0.02, rtol=0.02)


@pytest.mark.parametrize("precision", LIGHT)
@pytest.mark.parametrize(("arch", "kw"), ARCHS)
def test_steps_equal_the_forward_pass(arch: str, kw: dict[str, int], precision: str) -> None:
    light = with_precision(_model(arch, kw), precision)  # type: ignore[arg-type]
    X = torch.randint(0, 28, (2, 12))
    with torch.no_grad():
        whole, whole_state = light(X)
        state = light.begin_state(2)
        steps = []
        for t in range(X.shape[1]):
            logits, state = light.step(X[:, t], state)
            steps.append(logits)
    torch.testing.assert_close(torch.stack(steps, 1), whole, atol=1e-5, rtol=1e-5)
    for s, w in zip(state, whole_state, strict=True):
        torch.testing.assert_close(s, w, atol=1e-6, rtol=1e-6)


def test_int8_rows_do_not_depend_on_the_batch() -> None:
    """Integer sums are exact and every row has its own scale: a row's logits are the same
    bits alone or beside any other rows."""
    light = with_precision(_model("lstm", {"num_layers": 2}), "int8")
    X = torch.randint(0, 28, (17, 9))
    with torch.no_grad():
        together, _ = light(X)
        for row in (0, 5, 16):
            alone, _ = light(X[row : row + 1])
            assert torch.equal(alone[0], together[row])


def test_int8_linear_quantises_weights_per_row_and_inputs_per_row() -> None:
    torch.manual_seed(0)
    weight = torch.randn(64, 40) * torch.logspace(-3, 1, 64).unsqueeze(1)  # rows of any scale
    x = torch.randn(5, 40) * torch.tensor([[1e-3], [1.0], [30.0], [0.5], [2.0]])
    linear = Int8Linear(weight, None)
    assert linear.weight.dtype == torch.int8
    exact = x @ weight.T
    # Rounding moves each x and w by at most half its row's step s_x, s_w (max / 127), so
    # each of the 40 terms moves by at most |x| s_w / 2 + |w| s_x / 2 + s_x s_w / 4.
    s_x = x.abs().amax(1, keepdim=True) / 127
    s_w = weight.abs().amax(1) / 127
    bound = 40 * s_x * s_w * (127 + 0.25) * 1.0001
    assert ((linear(x) - exact).abs() <= bound).all()


@pytest.mark.parametrize("precision", PRECISIONS)
def test_same_seed_same_text_alone_or_batched(char_tokenizer: Tokenizer, precision: str) -> None:
    model = with_precision(_model("lstm", {"num_layers": 2}), precision)  # type: ignore[arg-type]
    prefix = char_tokenizer.encode("time traveller ").ids
    params = SamplingParams(temperature=1.0, seed=77, max_new_tokens=50)
    alone = generate(model, prefix, [params], char_tokenizer.detokenizer)[0].text
    others = [
        SamplingParams(temperature=0.9, top_p=0.9, seed=s, max_new_tokens=30) for s in range(40)
    ]
    batched = generate(
        model, prefix, [*others[:20], params, *others[20:]], char_tokenizer.detokenizer
    )
    assert batched[20].text == alone


def test_fp32_is_the_model_itself_and_counts_pass_through() -> None:
    model = _model("gru", {})
    assert with_precision(model, "fp32") is model
    ngram = _ngram()
    assert with_precision(ngram, "int8") is ngram


def test_a_mixture_gets_its_recurrent_components_lightened() -> None:
    rnn, ngram = _model("lstm", {}), _ngram()
    config = MixtureConfig(28, ("lstm", "kn"), ("a" * 64, "b" * 64), (0, 3))
    mixture = Mixture(config, [rnn, ngram]).eval()
    with torch.no_grad():
        mixture.gate_bias.copy_(torch.tensor([0.3, -0.3]))
    light = with_precision(mixture, "int8")
    assert isinstance(light, Mixture) and light is not mixture
    assert isinstance(light.parts[0], LightRNN) and light.parts[1] is ngram
    assert torch.equal(light.gate_bias, mixture.gate_bias)
    ids = torch.randint(1, 28, (200,)).tolist()
    ref, got = score_ids(mixture, ids).perplexity, score_ids(light, ids).perplexity
    assert got == pytest.approx(ref, rel=1e-3)


def test_unknown_precision_is_refused() -> None:
    with pytest.raises(ValueError, match="precision must be one of fp32, bf16, int8"):
        with_precision(_model("gru", {}), "fp16")  # type: ignore[arg-type]


def test_scoring_in_int8_stays_close_to_fp32() -> None:
    model = _model("lstm", {"num_layers": 2, "embed_size": 8})
    ids = torch.randint(1, 28, (3000,)).tolist()
    ref = score_ids(model, ids).perplexity
    for precision in LIGHT:
        got = score_ids(with_precision(model, precision), ids).perplexity  # type: ignore[arg-type]
        assert got == pytest.approx(ref, rel=1e-3)


def _ngram() -> NgramLM:
    ids = torch.randint(1, 28, (500,)).tolist()
    return NgramLM(NgramConfig(28, 3, "kn"), count_ngrams(ids, 3, 28)).eval()
