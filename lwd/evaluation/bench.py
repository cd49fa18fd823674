"""Simulator throughput benchmark: bare Meta-World vs expert collection into the store.

Both phases run in the same pool of worker processes (one per core), on the same
physics: the collection phase runs the noisy expert through the Robot interface and
commits every episode to a durable store; the bare phase resets the raw Meta-World
environment with the same seeds and replays exactly the recorded actions (same
contacts, same episode lengths, same number of resets). The ratio is the fraction of
raw simulator speed that survives the expert, our runtime and the store. Reading an
episode's actions back (one small file, well under 1 ms) is inside the bare timing.
"""

from __future__ import annotations

import json
import platform
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from lwd.envs import SEEDS, suite
from lwd.fleet import collect as collect_mod


def _doc(default, help: str):
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class SimBenchConfig:
    suite: str = _doc("mt10", "task suite")
    episodes_per_task: int = _doc(20, "episodes per task in each phase")
    workers: int = _doc(2, "worker processes (use the number of cores)")
    noise: float = _doc(0.1, "expert action noise during collection")
    repeats: int = _doc(2, "alternating bare/collect rounds; the report takes the best of each")
    out: str = _doc("runs/bench/sim.json", "where to write the JSON result")


def bare_episode(job: tuple[str, str, int, int]) -> int:
    """Reset the raw Meta-World env with the episode's seed and replay its recorded actions."""
    store_path, robot_id, seq, seed = job
    record = collect_mod._open_store(store_path).get(robot_id, seq)
    actions = collect_mod._open_store(store_path).load(record).actions
    env = collect_mod._robot_and_expert(record.task)[0]._env
    env.seed(seed)
    env.reset()
    for action in actions:
        env.step(action)
    return len(actions)


def run_sim_bench(config: SimBenchConfig) -> dict:
    tasks = suite(config.suite).task_names
    pool = collect_mod.worker_pool(config.workers, tasks)
    try:
        pool.map(int, range(config.workers * 4))  # wait until every worker has built its simulators
        bare_rates, collect_rates, success = [], [], []
        for round_index in range(config.repeats):
            with tempfile.TemporaryDirectory() as tmp:
                cfg = collect_mod.CollectConfig(store=str(Path(tmp) / "store"), suite=config.suite,
                                                episodes_per_task=config.episodes_per_task, noise=config.noise,
                                                seed_start=round_index * config.episodes_per_task,
                                                workers=config.workers, progress=False)
                result = collect_mod.collect(cfg, pool=pool)
                collect_rates.append(result.steps / result.wall_seconds)
                success.append(np.mean([s.success for s in result.stats]))
                jobs = [(cfg.store, cfg.robot_id(s.task), s.seq, SEEDS.train(cfg.seed_start + s.seq))
                        for s in result.stats]
                began = time.perf_counter()
                steps = sum(pool.imap_unordered(bare_episode, jobs))
                bare_rates.append(steps / (time.perf_counter() - began))
                assert steps == result.steps, "bare replay must cover exactly the collected steps"
    finally:
        pool.close()
        pool.join()
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
    out = Path(config.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    return report
