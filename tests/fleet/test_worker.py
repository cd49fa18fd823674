"""Robot workers: task assignment, seeds, at-least-once upload, per-step versions."""

import sqlite3

import numpy as np
import pytest

from lwd.data.episode import EpisodeValidationError
from lwd.envs import SEEDS
from lwd.envs.operator import OperatorConfig
from lwd.fleet.registry import PolicyRegistry
from lwd.fleet.worker import FleetConfig, RobotWorker, robot_specs, upload


def test_every_task_gets_robots_and_seeds_are_disjoint_training_seeds():
    specs = robot_specs(FleetConfig(workers=2, robots_per_worker=3))  # 6 robots, 10 tasks
    covered = [task for spec in specs for task in spec.tasks]
    assert sorted(covered) == sorted(FleetConfig().task_names())
    seeds = {spec.seed(seq) for spec in specs for seq in range(100)}
    assert len(seeds) == 600 and not any(SEEDS.is_eval(s) or SEEDS.is_validation(s) for s in seeds)


def test_the_deployment_operator_gets_the_fleets_gate_and_a_budget_per_stage():
    config = FleetConfig(
        operator=OperatorConfig(deviation_threshold=0.7, stall_steps=45, stall_disagreement=0.5, max_takeovers=2)
    )
    operator = config.operator_for(stages=4)
    assert (
        operator.deviation_threshold,
        operator.stall_steps,
        operator.stall_disagreement,
        operator.max_takeovers,
    ) == (0.7, 45, 0.5, 8)


class FlakySink:
    """A store behind a connection that fails the first `failures` appends, the second of
    them after the commit landed (the acknowledgement was lost)."""

    def __init__(self, store, failures: int):
        self.store, self.failures, self.calls = store, failures, 0

    def append(self, episode):
        self.calls += 1
        if self.calls == 2:
            self.store.append(episode)
        if self.calls <= self.failures:
            raise sqlite3.OperationalError("database is locked")
        return self.store.append(episode)

    def committed_ids(self, robot_id):
        return self.store.committed_ids(robot_id)


def test_upload_retries_and_a_landed_retry_is_a_duplicate(tmp_path, episode_factory):
    from lwd.data.store import EpisodeStore

    store = EpisodeStore(tmp_path / "store")
    sink = FlakySink(store, failures=2)
    receipt = upload(sink, episode_factory("robot-000", 0, source="rollout"))
    assert sink.calls == 3 and receipt.duplicate
    assert len(store.records()) == 1


def test_upload_does_not_retry_an_invalid_episode(tmp_path, episode_factory):
    from lwd.data.store import EpisodeStore

    episode = episode_factory("robot-000", 0, source="rollout")
    episode.observations[2, 0] = np.nan
    sink = FlakySink(EpisodeStore(tmp_path / "store"), failures=0)
    with pytest.raises(EpisodeValidationError, match="NaN"):
        upload(sink, episode)
    assert sink.calls == 1


def test_worker_records_the_version_of_every_step_and_switches_only_between_episodes(tmp_path, tiny_pipeline):
    from lwd.data.store import EpisodeStore
    from lwd.policy.checkpoint import load_checkpoint

    policy, encoder, _ = load_checkpoint(tiny_pipeline[2])
    registry = PolicyRegistry(tmp_path / "reg")
    registry.publish(policy, encoder, version=1, parent_version=None, learner_step=0, data_snapshot=0)
    config = FleetConfig(tasks=("reach-v3",), robots_per_worker=2)
    store = EpisodeStore(tmp_path / "store")
    worker = RobotWorker(0, robot_specs(config), config, store, registry)
    sweeps = {"n": 0}

    def should_stop():
        sweeps["n"] += 1
        if sweeps["n"] == 30:  # mid-episode: robots must keep version 1 until their episode ends
            registry.publish(policy, encoder, version=2, parent_version=1, learner_step=1, data_snapshot=0)
        return len(store.records()) >= 4

    worker.run(should_stop)
    episodes = [store.load(r) for r in store.records()]
    for episode in episodes:
        assert len(set(episode.policy_version.tolist())) == 1, episode.episode_id
    first_by_robot = {e.robot_id: e for e in episodes if e.seq == 0}
    assert all(e.policy_version[0] == 1 for e in first_by_robot.values())
    assert any(e.policy_version[0] == 2 for e in episodes)


def test_a_bfloat16_fleet_samples_through_a_bfloat16_graph_and_an_unknown_precision_is_refused(tmp_path, tiny_pipeline):
    import torch

    from lwd.data.store import EpisodeStore

    with pytest.raises(ValueError, match="inference_dtype"):
        FleetConfig(inference_dtype="float16")
    registry = PolicyRegistry(tmp_path / "reg")
    registry.publish_checkpoint(tiny_pipeline[2], learner_step=0)
    config = FleetConfig(tasks=("reach-v3",), robots_per_worker=2, inference_dtype="bfloat16")
    store = EpisodeStore(tmp_path / "store")
    worker = RobotWorker(0, robot_specs(config), config, store, registry)
    used = {}

    def should_stop():
        used.update(worker.samplers)  # a version's sampler is dropped once no robot runs it
        return len(store.records()) >= 2

    worker.run(should_stop)
    assert used and all(s.dtype == torch.bfloat16 and s.checked and not s.off for s in used.values())


