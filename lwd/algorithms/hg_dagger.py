"""HG-DAgger (SPEC §7): keep training the flow policy by flow matching on the aggregate
of demonstrations, the operator's takeover segments and takeover-free successes.

The data layer decides what is imitable (`ReplayConfig.imitation_only` samples only those
steps and masks the other actions of a chunk); the update is plain supervised flow
matching on what it receives. Tensors in, metrics out; no I/O.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from lwd.algorithms.batch import LearnerBatch
from lwd.algorithms.flow_matching import flow_matching_update
from lwd.configargs import documented
from lwd.policy.adapter import PolicyAdapter


@dataclass(frozen=True)
class ImitationConfig:
    lr: float = documented(1e-4, "AdamW learning rate of the policy (flow matching)")
    weight_decay: float = documented(0.0, "AdamW weight decay")
    grad_clip: float = documented(1.0, "global gradient-norm clip")
    freeze_encoder: bool = documented(True, "train only the action expert (as LWD online does)")

    def __post_init__(self) -> None:
        if self.lr <= 0 or self.grad_clip <= 0:
            raise ValueError("lr and grad_clip must be > 0")

    def to_dict(self) -> dict:
        return asdict(self)


def trainable_parameters(policy: PolicyAdapter, freeze_encoder: bool) -> list[torch.nn.Parameter]:
    return policy.action_expert_parameters() if freeze_encoder else list(policy.parameters())


class HGDaggerLearner:
    """The policy and its optimiser; `step(batch)` is one update on imitable chunks."""

    def __init__(self, policy: PolicyAdapter, config: ImitationConfig):
        self.config = config
        self.policy = policy
        self.step_count = 0
        self._parameters = trainable_parameters(policy, config.freeze_encoder)
        self.policy_optimizer = torch.optim.AdamW(self._parameters, lr=config.lr, weight_decay=config.weight_decay)

    @property
    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"policy": self.policy_optimizer}

    def modules(self) -> dict[str, torch.nn.Module]:
        return {}

    def step(self, batch: LearnerBatch, generator: torch.Generator | None = None) -> dict[str, float]:
        metrics = flow_matching_update(
            self.policy,
            self.policy_optimizer,
            self._parameters,
            self.config.grad_clip,
            batch.obs,
            batch.instruction,
            batch.actions,
            batch.action_mask,
            generator,
            batch.images,
        )
        metrics["hg_dagger/operator_share"] = float(batch.intervention.any(dim=1).float().mean())
        self.step_count += 1
        return metrics
