"""Parallel collection of expert demonstrations and play data into the episode store."""

from __future__ import annotations

import multiprocessing as mp
import time
from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from lwd.data.store import EpisodeStore
from lwd.envs import SEEDS, make_expert, make_robot, suite
from lwd.envs.operator import NoisyExpertActor, PlayActor
from lwd.fleet.rollout import run_episode
from lwd.configargs import documented




@dataclass(frozen=True)
class CollectConfig:
    store: str = documented("runs/store", "episode store directory (created if missing)")
    suite: str = documented("mt10", "task suite: mt10 or mt50")
    # Default demo budget (docs/benchmarks.md): 10 noisy demos per task leave the SFT
    # policy clearly imperfect on MT10 (0.76 average), so RL has something to improve.
    episodes_per_task: int = documented(10, "episodes to have per task for this source and noise (resumable)")
    source: str = documented("demo", "demo (noisy expert, stops at success) or play (exploration, labelled failure)")
    noise: float = documented(0.3, "std of Gaussian noise added to the expert's actions")
    seed_start: int = documented(0, "first training seed index; episode k uses seed_start + k")
    workers: int = documented(2, "parallel worker processes (one simulator each)")
    tasks: tuple[str, ...] = documented((), "restrict to these tasks of the suite (default: all)")
    progress: bool = documented(True, "show a progress bar")

    def __post_init__(self) -> None:
        if self.source not in ("demo", "play"):
            raise ValueError(f"collect makes 'demo' or 'play' data, not {self.source!r}")
        if self.episodes_per_task < 0 or self.workers < 1 or self.noise < 0:
            raise ValueError("episodes_per_task and noise must be >= 0 and workers >= 1")
        chosen = suite(self.suite)
        for name in self.tasks:
            chosen.task(name)

    def robot_id(self, task: str) -> str:
        return f"{self.source}-n{self.noise:g}-{task}"

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


def _robot_and_expert(task: str):
    if task not in _ROBOTS:
        _ROBOTS[task] = (make_robot(task), make_expert(task))
    return _ROBOTS[task]


def _warm_up(tasks: tuple[str, ...]) -> None:
    for task in tasks:
        _robot_and_expert(task)


def collect_one(job: tuple[CollectConfig, str, int]) -> EpisodeStat:
    """Run and commit one episode; module-level so worker processes can run it."""
    config, task, seq = job
    began = time.perf_counter()
    robot, expert = _robot_and_expert(task)
    seed = SEEDS.train(config.seed_start + seq)
    rng = np.random.default_rng([seed, seq, int(config.noise * 1e6), 0 if config.source == "demo" else 1])
    if config.source == "demo":
        actor = NoisyExpertActor(expert, config.noise, rng)
    else:
        actor = PlayActor(expert, max(config.noise, 0.1), rng)
    episode = run_episode(robot, actor, robot_id=config.robot_id(task), seq=seq, source=config.source, seed=seed,
                          stop_at_success=config.source == "demo", extras={"noise": config.noise})
    store = _open_store(config.store)
    store.append(episode)
    return EpisodeStat(task, seq, bool(episode.extras.get("reached_success", episode.success)), episode.num_steps,
                       time.perf_counter() - began)


_STORES: dict[str, EpisodeStore] = {}


def _open_store(path: str) -> EpisodeStore:
    if path not in _STORES:
        _STORES[path] = EpisodeStore(path)
    return _STORES[path]


def pending_jobs(config: CollectConfig, store: EpisodeStore) -> tuple[list[tuple[CollectConfig, str, int]], int]:
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
    """A pool of spawned workers with simulators for `tasks` already built."""
    return mp.get_context("spawn").Pool(workers, initializer=_warm_up, initargs=(tasks,))


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
        with tqdm(total=len(jobs), desc=f"collect {config.source} {config.suite}", unit="ep",
                  disable=not config.progress) as bar:
            for stat in results:
                stats.append(stat)
                bar.update(1)
                bar.set_postfix(success=f"{np.mean([s.success for s in stats]):.3f}")
    finally:
        if own_pool:
            pool.close()
            pool.join()
    return CollectResult(stats=stats, skipped=skipped, wall_seconds=time.perf_counter() - began)
