"""`lwd bench sim`: simulator throughput.

Both phases run in the same pool of worker processes (one per core), on the same
physics: the collection phase runs the noisy expert through the Robot interface and
commits every episode to a durable store; the bare phase resets the raw Meta-World
environment with the same seeds and replays exactly the recorded actions (same
contacts, same episode lengths, same number of resets). The ratio is the fraction of
raw simulator speed that survives the expert, our runtime and the store. Reading an
episode's actions back (one small file, well under 1 ms) is inside the bare timing.
"""

from __future__ import annotations

import platform
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from lwd.benchmarks import written_report
from lwd.configargs import documented
from lwd.envs import SEEDS, suite
from lwd.fleet import collect as collect_mod


@dataclass(frozen=True)
class SimBenchConfig:
    suite: str = documented("mt10", "task suite")
    episodes_per_task: int = documented(20, "episodes per task in each phase")
    workers: int = documented(2, "worker processes (use the number of cores)")
    noise: float = documented(0.1, "expert action noise during collection")
    repeats: int = documented(2, "alternating bare/collect rounds; the report takes the best of each")
    out: str = documented("runs/bench/sim.json", "where to write the JSON result")


def bare_episode(job: tuple[str, str, int, int]) -> int:
    """Reset the raw Meta-World env with the episode's seed and replay its recorded actions."""
    store_path, robot_id, seq, seed = job
    store = collect_mod.cached_store(store_path)
    record = store.get(robot_id, seq)
    actions = store.load(record).actions
    env = collect_mod.cached_robot_and_expert(record.task)[0].scenes[0]
    env.seed(seed)
    env.reset()
    for action in actions:
        env.step(action)
    return len(actions)


def single_stage_tasks(suite_name: str) -> tuple[str, ...]:
    """The suite's tasks, refusing multi-stage ones: the bare replay runs one Meta-World scene."""
    chosen = suite(suite_name)
    chained = [t.name for t in chosen.tasks if t.num_stages > 1]
    if chained:
        raise ValueError(
            f"suite {suite_name!r} has multi-stage tasks ({', '.join(chained)}); the bare-simulator "
            "replay runs one Meta-World scene per episode, so benchmark single-stage suites"
        )
    return chosen.task_names


def run_sim_bench(config: SimBenchConfig) -> dict:
    tasks = single_stage_tasks(config.suite)
    pool = collect_mod.worker_pool(config.workers, tasks)  # every worker's simulators built before timing
    try:
        bare_rates, collect_rates, success = [], [], []
        for round_index in range(config.repeats):
            with tempfile.TemporaryDirectory() as tmp:
                cfg = collect_mod.CollectConfig(
                    store=str(Path(tmp) / "store"),
                    suite=config.suite,
                    episodes_per_task=config.episodes_per_task,
                    noise=config.noise,
                    seed_start=round_index * config.episodes_per_task,
                    workers=config.workers,
                    progress=False,
                )
                result = collect_mod.collect(cfg, pool=pool)
                collect_rates.append(result.steps / result.wall_seconds)
                success.append(np.mean([s.success for s in result.stats]))
                jobs = [
                    (cfg.store, cfg.robot_id(s.task), s.seq, SEEDS.train(cfg.seed_start + s.seq)) for s in result.stats
                ]
                began = time.perf_counter()
                steps = sum(pool.imap_unordered(bare_episode, jobs))
                bare_rates.append(steps / (time.perf_counter() - began))
                assert steps == result.steps, "bare replay must cover exactly the collected steps"
    finally:
        pool.close()
    report = {
        "config": asdict(config),
        "bare_steps_per_s": max(bare_rates),
        "collect_steps_per_s": max(collect_rates),
        "ratio": max(collect_rates) / max(bare_rates),
        "all_bare_steps_per_s": bare_rates,
        "all_collect_steps_per_s": collect_rates,
        "expert_success": float(np.mean(success)),
        "steps_per_phase": int(sum(s.steps for s in result.stats)),
        "machine": f"{platform.node()} {platform.processor() or platform.machine()}",
        "date": time.strftime("%Y-%m-%d"),
    }
    return written_report(report, config.out)
