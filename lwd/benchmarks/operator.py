"""`lwd bench operator`: how often the deployment operator takes over, per task, and (by
the counterfactual) whether it had to."""

from __future__ import annotations

import platform
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from lwd.benchmarks import written_report
from lwd.configargs import documented
from lwd.fleet.worker import FleetConfig


@dataclass(frozen=True)
class OperatorBenchConfig:
    checkpoint: str = documented("runs/offline/final", "policy the robots run (no learner)")
    episodes: int = documented(300, "episodes to run in all (each robot runs its assigned task)")
    seed: int = documented(0, "seed of the robots' policy noise and operators")
    counterfactual: bool = documented(
        True,
        "at each episode's first takeover, also run the policy alone from that state (then restore "
        "the simulator): was the takeover needed?",
    )
    out: str = documented("runs/bench/operator.json", "where to write the JSON result")
    robots: FleetConfig = documented(
        FleetConfig(), "the robots and their operator (tune the gate: --robots.operator.*)"
    )

    def __post_init__(self) -> None:
        if self.episodes < 1:
            raise ValueError(f"episodes must be >= 1, got {self.episodes}")


def _share(flags: list[bool]) -> float | None:
    """The fraction of true flags; None for no flags (a rate of nothing is not 0)."""
    return float(np.mean(flags)) if flags else None


def gate_figures(rows: list[tuple[bool, bool, bool | None]]) -> dict:
    """Takeover figures of one task from (success, takeover, policy alone succeeded) per
    episode; the last is None where the probe did not run (no takeover: the episode itself
    is the policy alone, so its success is the answer).

    rescued: of the episodes with a takeover, the share that succeeded (None without a takeover):
    how well the operator's corrections end what they start.
    unneeded_takeover: share of episodes with a takeover the policy would have done without.
    unneeded_share_of_takeovers: of the episodes with a takeover, the share the policy would
    have completed alone. needed_takeover_recall: of the episodes the policy alone would
    have failed, the share the operator took over."""
    figures: dict = {
        "episodes": len(rows),
        "takeover": float(np.mean([t for _, t, _ in rows])),
        "success": float(np.mean([s for s, _, _ in rows])),
        "autonomous_success": float(np.mean([s and not t for s, t, _ in rows])),
        "rescued": _share([s for s, t, _ in rows if t]),
    }
    if any(t and alone is None for _, t, alone in rows):
        return figures  # no counterfactual
    alone = [bool(a) if t else s for s, t, a in rows]
    taken = [t for _, t, _ in rows]
    figures.update(
        policy_alone_success=float(np.mean(alone)),
        unneeded_takeover=float(np.mean([t and a for t, a in zip(taken, alone)])),
        unneeded_share_of_takeovers=_share([a for t, a in zip(taken, alone) if t]),
        needed_takeover_recall=_share([t for t, a in zip(taken, alone) if not a]),
        takeover_episodes=int(sum(taken)),
        unneeded_takeover_episodes=int(sum(t and a for t, a in zip(taken, alone))),
        policy_alone_failures=int(sum(not a for a in alone)),
    )
    return figures


def run_operator_bench(config: OperatorBenchConfig) -> dict:
    """How often the deployment operator takes over, per task, from a fixed policy: the share
    of episodes with a takeover, success with the operator, success without any takeover,
    the success of the episodes it took over (how often its corrections rescue one) and,
    with `counterfactual`, whether each takeover was needed: at the first takeover the
    simulator is snapshotted, the policy runs alone to the step limit, and the simulator is
    restored, so the episode goes on as it would have (lwd.fleet.counterfactual). One worker
    process; the gate is `--robots.operator.*`. The overall figures average the tasks
    (skipping tasks where a figure is undefined, e.g. recall without any failure)."""
    from lwd.data.store import EpisodeStore
    from lwd.fleet.counterfactual import PolicyAloneProbe
    from lwd.fleet.registry import PolicyRegistry
    from lwd.fleet.worker import RobotWorker, robot_specs

    fleet_config = config.robots
    probe = PolicyAloneProbe(config.seed) if config.counterfactual else None
    with tempfile.TemporaryDirectory() as tmp:
        registry = PolicyRegistry(Path(tmp) / "registry")
        registry.publish_checkpoint(config.checkpoint, learner_step=0)
        store = EpisodeStore(Path(tmp) / "store")
        specs = robot_specs(replace(fleet_config, workers=1, robots_per_worker=fleet_config.num_robots))
        worker = RobotWorker(0, specs, fleet_config, store, registry, seed=config.seed, takeover_probe=probe)
        began = time.perf_counter()
        worker.run(lambda: worker.uploaded >= config.episodes)
        wall_seconds = time.perf_counter() - began
        worker.release()
        rows: dict[str, list[tuple[bool, bool, bool | None]]] = {}
        for record in store.records():
            episode = store.load(record)
            outcome = probe.outcomes.get((episode.robot_id, episode.seq)) if probe else None
            rows.setdefault(episode.task, []).append(
                (bool(episode.success), bool(episode.intervention.any()), outcome.success if outcome else None)
            )
    per_task = {task: gate_figures(r) for task, r in sorted(rows.items())}
    # Averages over tasks, not episodes: tasks with short episodes finish more of them.
    keys = ["takeover", "success", "autonomous_success", "rescued"]
    if config.counterfactual:
        keys += ["policy_alone_success", "unneeded_takeover", "unneeded_share_of_takeovers", "needed_takeover_recall"]
    overall = {}
    for key in keys:
        values = [row[key] for row in per_task.values() if row.get(key) is not None]
        overall[key] = float(np.mean(values)) if values else None
    report = {
        "config": asdict(config),
        "per_task": per_task,
        "episodes": sum(len(r) for r in rows.values()),
        **overall,
        "wall_seconds": wall_seconds,
        "machine": f"{platform.node()} {platform.processor() or platform.machine()}",
        "date": time.strftime("%Y-%m-%d"),
    }
    return written_report(report, config.out)