def test_every_kth_episode_acts_deterministically_and_the_others_sample(tmp_path, tiny_pipeline):
    from lwd.data.store import EpisodeStore

    with pytest.raises(ValueError, match="deterministic_every"):
        FleetConfig(deterministic_every=-1)
    # No takeovers: what a robot does then depends only on its policy calls.
    quiet = OperatorConfig(attention=0.0)
    config = FleetConfig(tasks=("reach-v3",), robots_per_worker=2, deterministic_every=2, operator=quiet)
    actions = {}
    for noise_seed in (3, 4):
        registry = PolicyRegistry(tmp_path / str(noise_seed) / "reg")
        registry.publish_checkpoint(tiny_pipeline[2], learner_step=0)
        store = EpisodeStore(tmp_path / str(noise_seed) / "store")
        worker = RobotWorker(0, robot_specs(config), config, store, registry, seed=noise_seed)
        worker.run(lambda store=store: len(store.records()) >= 4)
        actions[noise_seed] = {(r.robot_id, r.seq): store.load(r).actions for r in store.records()}
    for key in set(actions[3]) & set(actions[4]):  # the same robots' episodes under another noise seed
        if key[1] % 2 == 0:  # episodes 0, 2, ..: the deterministic flow, whatever the noise
            np.testing.assert_allclose(actions[3][key], actions[4][key], atol=1e-5, err_msg=str(key))
        else:
            assert not np.allclose(actions[3][key][:5], actions[4][key][:5]), key
    assert {seq for _, seq in set(actions[3]) & set(actions[4])} >= {0, 1}


def test_a_held_worker_finishes_its_episodes_starts_none_and_still_stops(tmp_path, tiny_pipeline):
    from lwd.data.store import EpisodeStore

    registry = PolicyRegistry(tmp_path / "reg")
    registry.publish_checkpoint(tiny_pipeline[2], learner_step=0)
    config = FleetConfig(tasks=("reach-v3",), robots_per_worker=2)
    store = EpisodeStore(tmp_path / "store")
    worker = RobotWorker(0, robot_specs(config), config, store, registry)
    sweeps = {"n": 0, "idle_while_held": 0}

    def should_hold():  # hold from the 5th sweep on: the two episodes in flight still finish
        sweeps["n"] += 1
        if sweeps["n"] > 5 and all(robot.run is None for robot in worker.robots):
            sweeps["idle_while_held"] += 1
        return sweeps["n"] > 5

    worker.run(lambda: sweeps["idle_while_held"] >= 20, should_hold)
    episodes = [store.load(r) for r in store.records()]
    assert len(episodes) == 2 and {e.seq for e in episodes} == {0}


def test_a_worker_whose_robot_another_process_drives_exits_with_a_refusal(tmp_path):
    import multiprocessing as mp

    from lwd.data.store import EpisodeStore
    from lwd.fleet.fleet import LocalFleet
    from lwd.fleet.worker import EXIT_LEASE_REFUSED

    config = FleetConfig(tasks=("reach-v3",), robots_per_worker=2)
    store = EpisodeStore(tmp_path / "store")
    with store.lease("robot-001"):  # this process drives robot-001, e.g. an orphan of an earlier run
        fleet = LocalFleet(config, tmp_path / "store", tmp_path / "registry", lease_wait_seconds=0.5)
        fleet.start()
        fleet.processes[0].join(60)
        assert fleet.processes[0].exitcode == EXIT_LEASE_REFUSED
        with pytest.raises(RuntimeError, match=r"refused its robots \(robot-000, robot-001\)"):
            fleet.supervise()  # reported, not restarted into the same refusal
        assert fleet.restarts == 0
    assert not mp.active_children()


def test_the_status_shows_the_robots_first_steps_before_any_episode_ends(tmp_path, tiny_pipeline):
    # A benchmark opens its window once every robot has stepped; "running" alone is not
    # enough (the first policy call can take seconds on a loaded machine).
    import json

    from lwd.data.store import EpisodeStore

    registry = PolicyRegistry(tmp_path / "reg")
    registry.publish_checkpoint(tiny_pipeline[2], learner_step=0)
    config = FleetConfig(tasks=("reach-v3",), robots_per_worker=2)
    store = EpisodeStore(tmp_path / "store")
    (tmp_path / "logs").mkdir()
    worker = RobotWorker(0, robot_specs(config), config, store, registry, log_dir=str(tmp_path / "logs"))
    status_file, seen = tmp_path / "logs" / "robots" / "worker-0.json", []

    def should_stop():
        if status_file.exists() and not store.records():
            seen.append([r["steps"] for r in json.loads(status_file.read_text())["robots"]])
        return bool(seen) or len(store.records()) >= 2

    worker.run(should_stop)
    # Written at the episodes' start (no steps yet), then again in the same sweep once the
    # first chunk ran: the first status anyone reads mid-episode already shows the steps.
    assert min(seen[0]) > 0  # (seen only while no episode had ended)
