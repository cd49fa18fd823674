"""The policy registry: atomic, versioned publishing and pruning."""

import pytest
import torch

from lwd.fleet.registry import PolicyRegistry
from lwd.policy.checkpoint import CheckpointError, load_checkpoint


@pytest.fixture
def sft(tiny_pipeline):
    return load_checkpoint(tiny_pipeline[2])


def test_publish_makes_the_new_version_latest_and_loadable(tmp_path, sft):
    policy, encoder, _ = sft
    registry = PolicyRegistry(tmp_path / "reg")
    assert registry.latest() is None
    first = registry.publish(policy, encoder, version=3, parent_version=2, learner_step=0, data_snapshot=0)
    with torch.no_grad():
        next(policy.parameters()).add_(1.0)
    second = registry.publish(policy, encoder, version=4, parent_version=3, learner_step=50, data_snapshot=7)
    assert registry.latest() == second and [p.version for p in registry.history()] == [3, 4]
    loaded, _ = registry.load(4)
    old, _ = registry.load(first.version)
    assert torch.equal(next(loaded.parameters()), next(policy.parameters()))
    assert not torch.equal(next(old.parameters()), next(policy.parameters()))


def test_versions_only_grow(tmp_path, sft):
    policy, encoder, _ = sft
    registry = PolicyRegistry(tmp_path / "reg")
    registry.publish(policy, encoder, version=5, parent_version=None, learner_step=0, data_snapshot=0)
    with pytest.raises(ValueError, match="not newer"):
        registry.publish(policy, encoder, version=5, parent_version=None, learner_step=1, data_snapshot=0)
    assert registry.next_version(at_least=2) == 6  # a resumed learner never reuses a published number


def test_pruning_keeps_the_newest_the_first_and_milestones(tmp_path, sft):
    policy, encoder, _ = sft
    registry = PolicyRegistry(tmp_path / "reg", keep_last=2, keep_every=4)
    for version in range(1, 10):
        registry.publish(
            policy, encoder, version=version, parent_version=version - 1, learner_step=version, data_snapshot=0
        )
    assert registry.available() == [1, 4, 8, 9]
    with pytest.raises(CheckpointError, match="no version 5"):
        registry.load(5)
    assert len(registry.history()) == 9  # the history keeps every publication
