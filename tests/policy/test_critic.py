from dataclasses import asdict

import pytest
import torch

from lwd.policy.critic import ChunkCritic, CriticConfig


def _inputs(config: CriticConfig, batch: int = 3):
    torch.manual_seed(0)
    obs = torch.randn(batch, config.obs_dim)
    instruction = torch.randn(batch, config.text_dim)
    actions = torch.rand(batch, config.chunk_len, config.action_dim, requires_grad=True)
    return obs, instruction, actions


def test_an_action_layer_scores_chunks_and_passes_the_action_gradient():
    config = CriticConfig(hidden_dim=16, num_layers=1, num_heads=2, action_features=8)
    critic = ChunkCritic(config)
    obs, instruction, actions = _inputs(config)
    q = critic(obs, instruction, actions)
    assert q.shape == (2, 3)
    (gradient,) = torch.autograd.grad(q.mean(0).sum(), actions)
    assert torch.isfinite(gradient).all() and gradient.abs().sum() > 0


def test_a_critic_config_saved_before_the_action_layer_loads_as_the_plain_head():
    saved = asdict(CriticConfig(hidden_dim=16, num_layers=1))
    del saved["action_features"]  # a checkpoint written before the option existed
    old = ChunkCritic(CriticConfig(**saved))
    plain = ChunkCritic(CriticConfig(hidden_dim=16, num_layers=1))
    plain.load_state_dict(old.state_dict())  # the same parameters, name for name
    obs, instruction, actions = _inputs(plain.config)
    torch.testing.assert_close(plain(obs, instruction, actions), old(obs, instruction, actions))


def test_a_negative_action_layer_width_is_refused():
    with pytest.raises(ValueError, match="action_features"):
        CriticConfig(action_features=-1)
