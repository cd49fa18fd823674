"""Supervised flow matching on action chunks (SPEC §3): the SFT objective."""

from __future__ import annotations

import torch

from lwd.policy.adapter import PolicyAdapter


def flow_matching_loss(
    policy: PolicyAdapter,
    context: torch.Tensor,
    actions: torch.Tensor,
    action_mask: torch.Tensor,
    x_0: torch.Tensor,
    w: torch.Tensor,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Regress the velocity at x_w = (1-w) x_0 + w x_1 onto x_1 - x_0.

    context (B, C); actions (B, H, A) env units; action_mask (B, H) bool (False past the
    episode end: those entries do not count); x_0 (B, H*A) noise; w (B,) flow times.
    """
    batch, horizon, action_dim = actions.shape
    x_1 = policy.normalize_actions(actions)  # (B, H*A)
    x_w = (1.0 - w)[:, None] * x_0 + w[:, None] * x_1
    vel = policy.velocity(context, x_w, w)
    sq_err = ((vel - (x_1 - x_0)) ** 2).reshape(batch, horizon, action_dim)
    mask = action_mask.to(sq_err.dtype)[:, :, None]
    loss = (sq_err * mask).sum() / (mask.sum() * action_dim).clamp_min(1.0)
    return loss, {"sft/flow_loss": float(loss.detach())}


def flow_matching_update(
    policy: PolicyAdapter,
    optimizer: torch.optim.Optimizer,
    parameters: list[torch.nn.Parameter],
    grad_clip: float,
    obs: torch.Tensor,
    instruction: torch.Tensor,
    actions: torch.Tensor,
    action_mask: torch.Tensor,
    generator: torch.Generator | None,
    images: torch.Tensor | None = None,
) -> dict[str, float]:
    """One supervised flow-matching step (SFT, HG-DAgger, RECAP); obs (B, D), instruction (B, E),
    actions (B, H, A), images (B, S, W, 3) uint8 for a policy with a camera. Noise is drawn on
    `generator` (CPU) and moved to the networks' device."""
    batch = obs.shape[0]
    x_0 = torch.randn(batch, policy.flat_action_dim, generator=generator).to(obs.device)
    w = torch.rand(batch, generator=generator).to(obs.device)
    context = policy.encode(obs, instruction, images)
    loss, metrics = flow_matching_loss(policy, context, actions, action_mask, x_0, w)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    metrics["policy/grad_norm"] = float(torch.nn.utils.clip_grad_norm_(parameters, grad_clip))
    optimizer.step()
    return metrics
