"""Lighter weights: the same recurrent network computing with bf16 or int8 weights.

At batch 1 a recurrent step reads every weight once per token through matrix-vector
products, so on a CPU its speed is bounded by how many bytes of weights it reads: fp32
weights are the floor the fp32 decoder already sits near. `with_precision(model, p)`
returns a copy of a language model whose matrix products read lighter weights:

- `fp32`: the model itself (the reference; what training produced).
- `bf16`: weights stored in bfloat16, inputs rounded to bfloat16 for each product, which
  accumulates in fp32 (oneDNN's bf16 kernels, accelerated by AVX-512-BF16 or AMX where the
  CPU has them).
- `int8`: dynamic quantisation. Each weight matrix is stored as int8 with one scale per
  output row (its largest magnitude / 127); at every call the input is quantised the same
  way, one scale per row of the batch, and multiplied in int8 with int32 accumulation
  (`torch._int_mm`), then scaled back. Integer sums are exact, and each batch row has its
  own scale, so a row's result never depends on the other rows in the batch.

Everything else stays fp32: the recurrent state, the gates' nonlinearities, the biases and
the embedding. The input side of the first layer is folded into one table (V rows of
`W_ih x + b`) looked up per token, since its input is a one-hot vector or an embedding
row. Only the forward computation changes: the copy has the same state layout
((layers, B, hidden) tensors), so prefixes, scoring and decoding work unchanged, and the
copy shares nothing mutable with the original. Count-based models have no weights to
lighten and are returned as they are; a mixture gets its components converted.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, Literal, get_args

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.mixture import Mixture
from models.ngram_lm import NgramLM
from models.rnn import RNNLM, LanguageModel, LMConfig, RNNScratch, State

Precision = Literal["fp32", "bf16", "int8"]
PRECISIONS: tuple[Precision, ...] = get_args(Precision)


def _frozen(t: Tensor) -> nn.Parameter:
    return nn.Parameter(t.detach().clone().contiguous(), requires_grad=False)


class Int8Linear(nn.Module):
    """x @ W.T + b with W in int8 (a scale per output row) and x quantised per row."""

    def __init__(self, weight: Tensor, bias: Tensor | None) -> None:
        super().__init__()
        w = weight.detach().float()
        scale = w.abs().amax(dim=1).clamp_min(1e-30) / 127  # (N,)
        self.weight = _frozen(torch.round(w / scale.unsqueeze(1)).to(torch.int8))  # (N, K)
        self.scale = _frozen(scale)
        self.bias = None if bias is None else _frozen(bias.float())

    def forward(self, x: Tensor) -> Tensor:
        """x (M, K) float -> (M, N) float32."""
        x = x.float()
        step = x.abs().amax(dim=1, keepdim=True).clamp_min(1e-30) / 127  # (M, 1)
        q = torch.round(x / step).to(torch.int8)
        y = torch._int_mm(q, self.weight.T).float() * (step * self.scale)  # (M, N)
        return y if self.bias is None else y + self.bias


class Bf16Linear(nn.Module):
    """x @ W.T + b with W and x rounded to bfloat16; fp32 accumulation, fp32 result."""

    def __init__(self, weight: Tensor, bias: Tensor | None) -> None:
        super().__init__()
        self.weight = _frozen(weight.to(torch.bfloat16))
        self.bias = None if bias is None else _frozen(bias.float())

    def forward(self, x: Tensor) -> Tensor:
        y = F.linear(x.to(torch.bfloat16), self.weight).float()
        return y if self.bias is None else y + self.bias


_LINEARS: dict[str, Callable[[Tensor, Tensor | None], nn.Module]] = {
    "bf16": Bf16Linear,
    "int8": Int8Linear,
}


def _lstm(gates_x: Tensor, gates_h: Tensor, hx: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    """torch.lstm_cell's arithmetic from the two gate products (B, 4H) (biases inside)."""
    i, f, g, o = (gates_x + gates_h).chunk(4, dim=1)
    c = torch.sigmoid(f) * hx[1] + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c), c


