"""The resume state: everything needed to continue a run after its last completed epoch.

It lives in a hidden sibling of the bundle (`.NAME.resume/`, which the service never takes
for a bundle): the last epoch's weights and optimizer state as safetensors, and the
settings and history as JSON. No pickle, so reading it runs no code. A run resumes only
with the settings it started with (less `RESUMABLE_SETTINGS`: epochs, patience, paths).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save
from torch import Tensor, nn

from models.files import write_dir_atomically
from training.config import RESUMABLE_SETTINGS, TrainConfig
from training.errors import TrainingError

log = logging.getLogger(__name__)


def resume_dir(out: Path) -> Path:
    return out.with_name(f".{out.name}.resume")


def save_resume(
    config: TrainConfig,
    model: nn.Module,
    best_model: nn.Module,
    optimizer: torch.optim.Optimizer,
    history: list[dict[str, Any]],
) -> None:
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tensors |= {
        f"best.{k}": v.detach().cpu().contiguous() for k, v in best_model.state_dict().items()
    }
    opt_state = optimizer.state_dict()
    scalars: dict[str, Any] = {}
    for idx, slots in opt_state["state"].items():
        for key, value in slots.items():
            if isinstance(value, Tensor):
                tensors[f"optim.{idx}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{idx}.{key}"] = value
    state = {
        "config": config.recorded(),
        "history": history,
        "optimizer_scalars": scalars,
        "param_groups": opt_state["param_groups"],
    }
    write_dir_atomically(
        resume_dir(config.out),
        {"state.json": json.dumps(state, indent=1).encode(), "state.safetensors": save(tensors)},
    )


def load_resume(
    config: TrainConfig, model: nn.Module, best_model: nn.Module, optimizer: torch.optim.Optimizer
) -> list[dict[str, Any]]:
    """Restore the last completed epoch; an empty history when there is nothing to resume.

    A setting the saved state does not record (it predates the setting) counts as that
    setting's default, so adding a hyper-parameter never breaks resuming older runs.
    """
    folder = resume_dir(config.out)
    if not (folder / "state.json").is_file():
        log.warning("nothing to resume at %s: starting from epoch 1", folder)
        return []
    state = json.loads((folder / "state.json").read_text())
    saved = TrainConfig(out=config.out).recorded() | state["config"]
    changed = [
        f"{k}: {saved.get(k)!r} -> {v!r}"
        for k, v in config.recorded().items()
        if k not in RESUMABLE_SETTINGS and saved.get(k) != v
    ]
    if changed:
        raise TrainingError("cannot resume with different settings: " + "; ".join(changed))
    device = next(model.parameters()).device
    tensors = load_file(str(folder / "state.safetensors"), device=str(device))
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    best_model.load_state_dict({k[5:]: v for k, v in tensors.items() if k.startswith("best.")})
    opt_state: dict[str, Any] = {"state": {}, "param_groups": state["param_groups"]}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, idx, name = key.split(".", 2)
            opt_state["state"].setdefault(int(idx), {})[name] = value
    for key, value in state["optimizer_scalars"].items():
        idx, name = key.split(".", 1)
        opt_state["state"].setdefault(int(idx), {})[name] = value
    optimizer.load_state_dict(opt_state)
    history: list[dict[str, Any]] = state["history"]
    log.info("resuming %s after epoch %d", config.out, len(history))
    return history
