"""Interpolated language models: P(w | h) = sum_c lambda_c(h) P_c(w | h) over components c.

The weights depend on the context through a small gate, softmax(W f(h) + b): the features
f(h) are, for each component, the entropy and the largest log-probability of its
prediction (how sure it is), and for an n-gram component the order of its estimate as a
one-hot (how much of the context it saw in training). With `context=False` the gate is
its bias alone: fixed weights. The components are other bundles' models, held by
reference and never saved with the mixture: its bundle stores only the gate.

The gate is fit on the validation split only, never on the training split: an n-gram
model has memorised its training text (every n-gram there is "seen"), so weights fit on it
would trust the n-gram model far too much. The fit is deterministic (L-BFGS from zero
weights, float64), so the same components and text always give the same gate.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.ngram_lm import NgramLM
from models.rnn import LanguageModel, State
from models.score import DEFAULT_BURN_IN, DEFAULT_SEGMENT_LEN, segments


@dataclass(frozen=True)
class MixtureConfig:
    """Stored in the bundle's config.json: the components by name and config sha256."""

    vocab_size: int
    components: tuple[str, ...]
    component_sha256: tuple[str, ...]
    ngram_orders: tuple[int, ...]  # per component: its order if an n-gram model, else 0
    context: bool = True  # False: fixed weights

    def __post_init__(self) -> None:
        for name in ("components", "component_sha256", "ngram_orders"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        n = len(self.components)
        if n < 2:
            raise ValueError("a mixture needs at least two components")
        if len(self.component_sha256) != n or len(self.ngram_orders) != n:
            raise ValueError(
                "components, component_sha256 and ngram_orders must have one entry each"
            )

    @property
    def num_features(self) -> int:
        return 2 * len(self.components) + sum(self.ngram_orders) if self.context else 0


class Mixture(LanguageModel):
    """Components' log-probabilities mixed by a context-dependent gate (module docstring).

    State: the components' states one after another (the mixture knows how many tensors
    each one has).
    """

    config: MixtureConfig

    def __init__(self, config: MixtureConfig, components: Sequence[LanguageModel]) -> None:
        super().__init__()
        if len(components) != len(config.components):
            raise ValueError(f"need {len(config.components)} components, got {len(components)}")
        for model, order in zip(components, config.ngram_orders, strict=True):
            if model.config.vocab_size != config.vocab_size:
                raise ValueError("components must share one vocabulary")
            if bool(order) != isinstance(model, NgramLM) or (
                isinstance(model, NgramLM) and model.config.order != order
            ):
                raise ValueError("ngram_orders must give each n-gram component's order")
        self.config = config
        # The gate's logits are gate_weight @ features + gate_bias; zeros: equal weights.
        self.gate_weight = nn.Parameter(torch.zeros(len(components), config.num_features))
        self.gate_bias = nn.Parameter(torch.zeros(len(components)))
        # A tuple, not a ModuleList: the components' weights belong to their own bundles.
        self.parts: tuple[LanguageModel, ...] = tuple(components)
        self._state_sizes = [len(c.begin_state(1)) for c in components]

    def begin_state(self, batch_size: int, device: torch.device | str | None = None) -> State:
        return tuple(s for c in self.parts for s in c.begin_state(batch_size, device))

    def _split(self, state: State) -> list[State]:
        out, at = [], 0
        for size in self._state_sizes:
            out.append(state[at : at + size])
            at += size
        return out

    def components_forward(
        self, X: Tensor, state: State | None = None, one_step: bool = False
    ) -> tuple[Tensor, Tensor, State]:
        """Each component's log-probabilities (..., C, V), the gate features (..., F), state.

        X is (B, T) for a forward pass, or (B,) tokens with `one_step` (then ... = B).
        """
        if state is None:
            state = self.begin_state(X.shape[0], X.device)
        logps, features, states = [], [], []
        orders: list[Tensor] = []
        for model, part_state, order in zip(
            self.parts, self._split(state), self.config.ngram_orders, strict=True
        ):
            if isinstance(model, NgramLM):
                rows, new = (model.step_rows if one_step else model.forward_rows)(X, part_state)
                lp = model.log_probs(rows)
                orders.append(F.one_hot(model.context_order(rows) - 1, order))
            else:
                logits, new = (model.step if one_step else model.forward)(X, part_state)
                lp = torch.log_softmax(logits.float(), dim=-1)
            logps.append(lp)
            states.append(new)
            if self.config.context:
                features += [torch.special.entr(lp.exp()).sum(-1), lp.max(dim=-1).values]
        feats = (
            torch.cat([torch.stack(features, -1), *(o.float() for o in orders)], dim=-1)
            if self.config.context
            else X.new_zeros((*logps[0].shape[:-1], 0), dtype=torch.float32)
        )
        return torch.stack(logps, dim=-2), feats, tuple(s for st in states for s in st)

    def mix(self, logps: Tensor, features: Tensor) -> Tensor:
        """log sum_c lambda_c P_c: logps (..., C, V), features (..., F) -> (..., V)."""
        log_weights = torch.log_softmax(self._gate_logits(features), dim=-1)
        return torch.logsumexp(logps + log_weights.unsqueeze(-1).to(logps.dtype), dim=-2)

    def forward(self, X: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        logps, features, state = self.components_forward(X, state)
        return self.mix(logps, features), state

    def step(self, tokens: Tensor, state: State) -> tuple[Tensor, State]:
        logps, features, state = self.components_forward(tokens, state, one_step=True)
        return self.mix(logps, features), state

    @torch.no_grad()
    def weights(self, features: Tensor) -> Tensor:
        """The components' weights lambda (..., C) for features (..., F)."""
        return torch.softmax(self._gate_logits(features), dim=-1)

    def _gate_logits(self, features: Tensor) -> Tensor:
        return features.to(self.gate_weight.dtype) @ self.gate_weight.T + self.gate_bias


@dataclass(frozen=True)
class GateInputs:
    """What fitting the gate needs of a text: per scored token, each component's
    log-probability of it (T, C) and the gate's features (T, F)."""

    chosen: Tensor
    features: Tensor

    def __getitem__(self, rows: slice) -> GateInputs:
        return GateInputs(self.chosen[rows], self.features[rows])


@torch.no_grad()
def gate_inputs(mixture: Mixture, ids: Tensor) -> GateInputs:
    """The components' predictions of ids[1:], each token from the tokens before it.

    In the segments `score_ids` uses (side by side, each after a burn-in), so a long text
    is one batched pass and the predictions are the ones the service scores with.
    """
    windows = segments(len(ids) - 1, 0, DEFAULT_SEGMENT_LEN, DEFAULT_BURN_IN)
    width = max(stop - start for start, _, stop in windows)
    X = torch.zeros(len(windows), width, dtype=torch.long, device=ids.device)  # (B, W)
    Y = torch.zeros_like(X)
    keep = torch.zeros(len(windows), width, dtype=torch.bool, device=ids.device)
    for row, (start, scored, stop) in enumerate(windows):
        X[row, : stop - start] = ids[start:stop]
        Y[row, : stop - start] = ids[start + 1 : stop + 1]
        keep[row, scored - start : stop - start] = True
    logps, features, _ = mixture.components_forward(X)  # (B, W, C, V), (B, W, F)
    targets = Y.unsqueeze(-1).unsqueeze(-1).expand(-1, -1, logps.shape[-2], 1)
    chosen = logps.gather(-1, targets).squeeze(-1)  # (B, W, C)
    return GateInputs(chosen[keep].double(), features[keep].double())


def _nll(inputs: GateInputs, weight: Tensor, bias: Tensor) -> Tensor:
    log_w = torch.log_softmax(inputs.features @ weight.T + bias, dim=-1)
    return -torch.logsumexp(inputs.chosen + log_w, dim=-1).sum()


def mixture_nll(mixture: Mixture, inputs: GateInputs) -> float:
    """Summed negative log-likelihood (nats) of the tokens under the mixture's gate."""
    with torch.no_grad():
        return float(_nll(inputs, mixture.gate_weight.double(), mixture.gate_bias.double()))


def fit_gate(mixture: Mixture, inputs: GateInputs, l2: float = 1e-3, max_iter: int = 100) -> float:
    """Fit the gate to maximise the likelihood of the tokens; returns their perplexity.

    Weights of the features carry an L2 penalty `l2` (the bias none), so a feature that
    does not help stays near 0.
    """
    weight = torch.zeros_like(mixture.gate_weight, dtype=torch.float64, requires_grad=True)
    bias = torch.zeros_like(mixture.gate_bias, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS(
        [weight, bias], max_iter=max_iter, tolerance_grad=1e-7, line_search_fn="strong_wolfe"
    )
    count = inputs.chosen.shape[0]

    def closure() -> Tensor:
        optimizer.zero_grad()
        loss = _nll(inputs, weight, bias) / count + l2 * (weight**2).sum()
        loss.backward()  # type: ignore[no-untyped-call]
        return loss

    optimizer.step(closure)  # type: ignore[no-untyped-call]
    with torch.no_grad():
        mixture.gate_weight.copy_(weight)
        mixture.gate_bias.copy_(bias)
    return math.exp(mixture_nll(mixture, inputs) / count)
