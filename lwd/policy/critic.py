"""Critic ensemble Q_φ(s, A) and value V_ψ(s) for DIVL (SPEC §4).

Both have their own state + instruction encoders (never the policy's), so value
learning cannot disturb the features the policy acts on. Actions enter the critic in
environment units (already in [-1, 1]), so the critic needs no action statistics and
∇_A Q is taken with respect to exactly what the robot would execute.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from lwd.configargs import documented
from lwd.policy.flow_policy import mlp
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
    value_kind: str = documented("categorical", "'categorical' (DIVL) or 'expectile' (IQL-style scalar ablation)")
    value_atoms: int = documented(201, "K_v: atoms of the categorical value")
    value_min: float = documented(-0.1, "lowest atom")
    value_max: float = documented(1.1, "highest atom")

    def __post_init__(self) -> None:
        if self.value_kind not in VALUE_KINDS:
            raise ValueError(f"value_kind must be one of {VALUE_KINDS}, got {self.value_kind!r}")
        if self.num_heads < 1 or self.value_atoms < 2 or not self.value_min < self.value_max:
            raise ValueError("need num_heads >= 1, value_atoms >= 2 and value_min < value_max")

    def to_dict(self) -> dict:
        return asdict(self)


class StateInstructionEncoder(nn.Module):
    """Normalised state MLP + projected instruction embedding -> (B, hidden)."""

    def __init__(self, config: CriticConfig):
        super().__init__()
        self.register_buffer("obs_mean", torch.zeros(config.obs_dim))
        self.register_buffer("obs_std", torch.ones(config.obs_dim))
        self.state = mlp([config.obs_dim, config.hidden_dim], final_activation=True)
        self.instruction = nn.Linear(config.text_dim, config.hidden_dim)

    def forward(self, obs: torch.Tensor, instruction: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.state((obs - self.obs_mean) / self.obs_std), self.instruction(instruction)], dim=-1)


class _QHead(nn.Module):
    def __init__(self, config: CriticConfig):
        super().__init__()
        self.encoder = StateInstructionEncoder(config)
        self.net = mlp(
            [2 * config.hidden_dim + config.chunk_len * config.action_dim]
            + [config.hidden_dim] * config.num_layers
            + [1]
        )

    def forward(self, obs: torch.Tensor, instruction: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([self.encoder(obs, instruction), actions.reshape(actions.shape[0], -1)], -1))[:, 0]


class ChunkCritic(nn.Module):
    """An ensemble of independent Q heads: (B, obs), (B, text), (B, H, A) -> (heads, B)."""

    def __init__(self, config: CriticConfig):
        super().__init__()
        self.config = config
        self.heads = nn.ModuleList(_QHead(config) for _ in range(config.num_heads))

    def forward(self, obs: torch.Tensor, instruction: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        return torch.stack([head(obs, instruction, actions) for head in self.heads])

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
        self.net = mlp([2 * config.hidden_dim] + [config.hidden_dim] * config.num_layers + [outputs])
        self.register_buffer("atoms", torch.linspace(config.value_min, config.value_max, config.value_atoms))

    def forward(self, obs: torch.Tensor, instruction: torch.Tensor) -> torch.Tensor:
        out = self.net(self.encoder(obs, instruction))
        return out if self.config.value_kind == "categorical" else out[:, 0]

    def set_normalization(self, obs_mean, obs_std) -> None:
        _set_obs_stats(self.encoder, obs_mean, obs_std)


def _set_obs_stats(encoder: StateInstructionEncoder, obs_mean, obs_std) -> None:
    encoder.obs_mean.copy_(torch.as_tensor(obs_mean, dtype=torch.float32))
    encoder.obs_std.copy_(torch.as_tensor(obs_std, dtype=torch.float32).clamp_min(1e-3))
