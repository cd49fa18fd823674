"""Learners for a policy that sees: the critic and value have their own CNN over the same
camera input, every critic/value call gets the images of the state it values, and the
baselines (HG-DAgger, RECAP) train an image policy on image batches."""

import copy
import json

import pytest
import torch

from lwd.algorithms.batch import RecapBatch
from lwd.algorithms.hg_dagger import HGDaggerLearner, ImitationConfig
from lwd.algorithms.learner import LearnerConfig, LWDLearner
from lwd.algorithms.recap import RecapConfig, RecapLearner
from lwd.policy.critic import ChunkCritic, CriticConfig, StateValue
from lwd.policy.flow_policy import FlowChunkPolicy, PolicyConfig
from tests.conftest import random_batch

OBS, TEXT, CHUNK, ACT, SIDE, BATCH = 8, 16, 3, 4, 32, 16
CAMERAS = ("scene", "gripper")


def _policy() -> FlowChunkPolicy:
    config = PolicyConfig(
        obs_dim=OBS,
        action_dim=ACT,
        chunk_len=CHUNK,
        text_dim=TEXT,
        context_dim=16,
        hidden_dim=32,
        num_layers=1,
        time_dim=8,
        sample_steps=4,
        use_images=True,
        image_size=SIDE,
        cameras=CAMERAS,
    )
    return FlowChunkPolicy(config)


def _critic_config(**overrides) -> CriticConfig:
    return CriticConfig.for_policy(_policy().config, text_dim=TEXT, hidden_dim=32, num_layers=1, **overrides)


def _images(seed: int, size: int = BATCH) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (size, SIDE, 2 * SIDE, 3), generator=g, dtype=torch.uint8)


def _batch(seed: int = 0, batch_type=None, **extra):
    return random_batch(
        BATCH, OBS, TEXT, CHUNK, ACT, seed, batch_type, images=_images(seed), next_images=_images(seed + 100), **extra
    )


def _params(module: torch.nn.Module | None) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in module.named_parameters()}


def _moved(before: dict[str, torch.Tensor], module: torch.nn.Module) -> bool:
    return any(not torch.equal(before[name], p) for name, p in module.named_parameters())


def test_the_critic_config_takes_the_policys_cameras_and_survives_json():
    config = _critic_config()
    assert config.cameras == CAMERAS and config.image_size == SIDE and config.use_images
    assert CriticConfig(**json.loads(json.dumps(config.to_dict()))) == config
    state_only = CriticConfig.for_policy(PolicyConfig())
    assert not state_only.use_images and state_only.cameras == ()


def test_a_critic_with_cameras_refuses_to_value_without_images():
    critic, value = ChunkCritic(_critic_config()), StateValue(_critic_config())
    batch = _batch()
    with pytest.raises(ValueError, match="needs camera images"):
        critic(batch.obs, batch.instruction, batch.actions)
    with pytest.raises(ValueError, match="needs camera images"):
        value(batch.obs, batch.instruction)


def test_the_critic_tells_apart_states_that_differ_only_in_their_images():
    # Same proprio, instruction and chunk; a black scene is worth 0, a white one 1. Only the
    # CNN can separate them, and 150 critic updates must.
    torch.manual_seed(0)
    critic = ChunkCritic(_critic_config())
    optimizer = torch.optim.Adam(critic.parameters(), lr=1e-3)
    obs, instruction, actions = torch.zeros(2, OBS), torch.zeros(2, TEXT), torch.zeros(2, CHUNK, ACT)
    images = torch.stack([torch.zeros(SIDE, 2 * SIDE, 3), torch.full((SIDE, 2 * SIDE, 3), 255.0)]).to(torch.uint8)
    target = torch.tensor([0.0, 1.0])
    for _ in range(150):
        loss = ((critic(obs, instruction, actions, images) - target) ** 2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    q = critic(obs, instruction, actions, images).mean(0).detach()
    assert torch.allclose(q, target, atol=0.1), q  # tolerance: a regression fit, not an exact solve


def test_precomputed_image_features_give_the_same_q():
    critic = ChunkCritic(_critic_config())
    batch = _batch()
    direct = critic(batch.obs, batch.instruction, batch.actions, batch.images)
    reused = critic(batch.obs, batch.instruction, batch.actions, image_features=critic.encode_images(batch.images))
    torch.testing.assert_close(direct, reused, rtol=0, atol=0)


def test_an_lwd_step_trains_the_critics_and_values_own_cnns_with_the_batch_images():
    torch.manual_seed(0)
    policy = _policy()
    critic, value = ChunkCritic(_critic_config()), StateValue(_critic_config())
    learner = LWDLearner(
        policy, copy.deepcopy(policy), critic, value, LearnerConfig(policy_warmup=0, qam_batch=8, critic_ema=0.5)
    )
    ids = {id(p) for p in policy.parameters()}
    assert not ids & {id(p) for p in critic.parameters()} and not ids & {id(p) for p in value.parameters()}
    before = {name: _params(getattr(learner, name).image_encoder) for name in ("critic", "value", "policy")}
    target_before = _params(learner.critic_target.image_encoder)
    metrics = learner.step(_batch(), torch.Generator().manual_seed(0))
    for name in ("critic", "value", "policy"):
        assert _moved(before[name], getattr(learner, name).image_encoder), name
    assert _moved(target_before, learner.critic_target.image_encoder)  # by the EMA
    assert all(torch.isfinite(torch.tensor(v)) for v in metrics.values())


def test_the_td_target_reads_the_value_at_the_next_images():
    # V at s' must see s'`s frames: with the same next_obs but other next_images, the readout differs.
    torch.manual_seed(0)
    policy = _policy()
    learner = LWDLearner(
        policy,
        copy.deepcopy(policy),
        ChunkCritic(_critic_config()),
        StateValue(_critic_config(value_kind="expectile")),
        LearnerConfig(policy_warmup=10),
    )
    batch = _batch()
    with torch.no_grad():  # a value that depends on its input (fresh heads are near-constant)
        for p in learner.value.parameters():
            p.add_(torch.randn_like(p) * 0.5)
    first, _ = learner.value_readout(batch.next_obs, batch.instruction, batch.next_images)
    second, _ = learner.value_readout(batch.next_obs, batch.instruction, _images(7))
    assert not torch.allclose(first, second)


def test_hg_dagger_trains_an_image_policy_on_image_batches():
    torch.manual_seed(0)
    policy = _policy()
    learner = HGDaggerLearner(policy, ImitationConfig(freeze_encoder=False))
    before = _params(policy.image_encoder)
    learner.step(_batch(), torch.Generator().manual_seed(0))
    assert _moved(before, policy.image_encoder)


def test_recap_values_and_conditions_an_image_policy_on_image_batches():
    torch.manual_seed(0)
    policy, value = _policy(), StateValue(_critic_config())
    learner = RecapLearner(policy, value, RecapConfig(freeze_encoder=False), num_tasks=2)
    g = torch.Generator().manual_seed(3)
    batch = _batch(
        batch_type=RecapBatch,
        task=torch.arange(BATCH) % 2,
        instruction_positive=torch.randn(BATCH, TEXT, generator=g),
        instruction_negative=torch.randn(BATCH, TEXT, generator=g),
    )
    before = {"policy": _params(policy.image_encoder), "value": _params(value.image_encoder)}
    learner.step(batch, torch.Generator().manual_seed(0))
    assert _moved(before["policy"], policy.image_encoder) and _moved(before["value"], value.image_encoder)
