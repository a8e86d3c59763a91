import pytest
import torch

from models.rnn import ARCHITECTURES, LMConfig, RNNScratch, build_model
from tests.conftest import tiny_lm

ARCHS = sorted(ARCHITECTURES)


@pytest.mark.parametrize("arch", ARCHS)
def test_one_interface_for_every_architecture(arch: str) -> None:
    model = tiny_lm(arch, num_layers=1 if arch == "rnn_scratch" else 2)
    X = torch.randint(0, 28, (3, 7))
    logits, state = model(X)
    assert logits.shape == (3, 7, 28)
    assert all(s.shape[1:] == (3, 16) for s in state)
    assert len(state) == (2 if arch == "lstm" else 1)
    assert [s.shape for s in model.begin_state(3)] == [s.shape for s in state]


@pytest.mark.parametrize("arch", ARCHS)
def test_carrying_the_state_equals_one_long_pass(arch: str) -> None:
    model = tiny_lm(arch)
    X = torch.randint(0, 28, (2, 10))
    whole, _ = model(X)
    first, state = model(X[:, :4])
    second, _ = model(X[:, 4:], state)
    torch.testing.assert_close(torch.cat([first, second], dim=1), whole)


def test_scratch_rnn_matches_one_step_by_hand() -> None:
    model = tiny_lm("rnn_scratch", vocab_size=5, num_hiddens=3)
    assert isinstance(model, RNNScratch)
    H0 = torch.randn(1, 2, 3)
    X = torch.tensor([[1], [4]])
    logits, (H1,) = model(X, (H0,))
    one_hot = torch.nn.functional.one_hot(X[:, 0], 5).float()
    H = torch.tanh(one_hot @ model.W_xh + H0[0] @ model.W_hh + model.b_h)
    torch.testing.assert_close(H1[0], H)
    torch.testing.assert_close(logits[:, 0], H @ model.W_hq + model.b_q)


def test_config_is_validated() -> None:
    with pytest.raises(ValueError, match="arch"):
        LMConfig("transformer", 28, 16)
    with pytest.raises(ValueError, match="rnn_scratch"):
        LMConfig("rnn_scratch", 28, 16, num_layers=2)
    with pytest.raises(ValueError, match="dropout"):
        LMConfig("gru", 28, 16, dropout=1.0)


def test_embedding_and_dropout_options() -> None:
    model = build_model(LMConfig("lstm", 28, 16, num_layers=2, dropout=0.5, embed_size=8))
    model.train()
    X = torch.randint(0, 28, (2, 5))
    a, _ = model(X)
    b, _ = model(X)
    assert not torch.equal(a, b)  # dropout active in training
    model.eval()
    torch.testing.assert_close(model(X)[0], model(X)[0])


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("embed_size", [0, 6])
def test_step_equals_a_one_token_forward(arch: str, embed_size: int) -> None:
    layers = 1 if arch == "rnn_scratch" else 2
    model = tiny_lm(arch, num_layers=layers, embed_size=0 if arch == "rnn_scratch" else embed_size)
    tokens = torch.tensor([3, 0, 27])
    _, state = model(torch.randint(0, 28, (3, 5)))
    with torch.no_grad():
        expected, expected_state = model(tokens[:, None], state)
        logits, new_state = model.step(tokens, state)
    torch.testing.assert_close(logits, expected[:, 0])
    for a, b in zip(new_state, expected_state, strict=True):
        torch.testing.assert_close(a, b)
