"""Version gates and the rollout: which version each robot runs, and who decided it."""

import dataclasses
import json
import time

import numpy as np
import pytest

from lwd.fleet.gate import CanaryGate, GateConfig, LiveWatch, difference_interval
from lwd.fleet.registry import PolicyRegistry
from lwd.fleet.registry_commands import version_rows
from lwd.policy.checkpoint import CheckpointError, load_checkpoint
from tests.conftest import make_episode

ROBOTS = [f"robot-{i:03d}" for i in range(8)]


@pytest.fixture
def registry(tmp_path, tiny_pipeline):
    """A registry with versions 1, 2 and 3 published (robots follow the newest)."""
    policy, encoder, _ = load_checkpoint(tiny_pipeline[2])
    registry = PolicyRegistry(tmp_path / "registry")
    for version in (1, 2, 3):
        registry.publish(policy, encoder, version=version, parent_version=None, learner_step=version, data_snapshot=0)
    return registry


def _episode(robot: str, seq: int, version: int, autonomous: bool, **overrides):
    episode = make_episode(robot, seq, source="rollout", version=version, success=autonomous, seed=1_000_000 + seq)
    return dataclasses.replace(episode, started_at=time.time(), **overrides)


def test_an_ungated_registry_deploys_its_newest_version(registry):
    rollout = registry.rollout()
    assert rollout.deployed.version == 3 and rollout.canary is None and not rollout.pinned
    assert rollout.version_for("robot-000").version == 3


def test_a_canary_runs_only_on_its_robots_and_a_rejection_ends_it(registry):
    registry.decide(2, "promoted", by="user")
    rollout = registry.decide(3, "canary", by="gate", canary_robots=("robot-001",))
    assert rollout.version_for("robot-001").version == 3
    assert {rollout.version_for(r).version for r in ROBOTS if r != "robot-001"} == {2}
    after = registry.decide(3, "rejected", by="gate", evidence={"difference": -0.5})
    assert after.canary is None and after.deployed.version == 2
    assert [d["decision"] for d in registry.decisions()] == ["promoted", "canary", "rejected"]
    assert registry.decisions()[-1]["evidence"] == {"difference": -0.5}


def test_a_rollback_goes_to_the_previously_deployed_version_and_pins_it(registry):
    registry.decide(1, "promoted", by="gate")
    registry.decide(3, "promoted", by="gate")
    assert registry.rollback_target() == 1  # v2 was never deployed
    rollout = registry.decide(registry.rollback_target(), "rolled_back", by="user")
    assert rollout.deployed.version == 1 and rollout.pinned
    assert registry.decide(3, "promoted", by="user").pinned is False  # a promotion unpins
    assert {row["version"]: row["status"] for row in version_rows(registry)} == {
        1: "retired",
        2: "candidate",
        3: "deployed",
    }


def test_unknown_decisions_and_versions_are_refused(registry):
    with pytest.raises(ValueError, match="unknown decision"):
        registry.decide(3, "approved", by="user")
    with pytest.raises(CheckpointError, match="never published version 9"):
        registry.decide(9, "promoted", by="user")
    assert registry.decisions() == []


def test_pruning_keeps_the_deployed_version(tmp_path, tiny_pipeline):
    policy, encoder, _ = load_checkpoint(tiny_pipeline[2])
    registry = PolicyRegistry(tmp_path / "registry", keep_last=2, keep_every=100)
    registry.publish(policy, encoder, version=1, parent_version=None, learner_step=0, data_snapshot=0)
    registry.publish(policy, encoder, version=2, parent_version=1, learner_step=1, data_snapshot=0)
    registry.decide(2, "promoted", by="gate")
    for version in range(3, 8):
        registry.publish(policy, encoder, version=version, parent_version=2, learner_step=version, data_snapshot=0)
    assert registry.available() == [1, 2, 6, 7]  # the first, the deployed one, the newest two


def _canary(registry, **overrides):
    config = GateConfig(mode="canary", canary_share=0.25, canary_episodes=10, rollback_episodes=0, **overrides)
    return CanaryGate(registry, config, ROBOTS)


def _feed(gate, version_rates: dict[int, float], episodes: int, rng) -> None:
    """`episodes` per robot; each robot runs what the rollout names, succeeding at that version's rate."""
    rollout = gate.registry.rollout()
    for seq in range(episodes):
        for robot in ROBOTS:
            version = rollout.version_for(robot).version
            gate.observe(_episode(robot, seq, version, bool(rng.random() < version_rates[version])))


