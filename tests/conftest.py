"""Shared test helpers. Episodes made here have real task names and real shapes; the
numbers are random because the data layer's behaviour must not depend on them."""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import time

import numpy as np
import pytest

from lwd.data.episode import NO_POLICY, Episode
from lwd.envs.cameras import SensorConfig
from lwd.envs.tasks import task_spec


def make_episode(
    robot_id: str = "robot-0",
    seq: int = 0,
    *,
    steps: int = 7,
    task: str = "reach-v3",
    source: str = "demo",
    success: bool = True,
    seed: int | None = 3,
    rng_seed: int | None = None,
    intervention: np.ndarray | None = None,
    version: int = NO_POLICY,
    cameras: tuple[str, ...] = (),
    image_size: int = 8,
    obs_dim: int | None = None,
) -> Episode:
    """`cameras` adds random uint8 frames of `image_size`^2 per camera; `obs_dim` overrides the
    task's observation width (PROPRIO_DIM for a proprio-only robot with cameras)."""
    spec = task_spec(task)
    rng = np.random.default_rng(seq if rng_seed is None else rng_seed)
    frames = {
        camera: rng.integers(0, 256, size=(steps + 1, image_size, image_size, 3), dtype=np.uint8) for camera in cameras
    }
    return Episode(
        robot_id=robot_id,
        seq=seq,
        task=task,
        instruction=spec.instruction,
        source=source,
        observations=rng.normal(size=(steps + 1, obs_dim or spec.obs_dim)).astype(np.float32),
        actions=rng.uniform(-1, 1, size=(steps, spec.action_dim)).astype(np.float32),
        intervention=np.zeros(steps, bool) if intervention is None else intervention,
        policy_version=np.full(steps, version, np.int64),
        timestamps=1.7e9 + np.arange(steps, dtype=np.float64),
        success=success,
        stage_score=1.0 if success else 0.0,
        seed=seed,
        started_at=1.7e9,
        ended_at=1.7e9 + steps,
        frames=frames,
    )


def random_batch(
    size: int, obs_dim: int, text_dim: int, chunk_len: int, action_dim: int, seed: int = 0, batch_type=None, **overrides
):
    """A LearnerBatch (or `batch_type`) of random tensors of the given sizes; `overrides`
    replace fields (and give a subclass its extra fields)."""
    import torch

    from lwd.algorithms.batch import LearnerBatch

    g = torch.Generator().manual_seed(seed)
    fields = dict(
        obs=torch.randn(size, obs_dim, generator=g),
        instruction=torch.randn(size, text_dim, generator=g),
        actions=torch.rand(size, chunk_len, action_dim, generator=g) * 2 - 1,
        action_mask=torch.ones(size, chunk_len, dtype=torch.bool),
        intervention=torch.zeros(size, chunk_len, dtype=torch.bool),
        reward=torch.zeros(size),
        discount=torch.full((size,), 0.95),
        done=torch.zeros(size),
        next_obs=torch.randn(size, obs_dim, generator=g),
        return_to_go=torch.rand(size, generator=g),
    )
    return (batch_type or LearnerBatch)(**{**fields, **overrides})


def tiny_offline_config(store, checkpoint, out, steps: int, **overrides):
    """Offline RL at test size: small batches and critic, two warm-up steps, quiet.
    `overrides` may name OfflineConfig or LearnerConfig fields."""
    import dataclasses

    from lwd.algorithms.learner import LearnerConfig
    from lwd.training.offline import OfflineConfig

    learner_fields = {f.name for f in dataclasses.fields(LearnerConfig)}
    learner = {"qam_batch": 8, "policy_warmup": 2, **{k: v for k, v in overrides.items() if k in learner_fields}}
    settings = dict(
        batch_size=32,
        critic_hidden=32,
        log_every=2,
        checkpoint_every=4,
        progress=False,
        tensorboard=False,
        **{k: v for k, v in overrides.items() if k not in learner_fields},
    )
    return OfflineConfig(
        store=str(store),
        checkpoint=str(checkpoint),
        out=str(out),
        steps=steps,
        learner=LearnerConfig(**learner),
        **settings,
    )


def tiny_deploy_config(store, checkpoint, out, env_steps: int, *, robots=None, **overrides):
    """`lwd deploy` at test size: 2 workers x 2 robots on reach and drawer-close, a version
    every 5 updates, small batches, quiet. `robots` replaces the FleetConfig; `overrides`
    name other DeployConfig fields (fleet, method, gate, n_sync, ...)."""
    from dataclasses import replace

    from lwd.fleet.online import ONLINE_LEARNER, DeployConfig
    from lwd.fleet.worker import FleetConfig

    settings = dict(
        robots=robots or FleetConfig(tasks=("reach-v3", "drawer-close-v3"), workers=2, robots_per_worker=2),
        n_sync=5,
        batch_size=32,
        lwd=replace(ONLINE_LEARNER, qam_batch=8),
        refresh_seconds=0.2,
        log_seconds=0.5,
        checkpoint_every=20,
        progress=False,
        tensorboard=False,
    )
    return DeployConfig(
        checkpoint=str(checkpoint),
        offline_store=str(store),
        out=str(out),
        env_steps=env_steps,
        **{**settings, **overrides},
    )


