"""`lwd bench fleet`: fleet env steps/s against the bare simulator replaying the same
episodes on the same cores (wall clock and CPU time)."""

from __future__ import annotations

import json
import os
import platform
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from lwd.benchmarks import written_report
from lwd.benchmarks.sim import bare_episode, single_stage_tasks
from lwd.configargs import documented
from lwd.fleet.collect import worker_pool
from lwd.fleet.worker import FleetConfig


@dataclass(frozen=True)
class FleetBenchConfig:
    checkpoint: str = documented("runs/offline/final", "policy the fleet runs")
    suite: str = documented("mt10", "task suite")
    workers: int = documented(2, "robot worker processes (use the number of cores; no learner runs)")
    robots_per_worker: int = documented(
        10, "robots per worker: more robots share each batched policy call (docs/benchmarks.md)"
    )
    inference_dtype: str = documented(
        "float32", "precision of the robots' policy calls: 'float32' or 'bfloat16' (FleetConfig.inference_dtype)"
    )
    fleet: str = documented("local", "where the robots run: 'local' processes or 'ray' actors (lwd[ray])")
    ray_address: str = documented("", "--fleet ray: the cluster to join ('' = a private Ray instance here)")
    seconds: float = documented(60.0, "measured window of fleet time per round")
    warmup_seconds: float = documented(
        15.0, "fleet time before each window, counted from when every robot runs its first episode"
    )
    start_timeout_seconds: float = documented(
        300.0, "how long the robots may take to start (processes, simulators, first policy load)"
    )
    repeats: int = documented(
        3,
        "rounds of fleet then bare replay; the report takes the median of the rounds' ratios "
        "(one round's wall-clock ratio on a shared VM varies by ±0.05 and more)",
    )
    out: str = documented("runs/bench/fleet.json", "where to write the JSON result")

    def __post_init__(self) -> None:
        if self.repeats < 1 or self.seconds <= 0 or self.warmup_seconds < 0 or self.start_timeout_seconds <= 0:
            raise ValueError("repeats must be >= 1, seconds > 0, warmup_seconds >= 0 and start_timeout_seconds > 0")


CPU_ROLES = ("robots", "ingest", "other")


def process_tree_cpu_seconds() -> dict[str, float] | None:
    """CPU seconds (user + system) spent so far by every live process below this one, from
    Linux's /proc, by role: "robots" (robot worker processes, Ray robot actors, and the
    spawned pool that replays episodes bare), "ingest" (the Ray fleet's ingest actor) and
    "other" (Ray's daemons, multiprocessing's helpers). None without /proc."""
    proc = Path("/proc")
    if not (proc / "self" / "stat").exists():
        return None
    ticks = os.sysconf("SC_CLK_TCK")
    parents, cpu = {}, {}
    for stat in proc.glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process ended meanwhile
            continue
        parents[int(stat.parent.name)] = int(fields[1])
        cpu[int(stat.parent.name)] = (int(fields[11]) + int(fields[12])) / ticks
    mine = {os.getpid()}
    for _ in range(8):  # depth: this process -> raylet -> Ray workers ...
        mine |= {pid for pid, parent in parents.items() if parent in mine}
    roles = dict.fromkeys(CPU_ROLES, 0.0)
    for pid in mine - {os.getpid()}:
        try:
            command = (proc / str(pid) / "cmdline").read_bytes()
        except OSError:
            continue
        role = "ingest" if b"IngestActor" in command else "other"
        if b"RobotActor" in command or b"spawn_main" in command:
            role = "robots"
        roles[role] += cpu[pid]
    return roles


def _cpu_since(before: dict[str, float] | None) -> dict[str, float] | None:
    now = process_tree_cpu_seconds()
    return None if before is None or now is None else {role: now[role] - before[role] for role in CPU_ROLES}


def wait_until_every_robot_steps(status_dir: Path, robots: int, timeout: float) -> float:
    """Poll the workers' status files (`<status_dir>/worker-<i>.json`, written at every episode
    start and end and once after a worker's first steps) until `robots` robots have been seen
    stepping an episode; returns that time. A fixed warm-up from the fleet's start is not
    enough: on a loaded machine starting the processes, building the simulators and the first
    policy call can take longer than any fixed guess, and a robot "running" an episode may not
    have stepped yet (a 5 s window once saw no step at all)."""
    deadline = time.time() + timeout
    started: set[str] = set()
    while True:
        for path in status_dir.glob("worker-*.json"):
            try:
                status = json.loads(path.read_text())
            except (OSError, ValueError):  # replaced while read: the next poll sees the new one
                continue
            started |= {r["robot_id"] for r in status.get("robots", []) if r.get("steps", 0) > 0}
        if len(started) >= robots:
            return time.time()
        if time.time() > deadline:
            raise RuntimeError(
                f"only {len(started)} of {robots} robots took a step within {timeout:g} s: "
                "see the worker logs, or give a loaded machine more --start-timeout-seconds (on a cluster, "
                "robots on other nodes report here only through a directory every node shares)"
            )
        time.sleep(0.1)