def test_the_canary_gate_tries_a_candidate_on_its_share_of_robots_and_promotes_a_good_one(registry):
    gate = _canary(registry)  # adopts v3, the newest, as the start version
    assert registry.rollout().deployed.version == 3
    policy, encoder = registry.load(3)
    gate.published(registry.publish(policy, encoder, version=4, parent_version=3, learner_step=9, data_snapshot=0))
    gate.poll()
    rollout = registry.rollout()
    assert rollout.canary.version == 4 and rollout.canary_robots == ("robot-000", "robot-001")
    _feed(gate, {3: 0.6, 4: 0.6}, episodes=6, rng=np.random.default_rng(0))
    gate.poll()
    assert registry.rollout().deployed.version == 4 and registry.rollout().canary is None
    evidence = registry.decisions()[-1]["evidence"]
    assert registry.decisions()[-1]["decision"] == "promoted" and evidence["episodes"] == [12, 36]


def test_the_canary_gate_rejects_a_broken_candidate_and_keeps_the_others_on_the_deployed_version(registry):
    gate = _canary(registry)
    policy, encoder = registry.load(3)
    gate.published(registry.publish(policy, encoder, version=4, parent_version=3, learner_step=9, data_snapshot=0))
    gate.poll()
    _feed(gate, {3: 0.8, 4: 0.0}, episodes=6, rng=np.random.default_rng(0))
    gate.poll()
    last = registry.decisions()[-1]
    assert last["decision"] == "rejected" and last["version"] == 4
    assert last["evidence"]["candidate_success"] == 0.0 and last["evidence"]["difference"] < -0.1
    assert registry.rollout().deployed.version == 3 and registry.rollout().canary is None


def test_a_promoted_version_that_does_worse_live_is_rolled_back(registry):
    config = GateConfig(mode="canary", rollback_episodes=20)
    registry.decide(2, "promoted", by="gate")
    registry.decide(3, "promoted", by="gate")
    watch = LiveWatch(registry, config)
    for seq in range(20):
        watch.observe(_episode("robot-005", seq, 2, autonomous=seq % 5 != 0), ())  # 0.8
        watch.observe(_episode("robot-006", seq, 3, autonomous=seq % 5 == 0), ())  # 0.2
    watch.poll()
    last = registry.decisions()[-1]
    assert (last["decision"], last["by"], last["version"]) == ("rolled_back", "auto-rollback", 2)
    assert registry.rollout().deployed.version == 2 and registry.rollout().pinned


def test_a_promoted_version_that_does_as_well_live_stays(registry):
    registry.decide(2, "promoted", by="gate")
    registry.decide(3, "promoted", by="gate")
    watch = LiveWatch(registry, GateConfig(mode="canary", rollback_episodes=20))
    for seq in range(20):
        watch.observe(_episode("robot-005", seq, 2, autonomous=seq % 2 == 0), ())
        watch.observe(_episode("robot-006", seq, 3, autonomous=seq % 2 == 1), ())
    watch.poll()
    assert registry.rollout().deployed.version == 3 and len(registry.decisions()) == 2


def test_difference_interval_is_centred_on_the_difference():
    difference, low, high = difference_interval(8, 10, 5, 10)
    assert difference == pytest.approx(0.3) and low < 0.3 < high
    assert high - 0.3 == pytest.approx(0.3 - low)


def test_a_canary_needs_robots_left_on_the_deployed_version(registry):
    with pytest.raises(ValueError, match="leaves none"):
        CanaryGate(registry, GateConfig(mode="canary", canary_share=0.9), ["robot-000", "robot-001"])


def test_registry_commands_list_promote_and_roll_back(registry, capsys):
    from lwd.cli import main

    root = str(registry.root)
    assert main(["registry", "promote", "--registry", root, "--version", "2", "--reason", "looks good"]) == 0
    assert main(["registry", "promote", "--registry", root, "--version", "3"]) == 0
    assert main(["registry", "rollback", "--registry", root]) == 0
    capsys.readouterr()
    assert main(["registry", "list", "--registry", root, "--json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    assert listing["rollout"]["deployed"]["version"] == 2 and listing["rollout"]["pinned"]
    assert [row["status"] for row in listing["versions"]] == ["candidate", "deployed", "rolled back"]
    assert listing["versions"][1]["decision"]["evidence"]["rolled_back_version"] == 3
    assert main(["registry", "list", "--registry", root]) == 0
    assert "pinned after a rollback" in capsys.readouterr().out
    assert main(["registry", "promote", "--registry", root, "--version", "9"]) == 2
    assert "never published version 9" in capsys.readouterr().err


def test_an_unknown_mode_or_a_negative_evaluator_temperature_is_refused():
    with pytest.raises(ValueError, match="unknown gate mode"):
        GateConfig(mode="vote")
    with pytest.raises(ValueError, match="evaluator_noise_scale"):
        GateConfig(mode="observe", evaluator_noise_scale=-0.1)
