"""`lwd bench gates`: many operator gates scored on the same episodes of a fixed policy.

Before its first takeover the operator changes nothing, so whether and when a gate first
takes over depends only on the episode the policy runs alone. The sweep therefore runs the
policy alone (the fleet's worker, an operator that never watches, training seeds), then
replays each episode in the simulator (same seed, same actions: exact) with one shadow
operator per gate watching: each sees the same observations, policy actions and progress
it would see in the fleet, and reports its first takeover step. Scored against the episode's
outcome (success of the policy alone), a gate's takeovers are needed (the policy failed)
or unneeded (it succeeded), and its recall is the share of failures it takes over.

Cheaper than one `lwd bench operator` run per gate (one policy run and one replay for the
whole grid); `lwd bench operator` checks a chosen gate on the fleet itself.
"""

from __future__ import annotations

import itertools
import platform
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from lwd.benchmarks import written_report
from lwd.configargs import documented
from lwd.envs import make_expert, make_robot
from lwd.envs.operator import OperatorConfig, ScriptedOperator
from lwd.fleet.worker import FleetConfig


@dataclass(frozen=True)
class GateSweepConfig:
    checkpoint: str = documented("runs/offline/final", "policy the robots run (no learner)")
    episodes: int = documented(300, "policy-alone episodes to run in all (each robot runs its assigned task)")
    seed: int = documented(0, "seed of the robots' policy noise")
    deviation_thresholds: tuple[float, ...] = documented((1.0, 1.5), "deviation thresholds to try")
    deviation_steps: tuple[int, ...] = documented((10, 20, 40), "deviation step counts to try")
    stall_steps: tuple[int, ...] = documented((60, 100, 150), "stall step counts to try")
    stall_disagreements: tuple[float, ...] = documented((1.0, 1.5), "stall disagreements to try")
    out: str = documented("runs/bench/gates.json", "where to write the JSON result")
    robots: FleetConfig = documented(
        FleetConfig(), "the robots; their operator's other settings are those of every gate tried"
    )

    def __post_init__(self) -> None:
        if self.episodes < 1:
            raise ValueError(f"episodes must be >= 1, got {self.episodes}")
        grids = (self.deviation_thresholds, self.deviation_steps, self.stall_steps, self.stall_disagreements)
        if not all(grids):
            raise ValueError("every swept setting needs at least one value")

    def gates(self) -> list[OperatorConfig]:
        """Every combination of the swept settings, on the robots' operator."""
        return [
            replace(
                self.robots.operator,
                deviation_threshold=threshold,
                deviation_steps=deviation,
                stall_steps=stall,
                stall_disagreement=disagreement,
            )
            for threshold, deviation, stall, disagreement in itertools.product(
                self.deviation_thresholds, self.deviation_steps, self.stall_steps, self.stall_disagreements
            )
        ]


class StepMemoExpert:
    """An expert that computes its action once per state for all the shadow operators that
    ask about the same step (the scripted experts are deterministic functions of the state)."""

    def __init__(self, expert):
        self.expert = expert
        self._key: bytes | None = None
        self._action: np.ndarray | None = None

    def act(self, state: np.ndarray) -> np.ndarray:
        key = np.asarray(state).tobytes()
        if key != self._key:
            self._key, self._action = key, self.expert.act(state)
        return self._action


@dataclass
class ShadowResult:
    task: str
    success: bool  # the policy alone
    steps: int
    first_takeover: list[int | None] = field(default_factory=list)  # per gate: the step, None if never


def shadow_gates(
    robot, expert, seed: int, actions: np.ndarray, gates: list[OperatorConfig], rng_seed: int
) -> tuple[list[int | None], bool]:
    """Replay one episode on `robot` (reset with `seed`, execute `actions`) with a shadow
    operator per gate watching through `expert`. Returns, per gate, the step of its first
    takeover (None: it never took over), and whether the replay reached success."""
    memo = StepMemoExpert(expert)
    operators = [ScriptedOperator(memo, gate, np.random.default_rng([rng_seed, i])) for i, gate in enumerate(gates)]
    first: list[int | None] = [None] * len(gates)
    observation, info = robot.reset(seed)
    success = False
    for step, action in enumerate(actions):
        for i, operator in enumerate(operators):
            if first[i] is None:
                operator.decide(observation, action, info.progress)
                if operator.takeovers:
                    first[i] = step
        observation, _, _, _, info = robot.step(action)
        success = success or info.success
    return first, success


