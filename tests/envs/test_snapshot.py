import numpy as np
import pytest

from lwd.envs import SEEDS, make_robot


def _rollout(robot, actions: np.ndarray) -> list[tuple]:
    out = []
    for action in actions:
        observation, reward, terminated, truncated, info = robot.step(action)
        out.append((observation.state.copy(), reward, terminated, truncated, info.progress, info.stage_score))
    return out


def _assert_same(reference: list[tuple], replay: list[tuple]) -> None:
    for step, (a, b) in enumerate(zip(reference, replay, strict=True)):
        # Bit for bit: the tolerance is zero, rewards and dense progress included.
        np.testing.assert_array_equal(a[0], b[0], err_msg=f"observation differs at step {step}")
        assert a[1:] == b[1:], f"reward/termination/progress differ at step {step}: {a[1:]} vs {b[1:]}"


@pytest.mark.parametrize("task", ["pick-place-v3", pytest.param("lh-clear-bench", marks=pytest.mark.slow)])
def test_restore_then_replay_gives_the_same_steps_in_the_same_and_in_another_robot(task):
    # pick-place's grasp reward reads Meta-World attributes that alias the simulator's
    # arrays; lh-clear-bench has one scene per stage.
    rng = np.random.default_rng(0)
    robot, other = make_robot(task, "canonical"), make_robot(task, "canonical")
    robot.reset(SEEDS.validation(3))
    other.reset(SEEDS.validation(4))  # another initial state: the snapshot must carry the placement too
    for action in rng.uniform(-1, 1, (25, 4)):
        robot.step(action)
    snapshot = robot.snapshot()
    actions = rng.uniform(-1, 1, (40, 4))
    reference = _rollout(robot, actions)
    robot.restore(snapshot)
    _assert_same(reference, _rollout(robot, actions))
    other.restore(snapshot)
    _assert_same(reference, _rollout(other, actions))
    robot.restore(snapshot)  # a snapshot stays reusable after it was restored
    _assert_same(reference, _rollout(robot, actions))


def test_restoring_another_tasks_snapshot_is_refused():
    reach, push = make_robot("reach-v3", "canonical"), make_robot("push-v3", "canonical")
    reach.reset(SEEDS.validation(0))
    with pytest.raises(ValueError, match="cannot restore a 'reach-v3' snapshot into a 'push-v3' robot"):
        push.restore(reach.snapshot())
