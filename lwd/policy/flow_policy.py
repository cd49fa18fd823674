"""The small VLA stand-in (SPEC §3): language-conditioned flow-matching action-chunk policy.

    context = encode(state, instruction embedding[, image])            # (B, C)
    x_w     = (1 - w) x_0 + w x_1,  x_0 ~ N(0, I),  x_1 = normalised chunk  # (B, H*A)
    f(context, x_w, w) ≈ x_1 - x_0                                        # velocity
Sampling integrates K Euler steps from noise, un-normalises and clips to [-1, 1].
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from lwd.configargs import documented
from lwd.policy.adapter import FlowPolicyBase
from lwd.policy.instructions import EMBEDDING_DIM

ARCHITECTURES = ("flow_mlp", "token_transformer")


@dataclass(frozen=True)
class PolicyConfig:
    obs_dim: int = documented(39, "state vector size")
    action_dim: int = documented(4, "action size")
    chunk_len: int = documented(5, "H: actions per chunk (chosen on validation seeds, docs/benchmarks.md)")
    text_dim: int = documented(EMBEDDING_DIM, "instruction embedding size (sentence encoder output)")
    context_dim: int = documented(256, "size of the fused state+instruction context")
    hidden_dim: int = documented(512, "width of the velocity network")
    num_layers: int = documented(4, "hidden layers of the velocity network")
    time_dim: int = documented(64, "sinusoidal features of the flow time w")
    sample_steps: int = documented(10, "K: Euler steps when sampling")
    use_images: bool = documented(False, "add a small CNN over a camera image (64x64 RGB)")
    image_size: int = documented(64, "camera image side in pixels when use_images")
    cameras: tuple[str, ...] = documented(
        (), "cameras the CNN sees when use_images, side by side in this order (lwd.envs.cameras.side_by_side)"
    )
    architecture: str = documented(
        "flow_mlp",
        "'flow_mlp' (FlowChunkPolicy: an MLP velocity network) or 'token_transformer' (TokenFlowPolicy: "
        "a transformer action expert over context, time and action tokens; context_dim is its width, "
        "hidden_dim its feed-forward width, num_layers its depth)",
    )
    num_heads: int = documented(4, "attention heads of the token_transformer (must divide context_dim)")

    def __post_init__(self) -> None:
        object.__setattr__(self, "cameras", tuple(self.cameras))  # a list when read back from JSON
        for name in ("obs_dim", "action_dim", "chunk_len", "context_dim", "hidden_dim", "num_layers", "sample_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"PolicyConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.architecture not in ARCHITECTURES:
            raise ValueError(f"PolicyConfig.architecture must be one of {ARCHITECTURES}, got {self.architecture!r}")
        if self.architecture == "token_transformer" and (self.num_heads < 1 or self.context_dim % self.num_heads):
            raise ValueError(f"num_heads={self.num_heads} must be >= 1 and divide context_dim={self.context_dim}")

    @property
    def flat_action_dim(self) -> int:
        return self.chunk_len * self.action_dim

    def to_dict(self) -> dict:
        return asdict(self)


def mlp(sizes: list[int], final_activation: bool = False) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2 or final_activation:
            layers += [nn.LayerNorm(b), nn.GELU()]
    return nn.Sequential(*layers)


def time_features(w: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal features of flow time w in [0, 1]: (B,) -> (B, dim)."""
    half = dim // 2
    freqs = torch.exp(torch.linspace(0.0, math.log(1000.0), half, device=w.device, dtype=w.dtype))
    angles = w[:, None] * freqs[None, :] * math.pi
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1)


@dataclass(frozen=True)
class _Block:
    """One hidden block of the velocity network after its first layer:
    LayerNorm → GELU → Linear, with the parameters in the precision it runs at."""

    norm_weight: torch.Tensor
    norm_bias: torch.Tensor
    norm_shape: tuple[int, ...]
    eps: float
    approximate: str
    weight: torch.Tensor
    bias: torch.Tensor

    def __call__(self, hidden: torch.Tensor) -> torch.Tensor:
        normed = F.layer_norm(hidden, self.norm_shape, self.norm_weight, self.norm_bias, self.eps)
        return F.linear(F.gelu(normed, approximate=self.approximate), self.weight, self.bias)


def _through_blocks(blocks: list[_Block], hidden: torch.Tensor, dtype: torch.dtype | None) -> torch.Tensor:
    """The first layer's output `hidden` through `blocks` at `dtype` (None: its own
    precision), returned in the precision it came in."""
    out = hidden if dtype is None else hidden.to(dtype)
    for block in blocks:
        out = block(out)
    return out.to(hidden.dtype)


