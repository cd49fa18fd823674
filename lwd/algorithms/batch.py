"""The typed batches the learners take: a chunked-transition batch as tensors, and what a
method adds to it. Shapes: B = batch, D = state size, E = instruction embedding size,
H = chunk length, A = action size."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Self

import torch


@dataclass(frozen=True)
class LearnerBatch:
    """`lwd.data.replay.ChunkBatch` as tensors, with instructions embedded."""

    obs: torch.Tensor  # (B, D) s_t
    instruction: torch.Tensor  # (B, E) embedded instruction
    actions: torch.Tensor  # (B, H, A) A_t, padded past the episode end
    action_mask: torch.Tensor  # (B, H) bool, False on padding
    intervention: torch.Tensor  # (B, H) bool, operator-driven actions
    reward: torch.Tensor  # (B,) discounted reward over the backup
    discount: torch.Tensor  # (B,) γ^(steps covered), the bootstrap factor
    done: torch.Tensor  # (B,) 1 = no bootstrap
    next_obs: torch.Tensor  # (B, D) s_{t+nH} (or s_T)
    return_to_go: torch.Tensor  # (B,) Monte-Carlo return to the episode's end
    # Camera input of a policy with images: (B, S, W, 3) uint8, the cameras side by side
    # (lwd.envs.cameras.side_by_side), at s_t and at next_obs; None without cameras.
    images: torch.Tensor | None = None
    next_images: torch.Tensor | None = None
    # HG-DAgger's aggregate (demo, operator-driven, or of a takeover-free success), (B, H) bool;
    # only the learned prior's `prior_data = "aggregate"` needs it.
    imitable: torch.Tensor | None = None

    def __len__(self) -> int:
        return int(self.obs.shape[0])

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Self:
        """The same batch (of the same class, extra fields included) on `device`."""
        moved = {
            f.name: getattr(self, f.name).to(device, non_blocking=non_blocking)
            for f in fields(self)
            if getattr(self, f.name) is not None
        }
        return replace(self, **moved)


@dataclass(frozen=True, kw_only=True)
class RecapBatch(LearnerBatch):
    """What RECAP adds: each row's task (for its per-task threshold) and the instruction
    embedded with the positive and the negative improvement indicator."""

    task: torch.Tensor  # (B,) int64, index into the learner's task list
    instruction_positive: torch.Tensor  # (B, E)
    instruction_negative: torch.Tensor  # (B, E)
