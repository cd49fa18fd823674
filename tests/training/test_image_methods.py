"""The online learners of `lwd deploy --method` on a policy that sees: each takes image
batches from a replay of episodes with frames (HG-DAgger and RECAP from the SFT checkpoint,
as `lwd experiment` starts them) and trains through the policy's CNN."""

import numpy as np
import pytest
import torch

from lwd.algorithms.hg_dagger import ImitationConfig
from lwd.algorithms.learner import LearnerConfig
from lwd.algorithms.recap import RecapConfig
from lwd.data.replay import ChunkReplay, ReplayConfig
from lwd.data.store import EpisodeStore
from lwd.training.online_methods import MethodSettings, start_method
from tests.conftest import IMAGE_SENSORS


@pytest.mark.parametrize("name", ["hg-dagger", "recap"])
def test_a_baseline_trains_an_image_policy_through_its_cnn(tiny_image_sft, name):
    store, sft = tiny_image_sft
    settings = MethodSettings(
        LearnerConfig(), ImitationConfig(freeze_encoder=False), RecapConfig(freeze_encoder=False, value_hidden=32)
    )
    method = start_method(name, sft, settings)
    base = ReplayConfig(chunk_len=method.policy.config.chunk_len, image_cameras=method.policy.config.cameras)
    replay = ChunkReplay(EpisodeStore(store, create=False), method.replay_config(base))
    replay.refresh()
    method.prepare(replay, ["reach-v3"])
    before = {n: p.detach().clone() for n, p in method.policy.image_encoder.named_parameters()}
    metrics = method.step(replay.sample(8, np.random.default_rng(0)), torch.Generator().manual_seed(0))
    assert np.isfinite(list(metrics.values())).all()
    moved = [n for n, p in method.policy.image_encoder.named_parameters() if not torch.equal(p, before[n])]
    assert moved, f"{name}'s update never reached the policy's CNN"
    if name == "recap":
        assert method.learner.value.config.cameras == IMAGE_SENSORS.cameras  # RECAP's value sees the frames too
