"""Robot workers: processes that each run several simulated robots with one batched
policy call per replan, an operator watching every robot, and at-least-once upload of
every finished episode to the store.

The boundaries are interfaces: a worker writes through an `EpisodeSink` (the local
`EpisodeStore`; a network gateway later) and reads policies from a `PolicySource`
(the local `PolicyRegistry`). Nothing else passes between a worker and the learner,
so the learner derives every fleet metric from the store and the registry.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import signal
import sqlite3
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import torch

from lwd.configargs import documented
from lwd.data.episode import NO_POLICY, Episode, EpisodeValidationError
from lwd.data.lease import RobotLease, RobotLeaseError
from lwd.data.store import EpisodeConflictError, Receipt, StoreError
from lwd.envs import SEEDS, SensorConfig, make_expert, make_robot, suite
from lwd.envs.operator import OperatorConfig, ScriptedOperator
from lwd.fleet.policy_actor import FrozenSampler, PolicyActor, sample_chunks
from lwd.fleet.registry import PolicySource, PublishedVersion
from lwd.fleet.rollout import EpisodeRun
from lwd.fleet.sensing import policy_images
from lwd.policy.adapter import HIDDEN_DTYPES
from lwd.policy.sampling import check_noise_scale

log = logging.getLogger(__name__)

# Robot r's episode k starts from training seed ONLINE_SEED_START + r * ROBOT_SEED_STRIDE + k:
# disjoint from demos, offline rollouts and play, and the same after a restart.
ONLINE_SEED_START = 1_000_000
ROBOT_SEED_STRIDE = 1_000_000

# A worker exits with this code when another live process drives one of its robots; the
# supervisor reports it instead of restarting the worker into the same refusal.
EXIT_LEASE_REFUSED = 75


class EpisodeSink(Protocol):
    """Where robots upload finished episodes; appending the same episode twice is a no-op."""

    def append(self, episode: Episode) -> Receipt: ...

    def committed_ids(self, robot_id: str) -> set[int]: ...

    def lease(self, robot_id: str, wait_seconds: float = 0.0) -> RobotLease:
        """Claim the robot id for this process (RobotLeaseError while another holds it)."""


@runtime_checkable
class BatchEpisodeSink(Protocol):
    """A sink that takes several episodes in one call (a remote ingest, where each call costs
    a round trip); they commit together, in order, or each gets its own error."""

    def append_batch(self, episodes: list[Episode]) -> list[Receipt | Exception]: ...


@dataclass(frozen=True)
class FleetConfig:
    """The robots: which tasks, how many, and the operator watching each of them."""

    suite: str = documented("mt10", "task suite the fleet runs")
    tasks: tuple[str, ...] = documented((), "restrict to these tasks (none given: the whole suite)")
    workers: int = documented(1, "robot worker processes (one core each)")
    robots_per_worker: int = documented(10, "simulated robots per worker, served by one batched policy call")
    execute_steps: int = documented(0, "actions executed per chunk before replanning (0 = the whole chunk)")
    inference_dtype: str = documented(
        "float32",
        "precision of the velocity network's hidden layers when robots sample chunks: 'float32', or "
        "'bfloat16' (bf16 units: AMX CPUs, GPUs; a policy call at 40 robots costs ~25% less on an AMX CPU, "
        "actions agree with float32 to ~3 significant digits; success on validation seeds in docs/benchmarks.md)",
    )
    noise_scale: float = documented(
        1.0,
        "sampling temperature of the robots' policy calls: the flow's initial noise x_0 ~ N(0, s²I) "
        "(1 = the policy's own distribution, the exploration the learner learns from; 0 = the deterministic flow, "
        "how `lwd eval` and the gate's evaluator score policies by default)",
    )
    replan_at_stage_end: bool = documented(
        False,
        "a chunk that crosses a stage end of a long-horizon task is dropped there and the policy replans in "
        "the new scene, instead of executing the rest (planned for the old scene) in it ("
        "off by default: +0.008 and +0.013 for LWD online on `lh` in two validation probes, "
        'docs/benchmarks.md, "Where `lh` still fails")',
    )
    deterministic_every: int = documented(
        0,
        "every k-th episode of each robot (episodes 0, k, 2k, ..) acts at s = 0, the deterministic flow policies "
        "are scored with, the others at noise_scale: failures that sampling noise hides reach the operator and "
        "the data (0 = never)",
    )
    operator: OperatorConfig = documented(
        OperatorConfig(), "the scripted operator watching every robot (its takeover budget counts per task stage)"
    )
    sensors: SensorConfig = documented(
        SensorConfig(), "what every robot senses: cameras (their frames are recorded in episodes), proprio-only state"
    )

    def __post_init__(self) -> None:
        if self.workers < 1 or self.robots_per_worker < 1:
            raise ValueError("workers and robots_per_worker must be >= 1")
        if self.inference_dtype not in HIDDEN_DTYPES:
            raise ValueError(f"inference_dtype must be one of {tuple(HIDDEN_DTYPES)}, got {self.inference_dtype!r}")
        check_noise_scale(self.noise_scale)
        if self.deterministic_every < 0:
            raise ValueError(f"deterministic_every must be >= 0 (0 = never), got {self.deterministic_every}")
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

    def noise_scale_of(self, seq: int) -> float:
        """The sampling temperature a robot acts at in its episode `seq`."""
        every = self.deterministic_every
        return 0.0 if every and seq % every == 0 else self.noise_scale

    def operator_for(self, stages: int = 1) -> OperatorConfig:
        """The operator watching a task of `stages` stages: its takeover budget scales with
        them, so it can still step in during the last stage of a long-horizon task."""
        return replace(self.operator, max_takeovers=self.operator.max_takeovers * stages)


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
            time.sleep(min(0.05 * 2**attempt, 2.0))
    raise AssertionError("unreachable")


def upload_batch(sink: BatchEpisodeSink, episodes: list[Episode], attempts: int = 8) -> list[Receipt | Exception]:
    """`upload` for a batch: each episode's receipt or error, in order. Transient failures
    retry the whole batch (what committed before is acknowledged as a duplicate) until
    none is left or the attempts run out; a conflict or a lost lease is not retried."""
    for attempt in range(attempts):
        try:
            results = sink.append_batch(episodes)
        except (EpisodeValidationError, EpisodeConflictError, RobotLeaseError):
            raise
        except (sqlite3.OperationalError, OSError, StoreError) as err:
            results = [err] * len(episodes)
        failures = [r for r in results if isinstance(r, Exception) and not isinstance(r, EpisodeValidationError)]
        final = any(isinstance(r, (EpisodeConflictError, RobotLeaseError)) for r in failures)
        if not failures or final or attempt == attempts - 1:
            return results
        log.warning("upload of %d episodes failed (%s); retrying", len(episodes), failures[0])
        time.sleep(min(0.05 * 2**attempt, 2.0))
    raise AssertionError("unreachable")


class _BackgroundUploads:
    """Uploads on a thread of their own, in the order episodes finished, so robots step on
    while an upload's fsyncs (or a remote ingest's round trip) are in flight: they were ~5%
    of a local worker's time (py-spy, docs/benchmarks.md), all of it waiting.

    The order is what keeps a crash safe: a robot's episode k+1 is never committed before its
    episode k, so every robot's committed episodes stay 0..n-1 and a restart resumes after
    the last one. After a failed upload nothing later is committed, and the failure is raised
    in the robot loop, as an inline upload's would be.

    Each upload takes every episode finished by then (`upload_batch(sink, episodes)`), and
    with `interval_s` > 0 an upload waits until that long after the previous one, so that
    episodes gather: a remote ingest then pays one round trip and one transaction for
    several episodes instead of one each."""

    def __init__(
        self,
        open_sink: Callable[[], EpisodeSink],
        upload_batch: Callable[[EpisodeSink, list[Episode]], None],
        max_pending: int,
        interval_s: float = 0.0,
    ):
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="lwd-upload")
        # Opened on the thread that uses it: an SQLite connection may not cross threads.
        self._sink = self._thread.submit(open_sink).result()
        self._upload_batch, self._max_pending, self._interval_s = upload_batch, max_pending, interval_s
        self._queue: deque[Episode] = deque()  # finished, not yet taken by an upload
        self._lock = threading.Lock()
        self._last_upload = 0.0
        self._draining = threading.Event()  # a stopping loop does not wait out the interval
        self._pending: deque[Future] = deque()  # one per submitted episode, done once it is uploaded
        self.failure: BaseException | None = None

    def _run(self) -> None:
        if self.failure is not None or not self._queue:
            return  # an earlier upload took this submit's episode: done, at once
        wait = self._last_upload + self._interval_s - time.monotonic()
        if wait > 0:
            self._draining.wait(wait)
        with self._lock:
            batch = list(self._queue)
            self._queue.clear()
        self._last_upload = time.monotonic()
        try:
            self._upload_batch(self._sink, batch)
        except BaseException as err:  # raised in the robot loop by check()
            self.failure = err

    def submit(self, episode: Episode) -> None:
        self.check()
        while len(self._pending) >= self._max_pending:  # back-pressure: a slow store slows the robots
            self._pending.popleft().result()
        with self._lock:
            self._queue.append(episode)
        self._pending.append(self._thread.submit(self._run))

    def check(self) -> None:
        while self._pending and self._pending[0].done():
            self._pending.popleft()
        if self.failure is not None:
            raise self.failure

    def drain(self) -> None:
        """Wait until every finished episode is uploaded; raise a failure."""
        self._draining.set()
        while self._pending:
            self._pending.popleft().result()
        self.check()

    def close(self) -> None:
        self._thread.shutdown(wait=True)  # what finished before a crash of the loop still commits


@dataclass
class _Robot:
    spec: RobotSpec
    seq: int
    actor: PolicyActor
    version: int = NO_POLICY
    run: EpisodeRun | None = None
    sims: dict = field(default_factory=dict)  # task -> (robot, expert)
    sensors: SensorConfig | None = None

    def sim(self, task: str):
        if task not in self.sims:
            self.sims[task] = (make_robot(task, sensors=self.sensors), make_expert(task))
        return self.sims[task]


class RobotWorker:
    """Runs `specs` robots in one process until `should_stop()`; robots finish the
    episode they are in, so a clean stop loses nothing."""

    def __init__(
        self,
        worker_index: int,
        specs: list[RobotSpec],
        config: FleetConfig,
        sink: EpisodeSink,
        source: PolicySource,
        log_dir: str | None = None,
        lease_wait_seconds: float = 0.0,
        seed: int = 0,
        upload_sink: Callable[[], EpisodeSink] | None = None,
        takeover_probe: Callable[..., None] | None = None,
        upload_interval_s: float = 0.0,
    ):
        """`upload_sink` opens a second sink for uploads on a background thread (one per
        thread: a store's connection may not cross threads); None: `sink` uploads inline.
        `upload_interval_s`: the least time between two background uploads, so that a sink
        taking batches (`BatchEpisodeSink`) gets several episodes per call.
        `takeover_probe(run, policy_action, policy, encoder)` is called at each episode's
        first takeover with the episode's policy (`lwd bench operator`'s counterfactual)."""
        self.takeover_probe = takeover_probe
        self.index, self.config, self.sink, self.source = worker_index, config, sink, source
        self.seed = seed  # of policy noise and operators; with the robot and episode, it fixes both
        # The robots' side of every upload, one line each, for audits (and the chaos test):
        # acknowledged_episodes.tsv (episode id, snapshot) and rejected_episodes.tsv (id, why).
        self.log_dir = Path(log_dir) if log_dir else None
        self._stepped_reported = False  # the status has shown the robots' first steps
        self.policies: dict[int, tuple] = {}
        self.samplers: dict[int, FrozenSampler] = {}  # per loaded version: the same chunks, faster
        # Lease first, read the resume point second: while we hold the lease nobody else can
        # commit this robot's next episode under our feet.
        self.leases = []
        try:
            for spec in specs:
                self.leases.append(sink.lease(spec.robot_id, wait_seconds=lease_wait_seconds))
        except RobotLeaseError:
            self.release()
            raise
        self.robots = []
        for spec in specs:  # a restarted worker continues each robot after its last committed episode
            committed = sink.committed_ids(spec.robot_id)
            self.robots.append(
                _Robot(
                    spec,
                    max(committed, default=-1) + 1,
                    PolicyActor(None, None, None, execute_steps=config.execute_steps),
                    sensors=config.sensors,
                )
            )
        resume_point = sum(r.seq for r in self.robots)
        self.generator = torch.Generator().manual_seed(hash((seed, worker_index, resume_point)) % 2**63)
        self.uploaded = 0
        self.uploads = (
            _BackgroundUploads(
                upload_sink, self._upload_batch, max_pending=2 * len(specs), interval_s=upload_interval_s
            )
            if upload_sink
            else None
        )

    def release(self) -> None:
        """Give up the robots' leases (a process that exits gives them up anyway)."""
        for lease in self.leases:
            lease.release()

    def _policy(self, robot: _Robot, published: PublishedVersion) -> int:
        """The version `robot` runs in its next episode: the one the rollout names, or, if
        that cannot be loaded (pruned, damaged), the one it ran before."""
        if published.version not in self.policies:
            try:
                self.policies[published.version] = (*self.source.load(published.version), published)
                self.samplers[published.version] = FrozenSampler(
                    self.policies[published.version][0], HIDDEN_DTYPES[self.config.inference_dtype]
                )
            except Exception as err:
                fallback = robot.version if robot.version in self.policies else max(self.policies, default=None)
                if fallback is None:
                    raise
                log.warning("worker %d cannot load version %d: %s", self.index, published.version, err)
                return fallback
        return published.version

    def _start(self, robot: _Robot, published: PublishedVersion) -> None:
        version = self._policy(robot, published)
        switched_from = robot.version if version != robot.version else None
        robot.version = version
        spec, seq = robot.spec, robot.seq
        task = spec.task(seq)
        sim, expert = robot.sim(task)
        operator = ScriptedOperator(
            expert,
            self.config.operator_for(sim.task.num_stages),
            np.random.default_rng([self.seed, spec.index, seq]),
        )
        publication = self.policies[version][2]
        extras = {"worker": self.index, "version_published_at": publication.published_at}
        if switched_from is not None and switched_from != NO_POLICY:  # a pickup, not this process's first load
            extras["model_to_robot_s"] = time.time() - publication.published_at
        on_first_takeover = None
        if self.takeover_probe is not None:
            policy, encoder = self.policies[version][:2]
            on_first_takeover = partial(self.takeover_probe, policy=policy, encoder=encoder)
        robot.run = EpisodeRun(
            sim,
            robot.actor,
            robot_id=spec.robot_id,
            seq=seq,
            source="rollout",
            seed=spec.seed(seq),
            operator=operator,
            policy_version=version,
            extras=extras,
            on_first_takeover=on_first_takeover,
            replan_at_stage_end=self.config.replan_at_stage_end,
        )

    def _finish(self, robot: _Robot) -> None:
        episode = robot.run.episode()
        robot.run = None
        robot.seq += 1
        if self.uploads is not None:
            self.uploads.submit(episode)
        else:
            self._upload(self.sink, episode)

    def _upload(self, sink: EpisodeSink, episode: Episode) -> None:
        try:
            self._account(episode, upload(sink, episode))
        except EpisodeValidationError as err:  # e.g. a simulator that produced NaN: report, keep running
            self._account(episode, err)

    def _upload_batch(self, sink: EpisodeSink, episodes: list[Episode]) -> None:
        if len(episodes) == 1 or not isinstance(sink, BatchEpisodeSink):
            for episode in episodes:
                self._upload(sink, episode)
            return
        for episode, result in zip(episodes, upload_batch(sink, episodes)):
            self._account(episode, result)  # raises at a failure, after the receipts before it

    def _account(self, episode: Episode, result: Receipt | Exception) -> None:
        """Log an upload's outcome: acknowledged, or rejected as invalid; any other failure
        is raised (nothing after it was committed)."""
        if isinstance(result, EpisodeValidationError):
            log.error("worker %d rejected %s: %s", self.index, episode.episode_id, result)
            self._log_line("rejected_episodes.tsv", f"{episode.episode_id}\t{result}")
        elif isinstance(result, Exception):
            raise result
        else:
            self.uploaded += 1
            self._log_line("acknowledged_episodes.tsv", f"{result.episode_id}\t{result.snapshot}")

    def _write_status(self) -> None:
        """What each robot is doing now, for dashboards: `<log_dir>/robots/worker-<i>.json`,
        replaced atomically at every episode start and end and once after the first steps (a
        status, not a record: no fsync)."""
        if self.log_dir is None:
            return
        robots = []
        for robot in self.robots:
            running = robot.run is not None
            robots.append(
                {
                    "robot_id": robot.spec.robot_id,
                    "state": "running" if running else "idle",
                    "task": robot.spec.task(robot.seq if not running else robot.run.seq),
                    "seq": robot.run.seq if running else robot.seq,
                    "version": int(robot.version) if robot.version != NO_POLICY else None,
                    "steps": robot.run.steps_taken if running else 0,  # in its current episode
                }
            )
        status = {"worker": self.index, "pid": os.getpid(), "updated_at": time.time(), "robots": robots}
        folder = self.log_dir / "robots"
        folder.mkdir(exist_ok=True)
        tmp = folder / f".worker-{self.index}.json.tmp"
        tmp.write_text(json.dumps(status))
        os.replace(tmp, folder / f"worker-{self.index}.json")

    def _log_line(self, name: str, line: str) -> None:
        if self.log_dir is not None:
            # One O_APPEND write per line: the workers' lines never interleave.
            with open(self.log_dir / name, "a") as handle:
                handle.write(line.replace("\n", " ") + "\n")

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
            chunks = sample_chunks(
                policy,
                encoder,
                np.stack([r.run.observation.state for r in group]),
                [r.run.observation.instruction for r in group],
                self.generator,
                sampler=self.samplers.get(version),
                images=policy_images(policy.cameras, [r.run.observation.images for r in group]),
                dtype=HIDDEN_DTYPES[self.config.inference_dtype],
                noise_scale=np.array([self.config.noise_scale_of(r.run.seq) for r in group]),
            )
            for robot, chunk in zip(group, chunks):
                robot.actor.fill(chunk, version)
        return set()

    def run(self, should_stop, should_hold=lambda: False) -> None:
        """Step every robot until `should_stop()`; while `should_hold()`, robots that end an
        episode wait instead of starting the next (the learner is catching up)."""
        try:
            self._sweep_until_stopped(should_stop, should_hold)
            if self.uploads is not None:
                self.uploads.drain()  # a clean stop returns once every finished episode is uploaded
        finally:
            if self.uploads is not None:
                self.uploads.close()

    def _sweep_until_stopped(self, should_stop, should_hold) -> None:
        while True:
            if self.uploads is not None:
                self.uploads.check()
            stopping, holding = should_stop(), should_hold()
            rollout: list = []  # the registry's rollout, read once per sweep, at boundaries only
            changed = False
            for robot in self.robots:
                changed |= self._boundary(robot, stopping, holding, rollout)
            if changed:
                self._write_status()
            if all(r.run is None for r in self.robots):
                if stopping:
                    return
                time.sleep(0.01)  # held: wait for the learner
                continue
            in_use = {r.version for r in self.robots}  # running, or the fallback of the next episode
            for version in [v for v in self.policies if v not in in_use]:
                del self.policies[version]  # nobody runs it any more
                self.samplers.pop(version, None)
            ended_or_started = self._run_to_next_policy_call(self._fill_chunks(), stopping, holding, rollout)
            # Also once after the first steps: a robot can be "running" for seconds before its
            # first step (its first policy call on a loaded machine), and a benchmark's window
            # must not open before the fleet moves.
            first_steps = not self._stepped_reported and any(
                r.run is not None and r.run.steps_taken > 0 for r in self.robots
            )
            if ended_or_started or first_steps:
                self._write_status()
            self._stepped_reported |= first_steps

    def _boundary(self, robot: _Robot, stopping: bool, holding: bool, rollout: list) -> bool:
        """Upload the episode `robot` has finished and start its next one (unless stopping or
        holding); returns whether it did either. `rollout` keeps the registry's rollout once read."""
        changed = False
        if robot.run is not None and robot.run.finished:
            self._finish(robot)
            changed = True
        if robot.run is None and not stopping and not holding:
            if not rollout:
                rollout.append(self.source.rollout())
            published = rollout[0].version_for(robot.spec.robot_id) if rollout[0] else None
            if published is None:
                raise RuntimeError("no policy has been published yet")
            self._start(robot, published)
            changed = True
        return changed

    def _run_to_next_policy_call(self, waiting: set[int], stopping: bool, holding: bool, rollout: list) -> bool:
        """Run every robot from this sweep (robots in `waiting` sit it out) up to the sweep at
        which the next batched policy call is due, one robot after the other: the steps each
        robot would take sweep by sweep, in an order that keeps one simulator in the cache for
        a whole chunk (stepping ten simulators in turn costs ~20% more CPU per step than
        stepping one, docs/benchmarks.md). Returns whether an episode ended or started.

        Between policy calls robots are independent; what couples them is when the next call
        happens: at the first sweep where no robot is still executing a chunk. So each robot
        executing a chunk runs first, to the sweep where its chunk has run out (or the operator
        took over, or its episode ended); then robots the operator drives catch up to the
        latest of those sweeps, one step per sweep, as they would have stepped in turn."""
        changed = False

        def step(robot: _Robot) -> None:
            nonlocal changed
            robot.run.step()
            if robot.run.finished:  # the boundary at the start of its next sweep
                changed |= self._boundary(robot, stopping, holding, rollout)

        # Robots of one task run one after the other: the next robot's simulator then runs
        # the code paths and touches the model layout the caches just held. At 80 robots per
        # worker that is ~13 µs (3%) less CPU per env step than alternating tasks
        # (docs/benchmarks.md). Between policy calls robots are independent, so the order
        # changes no episode.
        in_order = sorted(self.robots, key=lambda r: (r.spec.task(r.seq), r.spec.index))  # r.seq: its episode
        reached = []  # per robot: the sweep (this one is 0) at which it stopped executing a chunk
        for robot in in_order:
            if robot.run is not None and robot.spec.index not in waiting:
                step(robot)
            sweeps = 1
            while robot.run is not None and robot.run.policy_in_control and not robot.actor.needs_chunk:
                step(robot)
                sweeps += 1
            reached.append(sweeps)
        due = max(reached)
        for robot, sweeps in zip(in_order, reached):
            for _ in range(sweeps, due):
                if robot.run is None or robot.run.policy_in_control:
                    break  # control came back to the policy, or the episode ended: it waits for the call
                step(robot)
        return changed