def _velocity_blocks(modules: nn.Sequential, dtype: torch.dtype | None) -> list[_Block]:
    """`mlp(...)[1:]` as (LayerNorm, GELU, Linear) blocks with the parameters cast to `dtype`
    once, not at every call. The casts stay in the autograd graph, so gradients reach the
    parameters in their own precision."""

    def cast(tensor: torch.Tensor) -> torch.Tensor:
        return tensor if dtype is None else tensor.to(dtype)

    layers = list(modules)
    if len(layers) % 3 or not all(
        isinstance(norm, nn.LayerNorm) and isinstance(act, nn.GELU) and isinstance(linear, nn.Linear)
        for norm, act, linear in zip(layers[::3], layers[1::3], layers[2::3])
    ):
        raise TypeError("the velocity network after its first layer must be (LayerNorm, GELU, Linear) blocks")
    return [
        _Block(
            cast(norm.weight),
            cast(norm.bias),
            norm.normalized_shape,
            norm.eps,
            act.approximate,
            cast(linear.weight),
            cast(linear.bias),
        )
        for norm, act, linear in zip(layers[::3], layers[1::3], layers[2::3])
    ]


class ImageEncoder(nn.Module):
    """A small CNN for one 64x64 RGB camera: uint8 (B, H, W, 3) -> (B, out_dim)."""

    def __init__(self, out_dim: int):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(3, 32, 4, stride=2),
            nn.GELU(),
            nn.Conv2d(32, 64, 4, stride=2),
            nn.GELU(),
            nn.Conv2d(64, 64, 3, stride=2),
            nn.GELU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(64, out_dim),
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images.permute(0, 3, 1, 2).float() / 255.0)


