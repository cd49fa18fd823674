"""RECAP (SPEC §7): an advantage-conditioned flow policy.

1. V(s): a categorical value (201 atoms) fitted by cross-entropy to the two-hot Monte-Carlo
   return of the data (not to a critic, unlike DIVL's V).
2. Advantage of the replay chunk: A = (n-step return) − V(s), with the n-step return
   R_t + γ^L (1 − done) V(s_{t+L}) and V read out as its mean.
3. Improvement indicator I = [A > ε_task]; ε_task tracks the (1 − positive_fraction)
   quantile of each task's advantages (an EMA over batches), so ~30% of the data is
   positive; chunks the operator drove are forced to I = 1.
4. The flow policy is trained on every chunk conditioned on I. The condition enters
   the way the instruction does (the text "Advantage: positive/negative." appended to
   the instruction, embedded by the same sentence encoder); with probability
   `dropout` it is left out, so the policy also learns the unconditioned behaviour
   (classifier-free-guidance training). Deployment conditions on I = 1.
Tensors in, metrics out; no I/O.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from lwd.algorithms.batch import RecapBatch
from lwd.algorithms.divl import categorical_value_loss
from lwd.algorithms.flow_matching import flow_matching_update
from lwd.algorithms.hg_dagger import trainable_parameters
from lwd.configargs import documented
from lwd.policy.adapter import PolicyAdapter
from lwd.policy.critic import StateValue

POSITIVE_PROMPT = "{instruction} Advantage: positive."
NEGATIVE_PROMPT = "{instruction} Advantage: negative."


def conditioned(instruction: str, improved: bool) -> str:
    """The instruction with RECAP's improvement indicator appended."""
    return (POSITIVE_PROMPT if improved else NEGATIVE_PROMPT).format(instruction=instruction)


@dataclass(frozen=True)
class RecapConfig:
    lr: float = documented(1e-4, "AdamW learning rate of the policy (flow matching)")
    value_lr: float = documented(5e-4, "Adam learning rate of the value")
    value_hidden: int = documented(256, "width of the value network")
    grad_clip: float = documented(1.0, "global gradient-norm clip of the policy")
    freeze_encoder: bool = documented(True, "train only the action expert (as LWD online does)")
    positive_fraction: float = documented(0.3, "share of the data whose indicator is positive (sets ε per task)")
    threshold_rate: float = documented(0.05, "EMA rate of the per-task thresholds ε")
    dropout: float = documented(0.3, "probability of training a chunk without the indicator (guidance dropout)")

    def __post_init__(self) -> None:
        if not 0.0 < self.positive_fraction < 1.0 or not 0.0 <= self.dropout < 1.0:
            raise ValueError("need 0 < positive_fraction < 1 and 0 <= dropout < 1")
        if not 0.0 < self.threshold_rate <= 1.0:
            raise ValueError("threshold_rate must be in (0, 1]")

    def to_dict(self) -> dict:
        return asdict(self)


def expected_value(logits: torch.Tensor, atoms: torch.Tensor) -> torch.Tensor:
    """Mean of the categorical value: (B, K) -> (B,)."""
    return (logits.softmax(-1) * atoms).sum(-1)


def advantages(
    value: StateValue,
    obs: torch.Tensor,
    instruction: torch.Tensor,
    reward: torch.Tensor,
    discount: torch.Tensor,
    done: torch.Tensor,
    next_obs: torch.Tensor,
    images: torch.Tensor | None = None,
    next_images: torch.Tensor | None = None,
) -> torch.Tensor:
    """A = R_t + γ^L (1 − done) V(s_{t+L}) − V(s_t): (B,); `images`/`next_images` are the
    camera input at s_t and s_{t+L} for a value that sees."""
    with torch.no_grad():
        v = expected_value(value(obs, instruction, images), value.atoms)
        v_next = expected_value(value(next_obs, instruction, next_images), value.atoms)
        return reward + discount * (1.0 - done) * v_next - v


