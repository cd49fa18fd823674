"""QAM policy extraction by adjoint matching (SPEC §5): pure functions on tensors.

Target: π*(A|s) ∝ π_β(A|s)·exp(Q(s, A)/λ), π_β the frozen SFT flow. Velocity fields
are passed as callables `(x, w) -> v` over the flattened normalised chunk with the
state already bound, so the same code serves the policy, a bandit test, or a large
VLA behind the adapter.

Time grid: w_k = k/K, h = 1/K. The memoryless schedule σ_k = sqrt(2(1 − w_k + h)/(w_k + h))
makes the rollout's noise x_0 independent of its end point, which is what lets the
terminal adjoint alone carry the reward (the "memoryless" condition of adjoint matching).

Two discretisations of the lean adjoint (`adjoint_time`):
- "step_start" (default): J_k at w_k and the last step an ODE step, i.e. the exact
  gradient of the discrete reference sampler the rollout runs (tested against
  autograd to 1e-4 in float64).
- "step_end": SPEC §5 as written, J_k = ∂/∂x [2 f_β(x, w_k + h) − x/(w_k + h)] for
  every step; the exact gradient of a sampler that evaluates each step's drift at
  the step's end time (also tested against autograd). On the 1-D bandit it reaches
  more of the exp(Q/λ) tilt at K = 10 (right-mode weight 0.81 vs 0.74, target 0.88),
  because the step-start adjoint vanishes at the first steps (x/(w+h) cancels x_0).

Two implementations of the same objective: `qam_loss` (used for training) evaluates the
reference once at all K rollout states and runs the K vector-Jacobian products of the
lean adjoint from that one evaluation (`Linearization`); `reference_qam_loss` composes the
step-by-step functions below literally, as SPEC §5 reads, and is what `qam_loss` is tested
against (tests/algorithms/test_qam.py) and timed against (`lwd bench policy`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

# The field types and the generic linearisation live with the policy adapter, which gives
# every policy class the same QAM interface.
from lwd.policy.adapter import Linearization, VelocityField, linearize_by_autograd

ADJOINT_TIMES = ("step_start", "step_end")


def memoryless_schedule(steps: int, dtype=torch.float32, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """(w_k, σ_k) for k = 0..K−1."""
    h = 1.0 / steps
    w = torch.arange(steps, dtype=dtype, device=device) * h
    sigma = torch.sqrt(2.0 * (1.0 - w + h) / (w + h))
    return w, sigma


def _full(batch: int, value: torch.Tensor) -> torch.Tensor:
    return value.expand(batch)


@torch.no_grad()
def policy_rollout(policy: VelocityField, x_0: torch.Tensor, noise: torch.Tensor, steps: int) -> torch.Tensor:
    """States x_0..x_{K−1} of the memoryless SDE of the current policy, i.e. every state at
    which QAM evaluates the fields. x_0 (B, D); noise (K−1, B, D). Returns (K, B, D)."""
    w, sigma = memoryless_schedule(steps, x_0.dtype, x_0.device)
    h = 1.0 / steps
    batch = x_0.shape[0]
    xs = [x_0]
    x = x_0
    for k in range(steps - 1):
        drift = 2.0 * policy(x, _full(batch, w[k])) - x / (w[k] + h)
        x = x + h * drift + (h**0.5) * sigma[k] * noise[k]
        xs.append(x)
    return torch.stack(xs)


@torch.no_grad()
def memoryless_rollout(
    policy: VelocityField, reference: VelocityField, x_0: torch.Tensor, noise: torch.Tensor, steps: int
) -> torch.Tensor:
    """States x_0..x_K of the memoryless SDE of the current policy; the last step is a
    plain ODE step of the reference. x_0 (B, D); noise (K−1, B, D). Returns (K+1, B, D)."""
    xs = policy_rollout(policy, x_0, noise, steps)
    w, _ = memoryless_schedule(steps, x_0.dtype, x_0.device)
    h = 1.0 / steps
    x_final = xs[-1] + h * reference(xs[-1], _full(x_0.shape[0], w[steps - 1]))
    return torch.cat([xs, x_final[None]])


def terminal_adjoint(
    q_value: Callable[[torch.Tensor], torch.Tensor], x_final: torch.Tensor, lam: float, relative_lam: bool = False
) -> torch.Tensor:
    """ã_K = −(1/λ)·∇_x Q(x_K). `q_value` maps the normalised chunk to (B,) values and
    includes un-normalising and clipping, so clipped coordinates get zero gradient.

    `relative_lam`: λ counts in units of the batch's mean ‖∇_x Q‖ (so the mean ‖ã_K‖ is 1/λ
    whatever Q's scale): the tilt stays as strong while the critic's values grow or shrink
    (issue 18, 3b)."""
    x = x_final.detach().requires_grad_(True)
    with torch.enable_grad():
        (grad,) = torch.autograd.grad(q_value(x).sum(), x)
    if relative_lam:
        lam = lam * grad.norm(dim=-1).mean().clamp_min(1e-8)
    return -grad / lam


def lean_adjoint(
    reference: VelocityField, xs: torch.Tensor, adjoint_final: torch.Tensor, adjoint_time: str = "step_start"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run the adjoint backwards through the reference drift only.

    ã_k = ã_{k+1} + h·J_kᵀ ã_{k+1},  J_k = ∂/∂x [2 f_β(x, t_k) − x/(w_k + h)] at x_k with
    t_k = w_k ("step_start"; the last step is the ODE step, J = ∂f_β/∂x) or
    t_k = w_k + h ("step_end", SPEC §5). One vector-Jacobian product per step; no
    parameter gradients. Returns (ã_0..ã_{K−1} (K, B, D), f_β(x_k, w_k) (K, B, D)),
    the second so the loss need not evaluate the reference again.
    """
    if adjoint_time not in ADJOINT_TIMES:
        raise ValueError(f"adjoint_time must be one of {ADJOINT_TIMES}, got {adjoint_time!r}")
    steps = xs.shape[0] - 1
    w, _ = memoryless_schedule(steps, xs.dtype, xs.device)
    h = 1.0 / steps
    batch = xs.shape[1]
    shifted = adjoint_time == "step_end"
    adjoint = adjoint_final.detach()
    adjoints, reference_velocities = [], []
    for k in reversed(range(steps)):
        x = xs[k].detach().requires_grad_(True)
        with torch.enable_grad():
            velocity = reference(x, _full(batch, w[k] + h if shifted else w[k]))
            (vjp,) = torch.autograd.grad(velocity, x, grad_outputs=adjoint)
        if k == steps - 1 and not shifted:
            adjoint = adjoint + h * vjp
        else:
            adjoint = adjoint + h * (2.0 * vjp - adjoint / (w[k] + h))
        adjoints.append(adjoint)
        if not shifted:
            reference_velocities.append(velocity.detach())
    if shifted:
        with torch.no_grad():
            flat = reference(xs[:-1].reshape(steps * batch, -1), w.repeat_interleave(batch))
        return torch.stack(adjoints[::-1]), flat.reshape(steps, batch, -1)
    return torch.stack(adjoints[::-1]), torch.stack(reference_velocities[::-1])


