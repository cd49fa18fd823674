"""HG-DAgger (SPEC §7): flow matching on what the data layer marks imitable."""

import torch

from lwd.algorithms.hg_dagger import HGDaggerLearner, ImitationConfig
from lwd.policy.flow_policy import FlowChunkPolicy, PolicyConfig
from tests.conftest import random_batch


def _policy():
    torch.manual_seed(0)
    return FlowChunkPolicy(
        PolicyConfig(
            obs_dim=5, action_dim=2, chunk_len=3, text_dim=4, context_dim=16, hidden_dim=32, num_layers=1, time_dim=8
        )
    )


def _batch(mask_value=True):
    return random_batch(32, 5, 4, 3, 2, action_mask=torch.full((32, 3), mask_value))


def test_updates_lower_the_flow_matching_loss_on_the_aggregate():
    learner = HGDaggerLearner(_policy(), ImitationConfig(lr=1e-3))
    batch = _batch()
    first = [learner.step(batch, torch.Generator().manual_seed(i))["sft/flow_loss"] for i in range(5)]
    for i in range(200):
        learner.step(batch, torch.Generator().manual_seed(i))
    last = [learner.step(batch, torch.Generator().manual_seed(i))["sft/flow_loss"] for i in range(5)]
    assert sum(last) < 0.7 * sum(first)


def test_masked_actions_teach_nothing():
    policy = _policy()
    learner = HGDaggerLearner(policy, ImitationConfig(freeze_encoder=False))
    before = [p.detach().clone() for p in policy.parameters()]
    metrics = learner.step(_batch(mask_value=False), torch.Generator().manual_seed(0))
    assert metrics["sft/flow_loss"] == 0.0
    assert all(torch.equal(a, b) for a, b in zip(before, policy.parameters()))
