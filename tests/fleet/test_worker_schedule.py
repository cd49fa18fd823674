"""A worker runs its robots a chunk at a time (lwd/fleet/worker.py, for the simulators'
caches); its robots do exactly what they did when it stepped every robot once per sweep."""

import numpy as np

from lwd.data.store import EpisodeStore
from lwd.envs.operator import OperatorConfig
from lwd.fleet.registry import PolicyRegistry
from lwd.fleet.worker import FleetConfig, RobotWorker, robot_specs
from tests.conftest import PIPELINE_TASKS


def step_every_robot_each_sweep(worker: RobotWorker, episodes: int) -> None:
    """The worker's loop before it ran robots a chunk at a time: one step per robot per
    sweep; robots waiting for the batched policy call sit sweeps out."""
    while True:
        stopping = sum(robot.seq for robot in worker.robots) >= episodes
        rollout: list = []
        for robot in worker.robots:
            worker._boundary(robot, stopping, False, rollout)
        if all(robot.run is None for robot in worker.robots):
            return
        waiting = worker._fill_chunks()
        for robot in worker.robots:
            if robot.run is not None and robot.spec.index not in waiting:
                robot.run.step()


def test_robots_run_a_chunk_at_a_time_do_what_robots_stepped_in_turn_did(tmp_path, tiny_pipeline):
    # An operator that takes over often and hands back mid-chunk: robots it drives keep
    # stepping while the others wait for the next policy call, the case that couples robots.
    config = FleetConfig(
        tasks=PIPELINE_TASKS,
        robots_per_worker=4,
        operator=OperatorConfig(deviation_threshold=0.5, deviation_steps=3, takeover_steps=7, max_takeovers=5),
    )
    episodes = {}
    for schedule in ("chunk at a time", "every robot each sweep"):
        registry = PolicyRegistry(tmp_path / schedule / "registry")
        registry.publish_checkpoint(tiny_pipeline[2], learner_step=0)
        store = EpisodeStore(tmp_path / schedule / "store")
        worker = RobotWorker(0, robot_specs(config), config, store, registry, seed=3)
        if schedule == "chunk at a time":
            worker.run(lambda worker=worker: sum(robot.seq for robot in worker.robots) >= 8)
        else:
            step_every_robot_each_sweep(worker, 8)
        episodes[schedule] = {(r.robot_id, r.seq): store.load(r) for r in store.records()}
    chunked, stepped = episodes["chunk at a time"], episodes["every robot each sweep"]
    common = sorted(set(chunked) & set(stepped))
    assert len(common) >= 8
    handbacks = 0
    for key in common:
        a, b = chunked[key], stepped[key]
        for field in ("observations", "actions", "intervention", "policy_version"):
            np.testing.assert_array_equal(getattr(a, field), getattr(b, field), err_msg=f"{key} {field}")
        assert a.success == b.success
        handbacks += int(np.sum(a.intervention[:-1] & ~a.intervention[1:]))
    assert handbacks > 0, "the operator must hand control back mid-episode for this test to mean anything"
