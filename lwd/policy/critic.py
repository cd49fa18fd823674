"""Critic ensemble Q_φ(s, A) and value V_ψ(s) for DIVL (SPEC §4).

Both have their own state + instruction encoders (never the policy's), so value
learning cannot disturb the features the policy acts on. For a policy that sees
(`CriticConfig.cameras`), each network also has its own small CNN over the same camera
input (the cameras side by side, uint8): without privileged object state, proprioception
and the instruction alone cannot tell a state worth much from one worth little. The Q
heads of one ensemble share one CNN (as DrQ's twin critics do): the CNN is most of the
cost of a step on a CPU, and the heads stay independent after it. Actions enter the critic in
environment units (already in [-1, 1]), so the critic needs no action statistics and
∇_A Q is taken with respect to exactly what the robot would execute.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from lwd.configargs import documented
from lwd.policy.flow_policy import ImageEncoder, PolicyConfig, mlp
from lwd.policy.instructions import EMBEDDING_DIM

VALUE_KINDS = ("categorical", "expectile")


@dataclass(frozen=True)
class CriticConfig:
    obs_dim: int = documented(39, "state vector size")
    action_dim: int = documented(4, "action size")
    chunk_len: int = documented(5, "H: actions per chunk (must match the policy)")
    text_dim: int = documented(EMBEDDING_DIM, "instruction embedding size")
    hidden_dim: int = documented(256, "width of critic and value networks")
    num_layers: int = documented(2, "hidden layers after the encoder")
    num_heads: int = documented(2, "critic ensemble size (targets use the minimum)")
    action_features: int = documented(
        0,
        "width of each Q head's own layer over the flat action chunk before it meets the state features "
        "(as many inputs for the action as for the state); 0 = the chunk's numbers enter the head directly",
    )
    value_kind: str = documented("categorical", "'categorical' (DIVL) or 'expectile' (IQL-style scalar ablation)")
    value_atoms: int = documented(201, "K_v: atoms of the categorical value")
    value_min: float = documented(-0.1, "lowest atom")
    value_max: float = documented(1.1, "highest atom")
    cameras: tuple[str, ...] = documented(
        (), "cameras the critic's own CNN sees, side by side (the policy's cameras); empty: no images"
    )
    image_size: int = documented(64, "camera image side in pixels when cameras are given")

    def __post_init__(self) -> None:
        object.__setattr__(self, "cameras", tuple(self.cameras))  # a list when read back from JSON
        if self.value_kind not in VALUE_KINDS:
            raise ValueError(f"value_kind must be one of {VALUE_KINDS}, got {self.value_kind!r}")
        if self.num_heads < 1 or self.value_atoms < 2 or not self.value_min < self.value_max:
            raise ValueError("need num_heads >= 1, value_atoms >= 2 and value_min < value_max")
        if self.action_features < 0:
            raise ValueError(f"action_features must be >= 0 (0 = no action layer), got {self.action_features}")

    @classmethod
    def for_policy(cls, policy: PolicyConfig, **settings) -> CriticConfig:
        """A critic/value config with the sizes and camera input of `policy` (own networks, same inputs)."""
        return cls(
            obs_dim=policy.obs_dim,
            action_dim=policy.action_dim,
            chunk_len=policy.chunk_len,
            cameras=policy.cameras if policy.use_images else (),
            image_size=policy.image_size,
            **settings,
        )

    @property
    def use_images(self) -> bool:
        return bool(self.cameras)

    @property
    def features_dim(self) -> int:
        """Width of the encoded state: state + instruction (+ images)."""
        return (3 if self.use_images else 2) * self.hidden_dim

    def to_dict(self) -> dict:
        return asdict(self)


class StateInstructionEncoder(nn.Module):
    """Normalised state MLP + projected instruction embedding [+ image features] -> (B, features_dim)."""

    def __init__(self, config: CriticConfig):
        super().__init__()
        self.register_buffer("obs_mean", torch.zeros(config.obs_dim))
        self.register_buffer("obs_std", torch.ones(config.obs_dim))
        self.state = mlp([config.obs_dim, config.hidden_dim], final_activation=True)
        self.instruction = nn.Linear(config.text_dim, config.hidden_dim)

    def forward(
        self, obs: torch.Tensor, instruction: torch.Tensor, image_features: torch.Tensor | None = None
    ) -> torch.Tensor:
        parts = [self.state((obs - self.obs_mean) / self.obs_std), self.instruction(instruction)]
        if image_features is not None:
            parts.append(image_features)
        return torch.cat(parts, dim=-1)


def _image_features(
    encoder: ImageEncoder | None, images: torch.Tensor | None, image_features: torch.Tensor | None
) -> torch.Tensor | None:
    """The CNN's features of `images`, or `image_features` computed before; None without cameras."""
    if encoder is None:
        return None
    if image_features is not None:
        return image_features
    if images is None:
        raise ValueError("this critic was built with cameras and needs camera images (images=...)")
    return encoder(images)


