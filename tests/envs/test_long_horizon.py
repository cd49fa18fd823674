"""The long-horizon suite `lh`: chained Meta-World scenes on real physics."""

import numpy as np
import pytest

from lwd.data.episode import EpisodeValidationError, validate
from lwd.envs import SEEDS, UnknownTaskError, make_expert, make_robot, suite, task_spec
from lwd.envs.metaworld_robot import stage_of, stage_seed
from lwd.envs.operator import NoisyExpertActor, OperatorConfig, ScriptedOperator
from lwd.envs.tasks import (
    LONG_HORIZON_STEPS_PER_STAGE,
    MAX_STAGES,
    METAWORLD_OBS_DIM,
    long_horizon_task,
    register_task,
)
from lwd.fleet.rollout import run_episode

LH_TASKS = suite("lh").task_names


def _expert_episode(task, seed):
    """The zero-noise expert until the episode ends: states (T+1), actions, rewards and infos (T)."""
    robot, expert = make_robot(task), make_expert(task)
    observation, info = robot.reset(seed)
    states, actions, rewards, infos = [observation.state], [], [], []
    terminated = truncated = False
    while not (terminated or truncated):
        actions.append(expert.act(observation.state))
        observation, reward, terminated, truncated, info = robot.step(actions[-1])
        states.append(observation.state)
        rewards.append(reward)
        infos.append(info)
    return np.stack(states), actions, np.array(rewards), infos, terminated


def test_lh_suite_shares_one_observation_layout_and_scales_its_time_limit():
    tasks = suite("lh").tasks
    assert len(tasks) >= 3 and len({spec.instruction for spec in tasks}) == len(tasks)
    for spec in tasks:
        # Four stages, at least two of them the hard ones: what keeps SFT in 0.55-0.75 on validation seeds.
        hard_stages = [scene for scene in spec.stages if scene in ("pick-place-v3", "push-v3")]
        assert spec.num_stages == 4 <= MAX_STAGES and len(hard_stages) >= 2 and "pick-place-v3" in hard_stages
        assert spec.obs_dim == METAWORLD_OBS_DIM + MAX_STAGES and spec.action_dim == 4
        assert spec.max_steps == spec.num_stages * LONG_HORIZON_STEPS_PER_STAGE
        assert all(task_spec(scene).num_stages == 1 for scene in spec.stages)  # every stage is a Meta-World scene
        assert task_spec(spec.name) == spec
    assert all(spec.obs_dim == METAWORLD_OBS_DIM for spec in suite("mt50").tasks)
    with pytest.raises(UnknownTaskError, match="did you mean 'lh-clear-bench'"):
        task_spec("lh-clear-bnch")
    with pytest.raises(UnknownTaskError, match="did you mean 'lh'"):
        suite("lhh")


@pytest.mark.parametrize("task", LH_TASKS)
def test_expert_completes_every_stage_and_the_stage_advances_exactly_at_stage_success(task):
    spec = task_spec(task)
    for seed in (0, 1):
        states, actions, rewards, infos, terminated = _expert_episode(task, seed)
        stages = np.array([stage_of(state) for state in states])
        np.testing.assert_array_equal(states[:, 39:].sum(1), 1.0)
        assert terminated and infos[-1].success and infos[-1].stage_score == 1.0
        assert rewards[-1] == 1.0 and not rewards[:-1].any()  # sparse: only the step that finishes the last stage
        assert not any(info.success for info in infos[:-1])
        # The one-hot only ever moves one stage forward, through every stage.
        assert stages[0] == 0 and set(np.diff(stages)) <= {0, 1} and stages[-1] == spec.num_stages - 1
        ends = np.flatnonzero(np.diff(stages)).tolist() + [len(actions) - 1]  # step index that ends each stage
        for k, info in enumerate(infos):
            done = sum(end <= k for end in ends)
            assert info.stage_score == pytest.approx(done / spec.num_stages)
            assert done / spec.num_stages <= info.progress <= 1.0
        # A stage starts in its scene's first state for the stage's derived seed (the teleport), and
        # replaying the stage's actions in that scene alone succeeds on exactly the stage's last
        # action and not before: the robot advanced when, and only when, the scene succeeded.
        start = 0
        for k, (scene, end) in enumerate(zip(spec.stages, ends)):
            alone = make_robot(scene)
            observation, _ = alone.reset(stage_seed(seed, k))
            np.testing.assert_array_equal(observation.state, states[start, :39])
            successes = [alone.step(action)[4].success for action in actions[start : end + 1]]
            assert successes[-1] and not any(successes[:-1]), (scene, successes.index(True), end - start)
            start = end + 1


@pytest.mark.slow
@pytest.mark.parametrize("task", LH_TASKS)
def test_zero_noise_expert_solves_its_chain_on_validation_seeds(task):
    # The suite's contract: the scripted experts solve every chain (>= 0.95; 50 of 50 validation
    # seeds each in docs/benchmarks.md), so what a policy fails on it could have learned.
    robot, expert = make_robot(task), make_expert(task)
    for k in range(10):
        observation, _ = robot.reset(SEEDS.validation(k))
        terminated = truncated = False
        while not (terminated or truncated):
            observation, _, terminated, truncated, _ = robot.step(expert.act(observation.state))
        assert terminated, (task, k)


