"""The scripted operator and the episode runner on real Meta-World tasks."""

import numpy as np
import pytest

from lwd.data.episode import validate
from lwd.envs import make_expert, make_robot, suite
from lwd.envs.operator import BACKOFF_ACTION, NoisyExpertActor, OperatorConfig, ScriptedOperator
from lwd.envs.phrasings import episode_instruction, task_phrasings
from lwd.fleet.rollout import EpisodeRun, run_episode


class FrozenArm:
    """A deliberately bad policy: never moves, never grips."""

    def reset(self):
        pass

    def act(self, observation):
        return np.zeros(4, np.float32)


class ShutGripper:
    """A bad policy seen in the fleet: it moves like the expert but shuts the gripper above the
    object, then stops; Meta-World's pick-place expert, taking over there, pushes the shut gripper
    down on the puck for good."""

    def __init__(self, task: str, shut_for: int = 60):
        self.expert, self.shut_for, self.steps = make_expert(task), shut_for, 0

    def reset(self):
        self.steps = 0

    def act(self, observation):
        self.steps += 1
        if self.steps > self.shut_for:
            return np.zeros(4, np.float32)
        return np.append(self.expert.act(observation.state)[:3], 1.0).astype(np.float32)


def _rollout(task, actor, operator, seed, version=7):
    return run_episode(
        make_robot(task),
        actor,
        robot_id="r1",
        seq=seed,
        source="rollout",
        seed=seed,
        operator=operator,
        policy_version=version,
    )


@pytest.mark.parametrize("still_steps", [0, 30], ids=["default rules", "with the still rule"])
@pytest.mark.parametrize("task", suite("mt10").task_names)
def test_operator_never_intervenes_on_the_expert_at_zero_noise(task, still_steps):
    expert = make_expert(task)
    operator = ScriptedOperator(expert, OperatorConfig(still_steps=still_steps), np.random.default_rng(0))
    for seed in range(3):
        episode = _rollout(task, NoisyExpertActor(expert, 0.0, np.random.default_rng(seed)), operator, seed)
        assert not episode.intervention.any()


def test_operator_takes_over_a_bad_policy_within_its_budget():
    config = OperatorConfig(max_takeovers=2, takeover_steps=20)
    operator = ScriptedOperator(make_expert("drawer-open-v3"), config, np.random.default_rng(0))
    episode = _rollout("drawer-open-v3", FrozenArm(), operator, seed=1)
    assert episode.intervention.any()
    assert 1 <= operator.takeovers <= config.max_takeovers
    assert episode.intervention.sum() <= config.max_takeovers * config.takeover_steps
    # Control goes back to the policy between and after takeovers.
    assert not episode.intervention[-1] or operator.takeovers == config.max_takeovers
    np.testing.assert_array_equal(episode.policy_version, 7)


def test_operator_help_rescues_a_stuck_policy():
    task = "drawer-open-v3"
    helped = _rollout(
        task,
        FrozenArm(),
        ScriptedOperator(make_expert(task), OperatorConfig(takeover_steps=60), np.random.default_rng(0)),
        seed=2,
    )
    alone = _rollout(task, FrozenArm(), None, seed=2)
    assert helped.success and not alone.success
    assert alone.num_steps == make_robot(task).task.max_steps


@pytest.mark.parametrize("seed", [0, 1])
def test_an_operator_that_backs_off_when_stuck_rescues_a_shut_gripper_and_one_that_does_not_fails(seed):
    task = "pick-place-v3"
    outcomes = {}
    for backoff_steps in (0, 10):
        config = OperatorConfig(takeover_steps=100, backoff_steps=backoff_steps, open_gripper=False)
        operator = ScriptedOperator(make_expert(task), config, np.random.default_rng(0))
        episode = _rollout(task, ShutGripper(task), operator, seed)
        assert episode.intervention.any()
        outcomes[backoff_steps] = episode.success
        backed_off = np.all(episode.actions == BACKOFF_ACTION, axis=1) & episode.intervention
        assert backed_off.any() == bool(backoff_steps)
    assert outcomes == {0: False, 10: True}


