"""One resume path for every training run: SFT, offline RL and learning while deploying.

A run saves `<out>/last` every few steps: the weights, each optimiser's state (in
`trainer.safetensors`, prefixed by the optimiser's name) and, in the manifest's extras
under the stage's name, a `ResumeState`: the steps made, the batch sampler's RNG state and
what else the stage needs. Running the same command again finds it (`find_resume_state`),
restores the optimisers (`restore_optimizers`) and the sampler (`ResumeState.sampler`),
and continues at `state.step` on the data snapshot the run had pinned.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from lwd.policy.checkpoint import Manifest, has_checkpoint, load_trainer_state, read_manifest
from lwd.training.optim_state import flatten_optimizer_state, restore_optimizer_state


@dataclass
class ResumeState:
    """Where a run stands, as saved with each of its checkpoints."""

    step: int  # steps this run has made
    rng: dict  # numpy bit-generator state of the batch sampler
    extras: dict = field(default_factory=dict)  # the stage's own JSON state (configs, pinned snapshots)

    def to_json(self) -> dict:
        return {**self.extras, "step": self.step, "rng": self.rng}

    @classmethod
    def from_json(cls, saved: dict) -> ResumeState:
        extras = {key: value for key, value in saved.items() if key not in ("step", "rng")}
        return cls(step=int(saved["step"]), rng=saved["rng"], extras=extras)

    def sampler(self) -> np.random.Generator:
        """The batch sampler exactly where the run left it."""
        rng = np.random.default_rng()
        rng.bit_generator.state = self.rng
        return rng


def find_resume_state(last: str | Path, stage: str) -> tuple[ResumeState, Manifest] | None:
    """The resume state a run of `stage` saved at `last`, or None for a fresh run."""
    if not has_checkpoint(last):
        return None
    manifest = read_manifest(last)
    if stage not in manifest.extras:
        found = ", ".join(sorted(manifest.extras)) or "none"
        raise ValueError(
            f"{last} is not a resumable {stage} run (its manifest has stage state for: {found}); "
            "choose another output directory"
        )
    return ResumeState.from_json(manifest.extras[stage]), manifest


def optimizer_state(optimizers: dict[str, torch.optim.Optimizer]) -> dict[str, torch.Tensor]:
    """Every optimiser's state as flat tensors, prefixed by its name (`policy.`, `critic.`, ...)."""
    state: dict[str, torch.Tensor] = {}
    for name, optimizer in optimizers.items():
        state.update(flatten_optimizer_state(optimizer, prefix=name + "."))
    return state


def restore_optimizers(optimizers: dict[str, torch.optim.Optimizer], state: dict[str, torch.Tensor]) -> None:
    """The inverse of `optimizer_state`."""
    for name, optimizer in optimizers.items():
        restore_optimizer_state(optimizer, state, prefix=name + ".")


def restore_optimizers_from(optimizers: dict[str, torch.optim.Optimizer], last: str | Path) -> None:
    """Restore the optimisers saved with the checkpoint at `last` (none saved: fresh ones)."""
    restore_optimizers(optimizers, load_trainer_state(last) or {})
