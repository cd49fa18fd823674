"""Robot workers: processes that each run several simulated robots with one batched
policy call per replan, an operator watching every robot, and at-least-once upload of
every finished episode to the store.

The boundaries are interfaces: a worker writes through an `EpisodeSink` (the local
`EpisodeStore`; a network gateway later) and reads policies from a `PolicySource`
(the local `PolicyRegistry`). Nothing else passes between a worker and the learner,
so the learner derives every fleet metric from the store and the registry.
"""

from __future__ import annotations

import logging
import signal
import sqlite3
import time
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch

from lwd.configargs import documented, narrow
from lwd.data.episode import NO_POLICY, Episode, EpisodeValidationError
from lwd.data.store import EpisodeConflictError, EpisodeStore, Receipt, StoreError
from lwd.envs import SEEDS, make_expert, make_robot, suite
from lwd.envs.operator import OperatorConfig, ScriptedOperator
from lwd.fleet.policy_actor import PolicyActor, sample_chunks
from lwd.fleet.registry import PolicyRegistry, PolicySource, PublishedVersion
from lwd.fleet.rollout import EpisodeRun

log = logging.getLogger(__name__)

# Robot r's episode k starts from training seed ONLINE_SEED_START + r * ROBOT_SEED_STRIDE + k:
# disjoint from demos, offline rollouts and play, and the same after a restart.
ONLINE_SEED_START = 1_000_000
ROBOT_SEED_STRIDE = 1_000_000


class EpisodeSink(Protocol):
    """Where robots upload finished episodes; appending the same episode twice is a no-op."""

    def append(self, episode: Episode) -> Receipt: ...

    def committed_ids(self, robot_id: str) -> set[int]: ...


@dataclass(frozen=True)
class FleetConfig:
    suite: str = documented("mt10", "task suite the fleet runs")
    tasks: tuple[str, ...] = documented((), "restrict to these tasks (default: the whole suite)")
    workers: int = documented(1, "robot worker processes (one core each)")
    robots_per_worker: int = documented(10, "simulated robots per worker, served by one batched policy call")
    operator_attention: float = documented(1.0, "probability the operator watches a given step")
    operator_max_takeovers: int = documented(3, "operator takeovers allowed per episode and stage (a 4-stage "
                                                "long-horizon task allows 4x as many)")
    operator_deviation: float = documented(1.0, "L2 distance from the expert's action that looks wrong to the operator")
    operator_deviation_steps: int = documented(10, "consecutive wrong-looking steps before the operator takes over")
    operator_stall_steps: int = documented(60, "steps without progress (while the policy disagrees) before a takeover")
    # 1.0, not the operator's 0.1: Meta-World's shaped reward is flat for the first ~50 steps
    # of drawer-close and peg-insert even under the expert, and at 0.1 the stall rule took
    # over 83% of drawer-close episodes of a policy that never fails it (`lwd bench operator`).
    operator_stall_disagreement: float = documented(
        1.0, "L2 distance from the expert's action above which a stalled policy counts as disagreeing")
    execute_steps: int = documented(0, "actions executed per chunk before replanning (0 = the whole chunk)")
    seed: int = documented(0, "seed of the fleet's policy noise and operators")

    def __post_init__(self) -> None:
        if self.workers < 1 or self.robots_per_worker < 1:
            raise ValueError("workers and robots_per_worker must be >= 1")
        if self.num_robots * ROBOT_SEED_STRIDE + ONLINE_SEED_START >= SEEDS.validation_start:
            raise ValueError(f"{self.num_robots} robots would run out of training seeds")
        chosen = suite(self.suite)
        for name in self.tasks:
            chosen.task(name)

    @property
    def num_robots(self) -> int:
        return self.workers * self.robots_per_worker

    def task_names(self) -> tuple[str, ...]:
        return self.tasks or suite(self.suite).task_names

    def fleet_config(self) -> FleetConfig:
        """Only the fleet settings, also of a stage config that extends this one."""
        return narrow(self, FleetConfig)

    def operator_config(self, stages: int = 1) -> OperatorConfig:
        """The operator watching a task of `stages` stages: its takeover budget scales with
        them, so it can still step in during the last stage of a long-horizon task."""
        return OperatorConfig(attention=self.operator_attention, max_takeovers=self.operator_max_takeovers * stages,
                              deviation_threshold=self.operator_deviation, deviation_steps=self.operator_deviation_steps, stall_steps=self.operator_stall_steps,
                              stall_disagreement=self.operator_stall_disagreement)


