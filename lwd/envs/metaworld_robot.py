"""Meta-World v3 tasks behind the Robot interface, and their scripted experts."""

from __future__ import annotations

import warnings

import numpy as np

from lwd.envs.robot import Observation, StepInfo
from lwd.envs.tasks import TaskSpec, task_spec

# Meta-World's dense shaped reward lies in [0, 10]; we expose it only as the
# operator's sense of progress, never as the learning reward.
_DENSE_REWARD_SCALE = 10.0


def _metaworld_env_class(scene: str):
    from metaworld.env_dict import ALL_V3_ENVIRONMENTS_GOAL_OBSERVABLE

    return ALL_V3_ENVIRONMENTS_GOAL_OBSERVABLE[f"{scene}-goal-observable"]


class MetaWorldRobot:
    """A simulated Sawyer doing one Meta-World task (or a chain of scenes, one per stage).

    The initial state is a deterministic function of the reset seed: object and goal
    positions are drawn from the scene's own random-reset space with that seed.
    """

    def __init__(self, task: TaskSpec | str):
        self.task = task_spec(task) if isinstance(task, str) else task
        if self.task.num_stages != 1:
            raise NotImplementedError("multi-stage Meta-World tasks arrive with the long-horizon suite")
        self._env = _metaworld_env_class(self.task.stages[0])()
        # Draw a fresh initial state per seed instead of Meta-World's frozen task vector.
        self._env._freeze_rand_vec = False
        self._env.seeded_rand_vec = True
        self._env.max_path_length = max(self._env.max_path_length, self.task.max_steps)
        self._steps = 0
        self._action_low = self._env.action_space.low.astype(np.float32)
        self._action_high = self._env.action_space.high.astype(np.float32)

    @property
    def action_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        return self._action_low, self._action_high

    def _observation(self, raw: np.ndarray) -> Observation:
        return Observation(state=raw.astype(np.float32), instruction=self.task.instruction)

    def reset(self, seed: int | None = None) -> tuple[Observation, StepInfo]:
        if seed is not None:
            self._env.seed(seed)
        raw, _ = self._env.reset()
        self._steps = 0
        return self._observation(raw), StepInfo(success=False, progress=0.0, stage_score=0.0)

    def step(self, action: np.ndarray) -> tuple[Observation, float, bool, bool, StepInfo]:
        action = np.clip(np.asarray(action, dtype=np.float32), self._action_low, self._action_high)
        raw, dense, _, _, info = self._env.step(action)
        self._steps += 1
        success = bool(info["success"])
        truncated = not success and self._steps >= self.task.max_steps
        step_info = StepInfo(
            success=success,
            progress=float(np.clip(dense / _DENSE_REWARD_SCALE, 0.0, 1.0)),
            stage_score=1.0 if success else 0.0,
        )
        return self._observation(raw), float(success), success, truncated, step_info

    def close(self) -> None:
        self._env.close()


class MetaWorldExpert:
    """The task's scripted Meta-World policy: a deterministic function of the state."""

    def __init__(self, task: TaskSpec | str):
        from metaworld.policies import ENV_POLICY_MAP

        spec = task_spec(task) if isinstance(task, str) else task
        self._policy = ENV_POLICY_MAP[spec.stages[0]]()

    def act(self, state: np.ndarray) -> np.ndarray:
        with warnings.catch_warnings():
            # The scripted policies warn when their gains saturate; the clip is intended.
            warnings.simplefilter("ignore", UserWarning)
            action = self._policy.get_action(np.asarray(state, dtype=np.float64))
        return np.clip(action, -1.0, 1.0).astype(np.float32)
