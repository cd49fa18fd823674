"""The policy-alone probe at an episode's first takeover, and shadow gates on a replay."""

import numpy as np
import torch

from lwd.benchmarks.gates import shadow_gates
from lwd.data.store import EpisodeStore
from lwd.envs import make_expert, make_robot, suite
from lwd.envs.operator import OperatorConfig, ScriptedOperator
from lwd.fleet.counterfactual import PolicyAloneProbe
from lwd.fleet.policy_actor import PolicyActor
from lwd.fleet.registry import PolicyRegistry
from lwd.fleet.rollout import EpisodeRun, run_episode
from lwd.fleet.worker import FleetConfig, RobotWorker, robot_specs

TASKS = ("reach-v3", "drawer-close-v3")
# Takes over after 6 watched steps of any disagreement: mid-chunk (H = 5), in every episode
# the policy does not finish within 6 steps.
EARLY_GATE = OperatorConfig(deviation_threshold=0.0, deviation_steps=6, takeover_steps=10)


def _fleet_episodes(checkpoint, root, probe=None, episodes=6):
    config = FleetConfig(tasks=TASKS, robots_per_worker=3, operator=EARLY_GATE)
    registry = PolicyRegistry(root / "registry")
    registry.publish_checkpoint(checkpoint, learner_step=0)
    store = EpisodeStore(root / "store")
    worker = RobotWorker(0, robot_specs(config), config, store, registry, seed=3, takeover_probe=probe)
    worker.run(lambda: worker.uploaded >= episodes)
    worker.release()
    return {(r.robot_id, r.seq): store.load(r) for r in store.records()}


def test_the_probe_leaves_every_episode_of_the_fleet_as_it_was(tiny_pipeline, tmp_path):
    plain = _fleet_episodes(tiny_pipeline[4], tmp_path / "plain")
    probe = PolicyAloneProbe(seed=0)
    probed = _fleet_episodes(tiny_pipeline[4], tmp_path / "probed", probe)
    assert plain.keys() == probed.keys()
    for key, episode in plain.items():
        other = probed[key]
        np.testing.assert_array_equal(episode.observations, other.observations)
        np.testing.assert_array_equal(episode.actions, other.actions)
        np.testing.assert_array_equal(episode.intervention, other.intervention)
        assert episode.success == other.success
    taken_over = {key for key, e in plain.items() if e.intervention.any()}
    assert taken_over and set(probe.outcomes) == taken_over
    for key in taken_over:
        outcome = probe.outcomes[key]
        assert outcome.takeover_step == int(np.argmax(plain[key].intervention))
        assert outcome.takeover_step < outcome.steps <= suite("mt10").task(plain[key].task).max_steps


class SameNoiseProbe(PolicyAloneProbe):
    """A probe that draws from a given generator instead of its own."""

    def __init__(self, generator: torch.Generator):
        super().__init__(seed=0)
        self.shared = generator

    def generator(self, run):
        return self.shared


def test_the_probe_reports_the_episode_the_policy_would_have_had_alone(tiny_pipeline):
    """With the policy's own noise stream continued, the probe's run from the first takeover
    must end as the operator-free episode of the same seed and noise does."""
    from lwd.policy.checkpoint import load_checkpoint

    policy, encoder, _ = load_checkpoint(tiny_pipeline[4])
    task, seed = "reach-v3", 11

    def episode(operator, noise, probe=None):
        hook = None if probe is None else (lambda run, action: probe(run, action, policy, encoder))
        run = EpisodeRun(
            make_robot(task),
            PolicyActor(policy, encoder, noise),
            robot_id="r",
            seq=0,
            source="rollout",
            seed=seed,
            operator=operator,
            on_first_takeover=hook,
        )
        while not run.step():
            pass
        return run.episode()

    alone = episode(None, torch.Generator().manual_seed(5))
    noise = torch.Generator().manual_seed(5)
    probe = SameNoiseProbe(noise)
    watched = episode(ScriptedOperator(make_expert(task), EARLY_GATE, np.random.default_rng(0)), noise, probe)
    assert watched.intervention.any()
    outcome = probe.outcomes[("r", 0)]
    assert (outcome.success, outcome.steps) == (alone.success, len(alone.actions))


def test_a_shadow_gate_on_the_policy_alone_replay_finds_the_fleets_first_takeover(tiny_pipeline):
    from lwd.policy.checkpoint import load_checkpoint

    policy, encoder, _ = load_checkpoint(tiny_pipeline[4])
    task, seed = "drawer-close-v3", 4
    gates = [EARLY_GATE, OperatorConfig(deviation_threshold=0.0, deviation_steps=9), OperatorConfig(attention=0.0)]

    def episode(operator):
        actor = PolicyActor(policy, encoder, torch.Generator().manual_seed(2))
        return run_episode(make_robot(task), actor, robot_id="r", seq=0, source="rollout", seed=seed, operator=operator)

    alone = episode(None)
    first, success = shadow_gates(make_robot(task), make_expert(task), seed, alone.actions, gates, rng_seed=0)
    assert success == alone.success
    for gate, step in zip(gates[:2], first[:2]):
        watched = episode(ScriptedOperator(make_expert(task), gate, np.random.default_rng(0)))
        assert step == int(np.argmax(watched.intervention))
    assert first[2] is None  # never watching, never taking over
