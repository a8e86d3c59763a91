"""Recurrent language models behind one interface (d2l §9.5 from scratch, §9.6 concise).

Every model is batch-first: `forward(X[B, T], state) -> (logits[B, T, V], state)` and
`begin_state(batch_size, device)`. A state is a tuple of tensors shaped
(num_layers, B, num_hiddens): one for RNN/GRU, (h, c) for LSTM. Keeping the batch on
dimension 1 everywhere lets the serving scheduler add and drop sequences without knowing
which architecture it runs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

State = tuple[Tensor, ...]


@dataclass(frozen=True)
class LMConfig:
    """Everything needed to rebuild a language model; stored in the bundle's config.json."""

    arch: str
    vocab_size: int
    num_hiddens: int
    num_layers: int = 1
    dropout: float = 0.0
    embed_size: int = 0  # 0: one-hot inputs, as in the book

    def __post_init__(self) -> None:
        if self.arch not in ARCHITECTURES:
            raise ValueError(f"arch must be one of {sorted(ARCHITECTURES)}, got {self.arch!r}")
        if self.vocab_size < 2 or self.num_hiddens < 1 or self.num_layers < 1:
            raise ValueError("vocab_size >= 2, num_hiddens >= 1 and num_layers >= 1 required")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.embed_size < 0:
            raise ValueError(f"embed_size must be >= 0, got {self.embed_size}")
        if self.arch == "rnn_scratch" and (self.num_layers != 1 or self.embed_size or self.dropout):
            raise ValueError("rnn_scratch is the book's model: one layer, one-hot, no dropout")


class ModelConfig(Protocol):
    """What every language model's config tells its users: the size of its output."""

    @property
    def vocab_size(self) -> int: ...


