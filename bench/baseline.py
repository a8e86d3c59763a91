"""The book's own decoding loop, the baseline every generation benchmark compares with.

Kept apart from the HTTP helpers (bench/_util.py) so that a machine with only torch and
the repository (bench/gpu.sh's GPU machine) can run it.
"""

from __future__ import annotations

import torch

from models.rnn import LanguageModel

PREFIX = "time traveller "


def book_predict(model: LanguageModel, prefix_ids: list[int], num_preds: int) -> list[int]:
    """d2l §9.5's predict: one char per forward call, a new tensor and an int() each step."""
    device = next(model.parameters()).device
    state = model.begin_state(batch_size=1, device=device)
    outputs = [prefix_ids[0]]

    def get_input() -> torch.Tensor:
        return torch.tensor([outputs[-1]], device=device).reshape((1, 1))

    for y in prefix_ids[1:]:  # warm-up
        _, state = model(get_input(), state)
        outputs.append(y)
    for _ in range(num_preds):
        y, state = model(get_input(), state)
        outputs.append(int(y.argmax(dim=-1).reshape(1)))
    return outputs[len(prefix_ids) :]
