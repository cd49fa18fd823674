import numpy as np
import pytest
from metaworld.sawyer_xyz_env import SawyerXYZEnv

from lwd.envs import make_expert, make_robot


@pytest.mark.parametrize("task", ["pick-place-v3", "push-v3"])
def test_the_fast_contact_check_answers_as_metaworlds_own(task):
    """lwd's robots replace Meta-World's `touching_object` (a Python loop over MuJoCo's
    contacts) with one on the contact arrays; the reward depends on it, so every answer must
    be Meta-World's, for every geom, touching or not."""
    robot, expert = make_robot(task), make_expert(task)
    env = robot.scenes[0]
    rng = np.random.default_rng(0)
    observation, _ = robot.reset(seed=3)
    answers = []
    for _ in range(150):
        action = expert.act(observation.state) + rng.normal(0.0, 0.2, 4).astype(np.float32)
        observation, *_ = robot.step(np.clip(action, -1.0, 1.0))
        for geom in range(env.model.ngeom):
            fast = env.touching_object(geom)
            assert fast == SawyerXYZEnv.touching_object(env, geom), f"geom {geom}"
            answers.append(fast)
    robot.close()
    assert any(answers), "the expert never grasped or pushed: nothing was compared while touching"