def _gate_row(gate: OperatorConfig, results: list[ShadowResult], index: int) -> dict:
    """Figures of one gate, per task and averaged over tasks."""
    per_task: dict[str, dict] = {}
    by_task: dict[str, list[ShadowResult]] = {}
    for result in results:
        by_task.setdefault(result.task, []).append(result)
    for task, rows in sorted(by_task.items()):
        taken = [r.first_takeover[index] is not None for r in rows]
        alone = [r.success for r in rows]
        needed = [t for t, a in zip(taken, alone) if not a]
        of_takeovers = [a for t, a in zip(taken, alone) if t]
        per_task[task] = {
            "episodes": len(rows),
            "takeover": float(np.mean(taken)),
            "unneeded_takeover": float(np.mean([t and a for t, a in zip(taken, alone)])),
            "unneeded_share_of_takeovers": float(np.mean(of_takeovers)) if of_takeovers else None,
            "needed_takeover_recall": float(np.mean(needed)) if needed else None,
            "policy_alone_failures": len(needed),
        }
    overall = {}
    for key in ("takeover", "unneeded_takeover", "unneeded_share_of_takeovers", "needed_takeover_recall"):
        values = [row[key] for row in per_task.values() if row[key] is not None]
        overall[key] = float(np.mean(values)) if values else None
    pooled_failures = sum(row["policy_alone_failures"] for row in per_task.values())
    pooled_caught = sum(
        r.first_takeover[index] is not None for r in results if not r.success
    )  # pooled over episodes: tasks with one failure do not swing it
    return {
        "gate": {
            "deviation_threshold": gate.deviation_threshold,
            "deviation_steps": gate.deviation_steps,
            "stall_steps": gate.stall_steps,
            "stall_disagreement": gate.stall_disagreement,
        },
        **overall,
        "needed_takeover_recall_pooled": pooled_caught / pooled_failures if pooled_failures else None,
        "per_task": per_task,
    }


def run_gate_sweep(config: GateSweepConfig) -> dict:
    from lwd.data.store import EpisodeStore
    from lwd.fleet.registry import PolicyRegistry
    from lwd.fleet.worker import RobotWorker, robot_specs

    never_watching = replace(config.robots, operator=replace(config.robots.operator, attention=0.0))
    gates = config.gates()
    began = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        registry = PolicyRegistry(Path(tmp) / "registry")
        registry.publish_checkpoint(config.checkpoint, learner_step=0)
        store = EpisodeStore(Path(tmp) / "store")
        specs = robot_specs(replace(never_watching, workers=1, robots_per_worker=never_watching.num_robots))
        worker = RobotWorker(0, specs, never_watching, store, registry, seed=config.seed)
        worker.run(lambda: worker.uploaded >= config.episodes)
        worker.release()
        results, sims = [], {}
        for record in store.records():
            episode = store.load(record)
            if episode.task not in sims:
                robot = make_robot(episode.task, sensors=config.robots.sensors)
                sims[episode.task] = (robot, make_expert(episode.task))
            robot, expert = sims[episode.task]
            first, replayed_success = shadow_gates(robot, expert, episode.seed, episode.actions, gates, config.seed)
            if replayed_success != episode.success:
                raise RuntimeError(f"replay of {episode.episode_id} did not reproduce its outcome")
            results.append(ShadowResult(episode.task, bool(episode.success), len(episode.actions), first))
        for robot, _ in sims.values():
            robot.close()
    report = {
        "config": asdict(config),
        "episodes": len(results),
        "policy_alone_success": {
            task: float(np.mean([r.success for r in results if r.task == task]))
            for task in sorted({r.task for r in results})
        },
        "gates": [_gate_row(gate, results, i) for i, gate in enumerate(gates)],
        # per episode: task, policy-alone success, length, first takeover step per gate (in order)
        "episode_rows": [[r.task, r.success, r.steps, r.first_takeover] for r in results],
        "wall_seconds": time.perf_counter() - began,
        "machine": f"{platform.node()} {platform.processor() or platform.machine()}",
        "date": time.strftime("%Y-%m-%d"),
    }
    return written_report(report, config.out)
