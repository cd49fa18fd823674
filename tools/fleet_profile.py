"""Where a robot worker's CPU time goes, per env step, and a digest of its episodes.

    .venv/bin/python tools/fleet_profile.py --checkpoint CKPT --robots 10 --episodes 150
    .venv/bin/python tools/fleet_profile.py --checkpoint CKPT --breakdown   # by component

Runs one `RobotWorker` (worker `--worker-index` of `--workers`, `--robots` robots, MT10, the
default operator, uploads on their background thread into a durable store) in this process
until its robots have started `--episodes` episodes, then replays the same episodes in bare
Meta-World (one environment per task, one episode after the other, as `lwd bench fleet`'s
bare phase does) in the same process. Prints one JSON line: CPU µs per env step of the
worker (this process's CPU time, every thread, from the end of the first sweep: policy
loaded and traced) and of the bare replay, their ratio, expert calls per env step, and a
digest of every episode's observations, actions, interventions and versions, to check that
a change leaves what robots do bit for bit unchanged. `--breakdown` also times components
with thread CPU clocks (a few µs per step of its own): the simulator's step and reset, our
robot wrapper, the operator and its expert, the batched policy call, episode assembly and
the uploads. One process, no other job's noise in its own figures, but a shared machine
still slows its caches (docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import json
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import lwd.envs.metaworld_robot as metaworld_robot  # noqa: E402
import lwd.fleet.worker as worker_module  # noqa: E402
from lwd.data.store import EpisodeStore  # noqa: E402
from lwd.envs import make_robot  # noqa: E402
from lwd.envs.operator import ScriptedOperator  # noqa: E402
from lwd.fleet.registry import PolicyRegistry  # noqa: E402
from lwd.fleet.rollout import EpisodeRun  # noqa: E402


class ComponentClock:
    """Thread CPU seconds spent inside wrapped callables, by label, and their call counts."""

    def __init__(self) -> None:
        self.seconds: collections.Counter = collections.Counter()
        self.calls: collections.Counter = collections.Counter()

    def wrap(self, owner, name: str, label: str) -> None:
        inner = getattr(owner, name)

        def timed(*args, **kwargs):
            began = time.thread_time()
            try:
                return inner(*args, **kwargs)
            finally:
                self.seconds[label] += time.thread_time() - began
                self.calls[label] += 1

        setattr(owner, name, timed)

    def reset(self) -> None:
        self.seconds.clear()
        self.calls.clear()


def instrument(clock: ComponentClock, breakdown: bool) -> None:
    """Count env steps and expert calls always; with `breakdown`, time the components too
    (robots built from here on time their simulators; `uninstrument` stops that)."""
    clock.wrap(metaworld_robot.MetaWorldExpert, "act", "expert (operator's)")
    clock.wrap(EpisodeRun, "step", "EpisodeRun.step (with robot, operator)")
    if not breakdown:
        return
    build = metaworld_robot.MetaWorldRobot.__init__

    def build_and_wrap(robot, *args, **kwargs):
        build(robot, *args, **kwargs)
        for scene in robot.scenes:
            clock.wrap(scene, "step", "simulator step")
            clock.wrap(scene, "reset", "simulator reset")

    build_and_wrap.plain = build
    metaworld_robot.MetaWorldRobot.__init__ = build_and_wrap

    clock.wrap(metaworld_robot.MetaWorldRobot, "step", "robot.step (with simulator step)")
    clock.wrap(metaworld_robot.MetaWorldRobot, "reset", "robot.reset (with simulator reset)")
    clock.wrap(ScriptedOperator, "decide", "operator.decide (with expert)")
    clock.wrap(EpisodeRun, "episode", "episode assembly")
    clock.wrap(worker_module, "sample_chunks", "batched policy call")
    clock.wrap(worker_module.RobotWorker, "_upload", "uploads (their own thread)")


def uninstrument() -> None:
    """Robots built from here on are plain (the bare replay's)."""
    init = metaworld_robot.MetaWorldRobot.__init__
    metaworld_robot.MetaWorldRobot.__init__ = getattr(init, "plain", init)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--robots", type=int, default=10, help="robots in this worker")
    parser.add_argument("--workers", type=int, default=2, help="workers of the fleet this one belongs to")
    parser.add_argument("--worker-index", type=int, default=0)
    parser.add_argument("--episodes", type=int, default=150, help="episodes to start (the last ones finish)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--inference-dtype", default="float32", help="the robots' policy precision (float32, bfloat16)")
    parser.add_argument("--breakdown", action="store_true", help="time components (adds a few µs per step)")
    args = parser.parse_args()
    torch.set_num_threads(1)  # as a worker process
    clock = ComponentClock()
    instrument(clock, args.breakdown)
    with tempfile.TemporaryDirectory() as tmp:
        registry = PolicyRegistry(Path(tmp) / "registry")
        registry.publish_checkpoint(args.checkpoint, learner_step=0)
        config = worker_module.FleetConfig(
            workers=args.workers, robots_per_worker=args.robots, inference_dtype=args.inference_dtype
        )
        specs = worker_module.robot_specs(config)[args.worker_index :: args.workers]
        store = EpisodeStore(Path(tmp) / "store")
        worker = worker_module.RobotWorker(
            args.worker_index,
            specs,
            config,
            store,
            registry,
            seed=args.seed,
            upload_sink=partial(EpisodeStore, Path(tmp) / "store"),
        )
        start: dict = {}

        def should_stop() -> bool:
            if not start and clock.calls["EpisodeRun.step (with robot, operator)"]:
                # the first sweep is done: simulators built, policy loaded and traced
                start.update(steps=clock.calls["EpisodeRun.step (with robot, operator)"], cpu=time.process_time())
                clock.reset()
            return sum(r.seq for r in worker.robots) >= args.episodes

        worker.run(should_stop)
        fleet_cpu = time.process_time() - start["cpu"]
        worker.release()
        digest, steps, takeovers = hashlib.sha256(), 0, 0
        records = sorted(store.records(), key=lambda r: (r.robot_id, r.seq))
        for record in records:
            episode = store.load(record)
            for array in (episode.observations, episode.actions, episode.intervention, episode.policy_version):
                digest.update(np.ascontiguousarray(array).tobytes())
            steps += len(episode.actions)
            takeovers += bool(episode.intervention.any())
        timed_steps = clock.calls["EpisodeRun.step (with robot, operator)"]
        assert timed_steps == steps - start["steps"], "every env step goes through EpisodeRun.step"
        expert_calls = clock.calls["expert (operator's)"]
        breakdown = {label: 1e6 * seconds / timed_steps for label, seconds in sorted(clock.seconds.items())}
        uninstrument()
        scenes = {task: make_robot(task).scenes[0] for task in {r.task for r in records}}
        bare_began, bare_steps = time.process_time(), 0
        for record in records:
            actions = store.load(record).actions
            scene = scenes[record.task]
            scene.seed(record.seed)
            scene.reset()
            for action in actions:
                scene.step(action)
            bare_steps += len(actions)
        bare_us = 1e6 * (time.process_time() - bare_began) / bare_steps
    fleet_us = 1e6 * fleet_cpu / timed_steps
    report = {
        "robots": args.robots,
        "episodes": len(records),
        "steps": steps,
        "cpu_us_per_step": fleet_us,
        "bare_cpu_us_per_step": bare_us,
        "cpu_ratio": bare_us / fleet_us,
        "expert_calls_per_step": expert_calls / timed_steps,
        "episodes_with_takeover": takeovers,
        "digest": digest.hexdigest()[:16],
    }
    if args.breakdown:
        report["breakdown_us_per_step"] = breakdown
    print(json.dumps(report), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
