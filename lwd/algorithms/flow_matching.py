"""Supervised flow matching on action chunks (SPEC §3): the SFT objective."""

from __future__ import annotations

import torch

from lwd.policy.adapter import PolicyAdapter


def flow_matching_loss(policy: PolicyAdapter, context: torch.Tensor, actions: torch.Tensor, action_mask: torch.Tensor,
                       x_0: torch.Tensor, w: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
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
