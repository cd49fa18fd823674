"""Episodes of one robot with an actor and, optionally, an operator watching.

`EpisodeRun` advances one step at a time, so a fleet worker can interleave many robots
and serve all their policy calls in one batch; `run_episode` drives a single run.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from lwd.data.episode import NO_POLICY, Episode, Source
from lwd.envs.operator import ScriptedOperator
from lwd.envs.robot import Actor, Robot


class EpisodeRun:
    """One episode in progress. The robot is reset on construction.

    Every step records the policy version that produced it: the actor's `version`
    attribute when it has one (the version of the chunk it is executing), else the
    run's deployed `policy_version`; operator steps record the deployed version.
    Play runs (`stop_at_success=False`) keep going after success and are labelled
    failures (SPEC §6); whether they reached success is kept in `extras`.
    """

    def __init__(
        self,
        robot: Robot,
        actor: Actor,
        *,
        robot_id: str,
        seq: int,
        source: Source,
        seed: int | None,
        operator: ScriptedOperator | None = None,
        policy_version: int = NO_POLICY,
        stop_at_success: bool = True,
        extras: dict | None = None,
        on_first_takeover: Callable[[EpisodeRun, np.ndarray], None] | None = None,
        replan_at_stage_end: bool = False,
    ):
        """`on_first_takeover(run, policy_action)` is called when the operator takes over for
        the first time in the episode, before its action is executed (e.g. to measure what
        the policy would have done alone: lwd.fleet.counterfactual). With `replan_at_stage_end`
        the actor is reset when a stage of a long-horizon task ends, so a chunked policy
        replans in the next stage's scene (FleetConfig.replan_at_stage_end)."""
        self.robot, self.actor, self.operator = robot, actor, operator
        self.on_first_takeover = on_first_takeover
        self.replan_at_stage_end = replan_at_stage_end
        self.robot_id, self.seq, self.source, self.seed = robot_id, seq, source, seed
        self.policy_version, self.stop_at_success = policy_version, stop_at_success
        self.extras = dict(extras or {})
        self.started_at = time.time()
        self.observation, self.info = robot.reset(seed)
        self.instruction = self.observation.instruction  # the wording this episode was given
        actor.reset()
        if operator is not None:
            operator.begin_episode()
        self._states = [self.observation.state]
        # camera -> its frames, aligned with _states (a robot without cameras records none)
        self._frames: dict[str, list[np.ndarray]] = {name: [f] for name, f in self.observation.images.items()}
        self._actions: list[np.ndarray] = []
        self._intervened: list[bool] = []
        self._versions: list[int] = []
        self._stamps: list[float] = []
        self.reached_success = False
        self.finished = False

    @property
    def steps_taken(self) -> int:
        """Actions executed so far in this episode."""
        return len(self._actions)

    @property
    def policy_in_control(self) -> bool:
        """Whether the next step asks the actor (False while the operator drives)."""
        return self.operator is None or not self.operator.driving

    def step(self) -> bool:
        """Execute one action; returns True once the episode has ended."""
        if self.finished:
            raise RuntimeError(f"episode {self.robot_id}/{self.seq} has already ended")
        operator = self.operator
        policy_action = self.actor.act(self.observation) if self.policy_in_control else None
        version = (
            getattr(self.actor, "version", self.policy_version) if policy_action is not None else self.policy_version
        )
        if operator is not None:
            takeovers_before = operator.takeovers
            action, by_operator = operator.decide(self.observation, policy_action, self.info.progress)
            if self.on_first_takeover is not None and takeovers_before == 0 and operator.takeovers == 1:
                self.on_first_takeover(self, policy_action)
            if by_operator and not operator.driving:
                self.actor.reset()  # control goes back after this step: a chunked policy replans from here
        else:
            action, by_operator = policy_action, False
        # np.clip's numbers without its Python dispatch (µs per call, at every step of every robot)
        action = np.minimum(np.maximum(np.asarray(action, dtype=np.float32), -1.0), 1.0)
        stage_score = self.info.stage_score
        self.observation, _, _, truncated, self.info = self.robot.step(action)
        if self.replan_at_stage_end and self.info.stage_score > stage_score:
            self.actor.reset()
        self._states.append(self.observation.state)
        for name, frames in self._frames.items():
            frames.append(self.observation.images[name])
        self._actions.append(action)
        self._intervened.append(by_operator)
        self._versions.append(self.policy_version if by_operator else version)
        self._stamps.append(time.time())
        self.reached_success = self.reached_success or self.info.success
        self.finished = bool(
            (self.info.success and self.stop_at_success) or truncated or len(self._actions) >= self.robot.task.max_steps
        )
        return self.finished

    def episode(self) -> Episode:
        notes = dict(self.extras)
        if not self.stop_at_success:
            notes["reached_success"] = self.reached_success
        return Episode(
            robot_id=self.robot_id,
            seq=self.seq,
            task=self.robot.task.name,
            instruction=self.instruction,
            source=self.source,
            observations=np.stack(self._states).astype(np.float32),
            actions=np.stack(self._actions).astype(np.float32),
            intervention=np.array(self._intervened, dtype=bool),
            policy_version=np.array(self._versions, dtype=np.int64),
            timestamps=np.array(self._stamps, dtype=np.float64),
            success=self.reached_success and self.stop_at_success,
            stage_score=float(self.info.stage_score) if self.stop_at_success else 0.0,
            seed=self.seed,
            started_at=self.started_at,
            ended_at=time.time(),
            extras=notes,
            frames={name: np.stack(frames) for name, frames in self._frames.items()},
        )


def run_episode(
    robot: Robot,
    actor: Actor,
    *,
    robot_id: str,
    seq: int,
    source: Source,
    seed: int | None,
    operator: ScriptedOperator | None = None,
    policy_version: int = NO_POLICY,
    stop_at_success: bool = True,
    extras: dict | None = None,
) -> Episode:
    """Roll out until success (if `stop_at_success`) or the task's time limit."""
    run = EpisodeRun(
        robot,
        actor,
        robot_id=robot_id,
        seq=seq,
        source=source,
        seed=seed,
        operator=operator,
        policy_version=policy_version,
        stop_at_success=stop_at_success,
        extras=extras,
    )
    while not run.step():
        pass
    return run.episode()