def update_thresholds(
    thresholds: torch.Tensor,
    seen: torch.Tensor,
    advantage: torch.Tensor,
    task: torch.Tensor,
    positive_fraction: float,
    rate: float,
) -> None:
    """Move each task's ε towards the (1 − positive_fraction) quantile of its advantages
    in this batch; a task seen for the first time takes the batch quantile as is.
    thresholds, seen: (num_tasks,), updated in place; advantage, task: (B,)."""
    for k in task.unique().tolist():
        quantile = torch.quantile(advantage[task == k], 1.0 - positive_fraction)
        thresholds[k] = quantile if not seen[k] else (1.0 - rate) * thresholds[k] + rate * quantile
        seen[k] = True


def improvement_indicator(
    advantage: torch.Tensor, threshold: torch.Tensor, operator_driven: torch.Tensor
) -> torch.Tensor:
    """I = [A > ε] or the operator drove the chunk: (B,) bool."""
    return (advantage > threshold) | operator_driven


class RecapLearner:
    """Policy, value, per-task thresholds and optimisers; `step(batch)` is one update.

    The batch carries three instruction embeddings per row: the plain instruction and
    its positive and negative conditioned forms (`conditioned`), and `task` indices
    into a fixed task list of length `num_tasks`.
    """

    def __init__(self, policy: PolicyAdapter, value: StateValue, config: RecapConfig, num_tasks: int):
        if value.config.value_kind != "categorical":
            raise ValueError("RECAP's value is categorical (SPEC §7)")
        self.config = config
        self.policy = policy
        self.value = value
        self.step_count = 0
        device = value.atoms.device
        self.thresholds = torch.zeros(num_tasks, device=device)
        self.thresholds_seen = torch.zeros(num_tasks, dtype=torch.bool, device=device)
        self._parameters = trainable_parameters(policy, config.freeze_encoder)
        self.policy_optimizer = torch.optim.AdamW(self._parameters, lr=config.lr)
        self.value_optimizer = torch.optim.Adam(value.parameters(), lr=config.value_lr)

    @property
    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"policy": self.policy_optimizer, "value": self.value_optimizer}

    def modules(self) -> dict[str, torch.nn.Module]:
        return {"value": self.value}

    def update_value(self, obs, instruction, return_to_go, images: torch.Tensor | None = None) -> dict[str, float]:
        loss = categorical_value_loss(self.value(obs, instruction, images), return_to_go, self.value.atoms)
        self.value_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.value_optimizer.step()
        return {"value/loss": float(loss.detach()), "value/return_mean": float(return_to_go.mean())}

    def step(self, batch: RecapBatch, generator: torch.Generator | None = None) -> dict[str, float]:
        cfg = self.config
        obs, instruction = batch.obs, batch.instruction
        metrics = self.update_value(obs, instruction, batch.return_to_go, batch.images)
        advantage = advantages(
            self.value,
            obs,
            instruction,
            batch.reward,
            batch.discount,
            batch.done,
            batch.next_obs,
            batch.images,
            batch.next_images,
        )
        update_thresholds(
            self.thresholds, self.thresholds_seen, advantage, batch.task, cfg.positive_fraction, cfg.threshold_rate
        )
        operator_driven = batch.intervention[:, 0]
        improved = improvement_indicator(advantage, self.thresholds[batch.task], operator_driven)
        dropped = (torch.rand(obs.shape[0], generator=generator) < cfg.dropout).to(obs.device)
        prompt = torch.where(improved[:, None], batch.instruction_positive, batch.instruction_negative)
        prompt = torch.where(dropped[:, None], instruction, prompt)
        metrics.update(
            flow_matching_update(
                self.policy,
                self.policy_optimizer,
                self._parameters,
                cfg.grad_clip,
                obs,
                prompt,
                batch.actions,
                batch.action_mask,
                generator,
                batch.images,
            )
        )
        metrics.update(
            {
                "recap/advantage_mean": float(advantage.mean()),
                "recap/positive_fraction": float(improved.float().mean()),
                "recap/operator_share": float(operator_driven.float().mean()),
            }
        )
        self.step_count += 1
        return metrics