class _QHead(nn.Module):
    def __init__(self, config: CriticConfig):
        super().__init__()
        self.encoder = StateInstructionEncoder(config)
        chunk_numbers = config.chunk_len * config.action_dim
        self.action = (
            mlp([chunk_numbers, config.action_features], final_activation=True) if config.action_features else None
        )
        action_width = config.action_features or chunk_numbers
        self.net = mlp([config.features_dim + action_width] + [config.hidden_dim] * config.num_layers + [1])

    def forward(
        self,
        obs: torch.Tensor,
        instruction: torch.Tensor,
        actions: torch.Tensor,
        image_features: torch.Tensor | None = None,
    ) -> torch.Tensor:
        encoded = self.encoder(obs, instruction, image_features)
        flat = actions.reshape(actions.shape[0], -1)
        return self.net(torch.cat([encoded, flat if self.action is None else self.action(flat)], -1))[:, 0]


class ChunkCritic(nn.Module):
    """An ensemble of Q heads: (B, obs), (B, text), (B, H, A)[, (B, S, W, 3) uint8] -> (heads, B)."""

    def __init__(self, config: CriticConfig):
        super().__init__()
        self.config = config
        self.image_encoder = ImageEncoder(config.hidden_dim) if config.use_images else None
        self.heads = nn.ModuleList(_QHead(config) for _ in range(config.num_heads))

    def encode_images(self, images: torch.Tensor | None) -> torch.Tensor | None:
        """The ensemble's CNN features (B, hidden) of camera images, for callers that score
        many action chunks at the same states (QAM); None for a critic without cameras."""
        return _image_features(self.image_encoder, images, None)

    def forward(
        self,
        obs: torch.Tensor,
        instruction: torch.Tensor,
        actions: torch.Tensor,
        images: torch.Tensor | None = None,
        image_features: torch.Tensor | None = None,
    ) -> torch.Tensor:
        features = _image_features(self.image_encoder, images, image_features)
        return torch.stack([head(obs, instruction, actions, features) for head in self.heads])

    def set_normalization(self, obs_mean, obs_std) -> None:
        for head in self.heads:
            _set_obs_stats(head.encoder, obs_mean, obs_std)


class StateValue(nn.Module):
    """V_ψ(s): logits over the atoms (categorical) or one scalar (expectile ablation)."""

    def __init__(self, config: CriticConfig):
        super().__init__()
        self.config = config
        outputs = config.value_atoms if config.value_kind == "categorical" else 1
        self.encoder = StateInstructionEncoder(config)
        self.image_encoder = ImageEncoder(config.hidden_dim) if config.use_images else None
        self.net = mlp([config.features_dim] + [config.hidden_dim] * config.num_layers + [outputs])
        self.register_buffer("atoms", torch.linspace(config.value_min, config.value_max, config.value_atoms))

    def forward(self, obs: torch.Tensor, instruction: torch.Tensor, images: torch.Tensor | None = None) -> torch.Tensor:
        features = _image_features(self.image_encoder, images, None)
        out = self.net(self.encoder(obs, instruction, features))
        return out if self.config.value_kind == "categorical" else out[:, 0]

    def set_normalization(self, obs_mean, obs_std) -> None:
        _set_obs_stats(self.encoder, obs_mean, obs_std)


def _set_obs_stats(encoder: StateInstructionEncoder, obs_mean, obs_std) -> None:
    encoder.obs_mean.copy_(torch.as_tensor(obs_mean, dtype=torch.float32))
    encoder.obs_std.copy_(torch.as_tensor(obs_std, dtype=torch.float32).clamp_min(1e-3))
