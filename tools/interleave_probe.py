"""What stepping many Meta-World scenes in turn costs the simulator, and whether their order matters.

    .venv/bin/python tools/interleave_probe.py --scenes 40 [--grouped]

Builds `--scenes` scenes of MT10 (tasks dealt round-robin; with `--grouped` the scenes of one
task sit next to each other), records 3 noisy-expert episodes of 100 steps per scene, then
replays them bare three ways, in thread CPU µs per env step (resets included):
one episode after the other (`lwd bench fleet`'s bare replay), and all scenes in turn, 5 or 20
steps each (a fleet worker's order between two policy calls, at chunk length 5 or 20).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lwd.envs import make_expert, make_robot, suite  # noqa: E402

EPISODES, STEPS = 3, 100


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=int, default=40)
    parser.add_argument("--grouped", action="store_true", help="scenes of one task next to each other")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    tasks = suite("mt10").task_names
    names = [
        tasks[(i * len(tasks)) // args.scenes] if args.grouped else tasks[i % len(tasks)] for i in range(args.scenes)
    ]
    scenes = [make_robot(name).scenes[0] for name in names]
    experts = [make_expert(name) for name in names]
    rng = np.random.default_rng(0)

    def record(i: int, seed: int) -> list[np.ndarray]:
        scenes[i].seed(seed)
        obs, _ = scenes[i].reset()
        actions = []
        for _ in range(STEPS):
            action = np.clip(experts[i].act(obs) + 0.1 * rng.standard_normal(4), -1, 1).astype(np.float32)
            actions.append(action)
            obs, *_ = scenes[i].step(action)
        return actions

    plan = [[(1000 + 10 * i + e, record(i, 1000 + 10 * i + e)) for e in range(EPISODES)] for i in range(len(scenes))]

    def one_after_another() -> float:
        began, steps = time.thread_time(), 0
        for scene, episodes in zip(scenes, plan):
            for seed, actions in episodes:
                scene.seed(seed)
                scene.reset()
                for action in actions:
                    scene.step(action)
                steps += len(actions)
        return 1e6 * (time.thread_time() - began) / steps

    def in_turn(chunk: int) -> float:
        began, steps = time.thread_time(), 0
        for e in range(EPISODES):
            for scene, episodes in zip(scenes, plan):
                scene.seed(episodes[e][0])
                scene.reset()
            for start in range(0, STEPS, chunk):
                for scene, episodes in zip(scenes, plan):
                    for action in episodes[e][1][start : start + chunk]:
                        scene.step(action)
                        steps += 1
        return 1e6 * (time.thread_time() - began) / steps

    figures: dict[str, list[float]] = {"one_after_another": [], "in_turn_5": [], "in_turn_20": []}
    for _ in range(args.rounds):
        figures["one_after_another"].append(round(one_after_another(), 1))
        figures["in_turn_5"].append(round(in_turn(5), 1))
        figures["in_turn_20"].append(round(in_turn(20), 1))
    print(json.dumps({"scenes": args.scenes, "grouped": args.grouped, "cpu_us_per_step": figures}))


if __name__ == "__main__":
    main()