def test_an_operator_that_opens_the_gripper_reopens_one_the_policy_shut():
    task = "pick-place-v3"
    opening = {}
    for open_gripper in (False, True):
        # The shut gripper disagrees with the expert (effort +1 against 0) from the first step:
        # the operator takes over at step 12, the fingers half shut.
        config = OperatorConfig(
            deviation_threshold=0.5,
            deviation_steps=12,
            takeover_steps=40,
            max_takeovers=1,
            backoff_steps=0,
            open_gripper=open_gripper,
        )
        operator = ScriptedOperator(make_expert(task), config, np.random.default_rng(0))
        episode = _rollout(task, ShutGripper(task, shut_for=15), operator, seed=0)
        driven = np.flatnonzero(episode.intervention)
        # Meta-World's gripper opening (1 = open) at the takeover and 10, 20, 30 steps into it
        opening[open_gripper] = episode.observations[driven[[0, 10, 20, 30]], 3]
    assert opening[False][0] == opening[True][0] < 0.6
    assert opening[False][1:].max() <= opening[False][0]  # the expert's effort 0 lets it shut further
    assert opening[True][1:].max() > opening[True][0] + 0.15


def test_an_inattentive_operator_never_intervenes():
    operator = ScriptedOperator(make_expert("reach-v3"), OperatorConfig(attention=0.0), np.random.default_rng(0))
    assert not _rollout("reach-v3", FrozenArm(), operator, seed=0).intervention.any()


def test_operator_actions_carry_its_own_noise():
    expert = make_expert("reach-v3")
    operator = ScriptedOperator(
        expert, OperatorConfig(action_noise=0.3, deviation_steps=1, takeover_steps=200), np.random.default_rng(0)
    )
    episode = _rollout("reach-v3", FrozenArm(), operator, seed=0)
    driven = np.flatnonzero(episode.intervention)
    expert_actions = np.stack([expert.act(episode.observations[t]) for t in driven])
    assert np.abs(episode.actions[driven] - expert_actions).mean() > 0.1


def test_an_episode_records_the_phrasing_its_seed_draws_and_passes_validation():
    expert = make_expert("reach-v3")
    episodes = [
        _rollout("reach-v3", NoisyExpertActor(expert, 0.0, np.random.default_rng(0)), None, seed) for seed in (0, 1, 0)
    ]
    assert [e.instruction for e in episodes] == [episode_instruction("reach-v3", s) for s in (0, 1, 0)]
    assert episodes[0].instruction in task_phrasings("reach-v3").train
    for episode in episodes:
        validate(episode)


class PlanCountingExpert:
    """The expert as a chunked actor with chunks of CHUNK actions: it acts as the expert does
    and records at which steps it starts a chunk (after `reset`, or when one runs out)."""

    CHUNK = 8

    def __init__(self, task: str):
        self.expert, self.left, self.steps, self.plans_at = make_expert(task), 0, 0, []

    def reset(self) -> None:
        self.left = 0

    def act(self, observation) -> np.ndarray:
        if self.left == 0:
            self.plans_at.append(self.steps)
            self.left = self.CHUNK
        self.left, self.steps = self.left - 1, self.steps + 1
        return self.expert.act(observation.state)


@pytest.mark.parametrize("replan", [False, True], ids=["whole chunks", "replan at a stage end"])
def test_a_robot_replans_at_a_stage_end_only_when_asked(replan):
    actor = PlanCountingExpert("lh-line-up")
    run = EpisodeRun(
        make_robot("lh-line-up"), actor, robot_id="r1", seq=0, source="rollout", seed=3, replan_at_stage_end=replan
    )
    stage_ends, stage_score = [], 0.0
    while not run.step():
        if run.info.stage_score > stage_score:
            stage_ends.append(run.steps_taken)
        stage_score = run.info.stage_score
    assert run.reached_success and len(stage_ends) == run.robot.task.num_stages - 1
    every_chunk = list(range(0, run.steps_taken, PlanCountingExpert.CHUNK))
    if replan:
        assert set(stage_ends) <= set(actor.plans_at)
        assert len(actor.plans_at) > len(every_chunk)  # the stage ends fell mid-chunk here
    else:
        assert actor.plans_at == every_chunk