class FlowChunkPolicy(FlowPolicyBase):
    """The policy adapter (`lwd.policy.adapter`) with an MLP velocity network (the action
    expert) and its own fast sampler and QAM fields."""

    def __init__(self, config: PolicyConfig):
        super().__init__(config)
        c = config
        self.state_encoder = mlp([c.obs_dim, c.hidden_dim, c.context_dim], final_activation=True)
        self.instruction_proj = nn.Linear(c.text_dim, c.context_dim)
        self.image_encoder = ImageEncoder(c.context_dim) if c.use_images else None
        self.fuse = mlp([c.context_dim * (3 if c.use_images else 2), c.context_dim], final_activation=True)
        self.velocity_net = mlp(
            [c.context_dim + c.flat_action_dim + c.time_dim] + [c.hidden_dim] * c.num_layers + [c.flat_action_dim]
        )

    # -- policy adapter interface -----------------------------------------------------

    def action_expert_parameters(self) -> list[nn.Parameter]:
        return list(self.velocity_net.parameters())

    def encode(self, obs: torch.Tensor, instruction: torch.Tensor, images: torch.Tensor | None = None) -> torch.Tensor:
        """(B, obs_dim), (B, text_dim)[, (B, S, S, 3) uint8] -> context (B, C)."""
        parts = [self.state_encoder((obs - self.obs_mean) / self.obs_std), self.instruction_proj(instruction)]
        if self.image_encoder is not None:
            if images is None:
                raise ValueError("this policy was built with use_images=True and needs camera images")
            parts.append(self.image_encoder(images))
        return self.fuse(torch.cat(parts, dim=-1))

    def velocity(self, context: torch.Tensor, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """Velocity of the flow in normalised action space: (B, C), (B, H*A), (B,) -> (B, H*A)."""
        return self.velocity_net(torch.cat([context, x, time_features(w, self.config.time_dim)], dim=-1))

    def sample_normalized(
        self,
        context: torch.Tensor,
        noise: torch.Tensor | None = None,
        steps: int | None = None,
        dtype: torch.dtype | None = None,
    ) -> torch.Tensor:
        """`dtype` (e.g. bfloat16) runs the hidden layers after the first at that precision,
        as `velocity_field` does; None keeps the parameters' precision."""
        steps = steps or self.config.sample_steps
        batch = context.shape[0]
        x = torch.randn(batch, self.config.flat_action_dim, device=context.device) if noise is None else noise
        h = 1.0 / steps
        # The first layer of `velocity` split by input: the context part is the same for all
        # K steps and the time part the same for the whole batch, so both are computed once
        # instead of K·B times (same function as `velocity`; ~17% fewer FLOPs per chunk).
        context_part, action_weight, time_weight = self._first_layer_parts(context)
        blocks = _velocity_blocks(self.velocity_net[1:], dtype)
        times = torch.arange(steps, device=context.device, dtype=context.dtype) * h
        time_parts = F.linear(time_features(times, self.config.time_dim), time_weight)
        for k in range(steps):
            hidden = context_part + time_parts[k] + F.linear(x, action_weight)
            x = x + h * _through_blocks(blocks, hidden, dtype)
        return x

    def velocity_field(
        self, context: torch.Tensor, dtype: torch.dtype | None = None
    ) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        """`velocity` with the context bound, for losses that evaluate it many times per state
        (QAM: ~20 times). The field maps x (n·B, H*A), w (n·B,) -> (n·B, H*A), where the n
        row blocks of B each pair with the B contexts in order (`context.repeat(n, 1)`) and
        each block has one flow time (as QAM calls it: all B states at w_k).

        Same function as `velocity`, evaluated in parts: the first layer's context columns
        once here rather than per call (gradient still reaches the encoder through them),
        the remaining layers functionally with their weights cast to `dtype` once. `dtype`
        None keeps the parameters' precision; bfloat16 runs the hidden layers on bf16
        units (AMX, tensor cores) at ~3 significant digits; the field returns the
        context's dtype either way.
        """
        first_layer, _ = self._first_layer(context)
        blocks = _velocity_blocks(self.velocity_net[1:], dtype)

        def field(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
            return _through_blocks(blocks, first_layer(x, w), dtype).to(context.dtype)

        return field

    def velocity_linearization(
        self, context: torch.Tensor, dtype: torch.dtype | None = None
    ) -> Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, Callable[[int, torch.Tensor], torch.Tensor]]]:
        """For the lean adjoint of a frozen network (`lwd.algorithms.qam.Linearization`):
        `velocity_field` at n row blocks of states in one batched call, which keeps each
        block's LayerNorm input and statistics, and `vjp(k, a)` = Jᵀa on block k, J = ∂f/∂x,
        by the layers' own backward kernels (those autograd would run) on block k's rows,
        without building or walking an autograd graph. No parameter gradients.
        """
        first_layer, action_weight = self._first_layer(context)
        blocks = _velocity_blocks(self.velocity_net[1:], dtype)
        batch = context.shape[0]

        def linearize(
            x: torch.Tensor, w: torch.Tensor
        ) -> tuple[torch.Tensor, Callable[[int, torch.Tensor], torch.Tensor]]:
            saved = []  # per block: LayerNorm input, mean, rstd and output (the GELU input), (n·B, ·)
            with torch.no_grad():
                hidden = first_layer(x, w)
                hidden = hidden if dtype is None else hidden.to(dtype)
                for block in blocks:
                    normed, mean, rstd = torch.native_layer_norm(
                        hidden, block.norm_shape, block.norm_weight, block.norm_bias, block.eps
                    )
                    saved.append((hidden, mean, rstd, normed))
                    hidden = F.linear(F.gelu(normed, approximate=block.approximate), block.weight, block.bias)

            def vjp(k: int, cotangent: torch.Tensor) -> torch.Tensor:
                rows = slice(k * batch, (k + 1) * batch)
                grad = cotangent if dtype is None else cotangent.to(dtype)
                for block, (inputs, mean, rstd, normed) in zip(reversed(blocks), reversed(saved)):
                    grad = torch.ops.aten.gelu_backward(
                        grad @ block.weight, normed[rows], approximate=block.approximate
                    )
                    grad = torch.ops.aten.native_layer_norm_backward(
                        grad,
                        inputs[rows],
                        block.norm_shape,
                        mean[rows],
                        rstd[rows],
                        block.norm_weight,
                        block.norm_bias,
                        [True, False, False],
                    )[0]
                return grad.to(cotangent.dtype) @ action_weight

            return hidden.to(context.dtype), vjp

        return linearize

    def _first_layer(
        self, context: torch.Tensor
    ) -> tuple[Callable[[torch.Tensor, torch.Tensor], torch.Tensor], torch.Tensor]:
        """The first velocity layer with the context bound, x (n·B, H*A), w (n·B,) -> (n·B, hidden),
        and its weight on x (hidden, H*A). The time part is computed once per block, from the
        block's first row: QAM's fields take one flow time per block of B rows."""
        context_part, action_weight, time_weight = self._first_layer_parts(context)
        batch = context.shape[0]

        def first_layer(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
            time_part = F.linear(time_features(w[::batch], self.config.time_dim), time_weight)  # (n, hidden)
            hidden = F.linear(x, action_weight).view(-1, *context_part.shape)  # (n, B, hidden)
            return (hidden + context_part + time_part[:, None]).flatten(0, 1)

        return first_layer, action_weight

    def _first_layer_parts(self, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The first velocity layer split by input: (context part with bias (B, hidden),
        weight on the action chunk, weight on the time features)."""
        first = self.velocity_net[0]
        c, a = self.config.context_dim, self.config.flat_action_dim
        context_part = F.linear(context, first.weight[:, :c], first.bias)
        return context_part, first.weight[:, c : c + a], first.weight[:, c + a :]
