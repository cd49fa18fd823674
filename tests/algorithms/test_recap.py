"""RECAP (SPEC §7): Monte-Carlo categorical value, per-task thresholds that make ~30% of the
data positive, interventions forced positive, indicator dropout, and what gets gradients."""

from dataclasses import replace

import pytest
import torch

from lwd.algorithms.batch import RecapBatch
from lwd.algorithms.recap import (
    RecapConfig,
    RecapLearner,
    advantages,
    conditioned,
    expected_value,
    improvement_indicator,
    update_thresholds,
)
from lwd.policy.critic import CriticConfig, StateValue
from lwd.policy.flow_policy import FlowChunkPolicy, PolicyConfig
from tests.conftest import random_batch

OBS, TEXT = 6, 8


def _nets(seed=0):
    torch.manual_seed(seed)
    policy = FlowChunkPolicy(
        PolicyConfig(
            obs_dim=OBS,
            action_dim=2,
            chunk_len=3,
            text_dim=TEXT,
            context_dim=16,
            hidden_dim=32,
            num_layers=1,
            time_dim=8,
        )
    )
    value = StateValue(CriticConfig(obs_dim=OBS, action_dim=2, chunk_len=3, text_dim=TEXT, hidden_dim=32))
    return policy, value


def _batch(size=64, seed=0, **overrides) -> RecapBatch:
    g = torch.Generator().manual_seed(seed + 1)
    extra = dict(
        instruction_positive=torch.randn(size, TEXT, generator=g),
        instruction_negative=torch.randn(size, TEXT, generator=g),
        task=torch.arange(size) % 2,
    )
    return random_batch(size, OBS, TEXT, 3, 2, seed, batch_type=RecapBatch, **{**extra, **overrides})


def test_conditioned_instruction_appends_the_indicator():
    assert conditioned("Open the drawer.", True) == "Open the drawer. Advantage: positive."
    assert conditioned("Open the drawer.", False) == "Open the drawer. Advantage: negative."


def test_thresholds_make_the_requested_share_positive_per_task():
    g = torch.Generator().manual_seed(1)
    task = torch.arange(4_000) % 2
    advantage = torch.randn(4_000, generator=g) + 3.0 * task  # task 1's advantages are much larger
    thresholds, seen = torch.zeros(2), torch.zeros(2, dtype=torch.bool)
    update_thresholds(thresholds, seen, advantage, task, positive_fraction=0.3, rate=0.05)
    positive = improvement_indicator(advantage, thresholds[task], torch.zeros(4_000, dtype=torch.bool))
    for k in (0, 1):
        assert positive[task == k].float().mean() == pytest.approx(0.3, abs=0.01)
    assert thresholds[1] - thresholds[0] == pytest.approx(3.0, abs=0.2)


def test_thresholds_move_by_the_ema_rate_once_seen():
    thresholds, seen = torch.tensor([1.0]), torch.tensor([True])
    update_thresholds(thresholds, seen, torch.zeros(10), torch.zeros(10, dtype=torch.long), 0.3, rate=0.25)
    assert float(thresholds[0]) == pytest.approx(0.75)


def test_operator_chunks_are_positive_whatever_their_advantage():
    indicator = improvement_indicator(
        torch.tensor([-5.0, -5.0, 5.0]), torch.zeros(3), torch.tensor([True, False, False])
    )
    assert indicator.tolist() == [True, False, True]


def test_advantage_is_n_step_return_minus_value():
    _, value = _nets()
    batch = _batch(8)
    batch.done[:4] = 1.0
    advantage = advantages(
        value, batch.obs, batch.instruction, batch.reward + 0.5, batch.discount, batch.done, batch.next_obs
    )
    v = expected_value(value(batch.obs, batch.instruction), value.atoms).detach()
    v_next = expected_value(value(batch.next_obs, batch.instruction), value.atoms).detach()
    expected = 0.5 + 0.95 * (1 - batch.done) * v_next - v
    torch.testing.assert_close(advantage, expected)


def test_value_fits_monte_carlo_returns():
    policy, value = _nets()
    learner = RecapLearner(policy, value, RecapConfig(value_lr=3e-3), num_tasks=2)
    batch = _batch(64)
    returns = (batch.obs[:, 0] > 0).float() * 0.8  # a learnable function of the state
    before = expected_value(value(batch.obs, batch.instruction), value.atoms).detach()
    for _ in range(300):
        learner.update_value(batch.obs, batch.instruction, returns)
    after = expected_value(value(batch.obs, batch.instruction), value.atoms).detach()
    assert (after - returns).abs().mean() < 0.5 * (before - returns).abs().mean()
    assert (after - returns).abs().mean() < 0.1


def test_step_trains_action_expert_and_value_not_the_frozen_encoder():
    policy, value = _nets()
    learner = RecapLearner(policy, value, RecapConfig(freeze_encoder=True), num_tasks=2)
    encoder_before = [p.detach().clone() for p in policy.state_encoder.parameters()]
    expert_before = [p.detach().clone() for p in policy.velocity_net.parameters()]
    value_before = [p.detach().clone() for p in value.parameters()]
    metrics = learner.step(_batch(), torch.Generator().manual_seed(0))
    assert all(torch.equal(a, b) for a, b in zip(encoder_before, policy.state_encoder.parameters()))
    assert not all(torch.equal(a, b) for a, b in zip(expert_before, policy.velocity_net.parameters()))
    assert not all(torch.equal(a, b) for a, b in zip(value_before, value.parameters()))
    assert 0.0 < metrics["recap/positive_fraction"] < 1.0 and learner.thresholds_seen.all()


def test_policy_sees_the_indicator_unless_dropped():
    """With dropout 0 the policy's loss depends on the conditioned text; with dropout ~1 only on the plain one."""
    for dropout, key, expect_effect in (
        (0.0, "instruction", False),
        (0.0, "instruction_positive", True),
        (0.999, "instruction_positive", False),
        (0.999, "instruction", True),
    ):
        losses = []
        for scale in (1.0, 5.0):
            policy, value = _nets()
            learner = RecapLearner(policy, value, RecapConfig(dropout=dropout, freeze_encoder=False), num_tasks=2)
            batch = _batch()
            batch.intervention[:, 0] = True  # every chunk positive
            batch = replace(batch, **{key: getattr(batch, key) * scale})
            losses.append(learner.step(batch, torch.Generator().manual_seed(0))["sft/flow_loss"])
        assert (losses[0] != losses[1]) == expect_effect, (dropout, key)


def test_recap_refuses_a_scalar_value():
    policy, _ = _nets()
    scalar = StateValue(CriticConfig(obs_dim=OBS, text_dim=TEXT, chunk_len=3, action_dim=2, value_kind="expectile"))
    with pytest.raises(ValueError, match="categorical"):
        RecapLearner(policy, scalar, RecapConfig(), num_tasks=1)
