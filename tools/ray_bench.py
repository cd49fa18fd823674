"""Scaling figures of the Ray fleet on this machine (docs/benchmarks.md, "The fleet on Ray").

    # env steps/s against robot actors and nodes (real Meta-World robots, a fixed policy, no learner)
    tools/netns-run .venv/bin/python tools/ray_bench.py scaling --checkpoint CKPT \\
        --layouts 1x1 1x2 2x2 3x3 1x4
    # the ingest path's capacity: lightweight robots (no physics) that upload ready-made episodes
    tools/netns-run .venv/bin/python tools/ray_bench.py ingest --robots 100 1000
    # fleet ÷ bare in CPU seconds per env step, for a machine shared with other jobs
    tools/netns-run .venv/bin/python tools/ray_bench.py cpu-ratio --checkpoint CKPT --fleet local ray \\
        --robots-per-worker 10 40

`scaling` starts, per layout NODESxACTORS, a local cluster of NODES nodes offering ACTORS CPUs
in all, runs a RayFleet of ACTORS robot actors (10 robots each) with the policy and the
operator, and counts the env steps whose timestamps fall in the measured window (as `lwd
bench fleet` does). `ingest` runs the real IngestActor (durable store, group commit) on one
node and N robots spread over a few uploader actors; each robot uploads its next episode as
soon as the last one is acknowledged (one in flight per robot, as the robot loop's
background upload does), so the figures are the ingest's capacity, not the robots'. The
episodes are generated and encoded before the clock starts. Both print JSON lines.
`cpu-ratio` runs single rounds of `lwd bench fleet`, the fleets interleaved, and prints each
round's figures, among them the ratio counted in CPU time instead of wall time: the CPU
seconds all processes under this one spent per env step (robot workers or actors, the
ingest, Ray's own daemons), fleet against bare replay of the same episodes. Other jobs on a
shared machine move it far less; waits (an fsync, a round trip) do not count in it.
Run them in a private network namespace (tools/netns-run); they are not part of the tests.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import ray

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lwd.benchmarks.fleet import FleetBenchConfig, run_fleet_bench  # noqa: E402
from lwd.data.episode import Episode, encode  # noqa: E402
from lwd.data.store import EpisodeStore  # noqa: E402
from lwd.envs.tasks import task_spec  # noqa: E402
from lwd.fleet.ray_fleet import RayFleet, _IngestActor  # noqa: E402
from lwd.fleet.registry import PolicyRegistry  # noqa: E402
from lwd.fleet.worker import FleetConfig  # noqa: E402
from tools.ray_cluster import start_cluster  # noqa: E402


def scaling_round(checkpoint: str, nodes: int, actors: int, robots: int, warmup: float, seconds: float) -> dict:
    """One layout: a fresh cluster, a RayFleet of `actors` robot actors, the window's env steps/s."""
    cluster = start_cluster(nodes, cpus_per_node=math.ceil(actors / nodes))
    ray.init(address=cluster.address, include_dashboard=False, logging_level="WARNING")
    try:
        with tempfile.TemporaryDirectory() as tmp:
            registry = PolicyRegistry(Path(tmp) / "registry")
            registry.publish_checkpoint(checkpoint, learner_step=0)
            fleet = RayFleet(FleetConfig(workers=actors, robots_per_worker=robots), Path(tmp) / "store", registry.root)
            fleet.start()
            began = time.time()
            time.sleep(warmup + seconds)
            placed = {actor["node_id"] for actor in fleet.status()["actors"].values()}
            fleet.stop()
            store = EpisodeStore(Path(tmp) / "store")
            window = (began + warmup, began + warmup + seconds)
            steps = 0
            for record in store.records():
                stamps = store.load(record).timestamps
                steps += int(((stamps >= window[0]) & (stamps < window[1])).sum())
    finally:
        ray.shutdown()
        cluster.shutdown()
    return {
        "nodes": nodes,
        "robot_actors": actors,
        "robots": actors * robots,
        "nodes_used": len(placed),
        "env_steps_per_s": steps / seconds,
    }


