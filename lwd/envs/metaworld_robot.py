"""Meta-World v3 tasks behind the Robot interface, and their scripted experts."""

from __future__ import annotations

import copy
import functools
import warnings
import weakref
from dataclasses import dataclass

import numpy as np

from lwd.envs.cameras import BadFrameError, FrameMonitor, SceneCameras, SensorConfig, proprio_state
from lwd.envs.phrasings import episode_instruction
from lwd.envs.robot import Observation, StepInfo
from lwd.envs.snapshot import SceneState, capture_scene, restore_scene
from lwd.envs.tasks import MAX_STAGES, METAWORLD_OBS_DIM, TaskSpec, stages_of, task_spec

# Meta-World's dense shaped reward lies in [0, 10]; we expose it only as the
# operator's sense of progress, never as the learning reward.
_DENSE_REWARD_SCALE = 10.0


def _metaworld_env_class(scene: str):
    from metaworld.env_dict import ALL_V3_ENVIRONMENTS_GOAL_OBSERVABLE

    return ALL_V3_ENVIRONMENTS_GOAL_OBSERVABLE[f"{scene}-goal-observable"]


def _make_scene(scene: str, max_steps: int):
    env = _metaworld_env_class(scene)()
    # Draw a fresh initial state per seed instead of Meta-World's frozen task vector.
    env._freeze_rand_vec = False
    env.seeded_rand_vec = True
    # One stage may use the whole episode's time limit.
    env.max_path_length = max(env.max_path_length, max_steps)
    # Bound through a weak proxy: a bound method would make env -> method -> env a cycle, which
    # only the cyclic GC frees, and evaluation (a scene per episode) then held GBs of MuJoCo
    # models (lwd eval on 500 episodes: 2.7 -> 4.7 GB peak, docs/benchmarks.md).
    env.touching_object = functools.partial(_touching_object, weakref.proxy(env))
    return env


def _touching_object(env, object_geom_id: int) -> bool:
    """Meta-World's `SawyerXYZEnv.touching_object` on MuJoCo's contact arrays, with the same
    result bit for bit (the same contacts, summed in the same order).

    Meta-World's version iterates `data.contact` in Python, and the iteration ends in an
    IndexError thrown as a C++ exception inside the bindings; unwinding it costs ~60 µs in a
    plain process, ~70 with torch or Ray loaded and ~180 with sentence_transformers, twice per
    step of every task whose reward asks whether the gripper holds its object (pick-place, push
    and 12 more of MT50): a third of such a step or more (docs/benchmarks.md).
    """
    contact, data = env.data.contact, env.data
    geom1, geom2 = contact.geom1, contact.geom2
    on_object = (geom1 == object_geom_id) | (geom2 == object_geom_id)
    forces = []
    for pad in ("leftpad_geom", "rightpad_geom"):
        pad_id = data.geom(pad).id
        rows = on_object & ((geom1 == pad_id) | (geom2 == pad_id))
        forces.append(sum(data.efc_force[contact.efc_address[rows]]))
    return 0 < forces[0] and 0 < forces[1]


def stage_seed(seed: int, stage: int) -> int:
    """The reset seed of `stage` in an episode of a multi-stage task started with `seed`."""
    return int(np.random.SeedSequence([seed, stage]).generate_state(1)[0])


def stage_one_hot(stage: int) -> np.ndarray:
    """(MAX_STAGES,) float32: the stage part of a multi-stage task's observation."""
    code = np.zeros(MAX_STAGES, dtype=np.float32)
    code[stage] = 1.0
    return code


def stage_of(state: np.ndarray) -> int:
    """The stage index encoded in a multi-stage task's observation (39 scene numbers + one-hot)."""
    return int(stages_of(state[None])[0])


@dataclass(frozen=True)
class RobotSnapshot:
    """A `MetaWorldRobot` mid-episode (see `MetaWorldRobot.snapshot`)."""

    task: str
    scenes: tuple[SceneState, ...]  # one per stage
    stage: int
    seed: int | None
    steps: int
    instruction: str
    frame_monitor: FrameMonitor  # the cameras' frame monitor (black/frozen frame detection)


