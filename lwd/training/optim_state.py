"""Optimiser state as flat named tensors, so it can live in a safetensors file."""

from __future__ import annotations

import torch


def flatten_optimizer_state(optimizer: torch.optim.Optimizer, prefix: str = "") -> dict[str, torch.Tensor]:
    flat = {}
    for index, state in optimizer.state_dict()["state"].items():
        for key, value in state.items():
            flat[f"{prefix}state.{index}.{key}"] = torch.as_tensor(value).detach().cpu().clone()
    return flat


def restore_optimizer_state(optimizer: torch.optim.Optimizer, flat: dict[str, torch.Tensor], prefix: str = "") -> None:
    state: dict[int, dict[str, torch.Tensor]] = {}
    for name, value in flat.items():
        if not name.startswith(prefix + "state."):
            continue
        index, key = name[len(prefix) + len("state.") :].split(".", 1)
        state.setdefault(int(index), {})[key] = value
    current = optimizer.state_dict()
    optimizer.load_state_dict({"state": state, "param_groups": current["param_groups"]})