def adjoint_matching_loss(
    policy_velocities: torch.Tensor, reference_velocities: torch.Tensor, adjoints: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Σ_k ‖(2/σ_k)(f_θ − f_β)(x_k, w_k) + σ_k ã_k‖², summed over dims and steps, batch mean.

    All inputs (K, B, D); only `policy_velocities` carries gradient. Also returns the
    KL proxy Σ_k ‖f_θ − f_β‖² per sample (B,), detached.
    """
    steps = adjoints.shape[0]
    _, sigma = memoryless_schedule(steps, adjoints.dtype, adjoints.device)
    sigma = sigma[:, None, None]
    difference = policy_velocities - reference_velocities.detach()
    residual = (2.0 / sigma) * difference + sigma * adjoints.detach()
    loss = residual.square().sum(dim=(0, 2)).mean()
    return loss, difference.detach().square().sum(dim=(0, 2))


@dataclass
class QAMOutput:
    loss: torch.Tensor
    terminal_adjoint_norm: torch.Tensor  # (B,) ‖ã_K‖
    kl_proxy: torch.Tensor  # (B,) Σ_k ‖f_θ − f_β‖²


def qam_loss(
    policy: VelocityField,
    reference: VelocityField,
    q_value: Callable[[torch.Tensor], torch.Tensor],
    x_0: torch.Tensor,
    noise: torch.Tensor,
    steps: int,
    lam: float,
    adjoint_time: str = "step_start",
    linearize: Linearization | None = None,
    relative_lam: bool = False,
) -> QAMOutput:
    """One QAM objective: rollout (no grad) → terminal adjoint → lean adjoint → regression.

    The same objective as `reference_qam_loss`, ordered so that every network call after
    the rollout is batched over all K steps: the policy rollout gives x_0..x_{K−1}; the
    reference is evaluated and linearised at all of them in one call, which also gives
    the last, ODE step x_K = x_{K−1} + h·f_β(x_{K−1}, w_{K−1}) and the f_β of the loss,
    so the lean adjoint's K vector-Jacobian products need no forward pass of their own.
    `linearize` is a faster `Linearization` of `reference` (default:
    `linearize_by_autograd(reference)`). Gradient reaches the policy only through its
    velocities at the (detached) rollout states.
    """
    if adjoint_time not in ADJOINT_TIMES:
        raise ValueError(f"adjoint_time must be one of {ADJOINT_TIMES}, got {adjoint_time!r}")
    batch, dim = x_0.shape
    w, _ = memoryless_schedule(steps, x_0.dtype, x_0.device)
    h = 1.0 / steps
    xs = policy_rollout(policy, x_0, noise, steps)  # (K, B, D)
    states, times = xs.reshape(steps * batch, dim), w.repeat_interleave(batch)  # (K·B, D), (K·B,)
    shifted = adjoint_time == "step_end"
    linearize = linearize or linearize_by_autograd(reference, batch)
    jacobian_velocities, vjp = linearize(states, times + h if shifted else times)
    if shifted:  # J at w_k + h, but the loss and the last step take f_β at w_k
        with torch.no_grad():
            reference_velocities = reference(states, times).view(steps, batch, dim)
    else:
        reference_velocities = jacobian_velocities.view(steps, batch, dim)
    adjoint_final = terminal_adjoint(q_value, xs[-1] + h * reference_velocities[-1], lam, relative_lam)
    adjoint = adjoint_final
    adjoints = [adjoint] * steps
    for k in reversed(range(steps)):
        if k == steps - 1 and not shifted:  # the ODE step: J = ∂f_β/∂x
            adjoint = adjoint + h * vjp(k, adjoint)
        else:
            adjoint = adjoint + h * (2.0 * vjp(k, adjoint) - adjoint / (w[k] + h))
        adjoints[k] = adjoint
    policy_velocities = policy(states, times).view(steps, batch, dim)
    loss, kl = adjoint_matching_loss(policy_velocities, reference_velocities, torch.stack(adjoints))
    return QAMOutput(loss, adjoint_final.norm(dim=-1).detach(), kl)


def reference_qam_loss(
    policy: VelocityField,
    reference: VelocityField,
    q_value: Callable[[torch.Tensor], torch.Tensor],
    x_0: torch.Tensor,
    noise: torch.Tensor,
    steps: int,
    lam: float,
    adjoint_time: str = "step_start",
    relative_lam: bool = False,
) -> QAMOutput:
    """`qam_loss` written as SPEC §5 reads, step by step (rollout → terminal adjoint → lean
    adjoint → regression): the slow implementation the fast one is tested against.

    Gradient reaches the policy only through its velocities at the (detached) rollout
    states, evaluated in one batched call over all K steps.
    """
    xs = memoryless_rollout(policy, reference, x_0, noise, steps)
    adjoint_final = terminal_adjoint(q_value, xs[-1], lam, relative_lam)
    adjoints, reference_velocities = lean_adjoint(reference, xs, adjoint_final, adjoint_time)
    batch, dim = x_0.shape
    w, _ = memoryless_schedule(steps, x_0.dtype, x_0.device)
    states = xs[:-1].reshape(steps * batch, dim)
    times = w.repeat_interleave(batch)
    policy_velocities = policy(states, times).reshape(steps, batch, dim)
    loss, kl = adjoint_matching_loss(policy_velocities, reference_velocities, adjoints)
    return QAMOutput(loss, adjoint_final.norm(dim=-1).detach(), kl)