class MetaWorldRobot:
    """A simulated Sawyer doing one Meta-World task, or a chain of scenes, one per stage.

    The initial state is a deterministic function of the reset seed: object and goal
    positions are drawn from the scene's own random-reset space with that seed. A
    multi-stage task keeps one scene per stage; stage k is reset with
    `stage_seed(seed, k)`. When the current scene reports success the robot moves
    ("teleports") to the next scene: the step returns that scene's first observation.
    Only the last stage's success is the task's success (reward 1, terminated).

    Each episode's instruction is a phrasing of the task drawn from `phrasings` ("train",
    "heldout" or "canonical", lwd/envs/phrasings.py) by the reset seed, as a person
    would word the same request differently from one day to the next.
    """

    def __init__(self, task: TaskSpec | str, phrasings: str = "train", sensors: SensorConfig | None = None):
        self.task = task_spec(task) if isinstance(task, str) else task
        self.phrasings = phrasings
        self._instruction = episode_instruction(self.task.name, None, phrasings)  # fails fast on a bad set
        self._multi_stage = self.task.num_stages > 1
        expected_dim = METAWORLD_OBS_DIM + (MAX_STAGES if self._multi_stage else 0)
        if self.task.num_stages > MAX_STAGES or self.task.obs_dim != expected_dim:
            raise ValueError(
                f"task {self.task.name!r}: {self.task.num_stages} stages need obs_dim {expected_dim} "
                f"and at most {MAX_STAGES} stages, got obs_dim {self.task.obs_dim}"
            )
        self._scenes = [_make_scene(scene, self.task.max_steps) for scene in self.task.stages]
        # Cameras (if any) see what sensors ask for; built before any reset (see SceneCameras).
        self.sensors = sensors or SensorConfig()
        self._cameras = (
            [SceneCameras(env.model, self.sensors.cameras, self.sensors.image_size) for env in self._scenes]
            if self.sensors.cameras
            else []
        )
        self._frame_monitor = FrameMonitor(self.sensors.frozen_motion_m)
        self._bad_frames: dict[str, str] = {}
        self._stage = 0
        self._seed: int | None = None
        self._steps = 0
        self._action_low = self._scenes[0].action_space.low.astype(np.float32)
        self._action_high = self._scenes[0].action_space.high.astype(np.float32)

    @property
    def scenes(self) -> tuple:
        """The raw Meta-World environments, one per stage (the simulator benchmark replays on them)."""
        return tuple(self._scenes)

    @property
    def action_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        return self._action_low, self._action_high

    @property
    def stage(self) -> int:
        """Index of the stage in progress (the last one once the task has succeeded)."""
        return self._stage

    def _observation(self, raw: np.ndarray) -> Observation:
        state = raw.astype(np.float32)
        if self._multi_stage:
            state = np.concatenate([state, stage_one_hot(self._stage)])
        if not self._cameras:
            return Observation(state=state, instruction=self._instruction)
        frames = self._frames()
        if self.sensors.observation == "proprio":
            return Observation(proprio_state(raw), self._instruction, frames, privileged_state=state)
        return Observation(state=state, instruction=self._instruction, images=frames)

    def _frames(self) -> dict[str, np.ndarray]:
        data = self._scenes[self._stage].data
        frames = self._cameras[self._stage].render(data)
        self._bad_frames = self._frame_monitor.check(frames, data.xpos)
        if self._bad_frames and self.sensors.bad_frames == "raise":
            reasons = "; ".join(f"camera {name!r}: {why}" for name, why in self._bad_frames.items())
            raise BadFrameError(
                f"task {self.task.name!r}, step {self._steps}: {reasons} (SensorConfig(bad_frames='flag') keeps going)"
            )
        return frames

    def _extras(self) -> dict:
        extras: dict = {"stage": self._stage}
        if self._bad_frames:
            extras["bad_frames"] = dict(self._bad_frames)
        return extras

    def _reset_scene(self, stage: int) -> np.ndarray:
        env = self._scenes[stage]
        if self._seed is not None:
            env.seed(stage_seed(self._seed, stage) if self._multi_stage else self._seed)
        raw, _ = env.reset()
        self._frame_monitor.reset()  # a new scene: nothing to compare with yet
        return raw

    def reset(self, seed: int | None = None) -> tuple[Observation, StepInfo]:
        self._seed, self._stage, self._steps = seed, 0, 0
        self._instruction = episode_instruction(self.task.name, seed, self.phrasings)
        raw = self._reset_scene(0)
        observation = self._observation(raw)
        return observation, StepInfo(success=False, progress=0.0, stage_score=0.0, extras=self._extras())

    def step(self, action: np.ndarray) -> tuple[Observation, float, bool, bool, StepInfo]:
        # np.minimum/np.maximum, not np.clip: the same numbers without np.clip's Python
        # dispatch, a few µs per call on a 4-number action at every step of every robot
        action = np.minimum(np.maximum(np.asarray(action, dtype=np.float32), self._action_low), self._action_high)
        stage, stages = self._stage, self.task.num_stages
        raw, dense, _, _, info = self._scenes[stage].step(action)
        self._steps += 1
        stage_done = bool(info["success"])
        success = stage_done and stage == stages - 1
        stage_progress = 1.0 if stage_done else min(max(float(dense) / _DENSE_REWARD_SCALE, 0.0), 1.0)
        if stage_done and not success:
            self._stage += 1
            raw = self._reset_scene(self._stage)  # the next scene, with no progress in it yet
        truncated = not success and self._steps >= self.task.max_steps
        observation = self._observation(raw)
        step_info = StepInfo(
            success=success,
            progress=(stage + stage_progress) / stages,
            stage_score=(stage + stage_done) / stages,
            extras=self._extras(),
        )
        return observation, float(success), success, truncated, step_info

    def snapshot(self) -> RobotSnapshot:
        """Everything the next `step` depends on (every stage's scene, the stage, the step
        count, the episode's instruction), to `restore` into this robot or another robot of
        the same task. Restoring and replaying the same actions gives the same observations
        bit for bit (tests/envs/test_snapshot.py). The caller keeps the observation it had."""
        return RobotSnapshot(
            task=self.task.name,
            scenes=tuple(capture_scene(env) for env in self._scenes),
            stage=self._stage,
            seed=self._seed,
            steps=self._steps,
            instruction=self._instruction,
            frame_monitor=copy.deepcopy(self._frame_monitor),
        )

    def restore(self, snapshot: RobotSnapshot) -> None:
        """Return to `snapshot` (taken from any robot of this task); it stays reusable."""
        if snapshot.task != self.task.name:
            raise ValueError(f"cannot restore a {snapshot.task!r} snapshot into a {self.task.name!r} robot")
        for env, state in zip(self._scenes, snapshot.scenes):
            restore_scene(env, state)
        self._stage, self._seed, self._steps = snapshot.stage, snapshot.seed, snapshot.steps
        self._instruction = snapshot.instruction
        self._frame_monitor = copy.deepcopy(snapshot.frame_monitor)
        self._bad_frames = {}

    def close(self) -> None:
        for cameras in self._cameras:
            cameras.close()
        for env in self._scenes:
            env.close()