def cpu_figures(
    fleet_cpu: dict[str, float] | None, bare_cpu: dict[str, float] | None, fleet_steps: int, bare_steps: int
) -> dict:
    """A round's CPU figures from the CPU seconds by role of its fleet and bare phases; none
    where they cannot be told: without /proc, or when the robots' processes are not under
    this one (a cluster joined with `--ray-address`: its raylets started the robot actors)."""
    if fleet_cpu is None or bare_cpu is None or not fleet_steps or not bare_steps or fleet_cpu["robots"] <= 0:
        return {}
    # Bare: the replay pool's processes only (a Ray instance may still be winding down).
    bare_us = 1e6 * bare_cpu["robots"] / bare_steps
    fleet_us = {role: 1e6 * seconds / fleet_steps for role, seconds in fleet_cpu.items()}
    return {
        "fleet_cpu_us_per_step": sum(fleet_us.values()),
        "fleet_cpu_us_per_step_by_role": fleet_us,
        "bare_cpu_us_per_step": bare_us,
        "cpu_ratio": bare_us / sum(fleet_us.values()),
        "cpu_ratio_robots": bare_us / fleet_us["robots"],
    }


def _fleet_round(config: FleetBenchConfig, fleet_config: FleetConfig, tmp: Path, pool) -> dict:
    """One round: the fleet for warm-up + window, then bare Meta-World on its episodes (in
    `pool`, idle during the fleet phase); env steps per wall second and CPU seconds per env
    step of each."""
    from lwd.data.store import EpisodeStore
    from lwd.fleet.online import make_fleet
    from lwd.fleet.registry import PolicyRegistry

    store_path, registry = tmp / "store", PolicyRegistry(tmp / "registry")
    registry.publish_checkpoint(config.checkpoint, learner_step=0)
    logs = tmp / "logs"
    logs.mkdir()
    fleet = make_fleet(config.fleet, fleet_config, store_path, registry.root, logs, ray_address=config.ray_address)
    fleet.start()
    try:
        began = wait_until_every_robot_steps(
            logs / "robots", fleet_config.workers * fleet_config.robots_per_worker, config.start_timeout_seconds
        )
    except RuntimeError:
        fleet.stop()
        raise
    time.sleep(config.warmup_seconds)
    cpu_before = process_tree_cpu_seconds()
    time.sleep(max(0.0, began + config.warmup_seconds + config.seconds - time.time()))
    fleet_cpu = _cpu_since(cpu_before)
    window = (began + config.warmup_seconds, began + config.warmup_seconds + config.seconds)
    fleet.stop()
    store = EpisodeStore(store_path)
    records = store.records()
    episodes = [store.load(r) for r in records]
    in_window = sum(int(((e.timestamps >= window[0]) & (e.timestamps < window[1])).sum()) for e in episodes)
    if not in_window:
        raise RuntimeError(
            f"the fleet made no env step in the {config.seconds:g} s window after {config.warmup_seconds:g} s of "
            f"warm-up ({len(episodes)} episodes committed)"
        )
    fleet_rate = in_window / config.seconds
    jobs = [(str(store_path), r.robot_id, r.seq, r.seed) for r in records]
    cpu_before, replay_began = process_tree_cpu_seconds(), time.perf_counter()
    bare_steps = sum(pool.imap_unordered(bare_episode, jobs))
    bare_rate = bare_steps / (time.perf_counter() - replay_began)
    bare_cpu = _cpu_since(cpu_before)
    round_figures = {
        "fleet_steps_per_s": fleet_rate,
        "bare_steps_per_s": bare_rate,
        "ratio": fleet_rate / bare_rate,
        "episodes": len(episodes),
        "episodes_with_intervention": float(np.mean([e.intervention.any() for e in episodes])),
    }
    round_figures.update(cpu_figures(fleet_cpu, bare_cpu, in_window, bare_steps))
    return round_figures


def run_fleet_bench(config: FleetBenchConfig) -> dict:
    """Fleet env steps/s (policy inference, operator, durable uploads) ÷ bare Meta-World
    replaying exactly the same episodes (seeds, actions, resets) on the same cores.

    Fleet throughput counts the per-step timestamps that fall inside the measured window,
    so episodes cut by the window edges count for the steps they ran inside it. Rounds
    alternate fleet and bare phases so that both see the same drift of a shared machine.
    Two ratios per round: wall clock (`ratio`: env steps/s, fleet ÷ bare) and CPU time
    (`cpu_ratio`: bare CPU seconds per env step ÷ the fleet's, every process under this
    one counted; `cpu_ratio_robots`: the robot processes alone, what a robot node of a
    cluster spends, whose ingest runs on the learner's node). Other jobs on a shared
    machine move the wall-clock ratio a lot and the CPU-time ratio little. The report
    gives the median of the rounds for each ratio and the other figures of the round
    with the median wall-clock ratio.
    """
    single_stage_tasks(config.suite)  # before starting a fleet whose episodes could not be replayed bare
    fleet_config = FleetConfig(
        suite=config.suite,
        workers=config.workers,
        robots_per_worker=config.robots_per_worker,
        inference_dtype=config.inference_dtype,
    )
    rounds = []
    # One replay pool for every round: its simulators are built once, and it idles (no CPU)
    # while the fleet runs.
    pool = worker_pool(config.workers, fleet_config.task_names())
    try:
        for _ in range(config.repeats):
            with tempfile.TemporaryDirectory() as tmp:
                rounds.append(_fleet_round(config, fleet_config, Path(tmp), pool))
    finally:
        pool.close()
    median_round = sorted(rounds, key=lambda r: r["ratio"])[len(rounds) // 2]
    medians = {
        key: float(np.median([r[key] for r in rounds]))
        for key in ("ratio", "cpu_ratio", "cpu_ratio_robots")
        if all(key in r for r in rounds)
    }
    report = {
        "config": asdict(config),
        **median_round,
        **medians,
        "rounds": rounds,
        "machine": f"{platform.node()} {platform.processor() or platform.machine()}",
        "date": time.strftime("%Y-%m-%d"),
    }
    return written_report(report, config.out)
