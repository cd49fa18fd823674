import numpy as np
import pytest

from lwd.envs import SEEDS, UnknownTaskError, make_robot, suite, task_spec
from lwd.envs.phrasings import episode_instruction
from lwd.envs.tasks import METAWORLD_INSTRUCTIONS


def test_every_metaworld_v3_task_has_its_own_instruction():
    from metaworld.env_dict import ALL_V3_ENVIRONMENTS

    assert set(METAWORLD_INSTRUCTIONS) == set(ALL_V3_ENVIRONMENTS)
    assert len(set(METAWORLD_INSTRUCTIONS.values())) == len(METAWORLD_INSTRUCTIONS)


def test_mt10_is_metaworlds_mt10():
    from metaworld.env_dict import MT10_V3

    assert set(suite("mt10").task_names) == set(MT10_V3)
    assert len(suite("mt50").tasks) == 50


def test_unknown_names_fail_with_suggestions():
    with pytest.raises(UnknownTaskError, match="did you mean 'pick-place-v3'"):
        task_spec("pick-plcae-v3")
    with pytest.raises(UnknownTaskError, match="unknown suite 'mt5'"):
        suite("mt5")
    with pytest.raises(UnknownTaskError, match="in suite 'mt10'"):
        suite("mt10").task("basketball-v3")


def test_train_validation_and_eval_seeds_are_disjoint():
    last_train = SEEDS.validation_start - 1
    train = {SEEDS.train(k) for k in range(0, last_train, 9_973)} | {SEEDS.train(last_train)}
    validation = {SEEDS.validation(k) for k in range(SEEDS.validation_count)}
    evaluation = {SEEDS.eval(k) for k in range(SEEDS.eval_count)}
    assert not train & evaluation and not train & validation and not validation & evaluation
    assert all(SEEDS.is_eval(s) for s in evaluation) and not any(SEEDS.is_eval(s) for s in train | validation)
    assert all(SEEDS.is_validation(s) for s in validation) and not any(
        SEEDS.is_validation(s) for s in train | evaluation
    )
    assert SEEDS.held_out("validation", 3) == SEEDS.validation(3) and SEEDS.held_out("eval", 3) == SEEDS.eval(3)
    with pytest.raises(ValueError):
        SEEDS.train(SEEDS.validation_start)
    with pytest.raises(ValueError):
        SEEDS.held_out("test", 0)
    with pytest.raises(ValueError):
        SEEDS.eval(SEEDS.eval_count)


@pytest.mark.parametrize(
    ("task", "obs_dim", "instruction"),
    [
        ("pick-place-v3", 39, "Pick up the puck and place it at the goal."),
        (
            "lh-inspect",
            44,
            "Check the marked spot, line up both pucks, then close the window.",
        ),  # 39 + the stage one-hot
    ],
)
def test_initial_state_is_a_function_of_the_seed(task, obs_dim, instruction):
    robot = make_robot(task)
    a, _ = robot.reset(seed=5)
    robot.step(np.ones(4, np.float32))
    b, _ = robot.reset(seed=5)
    c, _ = robot.reset(seed=SEEDS.eval(5))
    np.testing.assert_array_equal(a.state, b.state)
    assert not np.allclose(a.state, c.state)
    assert a.state.shape == (obs_dim,) and a.state.dtype == np.float32
    assert robot.task.instruction == instruction
    assert a.instruction == b.instruction == episode_instruction(task, 5)  # the wording is a function of the seed


def test_episode_is_truncated_at_the_time_limit_and_reward_is_sparse():
    robot = make_robot("reach-v3")
    robot.reset(seed=0)
    rewards, truncated, steps = [], False, 0
    while not truncated:
        _, reward, terminated, truncated, info = robot.step(np.zeros(4, np.float32))
        rewards.append(reward)
        steps += 1
        assert not terminated
    assert steps == robot.task.max_steps and set(rewards) == {0.0}
    assert 0.0 <= info.progress <= 1.0
