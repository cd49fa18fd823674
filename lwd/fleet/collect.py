"""Parallel collection of expert demonstrations and play data into the episode store."""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch

from lwd.configargs import documented
from lwd.data.episode import NO_POLICY
from lwd.data.store import EpisodeStore
from lwd.envs import SEEDS, SensorConfig, make_expert, make_robot, suite, task_spec
from lwd.envs.operator import NoisyExpertActor, PlayActor
from lwd.envs.phrasings import task_phrasings
from lwd.fleet.policy_actor import PolicyActor
from lwd.fleet.rollout import run_episode
from lwd.workers import WorkerPool


@dataclass(frozen=True)
class CollectConfig:
    store: str = documented("runs/store", "episode store directory (created if missing)")
    suite: str = documented("mt10", "task suite: mt10, mt50 or lh (long-horizon)")
    # Default demo budget (docs/benchmarks.md): 10 noisy demos per task leave the SFT
    # policy clearly imperfect on MT10 (0.76 average), so RL has something to improve.
    episodes_per_task: int = documented(10, "episodes to have per task for this source and noise (resumable)")
    source: str = documented(
        "demo",
        "demo (noisy expert, stops at success), play (exploration, labelled failure) "
        "or rollout (the --checkpoint policy, no operator, labelled by outcome)",
    )
    noise: float = documented(0.3, "std of Gaussian noise added to the expert's actions")
    seed_start: int = documented(0, "first training seed index; episode k uses seed_start + k")
    workers: int = documented(2, "parallel worker processes (one simulator each)")
    tasks: tuple[str, ...] = documented((), "restrict to these tasks of the suite (default: all)")
    progress: bool = documented(True, "show a progress bar")
    checkpoint: str = documented("", "policy checkpoint for --source rollout")
    sensors: SensorConfig = documented(
        SensorConfig(), "what the robots sense: cameras (frames recorded in every episode), proprio-only state"
    )
    phrasings: str = documented(
        "train",
        "how episodes are worded: 'train' (one of the task's training phrasings, drawn by the episode's "
        "seed) or 'canonical' (its one written sentence, as before phrasings; for ablations)",
    )

    def __post_init__(self) -> None:
        if self.phrasings not in ("train", "canonical"):
            raise ValueError(f"collect words episodes with 'train' or 'canonical' phrasings, not {self.phrasings!r}")
        if self.source not in ("demo", "play", "rollout"):
            raise ValueError(f"collect makes 'demo', 'play' or 'rollout' data, not {self.source!r}")
        if self.source == "rollout" and not self.checkpoint:
            raise ValueError("--source rollout needs --checkpoint (the policy to roll out)")
        if self.episodes_per_task < 0 or self.workers < 1 or self.noise < 0:
            raise ValueError("episodes_per_task and noise must be >= 0 and workers >= 1")
        chosen = suite(self.suite)
        for name in self.tasks:
            chosen.task(name)

    def robot_id(self, task: str) -> str:
        if self.source == "rollout":
            return f"rollout-v{self.policy_version}-{task}"
        return f"{self.source}-n{self.noise:g}-{task}"

    @cached_property  # read once per config, not once per episode
    def policy_version(self) -> int:
        from lwd.policy.checkpoint import read_manifest

        return read_manifest(self.checkpoint).version

    def task_names(self) -> tuple[str, ...]:
        return self.tasks or suite(self.suite).task_names


@dataclass(frozen=True)
class EpisodeStat:
    task: str
    seq: int
    success: bool
    steps: int
    busy_seconds: float


@dataclass
class CollectResult:
    stats: list[EpisodeStat]
    skipped: int
    wall_seconds: float

    @property
    def steps(self) -> int:
        return sum(s.steps for s in self.stats)

    def success_by_task(self) -> dict[str, float]:
        by_task: dict[str, list[bool]] = defaultdict(list)
        for s in self.stats:
            by_task[s.task].append(s.success)
        return {task: float(np.mean(v)) for task, v in sorted(by_task.items())}


# Each worker process keeps one simulator per task it has seen.
_ROBOTS: dict = {}


def cached_robot_and_expert(task: str, phrasings: str = "train", sensors: SensorConfig | None = None):
    """This process's simulator (wording episodes from `phrasings`, sensing `sensors`) and
    scripted expert for `task`, built once."""
    key = (task, phrasings, sensors or SensorConfig())
    if key not in _ROBOTS:
        _ROBOTS[key] = (make_robot(task, phrasings, sensors), make_expert(task))
    return _ROBOTS[key]


