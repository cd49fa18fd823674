"""Environments and operators: the robot interface, task suites, experts, the scripted operator."""

from lwd.envs.cameras import SensorConfig
from lwd.envs.robot import Actor, Expert, Observation, Robot, StepInfo
from lwd.envs.tasks import (
    SEEDS,
    SeedSplit,
    Suite,
    TaskSpec,
    UnknownTaskError,
    suite,
    suite_names,
    task_spec,
)

__all__ = [
    "SEEDS",
    "Actor",
    "Expert",
    "Observation",
    "Robot",
    "SeedSplit",
    "SensorConfig",
    "StepInfo",
    "Suite",
    "TaskSpec",
    "UnknownTaskError",
    "make_expert",
    "make_robot",
    "suite",
    "suite_names",
    "task_spec",
]


def make_robot(task: str | TaskSpec, phrasings: str = "train", sensors: SensorConfig | None = None) -> Robot:
    """A simulated robot for a registered task (MuJoCo is imported on first use); each
    episode's instruction is drawn from the task's `phrasings` set by its reset seed;
    `sensors` adds cameras and the proprio-only observation (default: state, no cameras)."""
    from lwd.envs.metaworld_robot import MetaWorldRobot

    return MetaWorldRobot(task, phrasings, sensors)


def make_expert(task: str | TaskSpec) -> Expert:
    from lwd.envs.metaworld_robot import MetaWorldExpert

    return MetaWorldExpert(task)