# The longest test files (docs/benchmarks.md, "Test suite wall time"), longest first. Only
# the order of the suite depends on this list: a file missing from it just runs later.
LONGEST_TEST_FILES = (
    "fleet/test_ray_fleet.py",
    "fleet/test_deploy_gate.py",
    "recipes/test_experiment.py",
    "fleet/test_deploy.py",
    "recipes/test_demo_image.py",
)


def pytest_collection_modifyitems(config, items):
    """The longest files first, then the other files with slow tests, then the rest (order
    kept otherwise): `make test`'s workers each take whole files, so the long pipelines
    start at once and short files fill in at the end, instead of one long file running
    alone last."""
    tests_dir = config.rootpath / "tests"
    rank = {tests_dir / name: i for i, name in enumerate(LONGEST_TEST_FILES)}
    files_with_slow_tests = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: (rank.get(item.path, len(rank)), item.path not in files_with_slow_tests))


@pytest.fixture
def episode_factory():
    return make_episode


PIPELINE_TASKS = ("reach-v3", "drawer-close-v3")


@pytest.fixture(scope="session")
def tiny_pipeline(tmp_path_factory):
    """Real demos → tiny SFT → offline store → a few offline-RL steps, on two MT10 tasks.
    Returns (root, store, sft checkpoint, offline-store results, offline-RL checkpoint)."""
    from lwd.fleet.collect import (
        CollectConfig,
        OfflineDataConfig,
        build_offline_store,
        collect,
    )
    from lwd.training.offline import train_offline
    from lwd.training.sft import PretrainConfig, pretrain

    root = tmp_path_factory.mktemp("pipeline")
    store = str(root / "store")
    collect(CollectConfig(store=store, tasks=PIPELINE_TASKS, episodes_per_task=2, workers=1, progress=False))
    sft = pretrain(
        PretrainConfig(
            store=store,
            out=str(root / "sft"),
            steps=10,
            batch_size=32,
            hidden_dim=64,
            num_layers=1,
            progress=False,
            tensorboard=False,
        )
    )
    results = build_offline_store(
        OfflineDataConfig(
            store=store,
            checkpoint=str(sft),
            tasks=PIPELINE_TASKS,
            demos_per_task=2,
            rollouts_per_task=2,
            play_per_task=1,
            workers=1,
            progress=False,
        )
    )
    offline = train_offline(tiny_offline_config(store, str(sft), root / "offline", steps=4))
    return root, store, str(sft), results, str(offline)


# What the robots of the image tests sense: two 32² cameras and proprio only.
IMAGE_SENSORS = SensorConfig(cameras=("scene", "gripper"), image_size=32, observation="proprio")


@pytest.fixture(scope="session")
def tiny_image_sft(tmp_path_factory):
    """Two reach-v3 demos recorded with two 32² cameras and proprio only, and a tiny SFT
    policy with a CNN trained on them. Returns (store, sft checkpoint); both read only."""
    from lwd.fleet.collect import CollectConfig, collect
    from lwd.training.sft import PretrainConfig, pretrain

    sensors = IMAGE_SENSORS
    root = tmp_path_factory.mktemp("image_sft")
    store = str(root / "store")
    collect(
        CollectConfig(store=store, tasks=("reach-v3",), episodes_per_task=2, workers=1, progress=False, sensors=sensors)
    )
    sft = pretrain(
        PretrainConfig(
            store=store,
            out=str(root / "sft"),
            steps=3,
            batch_size=16,
            hidden_dim=32,
            num_layers=1,
            cameras=sensors.cameras,
            progress=False,
            tensorboard=False,
        )
    )
    return store, sft


def _hold_lease(kind: str, args: tuple, ready) -> None:
    from lwd.data.lease import RobotLease, RunLease

    {"robot": RobotLease, "run": RunLease}[kind](*args)
    ready.set()
    time.sleep(120)  # the test ends this process; its death is what frees the lease


@contextlib.contextmanager
def lease_held_by_another_process(kind: str, *args):
    """Another live process holds a lease ("robot": RobotLease(directory, robot_id); "run":
    RunLease(out), as a running `lwd deploy` would) until the block ends; yields that process.
    (It is not told to let go through an Event: an Event's lock dies with a killed waiter and
    blocks the setter.)"""
    context = mp.get_context("spawn")
    ready = context.Event()
    process = context.Process(target=_hold_lease, args=(kind, tuple(str(a) for a in args), ready))
    process.start()
    try:
        assert ready.wait(30)
        yield process
    finally:
        process.kill()
        process.join(10)