def test_time_limit_is_stages_times_the_stage_budget_and_partial_work_scores_partially():
    task = "lh-stock-drawer"
    robot, expert = make_robot(task), make_expert(task)
    observation, _ = robot.reset(3)
    steps, truncated, terminated = 0, False, False
    while not (terminated or truncated):
        # The expert does stage 0, then the arm freezes.
        action = expert.act(observation.state) if stage_of(observation.state) == 0 else np.zeros(4, np.float32)
        observation, reward, terminated, truncated, info = robot.step(action)
        steps += 1
        assert reward == 0.0
    assert truncated and not terminated
    stages = robot.task.num_stages
    assert stages >= 3 and steps == robot.task.max_steps == stages * LONG_HORIZON_STEPS_PER_STAGE
    assert stage_of(observation.state) == 1 and info.stage_score == pytest.approx(1 / stages)
    assert 1 / stages <= info.progress < 2 / stages


def test_an_episode_starts_at_stage_zero_and_each_stage_has_its_own_seed():
    # Seed determinism, size and instruction: tests/envs/test_tasks.py (parametrised over lh-inspect too).
    robot = make_robot("lh-inspect")
    robot.reset(seed=5)
    robot.step(np.ones(4, np.float32))
    a, info = robot.reset(seed=5)
    np.testing.assert_array_equal(a.state[39:], [1, 0, 0, 0, 0])
    assert info.stage_score == 0.0 and info.extras["stage"] == 0
    # Each stage's scene gets its own seed, derived from the episode's seed and the stage index.
    assert len({stage_seed(5, k) for k in range(5)} | {stage_seed(6, 0)}) == 6
    assert stage_seed(5, 2) == stage_seed(5, 2)


class ExpertThenFrozen:
    """A policy that does stage 0 like the expert and then stops moving."""

    def __init__(self, expert):
        self.expert = expert

    def reset(self):
        pass

    def act(self, observation):
        if stage_of(observation.state) == 0:
            return self.expert.act(observation.state)
        return np.zeros(4, np.float32)


def test_operator_takes_over_in_a_later_stage_and_completes_it():
    # A chain whose stage 1 (coffee-button) three 25-step takeovers can finish while the frozen
    # policy holds still in between. In the lh chains stage 1 is pick-place or push, which the
    # expert did not finish in such pieces (0 of 8 episodes tried), and that is not under test here.
    task = "test-coffee-chain"
    register_task(
        long_horizon_task(
            task, "Make a cup of coffee and serve it.", ("coffee-push-v3", "coffee-button-v3", "coffee-pull-v3")
        )
    )
    expert = make_expert(task)
    operator = ScriptedOperator(expert, OperatorConfig(), np.random.default_rng(0))
    episode = run_episode(
        make_robot(task),
        ExpertThenFrozen(expert),
        robot_id="r1",
        seq=0,
        source="rollout",
        seed=4,
        operator=operator,
        policy_version=3,
    )
    stages = np.array([stage_of(s) for s in episode.observations])  # (T+1,) stage before each step and after the last
    first_help = int(np.flatnonzero(episode.intervention)[0])
    assert stages[first_help] == 1  # nobody intervened while the policy did stage 0 like the expert
    stage_1_end = int(np.flatnonzero(stages[1:] == 2)[0])  # the step after which stage 2 begins
    assert episode.intervention[stage_1_end]  # the operator's action finished stage 1
    assert episode.stage_score >= 2 / 3
    validate(episode)


def test_lh_episodes_enter_the_data_layer_with_the_stage_one_hot():
    task = "lh-clear-bench"
    episode = run_episode(
        make_robot(task),
        NoisyExpertActor(make_expert(task), 0.0, np.random.default_rng(0)),
        robot_id="demo-lh",
        seq=0,
        source="demo",
        seed=2,
    )
    validate(episode)
    assert episode.success and episode.stage_score == 1.0 and episode.observations.shape[1] == 44
    np.testing.assert_array_equal(episode.observations[:, 39:].sum(1), 1.0)
    from dataclasses import replace

    with pytest.raises(EpisodeValidationError, match=r"observations has shape \(\d+, 39\), expected \(\d+, 44\)"):
        validate(replace(episode, observations=episode.observations[:, :39]))


def test_a_single_stage_robot_keeps_the_plain_metaworld_observation():
    robot, expert = make_robot("drawer-close-v3"), make_expert("drawer-close-v3")
    observation, info = robot.reset(seed=1)
    assert robot.task.num_stages == 1 and robot.task.obs_dim == 39
    assert observation.state.shape == (39,) and info.extras["stage"] == 0
    assert expert.act(observation.state).shape == (4,)
