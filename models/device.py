"""Which torch device a `--device` flag or `RNNLM_DEVICE` setting names."""

from __future__ import annotations

import torch


def resolve_device(name: str) -> torch.device:
    """`auto` is the first GPU when CUDA is present, else the CPU; a GPU asked for by name
    must exist, so a typo fails at start-up rather than at the first tensor moved there.

    Raises:
        ValueError: not a device torch knows, or CUDA (or that GPU) is not available.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ValueError(f"device {name!r} is unknown (auto, cpu, cuda, cuda:N)") from exc
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {name!r} requested but CUDA is not available")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(
                f"device {name!r} requested but only {torch.cuda.device_count()} GPU(s) exist"
            )
    return device
