"""The robot interface: what a simulated or a real robot must implement.

Gymnasium-shaped on purpose (reset/step with terminated/truncated and an info dict),
so a real robot driver can implement it without depending on Meta-World.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from lwd.envs.tasks import TaskSpec


@dataclass(frozen=True)
class Observation:
    """What the policy sees at one step."""

    state: np.ndarray  # (obs_dim,) float32, proprioception + object state (proprioception only in proprio mode)
    instruction: str
    images: dict[str, np.ndarray] = field(default_factory=dict)  # camera -> (H, W, 3) uint8
    # The simulator's full state when `state` leaves it out (proprio mode): for scripted
    # experts and operators only, never for a policy. None on a real robot.
    privileged_state: np.ndarray | None = None


def expert_state(observation: Observation) -> np.ndarray:
    """What a scripted expert reads: the full simulator state, wherever the observation keeps it."""
    return observation.state if observation.privileged_state is None else observation.privileged_state


@dataclass(frozen=True)
class StepInfo:
    """Per-step facts a robot reports besides the observation."""

    success: bool  # the whole task is done
    progress: float  # task progress in [0, 1] as an onlooker would judge it (operator only)
    stage_score: float  # fraction of stages completed, in [0, 1]
    extras: dict[str, Any] = field(default_factory=dict)


class Robot(Protocol):
    """One robot (or simulated scene) that runs one task at a time.

    `step` returns gymnasium's five values: the sparse reward is 1.0 on the step that
    reaches success and 0.0 otherwise; `terminated` is True at success, `truncated` at
    the time limit.
    """

    task: TaskSpec

    def reset(self, seed: int | None = None) -> tuple[Observation, StepInfo]: ...

    def step(self, action: np.ndarray) -> tuple[Observation, float, bool, bool, StepInfo]: ...

    def close(self) -> None: ...


class Expert(Protocol):
    """A scripted (or human) controller that knows how to do the robot's current task.

    An expert that a `ScriptedOperator` watches through must act as a function of `state`
    alone: the operator may ask about a step after later steps ran (lwd/envs/operator.py)."""

    def act(self, state: np.ndarray) -> np.ndarray: ...


class Actor(Protocol):
    """Anything that chooses a robot's next action: a policy, an expert, a person."""

    def reset(self) -> None:
        """Forget any plan in progress (a new episode, or control handed back)."""

    def act(self, observation: Observation) -> np.ndarray: ...