@dataclass(frozen=True)
class RobotSpec:
    index: int
    robot_id: str
    tasks: tuple[str, ...]  # episode k runs tasks[k % len(tasks)]

    def task(self, seq: int) -> str:
        return self.tasks[seq % len(self.tasks)]

    def seed(self, seq: int) -> int:
        return SEEDS.train(ONLINE_SEED_START + self.index * ROBOT_SEED_STRIDE + seq)


def robot_specs(config: FleetConfig) -> list[RobotSpec]:
    """Every robot and its tasks: one task per robot when there are enough robots, else
    the suite dealt out round-robin, so every task gets robots."""
    tasks, count = config.task_names(), config.num_robots
    specs = []
    for index in range(count):
        mine = (tasks[index % len(tasks)],) if count >= len(tasks) else tasks[index::count]
        specs.append(RobotSpec(index, f"robot-{index:03d}", mine))
    return specs


def upload(sink: EpisodeSink, episode: Episode, attempts: int = 8) -> Receipt:
    """At-least-once upload: transient failures are retried; a retry that lands twice is
    acknowledged as a duplicate by the store, because the episode id is stable."""
    for attempt in range(attempts):
        try:
            return sink.append(episode)
        except (EpisodeValidationError, EpisodeConflictError):
            raise
        except (sqlite3.OperationalError, OSError, StoreError) as err:
            if attempt == attempts - 1:
                raise
            log.warning("upload of %s failed (%s); retrying", episode.episode_id, err)
            time.sleep(min(0.05 * 2 ** attempt, 2.0))
    raise AssertionError("unreachable")


@dataclass
class _Robot:
    spec: RobotSpec
    seq: int
    actor: PolicyActor
    version: int = NO_POLICY
    run: EpisodeRun | None = None
    sims: dict = field(default_factory=dict)  # task -> (robot, expert)

    def sim(self, task: str):
        if task not in self.sims:
            self.sims[task] = (make_robot(task), make_expert(task))
        return self.sims[task]