class MetaWorldExpert:
    """The task's scripted Meta-World policies: a deterministic function of the state.

    For a multi-stage task it reads the stage from the observation's one-hot and runs
    that scene's policy on the scene's 39 numbers.
    """

    def __init__(self, task: TaskSpec | str):
        from metaworld.policies import ENV_POLICY_MAP

        spec = task_spec(task) if isinstance(task, str) else task
        self._policies = [ENV_POLICY_MAP[scene]() for scene in spec.stages]

    def act(self, state: np.ndarray) -> np.ndarray:
        state = np.asarray(state, dtype=np.float64)
        if state.shape[-1] < METAWORLD_OBS_DIM:
            raise ValueError(
                f"the scripted expert reads Meta-World's full {METAWORLD_OBS_DIM}-number state, got "
                f"{state.shape[-1]} numbers (in proprio mode pass lwd.envs.robot.expert_state(observation))"
            )
        policy = self._policies[stage_of(state) if len(self._policies) > 1 else 0]
        with warnings.catch_warnings():
            # The scripted policies warn when their gains saturate; the clip is intended.
            warnings.simplefilter("ignore", UserWarning)
            action = policy.get_action(state[:METAWORLD_OBS_DIM])
        return np.minimum(np.maximum(action, -1.0), 1.0).astype(np.float32)  # np.clip, without its dispatch