_POLICIES: dict = {}


def _policy(checkpoint: str):
    if checkpoint not in _POLICIES:
        from lwd.policy.checkpoint import load_checkpoint

        torch.set_num_threads(1)  # one simulator and one policy per worker process
        _POLICIES[checkpoint] = load_checkpoint(checkpoint)
    return _POLICIES[checkpoint]


def _warm_up(tasks: tuple[str, ...]) -> None:
    for task in tasks:
        cached_robot_and_expert(task)


def collect_one(job: tuple[CollectConfig, str, int]) -> EpisodeStat:
    """Run and commit one episode; module-level so worker processes can run it."""
    config, task, seq = job
    began = time.perf_counter()
    robot, expert = cached_robot_and_expert(task, config.phrasings, config.sensors)
    seed = SEEDS.train(config.seed_start + seq)
    rng = np.random.default_rng([seed, seq, int(config.noise * 1e6), 0 if config.source == "demo" else 1])
    version = NO_POLICY
    if config.source == "demo":
        actor = NoisyExpertActor(expert, config.noise, rng)
    elif config.source == "play":
        actor = PlayActor(expert, max(config.noise, 0.1), rng)
    else:
        policy, encoder, manifest = _policy(config.checkpoint)
        version = manifest.version
        actor = PolicyActor(policy, encoder, torch.Generator().manual_seed(seed), version=version)
    episode = run_episode(
        robot,
        actor,
        robot_id=config.robot_id(task),
        seq=seq,
        source=config.source,
        seed=seed,
        policy_version=version,
        stop_at_success=config.source != "play",
        extras={"noise": config.noise} if config.source != "rollout" else {"checkpoint": config.checkpoint},
    )
    store = cached_store(config.store)
    store.append(episode)
    return EpisodeStat(
        task,
        seq,
        bool(episode.extras.get("reached_success", episode.success)),
        episode.num_steps,
        time.perf_counter() - began,
    )


_STORES: dict[str, EpisodeStore] = {}


def cached_store(path: str) -> EpisodeStore:
    """This process's connection to the store at `path`, opened once."""
    if path not in _STORES:
        _STORES[path] = EpisodeStore(path)
    return _STORES[path]


class StaleStoreError(ValueError):
    """The store holds episodes of a task as the task was defined by an earlier version of lwd."""


def check_task_definitions(config: CollectConfig, store: EpisodeStore) -> None:
    """Refuse to resume into episodes collected under another definition of a task.

    Resuming skips every committed seq, so a store written before a task was redefined (the
    `lh` chains got a fourth stage and new instructions on 2026-12-04) would otherwise be reused
    whole and silently, and trained on with the new episodes. A simulated robot (collection, the
    fleet) always words an episode with one of the task's training phrasings, so a simulated
    episode with an instruction the task no longer has is the mark of the old definition.
    """
    found = store.simulated_instructions()
    for task in config.task_names():
        phrasings = task_phrasings(task)
        unknown = found.get(task, set()) - set(phrasings.train)
        if unknown:
            raise StaleStoreError(
                f"store {store.root} holds simulated episodes of {task} with the instruction "
                f"{sorted(unknown)[0]!r}, which {task} no longer has: they were collected under an earlier "
                f"definition of the task (today it is {task_spec(task).stages}, given e.g. {phrasings.train[0]!r}). "
                "Collect into a new store (for `lwd demo` / `lwd experiment`, a new --workdir)."
            )


def pending_jobs(config: CollectConfig, store: EpisodeStore) -> tuple[list[tuple[CollectConfig, str, int]], int]:
    check_task_definitions(config, store)
    jobs, skipped = [], 0
    for task in config.task_names():
        done = store.committed_ids(config.robot_id(task))
        for seq in range(config.episodes_per_task):
            if seq in done:
                skipped += 1
            else:
                jobs.append((config, task, seq))
    # Interleave tasks so every worker sees a mix and the bar reflects all tasks.
    jobs.sort(key=lambda job: (job[2], job[1]))
    return jobs, skipped


