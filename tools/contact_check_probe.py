"""CPU time of one Meta-World step per task, with Meta-World's own `touching_object` and with
lwd's (`lwd.envs.metaworld_robot`), optionally after importing other modules first: the
old check's cost grows with the shared libraries a process has loaded (docs/benchmarks.md,
"Simulator throughput").

    .venv/bin/python tools/contact_check_probe.py [--suite mt10] [--import torch ray ...]

Prints one JSON line: µs of thread CPU per step, per task and on average, old and new.
"""

from __future__ import annotations

import argparse
import importlib
import json
import time
import warnings

import numpy as np


def step_cost(task: str, meta_worlds_own: bool, episodes: int, steps: int) -> float:
    from lwd.envs import make_expert, make_robot

    robot, expert = make_robot(task), make_expert(task)
    env = robot.scenes[0]
    if meta_worlds_own:
        del env.touching_object  # back to SawyerXYZEnv.touching_object
    rng = np.random.default_rng(0)
    cpu, count = 0.0, 0
    for episode in range(episodes):
        env.seed(episode)
        state, _ = env.reset()
        for _ in range(steps):
            action = np.clip(expert.act(state) + rng.normal(0.0, 0.1, 4), -1.0, 1.0)
            began = time.thread_time()
            state, *_ = env.step(action)
            cpu += time.thread_time() - began
            count += 1
    robot.close()
    return 1e6 * cpu / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--suite", default="mt10")
    parser.add_argument("--import", dest="modules", nargs="*", default=[], help="modules to import first")
    parser.add_argument("--episodes", type=int, default=3)
    parser.add_argument("--steps", type=int, default=300, help="steps per episode")
    args = parser.parse_args()
    for module in args.modules:
        importlib.import_module(module)
    warnings.filterwarnings("ignore")  # the scripted experts' gain-saturation warnings
    from lwd.envs import suite

    per_task = {
        task: {
            "metaworld": round(step_cost(task, True, args.episodes, args.steps), 1),
            "lwd": round(step_cost(task, False, args.episodes, args.steps), 1),
        }
        for task in suite(args.suite).task_names
    }
    mean = {k: round(float(np.mean([v[k] for v in per_task.values()])), 1) for k in ("metaworld", "lwd")}
    print(json.dumps({"imported": args.modules, "mean_us_per_step": mean, "us_per_step": per_task}))


if __name__ == "__main__":
    main()
