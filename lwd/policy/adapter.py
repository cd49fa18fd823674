"""The interface a flow-matching policy offers the learners, and defaults any policy can use.

Learners (`lwd.algorithms`, `lwd.training`) see a policy only through `PolicyAdapter`:

    encode(obs, instruction[, images]) -> context (B, C)   the part frozen online (a VLM)
    velocity(context, x, w) -> (B, H*A)                    the flow's velocity
    sample(context[, noise, steps]) -> (B, H, A)           env-unit chunks, clipped
    normalize_actions / unnormalize                        env units <-> (B, H*A) flow space
    action_expert_parameters()                             trained when the encoder is frozen
    velocity_field / velocity_linearization                `velocity` with the context bound,
                                                           for QAM's many evaluations
    flat_action_dim, chunk_len, sample_steps, cameras      sizes the learners and data need

`FlowPolicyBase` implements the normalisation, the Euler sampler and generic (autograd)
fields on top of a subclass's `encode`, `velocity` and `action_expert_parameters`, so a
new policy class (`TokenFlowPolicy`, or a wrapped VLA) needs only those three; a policy
that knows its own layers overrides the fields with faster ones (`FlowChunkPolicy`).
`lwd.policy.architectures` names the classes a checkpoint can hold.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

import torch
from torch import nn

if TYPE_CHECKING:  # the config type only; flow_policy imports this module
    from lwd.policy.flow_policy import PolicyConfig

# f(x, w): x (N, D), w (N,) -> (N, D) with the context bound; QAM calls it on n stacked
# blocks of the B states, N = n·B, one flow time per block (a field may rely on that).
VelocityField = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
BlockVJP = Callable[[int, torch.Tensor], torch.Tensor]
# A field evaluated at n stacked blocks of B states, x (n·B, D), w (n·B,), returning the
# velocities (n·B, D) and `vjp(k, a)` = J_kᵀa (B, D) for block k, J_k = ∂f/∂x there.
Linearization = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, BlockVJP]]

# The precisions a velocity network's hidden layers may run at, by name (`dtype` of `sample`,
# `velocity_field`, `velocity_linearization`): QAM's (`--lwd.qam-dtype`) and the robots'
# (`--robots.inference-dtype`). None keeps the parameters' precision; bfloat16 runs on bf16
# units (AMX CPUs, GPUs).
HIDDEN_DTYPES: dict[str, torch.dtype | None] = {"float32": None, "bfloat16": torch.bfloat16}


class PolicyAdapter(Protocol):
    """A flow-matching action-chunk policy as the learners see it.

    All action tensors handed to `velocity` live in the policy's normalised, flattened
    chunk space (B, H*A); `sample` returns env-unit chunks (B, H, A) clipped to the
    action range. `encode` may be frozen (SPEC §3: the VLM backbone online); the
    parameters `action_expert_parameters` returns are then the ones trained.
    """

    @property
    def flat_action_dim(self) -> int: ...

    @property
    def chunk_len(self) -> int: ...

    @property
    def sample_steps(self) -> int: ...

    @property
    def cameras(self) -> tuple[str, ...]:
        """The cameras whose frames `encode` takes, side by side; () for a policy without images."""

    def encode(
        self, obs: torch.Tensor, instruction: torch.Tensor, images: torch.Tensor | None = None
    ) -> torch.Tensor: ...

    def velocity(self, context: torch.Tensor, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor: ...

    def sample(
        self,
        context: torch.Tensor,
        noise: torch.Tensor | None = None,
        steps: int | None = None,
        dtype: torch.dtype | None = None,
    ) -> torch.Tensor: ...

    def normalize_actions(self, actions: torch.Tensor) -> torch.Tensor: ...

    def unnormalize(self, x: torch.Tensor) -> torch.Tensor: ...

    def action_expert_parameters(self) -> list[nn.Parameter]: ...

    def velocity_field(self, context: torch.Tensor, dtype: torch.dtype | None = None) -> VelocityField: ...

    def velocity_linearization(self, context: torch.Tensor, dtype: torch.dtype | None = None) -> Linearization: ...

    # nn.Module's, which the learners use to optimise, copy, move and save the policy
    def parameters(self, recurse: bool = True): ...

    def state_dict(self, *args, **kwargs): ...

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False): ...


def linearize_by_autograd(field: VelocityField, batch: int) -> Linearization:
    """A `Linearization` of any velocity field: one autograd graph per block of `batch`
    rows, kept until its VJP is asked for. Networks that know their own layers provide a
    cheaper one (`FlowChunkPolicy.velocity_linearization`: one batched call, no graphs)."""

    def linearize(x: torch.Tensor, w: torch.Tensor) -> tuple[torch.Tensor, BlockVJP]:
        inputs = [block.detach().requires_grad_(True) for block in x.split(batch)]
        with torch.enable_grad():
            outputs = [field(block, times) for block, times in zip(inputs, w.split(batch))]

        def vjp(k: int, cotangent: torch.Tensor) -> torch.Tensor:
            (grad,) = torch.autograd.grad(outputs[k], inputs[k], grad_outputs=cotangent)
            return grad

        return torch.cat([out.detach() for out in outputs]), vjp

    return linearize


class FlowPolicyBase(nn.Module):
    """What every flow-matching chunk policy shares: normalisation buffers (saved with the
    weights), the K-step Euler sampler, and the adapter's generic fields. Subclasses define
    `encode`, `velocity` and `action_expert_parameters`."""

    def __init__(self, config: PolicyConfig):
        super().__init__()
        self.config = config
        # Normalisation statistics are computed from data and saved with the weights.
        self.register_buffer("obs_mean", torch.zeros(config.obs_dim))
        self.register_buffer("obs_std", torch.ones(config.obs_dim))
        self.register_buffer("action_mean", torch.zeros(config.action_dim))
        self.register_buffer("action_std", torch.ones(config.action_dim))

    @property
    def flat_action_dim(self) -> int:
        return self.config.flat_action_dim

    @property
    def chunk_len(self) -> int:
        return self.config.chunk_len

    @property
    def sample_steps(self) -> int:
        return self.config.sample_steps

    @property
    def cameras(self) -> tuple[str, ...]:
        return self.config.cameras if self.config.use_images else ()

    def set_normalization(self, obs_mean, obs_std, action_mean, action_std) -> None:
        for name, value in (
            ("obs_mean", obs_mean),
            ("obs_std", obs_std),
            ("action_mean", action_mean),
            ("action_std", action_std),
        ):
            tensor = torch.as_tensor(value, dtype=torch.float32)
            if name.endswith("std"):
                tensor = tensor.clamp_min(1e-3)  # constant dimensions must not blow up
            getattr(self, name).copy_(tensor)

    def encode(self, obs: torch.Tensor, instruction: torch.Tensor, images: torch.Tensor | None = None) -> torch.Tensor:
        raise NotImplementedError

    def velocity(self, context: torch.Tensor, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def action_expert_parameters(self) -> list[nn.Parameter]:
        raise NotImplementedError

    def sample(
        self,
        context: torch.Tensor,
        noise: torch.Tensor | None = None,
        steps: int | None = None,
        dtype: torch.dtype | None = None,
    ) -> torch.Tensor:
        """K Euler steps from x_0 = noise; returns clipped actions (B, H, A) in env units.
        `dtype` asks for the velocity network's hidden layers at a lower precision (bfloat16);
        architectures without a fast field run at the parameters' precision whatever it asks."""
        return self.unnormalize(self.sample_normalized(context, noise, steps, dtype))

    def sample_normalized(
        self,
        context: torch.Tensor,
        noise: torch.Tensor | None = None,
        steps: int | None = None,
        dtype: torch.dtype | None = None,
    ) -> torch.Tensor:
        steps = steps or self.sample_steps
        batch = context.shape[0]
        x = torch.randn(batch, self.flat_action_dim, device=context.device) if noise is None else noise
        h = 1.0 / steps
        for k in range(steps):
            w = torch.full((batch,), k * h, device=context.device, dtype=context.dtype)
            x = x + h * self.velocity(context, x, w)
        return x

    def velocity_field(self, context: torch.Tensor, dtype: torch.dtype | None = None) -> VelocityField:
        """`velocity` with the context bound: x (n·B, H*A), w (n·B,) -> (n·B, H*A), the n row
        blocks of B each paired with the B contexts in order. The generic field runs in the
        parameters' precision whatever `dtype` asks (only fast fields use it)."""
        batch = context.shape[0]

        def field(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
            return self.velocity(context.repeat(x.shape[0] // batch, 1), x, w)

        return field

    def velocity_linearization(self, context: torch.Tensor, dtype: torch.dtype | None = None) -> Linearization:
        """`velocity_field` and its per-block vector-Jacobian products, by autograd."""
        return linearize_by_autograd(self.velocity_field(context, dtype), context.shape[0])

    def normalize_actions(self, actions: torch.Tensor) -> torch.Tensor:
        """(B, H, A) env units -> (B, H*A) normalised."""
        return ((actions - self.action_mean) / self.action_std).reshape(actions.shape[0], -1)

    def unnormalize(self, x: torch.Tensor) -> torch.Tensor:
        """(B, H*A) normalised -> (B, H, A) env units, clipped to the action range."""
        actions = x.reshape(x.shape[0], self.config.chunk_len, self.config.action_dim)
        return (actions * self.action_std + self.action_mean).clamp(-1.0, 1.0)