def cpu_ratio_round(checkpoint: str, fleet_kind: str, workers: int, robots: int, warmup: float, seconds: float):
    """One round of `lwd bench fleet` (fleet, then bare replay of the same episodes): env steps
    per wall second and CPU seconds per env step, by role (lwd.benchmarks.fleet._fleet_round)."""
    with tempfile.TemporaryDirectory() as tmp:
        report = run_fleet_bench(
            FleetBenchConfig(
                checkpoint=checkpoint,
                workers=workers,
                robots_per_worker=robots,
                fleet=fleet_kind,
                seconds=seconds,
                warmup_seconds=warmup,
                repeats=1,
                out=str(Path(tmp) / "fleet.json"),
            )
        )
    return {"fleet": fleet_kind, "robots_per_worker": robots, **report["rounds"][0]}


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def synthetic_episode(robot_id: str, seq: int, steps: int, rng: np.random.Generator) -> Episode:
    """A valid rollout episode of `steps` steps with random numbers (no simulator)."""
    spec = task_spec("reach-v3")
    return Episode(
        robot_id=robot_id,
        seq=seq,
        task=spec.name,
        instruction=spec.instruction,
        source="rollout",
        observations=rng.normal(size=(steps + 1, spec.obs_dim)).astype(np.float32),
        actions=rng.uniform(-1, 1, size=(steps, spec.action_dim)).astype(np.float32),
        intervention=np.zeros(steps, bool),
        policy_version=np.zeros(steps, np.int64),
        timestamps=time.time() + np.arange(steps, dtype=np.float64) * 0.1,
        success=False,
        stage_score=0.0,
        seed=None,
        started_at=time.time(),
        ended_at=time.time() + steps * 0.1,
    )


@ray.remote(num_cpus=0)
class Uploaders:
    """Lightweight robots: each uploads ready-made episodes, one in flight at a time."""

    def __init__(self, ingest_name: str, robots: list[tuple[str, int]], per_robot: int, steps: int, seed: int):
        self.ingest = ray.get_actor(ingest_name)
        rng = np.random.default_rng(seed)
        self.robots = robots
        self.episodes = {
            robot_id: [encode(synthetic_episode(robot_id, k, steps, rng))[0] for k in range(per_robot)]
            for robot_id, _ in robots
        }

    def ready(self) -> bool:
        return True

    async def run(self, seconds: float) -> list[float]:
        deadline, latencies = time.time() + seconds, []

        async def robot(robot_id: str, slot: int) -> None:
            token = (await self.ingest.lease.remote(robot_id, slot, 10.0))["token"]
            for data in self.episodes[robot_id]:
                if time.time() >= deadline:
                    return
                began = time.perf_counter()
                reply = await self.ingest.append.remote(data, slot, token)
                if "error" in reply:
                    raise RuntimeError(reply["message"])
                latencies.append(time.perf_counter() - began)

        await asyncio.gather(*(robot(robot_id, slot) for robot_id, slot in self.robots))
        return latencies


