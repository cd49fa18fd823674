"""Shared test helpers. Episodes made here have real task names and real shapes; the
numbers are random because the data layer's behaviour must not depend on them."""

from __future__ import annotations

import numpy as np
import pytest

from lwd.data.episode import NO_POLICY, Episode
from lwd.envs.tasks import task_spec


def make_episode(robot_id: str = "robot-0", seq: int = 0, *, steps: int = 7, task: str = "reach-v3",
                 source: str = "demo", success: bool = True, seed: int | None = 3, rng_seed: int | None = None,
                 intervention: np.ndarray | None = None, version: int = NO_POLICY) -> Episode:
    spec = task_spec(task)
    rng = np.random.default_rng(seq if rng_seed is None else rng_seed)
    return Episode(
        robot_id=robot_id, seq=seq, task=task, instruction=spec.instruction, source=source,
        observations=rng.normal(size=(steps + 1, spec.obs_dim)).astype(np.float32),
        actions=rng.uniform(-1, 1, size=(steps, spec.action_dim)).astype(np.float32),
        intervention=np.zeros(steps, bool) if intervention is None else intervention,
        policy_version=np.full(steps, version, np.int64),
        timestamps=1.7e9 + np.arange(steps, dtype=np.float64),
        success=success, stage_score=1.0 if success else 0.0, seed=seed, started_at=1.7e9, ended_at=1.7e9 + steps,
    )


@pytest.fixture
def episode_factory():
    return make_episode
