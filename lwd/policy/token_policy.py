"""A second policy behind the adapter: a transformer action expert over tokens, the shape
of a VLA's (π0-style) action expert, at CPU size.

    context tokens: state, instruction[, image patches]            (B, N, d), flattened
    velocity:       [context tokens, time token, H action tokens] -> transformer
                    -> the H action tokens' outputs -> (B, H*A)

`encode` is the part frozen online (the stand-in for a VLM backbone); the action expert
is the time and action projections, the transformer and the output head. Sampling and
QAM's fields are `FlowPolicyBase`'s generic ones.
"""

from __future__ import annotations

import torch
from torch import nn

from lwd.policy.adapter import FlowPolicyBase
from lwd.policy.flow_policy import PolicyConfig, time_features

PATCHES_PER_SIDE = 4  # each camera's image becomes 4x4 patch tokens


class TokenFlowPolicy(FlowPolicyBase):
    """Flow-matching chunk policy with a token transformer action expert; `context_dim` is
    the token width, `hidden_dim` the feed-forward width, `num_layers` the depth."""

    def __init__(self, config: PolicyConfig):
        super().__init__(config)
        c, d = config, config.context_dim
        self.state_token = nn.Linear(c.obs_dim, d)
        self.instruction_token = nn.Linear(c.text_dim, d)
        self.image_patches: nn.Conv2d | None = None
        num_context = 2
        if c.use_images:
            patch = c.image_size // PATCHES_PER_SIDE
            self.image_patches = nn.Conv2d(3, d, kernel_size=patch, stride=patch)
            num_context += PATCHES_PER_SIDE * PATCHES_PER_SIDE * max(1, len(c.cameras))
        self.context_position = nn.Parameter(torch.zeros(num_context, d))
        self.num_context = num_context
        # the action expert
        self.time_token = nn.Linear(c.time_dim, d)
        self.action_token = nn.Linear(c.action_dim, d)
        self.action_position = nn.Parameter(torch.zeros(c.chunk_len, d))
        layer = nn.TransformerEncoderLayer(
            d, c.num_heads, dim_feedforward=c.hidden_dim, dropout=0.0, batch_first=True, norm_first=True
        )
        self.transformer = nn.TransformerEncoder(layer, c.num_layers, enable_nested_tensor=False)
        self.head = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, c.action_dim))
        nn.init.normal_(self.context_position, std=0.02)
        nn.init.normal_(self.action_position, std=0.02)

    def action_expert_parameters(self) -> list[nn.Parameter]:
        modules = (self.time_token, self.action_token, self.transformer, self.head)
        return [self.action_position, *(p for module in modules for p in module.parameters())]

    def encode(self, obs: torch.Tensor, instruction: torch.Tensor, images: torch.Tensor | None = None) -> torch.Tensor:
        """(B, obs_dim), (B, text_dim)[, (B, S, S·cameras, 3) uint8] -> context (B, N·d): the
        N context tokens, flattened so that learners can batch and repeat it as a matrix."""
        tokens = [
            self.state_token((obs - self.obs_mean) / self.obs_std)[:, None],
            self.instruction_token(instruction)[:, None],
        ]
        if self.image_patches is not None:
            if images is None:
                raise ValueError("this policy was built with use_images=True and needs camera images")
            patches = self.image_patches(images.permute(0, 3, 1, 2).float() / 255.0)  # (B, d, 4, 4·cameras)
            tokens.append(patches.flatten(2).transpose(1, 2))
        context = torch.cat(tokens, dim=1)
        if context.shape[1] != self.num_context:
            raise ValueError(
                f"images give {context.shape[1] - 2} patch tokens; this policy was built for {self.num_context - 2}"
            )
        return (context + self.context_position).flatten(1)

    def velocity(self, context: torch.Tensor, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """(B, N·d), (B, H*A), (B,) -> (B, H*A)."""
        c, batch = self.config, x.shape[0]
        context_tokens = context.view(batch, self.num_context, c.context_dim)
        time = self.time_token(time_features(w, c.time_dim))[:, None]
        actions = self.action_token(x.view(batch, c.chunk_len, c.action_dim)) + self.action_position
        hidden = self.transformer(torch.cat([context_tokens, time, actions], dim=1))
        return self.head(hidden[:, -c.chunk_len :]).flatten(1)