def die_with_parent(parent_pid: int, poll_seconds: float = 0.5) -> None:
    """End this process at once (no episode finished, nothing committed) when `parent_pid`,
    its supervisor, dies: the kernel's parent-death signal on Linux, and a watchdog thread
    that polls the parent for the case where it died before the signal was armed, or on
    systems without one."""
    if sys.platform.startswith("linux"):
        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)

    def watch() -> None:
        while True:
            if os.getppid() != parent_pid:
                os._exit(1)  # not sys.exit: no cleanup that could still upload
            time.sleep(poll_seconds)

    threading.Thread(target=watch, name="parent-watchdog", daemon=True).start()


def worker_main(
    worker_index: int,
    specs: list[RobotSpec],
    config: FleetConfig,
    open_sink: Callable[[], EpisodeSink],
    open_source: Callable[[], PolicySource],
    stop_flag,
    log_dir: str | None = None,
    hold_flag=None,
    parent_pid: int | None = None,
    lease_wait_seconds: float = 10.0,
    seed: int = 0,
) -> None:
    """Process entry point. Ctrl-C goes to the whole process group; the worker ignores it
    and stops when the parent sets `stop_flag.value` (a shared boolean), after its robots
    finish their episodes. While `hold_flag.value` is true, robots start no new episode.
    SIGTERM stops the worker like the flag does. When `parent_pid` dies the
    worker dies with it. A robot another process still drives is waited for up to
    `lease_wait_seconds` (an orphan of a killed run dies within a second), then refused.
    The worker opens its episode sink and policy source in its own process with
    `open_sink()` / `open_source()` (e.g. `partial(EpisodeStore, path)`): the fleet
    chooses the transport, the worker does not know it."""
    if parent_pid is not None:
        die_with_parent(parent_pid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    stopped_by_signal = []
    signal.signal(signal.SIGTERM, lambda *_: stopped_by_signal.append(True))
    torch.set_num_threads(1)
    logging.basicConfig(level=logging.WARNING, format=f"worker {worker_index}: %(message)s")
    try:
        worker = RobotWorker(
            worker_index,
            specs,
            config,
            open_sink(),
            open_source(),
            log_dir,
            lease_wait_seconds=lease_wait_seconds,
            seed=seed,
            upload_sink=open_sink,
        )
    except RobotLeaseError as err:
        log.error("refused: %s", err)
        sys.exit(EXIT_LEASE_REFUSED)
    worker.run(lambda: bool(stopped_by_signal) or stop_flag.value, lambda: hold_flag is not None and hold_flag.value)