def worker_pool(workers: int, tasks: tuple[str, ...]):
    """A pool of spawned workers with simulators for `tasks` already built: a `WorkerPool`
    starts every worker, each running its initializer, before it returns."""
    return WorkerPool(workers, initializer=_warm_up, initargs=(tasks,))


def collect(config: CollectConfig, pool=None) -> CollectResult:
    """Collect until every task has `episodes_per_task` episodes of this kind; skips done ones."""
    from tqdm import tqdm

    store = EpisodeStore(config.store)
    jobs, skipped = pending_jobs(config, store)
    stats: list[EpisodeStat] = []
    began = time.perf_counter()
    own_pool = pool is None and config.workers > 1 and len(jobs) > 1
    if own_pool:
        pool = worker_pool(config.workers, config.task_names())
    try:
        results = pool.imap_unordered(collect_one, jobs) if pool is not None else map(collect_one, jobs)
        with tqdm(
            total=len(jobs), desc=f"collect {config.source} {config.suite}", unit="ep", disable=not config.progress
        ) as bar:
            for stat in results:
                stats.append(stat)
                bar.update(1)
                bar.set_postfix(success=f"{np.mean([s.success for s in stats]):.3f}")
    finally:
        if own_pool:
            pool.close()
    return CollectResult(stats=stats, skipped=skipped, wall_seconds=time.perf_counter() - began)


@dataclass(frozen=True)
class OfflineDataConfig:
    store: str = documented("runs/store", "episode store to complete (the SFT demo store; created if missing)")
    checkpoint: str = documented("runs/sft/final", "SFT checkpoint whose rollouts join the offline data")
    suite: str = documented("mt10", "task suite")
    demos_per_task: int = documented(10, "noisy expert demonstrations per task (the SFT demo budget)")
    demo_noise: float = documented(0.3, "action noise of the demonstrations")
    rollouts_per_task: int = documented(20, "SFT policy rollouts per task (successes and failures)")
    play_per_task: int = documented(5, "play episodes per task (labelled failures)")
    play_noise: float = documented(0.3, "action noise of play data")
    workers: int = documented(2, "parallel worker processes")
    tasks: tuple[str, ...] = documented((), "restrict to these tasks (default: the whole suite)")
    progress: bool = documented(True, "show progress bars")
    sensors: SensorConfig = documented(
        SensorConfig(),
        "what the robots sense (frames recorded in every episode); without cameras, those the checkpoint's "
        "policy reads, if any",
    )


# Disjoint training-seed blocks per kind of data, so rollouts and play start from
# states the demonstrations did not.
ROLLOUT_SEED_START = 100_000
PLAY_SEED_START = 200_000


def build_offline_store(config: OfflineDataConfig) -> dict[str, CollectResult]:
    """Demos + SFT rollouts + play in one store (SPEC §6.2); resumable like `collect`."""
    sensors = config.sensors
    from lwd.policy.checkpoint import has_checkpoint

    if not sensors.cameras and has_checkpoint(config.checkpoint):
        # A policy that sees rolls out on robots that render its cameras, and one store holds one
        # camera setup: every part of the data is recorded with them.
        from lwd.fleet.sensing import policy_sensors
        from lwd.policy.checkpoint import read_manifest
        from lwd.policy.flow_policy import PolicyConfig

        sensors = policy_sensors(PolicyConfig(**read_manifest(config.checkpoint).config)) or sensors
    common = {
        "store": config.store,
        "suite": config.suite,
        "workers": config.workers,
        "tasks": config.tasks,
        "progress": config.progress,
        "sensors": sensors,
    }
    parts = {
        "demo": CollectConfig(
            source="demo", episodes_per_task=config.demos_per_task, noise=config.demo_noise, **common
        ),
        "rollout": CollectConfig(
            source="rollout",
            episodes_per_task=config.rollouts_per_task,
            checkpoint=config.checkpoint,
            seed_start=ROLLOUT_SEED_START,
            noise=0.0,
            **common,
        ),
        "play": CollectConfig(
            source="play",
            episodes_per_task=config.play_per_task,
            noise=config.play_noise,
            seed_start=PLAY_SEED_START,
            **common,
        ),
    }
    tasks = parts["demo"].task_names()
    pool = worker_pool(config.workers, tasks) if config.workers > 1 else None
    try:
        return {name: collect(part, pool) for name, part in parts.items()}
    finally:
        if pool is not None:
            pool.close()