class RobotWorker:
    """Runs `specs` robots in one process until `should_stop()`; robots finish the
    episode they are in, so a clean stop loses nothing."""

    def __init__(self, worker_index: int, specs: list[RobotSpec], config: FleetConfig, sink: EpisodeSink,
                 source: PolicySource, rejected_log: str | None = None):
        self.index, self.config, self.sink, self.source = worker_index, config, sink, source
        self.rejected_log = rejected_log
        self.policies: dict[int, tuple] = {}
        self.robots = []
        for spec in specs:  # a restarted worker continues each robot after its last committed episode
            committed = sink.committed_ids(spec.robot_id)
            self.robots.append(_Robot(spec, max(committed, default=-1) + 1,
                                      PolicyActor(None, None, None, execute_steps=config.execute_steps)))
        resume_point = sum(r.seq for r in self.robots)
        self.generator = torch.Generator().manual_seed(hash((config.seed, worker_index, resume_point)) % 2**63)
        self.uploaded = 0

    def _policy(self, published: PublishedVersion) -> int:
        """The version a robot starting an episode now gets (the newest that loads)."""
        if published.version not in self.policies:
            try:
                self.policies[published.version] = (*self.source.load(published.version), published)
            except Exception as err:  # a pruned or damaged version: keep what we have
                if not self.policies:
                    raise
                log.warning("worker %d cannot load version %d: %s", self.index, published.version, err)
                return max(self.policies)
        return published.version

    def _start(self, robot: _Robot, published: PublishedVersion) -> None:
        version = self._policy(published)
        switched_from = robot.version if version != robot.version else None
        robot.version = version
        spec, seq = robot.spec, robot.seq
        task = spec.task(seq)
        sim, expert = robot.sim(task)
        operator = ScriptedOperator(expert, self.config.operator_config(sim.task.num_stages),
                                    np.random.default_rng([self.config.seed, spec.index, seq]))
        publication = self.policies[version][2]
        extras = {"worker": self.index, "version_published_at": publication.published_at}
        if switched_from is not None and switched_from != NO_POLICY:  # a pickup, not this process's first load
            extras["model_to_robot_s"] = time.time() - publication.published_at
        robot.run = EpisodeRun(sim, robot.actor, robot_id=spec.robot_id, seq=seq, source="rollout",
                               seed=spec.seed(seq), operator=operator, policy_version=version, extras=extras)

    def _finish(self, robot: _Robot) -> None:
        episode = robot.run.episode()
        robot.run = None
        robot.seq += 1
        try:
            upload(self.sink, episode)
            self.uploaded += 1
        except EpisodeValidationError as err:  # e.g. a simulator that produced NaN: report, keep running
            log.error("worker %d rejected %s: %s", self.index, episode.episode_id, err)
            if self.rejected_log:
                with open(self.rejected_log, "a") as handle:
                    handle.write(f"{episode.episode_id}\t{err}\n")

    def _fill_chunks(self) -> set[int]:
        """Serve every robot whose chunk ran out with one batched call per version, but
        only once no policy-driven robot is still mid-chunk; until then robots that ran
        out wait. Simulated robots lose nothing by waiting, and their chunks stay in
        phase, so each call serves the whole worker instead of one or two robots.
        Returns the indices of robots that wait this sweep."""
        driving = [r for r in self.robots if r.run is not None and r.run.policy_in_control]
        waiting = [r for r in driving if r.actor.needs_chunk]
        if len(waiting) < len(driving):
            return {r.spec.index for r in waiting}
        for version in {r.version for r in waiting}:
            group = [r for r in waiting if r.version == version]
            policy, encoder, _ = self.policies[version]
            chunks = sample_chunks(policy, encoder, np.stack([r.run.observation.state for r in group]),
                                   [r.run.observation.instruction for r in group], self.generator)
            for robot, chunk in zip(group, chunks):
                robot.actor.fill(chunk, version)
        return set()

    def run(self, should_stop, should_hold=lambda: False) -> None:
        """Step every robot until `should_stop()`; while `should_hold()`, robots that end an
        episode wait instead of starting the next (the learner is catching up)."""
        while True:
            stopping, holding = should_stop(), should_hold()
            published = None
            for robot in self.robots:
                if robot.run is not None and robot.run.finished:
                    self._finish(robot)
                if robot.run is None and not stopping and not holding:
                    published = published or self.source.latest()  # read once per sweep, at boundaries only
                    if published is None:
                        raise RuntimeError("no policy has been published yet")
                    self._start(robot, published)
            if all(r.run is None for r in self.robots):
                if stopping:
                    return
                time.sleep(0.01)  # held: wait for the learner
                continue
            in_use = {r.version for r in self.robots if r.run is not None}
            for version in [v for v in self.policies if v not in in_use and v != max(self.policies)]:
                del self.policies[version]  # nobody runs it any more
            waiting = self._fill_chunks()
            for robot in self.robots:
                if robot.run is not None and robot.spec.index not in waiting:
                    robot.run.step()


def worker_main(worker_index: int, specs: list[RobotSpec], config: FleetConfig, store_path: str,
                registry_path: str, stop_event, rejected_log: str | None = None, hold_event=None) -> None:
    """Process entry point. Ctrl-C goes to the whole process group; the worker ignores it
    and stops when the parent sets `stop_event`, after its robots finish their episodes.
    While `hold_event` is set, robots start no new episode."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda *_: stop_event.set())
    torch.set_num_threads(1)
    logging.basicConfig(level=logging.WARNING, format=f"worker {worker_index}: %(message)s")
    worker = RobotWorker(worker_index, specs, config, EpisodeStore(store_path), PolicyRegistry(registry_path),
                         rejected_log)
    worker.run(stop_event.is_set, hold_event.is_set if hold_event is not None else (lambda: False))