def ingest_round(robots: int, uploaders: int, seconds: float, steps: int, per_robot: int) -> dict:
    """The ingest actor's capacity with `robots` lightweight robots uploading at once."""
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="WARNING")
    try:
        with tempfile.TemporaryDirectory() as tmp:
            ids = [f"robot-{i:04d}" for i in range(robots)]
            owners = {robot_id: i % uploaders for i, robot_id in enumerate(ids)}
            ingest = _IngestActor.options(name="bench-ingest", num_cpus=0).remote(
                str(Path(tmp) / "store"), str(PolicyRegistry(Path(tmp) / "registry").root), owners
            )
            groups = [
                Uploaders.remote("bench-ingest", [(r, s) for r, s in owners.items() if s == u], per_robot, steps, u)
                for u in range(uploaders)
            ]
            ingest_pid = ray.get(ingest.status.remote())["pid"]
            ray.get([group.ready.remote() for group in groups])  # episodes made and encoded
            idle = _cpu_seconds(ingest_pid)
            time.sleep(5.0)
            idle = (_cpu_seconds(ingest_pid) - idle) / 5.0  # what the actor costs doing nothing
            cpu_before, began = _cpu_seconds(ingest_pid), time.perf_counter()
            latencies = sorted(sum(ray.get([group.run.remote(seconds) for group in groups]), []))
            wall, ingest_cpu = time.perf_counter() - began, _cpu_seconds(ingest_pid) - cpu_before
            status = ray.get(ingest.status.remote())
            size = len(encode(synthetic_episode("robot-0000", 0, steps, np.random.default_rng(0)))[0])
    finally:
        ray.shutdown()
    episodes = len(latencies)
    return {
        "robots": robots,
        "steps_per_episode": steps,
        "episode_bytes": size,
        "episodes_per_s": episodes / wall,
        "env_steps_per_s": episodes * steps / wall,
        "mb_per_s": episodes * size / wall / 1e6,
        "latency_p50_ms": 1e3 * latencies[episodes // 2],
        "latency_p99_ms": 1e3 * latencies[int(episodes * 0.99)],
        "episodes_per_commit": status["appended"] / max(status["commits"], 1),
        "ingest_cpu_ms_per_episode": 1e3 * ingest_cpu / episodes,
        "ingest_cpu_share": ingest_cpu / wall,
        "ingest_idle_cpu_share": idle,
        "ran_out_of_episodes": episodes >= robots * per_robot,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    scaling = commands.add_parser("scaling", help="env steps/s against robot actors and nodes")
    scaling.add_argument("--checkpoint", required=True)
    scaling.add_argument("--layouts", nargs="+", default=["1x1", "1x2", "2x2", "3x3"], help="NODESxACTORS")
    scaling.add_argument("--robots-per-actor", type=int, default=10)
    scaling.add_argument("--warmup", type=float, default=30.0)
    scaling.add_argument("--seconds", type=float, default=40.0)
    ingest = commands.add_parser("ingest", help="the ingest path's capacity with lightweight robots")
    ingest.add_argument("--robots", type=int, nargs="+", default=[100, 1000])
    ingest.add_argument("--uploaders", type=int, default=4, help="actors the lightweight robots are spread over")
    ingest.add_argument("--seconds", type=float, default=20.0)
    ingest.add_argument("--steps", type=int, default=150, help="steps per episode (MT10 episodes: ~150 on average)")
    ingest.add_argument("--episodes", type=int, default=8_000, help="ready-made episodes in all, per round")
    ratio = commands.add_parser("cpu-ratio", help="fleet ÷ bare in CPU time per env step")
    ratio.add_argument("--checkpoint", required=True)
    ratio.add_argument("--fleet", nargs="+", default=["local", "ray"])
    ratio.add_argument("--workers", type=int, default=2)
    ratio.add_argument("--robots-per-worker", type=int, nargs="+", default=[10])
    ratio.add_argument("--warmup", type=float, default=30.0)
    ratio.add_argument("--seconds", type=float, default=40.0)
    ratio.add_argument("--repeats", type=int, default=3, help="rounds per fleet, interleaved")
    args = parser.parse_args()
    if args.command == "cpu-ratio":
        for _ in range(args.repeats):
            for kind in args.fleet:
                for robots in args.robots_per_worker:
                    row = cpu_ratio_round(args.checkpoint, kind, args.workers, robots, args.warmup, args.seconds)
                    print(json.dumps(row), flush=True)
        return 0
    if args.command == "scaling":
        for layout in args.layouts:
            nodes, actors = (int(part) for part in layout.split("x"))
            row = scaling_round(args.checkpoint, nodes, actors, args.robots_per_actor, args.warmup, args.seconds)
            print(json.dumps(row), flush=True)
    else:
        for robots in args.robots:
            per_robot = max(2, math.ceil(args.episodes / robots))
            print(json.dumps(ingest_round(robots, args.uploaders, args.seconds, args.steps, per_robot)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
