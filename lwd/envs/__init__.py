"""Environments and operators: the robot interface, task suites, experts, the scripted operator."""

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


def make_robot(task: str | TaskSpec) -> Robot:
    """A simulated robot for a registered task (MuJoCo is imported on first use)."""
    from lwd.envs.metaworld_robot import MetaWorldRobot

    return MetaWorldRobot(task)


def make_expert(task: str | TaskSpec) -> Expert:
    from lwd.envs.metaworld_robot import MetaWorldExpert

    return MetaWorldExpert(task)