class LanguageModel(nn.Module):
    """The shared interface; subclasses set `config` and implement the two methods.

    Logits are unnormalised log-probabilities; a count-based model returns log P itself,
    with -inf for a token it gives probability 0.
    """

    config: ModelConfig

    def begin_state(self, batch_size: int, device: torch.device | str | None = None) -> State:
        raise NotImplementedError

    def forward(self, X: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        raise NotImplementedError

    def step(self, tokens: Tensor, state: State) -> tuple[Tensor, State]:
        """One token per sequence: tokens (B,) -> (logits (B, V), state).

        Equal to `forward(tokens[:, None], state)` with the time axis dropped; decoding
        calls it once per generated token, so subclasses make it as lean as they can.
        """
        logits, state = self(tokens.unsqueeze(1), state)
        return logits[:, 0], state


class RNNScratch(LanguageModel):
    """The book's RNN with explicit parameters: H_t = tanh(X_t W_xh + H_{t-1} W_hh + b_h)."""

    config: LMConfig

    def __init__(self, config: LMConfig, sigma: float = 0.01) -> None:
        super().__init__()
        self.config = config
        V, H = config.vocab_size, config.num_hiddens
        self.W_xh = nn.Parameter(torch.randn(V, H) * sigma)
        self.W_hh = nn.Parameter(torch.randn(H, H) * sigma)
        self.b_h = nn.Parameter(torch.zeros(H))
        self.W_hq = nn.Parameter(torch.randn(H, V) * sigma)
        self.b_q = nn.Parameter(torch.zeros(V))

    def begin_state(self, batch_size: int, device: torch.device | str | None = None) -> State:
        return (torch.zeros(1, batch_size, self.config.num_hiddens, device=device),)

    def forward(self, X: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        if state is None:
            state = self.begin_state(X.shape[0], X.device)
        H = state[0][0]  # (B, H)
        # The book's loop runs time-major; one-hot rows of W_xh are an index lookup.
        inputs = self.W_xh[X.T]  # (T, B, H)
        outputs = []
        for X_t in inputs:
            H = torch.tanh(X_t + H @ self.W_hh + self.b_h)
            outputs.append(H)
        Hs = torch.stack(outputs, dim=1)  # (B, T, H)
        return Hs @ self.W_hq + self.b_q, (H.unsqueeze(0),)  # (B, T, V)

    def step(self, tokens: Tensor, state: State) -> tuple[Tensor, State]:
        H = torch.tanh(torch.addmm(self.W_xh[tokens] + self.b_h, state[0][0], self.W_hh))  # (B, H)
        return torch.addmm(self.b_q, H, self.W_hq), (H.unsqueeze(0),)


_CELLS: dict[str, Callable[..., nn.RNNBase]] = {"rnn": nn.RNN, "gru": nn.GRU, "lstm": nn.LSTM}
_STEP_CELLS: dict[str, Callable[..., Any]] = {
    "rnn": torch.rnn_tanh_cell,
    "gru": torch.gru_cell,
    "lstm": torch.lstm_cell,
}


class RNNLM(LanguageModel):
    """nn.RNN / nn.GRU / nn.LSTM (fused kernels) between an input map and a linear head.

    Dropout, when set, acts on the inputs, between layers and on the top layer's outputs.
    """

    config: LMConfig

    def __init__(self, config: LMConfig) -> None:
        super().__init__()
        self.config = config
        V, H, L = config.vocab_size, config.num_hiddens, config.num_layers
        self.embedding = nn.Embedding(V, config.embed_size) if config.embed_size else None
        input_size = config.embed_size or V
        self.rnn = _CELLS[config.arch](
            input_size, H, L, batch_first=True, dropout=config.dropout if L > 1 else 0.0
        )
        self.drop = nn.Dropout(config.dropout)
        self.output = nn.Linear(H, V)

    def begin_state(self, batch_size: int, device: torch.device | str | None = None) -> State:
        c = self.config
        h = torch.zeros(c.num_layers, batch_size, c.num_hiddens, device=device)
        return (h, torch.zeros_like(h)) if c.arch == "lstm" else (h,)

    def forward(self, X: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        if state is None:
            state = self.begin_state(X.shape[0], X.device)
        if self.embedding is not None:
            inputs = self.embedding(X)  # (B, T, E)
        else:
            inputs = F.one_hot(X, self.config.vocab_size).to(self.output.weight.dtype)  # (B, T, V)
        rnn_state = state if self.config.arch == "lstm" else state[0]
        Y, new_state = self.rnn(self.drop(inputs), rnn_state)  # (B, T, H)
        logits = self.output(self.drop(Y))  # (B, T, V)
        return logits, (tuple(new_state) if isinstance(new_state, tuple) else (new_state,))

    def step(self, tokens: Tensor, state: State) -> tuple[Tensor, State]:
        """The fused ATen cells, layer by layer: for one time step they skip nn.RNNBase's
        per-call set-up (and oneDNN's, which costs milliseconds per call on CPU)."""
        if self.training:
            return super().step(tokens, state)  # dropout between layers lives in nn.RNNBase
        if self.embedding is not None:
            x = self.embedding(tokens)  # (B, E)
        else:
            x = F.one_hot(tokens, self.config.vocab_size).to(self.output.weight.dtype)  # (B, V)
        cell = _STEP_CELLS[self.config.arch]
        layers = []
        for layer, weights in enumerate(self.rnn.all_weights):
            hx = tuple(s[layer] for s in state) if self.config.arch == "lstm" else state[0][layer]
            out = cell(x, hx, *weights)
            layers.append(out if isinstance(out, tuple) else (out,))
            x = layers[-1][0]  # (B, H)
        new_state = tuple(torch.stack(parts) for parts in zip(*layers, strict=True))
        return self.output(x), new_state  # (B, V)


ARCHITECTURES: dict[str, Callable[[LMConfig], LanguageModel]] = {
    "rnn_scratch": RNNScratch,
    "rnn": RNNLM,
    "gru": RNNLM,
    "lstm": RNNLM,
}


def build_model(config: LMConfig) -> LanguageModel:
    """Instantiate the architecture named in `config` (a table lookup, no if/elif chain)."""
    return ARCHITECTURES[config.arch](config)


def num_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
