"""Run one episode on one robot with an actor and, optionally, an operator watching."""

from __future__ import annotations

import time

import numpy as np

from lwd.data.episode import NO_POLICY, Episode, Source
from lwd.envs.operator import ScriptedOperator
from lwd.envs.robot import Actor, Robot


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
    """Roll out until success (if `stop_at_success`) or the task's time limit.

    Play episodes (`stop_at_success=False`) keep going after success and are labelled
    failures, as SPEC §6 asks; whether they reached success is kept in `extras`.
    """
    started = time.time()
    observation, info = robot.reset(seed)
    actor.reset()
    if operator is not None:
        operator.begin_episode()
    states, actions, intervened, stamps = [observation.state], [], [], []
    reached_success = False
    operator_drove_last_step = False
    for _ in range(robot.task.max_steps):
        if operator is not None and operator.driving:
            policy_action = None
        else:
            if operator_drove_last_step:
                actor.reset()  # control handed back: a chunked policy must replan from here
            policy_action = actor.act(observation)
        if operator is not None:
            action, by_operator = operator.decide(observation, policy_action, info.progress)
        else:
            action, by_operator = policy_action, False
        action = np.clip(np.asarray(action, dtype=np.float32), -1.0, 1.0)
        observation, _, _, truncated, info = robot.step(action)
        states.append(observation.state)
        actions.append(action)
        intervened.append(by_operator)
        stamps.append(time.time())
        operator_drove_last_step = by_operator
        reached_success = reached_success or info.success
        if (info.success and stop_at_success) or truncated:
            break
    steps = len(actions)
    notes = dict(extras or {})
    if not stop_at_success:
        notes["reached_success"] = reached_success
    return Episode(
        robot_id=robot_id,
        seq=seq,
        task=robot.task.name,
        instruction=robot.task.instruction,
        source=source,
        observations=np.stack(states).astype(np.float32),
        actions=np.stack(actions).astype(np.float32),
        intervention=np.array(intervened, dtype=bool),
        policy_version=np.full(steps, policy_version, dtype=np.int64),
        timestamps=np.array(stamps, dtype=np.float64),
        success=reached_success and stop_at_success,
        stage_score=float(info.stage_score) if stop_at_success else 0.0,
        seed=seed,
        started_at=started,
        ended_at=time.time(),
        extras=notes,
    )