def _gru(gates_x: Tensor, gates_h: Tensor, hx: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    """torch.gru_cell's arithmetic: the reset gate scales the hidden side of n only."""
    H = hx[0].shape[1]
    rz = torch.sigmoid(gates_x[:, : 2 * H] + gates_h[:, : 2 * H])
    n = torch.tanh(gates_x[:, 2 * H :] + rz[:, :H] * gates_h[:, 2 * H :])
    return (n + rz[:, H:] * (hx[0] - n),)


def _tanh(gates_x: Tensor, gates_h: Tensor, _hx: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    return (torch.tanh(gates_x + gates_h),)


_CELLS: dict[str, Callable[[Tensor, Tensor, tuple[Tensor, ...]], tuple[Tensor, ...]]] = {
    "lstm": _lstm,
    "gru": _gru,
    "rnn": _tanh,
    "rnn_scratch": _tanh,
}


class LightRNN(LanguageModel):
    """A recurrent LM's forward computation with bf16 or int8 weight products.

    Per layer l the gates are `x_l W_ih^T + b_ih` and `h_l W_hh^T + b_hh` combined by the
    architecture's cell; layer 0's input side is the table row of the token. Built by
    `with_precision` from an `RNNLM` or `RNNScratch`.
    """

    config: LMConfig

    def __init__(
        self,
        config: LMConfig,
        precision: Precision,
        table: Tensor,
        layers: list[tuple[tuple[Tensor, Tensor | None] | None, tuple[Tensor, Tensor | None]]],
        output: tuple[Tensor, Tensor | None],
    ) -> None:
        """`table` (V, G): layer 0's input gates per token, its b_ih included; `layers`:
        per layer ((W_ih, b_ih) or None for layer 0, (W_hh, b_hh)); `output`: (W, b)."""
        super().__init__()
        self.config = config
        self.precision = precision
        linear = _LINEARS[precision]
        self.table = _frozen(table.float())
        self.inputs = nn.ModuleList(
            [nn.Identity() if ih is None else linear(*ih) for ih, _ in layers]
        )
        self.hiddens = nn.ModuleList([linear(*hh) for _, hh in layers])
        self.output = linear(*output)
        self.cell = _CELLS[config.arch]

    def begin_state(self, batch_size: int, device: torch.device | str | None = None) -> State:
        c = self.config
        h = torch.zeros(c.num_layers, batch_size, c.num_hiddens, device=device)
        return (h, torch.zeros_like(h)) if c.arch == "lstm" else (h,)

    def _advance(self, gates_x: Tensor, state: State) -> tuple[Tensor, State]:
        """All layers for one time step; gates_x (B, G) is layer 0's input side."""
        layers: list[tuple[Tensor, ...]] = []
        for layer, (inputs, hiddens) in enumerate(zip(self.inputs, self.hiddens, strict=True)):
            hx = tuple(s[layer] for s in state)
            if layer:
                gates_x = inputs(layers[-1][0])
            layers.append(self.cell(gates_x, hiddens(hx[0]), hx))
        top = layers[-1][0]
        return top, tuple(torch.stack(parts) for parts in zip(*layers, strict=True))

    def step(self, tokens: Tensor, state: State) -> tuple[Tensor, State]:
        top, state = self._advance(self.table[tokens], state)
        return self.output(top), state

    def forward(self, X: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        if state is None:
            state = self.begin_state(X.shape[0], X.device)
        gates = self.table[X]  # (B, T, G)
        tops = []
        for t in range(X.shape[1]):
            top, state = self._advance(gates[:, t], state)
            tops.append(top)
        B, T = X.shape
        Y = torch.stack(tops, dim=1).reshape(B * T, -1)  # (B*T, H)
        return self.output(Y).view(B, T, -1), state


def _from_rnnlm(model: RNNLM, precision: Precision) -> LightRNN:
    config = model.config
    weights = model.rnn.all_weights  # per layer [W_ih, W_hh, b_ih, b_hh]
    w_ih0, _, b_ih0, _ = (w.detach().float() for w in weights[0])
    if model.embedding is not None:
        table = model.embedding.weight.detach().float() @ w_ih0.T + b_ih0  # (V, G)
    else:
        table = w_ih0.T + b_ih0  # one-hot inputs pick columns of W_ih
    layers: list[tuple[tuple[Tensor, Tensor | None] | None, tuple[Tensor, Tensor | None]]] = []
    for layer, (w_ih, w_hh, b_ih, b_hh) in enumerate(weights):
        layers.append((None if layer == 0 else (w_ih, b_ih), (w_hh, b_hh)))
    output = (model.output.weight, model.output.bias)
    return LightRNN(config, precision, table, layers, output)


def _from_scratch(model: RNNScratch, precision: Precision) -> LightRNN:
    """The book's RNN: H W_hh (not W_hh^T) and one bias b_h, folded into the table."""
    table = (model.W_xh + model.b_h).detach()
    layers: list[tuple[tuple[Tensor, Tensor | None] | None, tuple[Tensor, Tensor | None]]]
    layers = [(None, (model.W_hh.detach().T, None))]
    return LightRNN(model.config, precision, table, layers, (model.W_hq.detach().T, model.b_q))


def _from_mixture(model: Mixture, precision: Precision) -> Mixture:
    parts = [with_precision(part, precision) for part in model.parts]
    out = Mixture(model.config, parts)
    out.load_state_dict(model.state_dict())
    return out.to(next(model.parameters()).device).eval()


def _same(model: LanguageModel, _precision: Precision) -> LanguageModel:
    return model


_CONVERTERS: dict[type, Callable[[Any, Precision], LanguageModel]] = {
    RNNLM: _from_rnnlm,
    RNNScratch: _from_scratch,
    Mixture: _from_mixture,
    NgramLM: _same,
}


def with_precision(model: LanguageModel, precision: Precision) -> LanguageModel:
    """`model` computing with `precision` weights, in eval mode on the model's device.

    fp32 is the model itself; a kind with no weights to lighten (an n-gram model) too.

    Raises:
        ValueError: an unknown precision, or a model kind with no lighter form.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "fp32":
        return model
    convert = _CONVERTERS.get(type(model))
    if convert is None:
        raise ValueError(f"no {precision} form for a {type(model).__name__}")
    device = next(model.parameters()).device
    with torch.no_grad():
        light = convert(model, precision)
    return light.to(device).eval() if light is not model else model


def precisions_on(device: torch.device) -> tuple[Precision, ...]:
    """The precisions a device decodes with: int8 products (`torch._int_mm`) only on the
    CPU, where they are what makes int8 fast."""
    return PRECISIONS if device.type == "cpu" else ("fp32", "bf16")


class Variants:
    """One model in each precision, each made when first asked for and then kept.

    Safe to call from several threads (the decode thread and scoring workers): a variant
    is made once.
    """

    def __init__(self, model: LanguageModel) -> None:
        self.model = model
        self._made: dict[Precision, LanguageModel] = {"fp32": model}
        self._lock = threading.Lock()

    def get(self, precision: Precision) -> LanguageModel:
        with self._lock:
            model = self._made.get(precision)
            if model is None:
                model = self._made[precision] = with_precision(self.model, precision)
            return model
