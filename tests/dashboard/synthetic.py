"""Synthetic deploy run directories in the formats the real writers use, for the
dashboard's tests: robots/worker-<i>.json as `RobotWorker._write_status` writes it (a
temporary file, then os.replace), JSON lines appended one `json.dumps(...) + "\\n"` at a
time through `open_jsonl_for_append` like `PolicyRegistry._announce`, `FleetMonitor` and
`MetricsLogger`.
`test_state.py::test_real_writers_formats` checks these against the real writers."""

from __future__ import annotations

import json
import os
from pathlib import Path

from lwd.training.metrics import open_jsonl_for_append

TASKS = ("reach-v3", "push-v3")


class SyntheticRun:
    def __init__(self, root: Path, t0: float):
        self.root = Path(root)
        self.t0 = t0
        self.env_steps = 0
        self.episodes = 0
        self.published: dict[int, dict] = {}
        (self.root / "registry").mkdir(parents=True, exist_ok=True)

    def _append(self, relative: str, record: dict) -> None:
        path = self.root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        with open_jsonl_for_append(path) as handle:  # cuts a torn last line first, as the writers do
            handle.write(json.dumps(record) + "\n")

    def _replace(self, relative: str, record: dict) -> None:
        path = self.root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.parent / f".{path.name}.tmp"
        tmp.write_text(json.dumps(record))
        os.replace(tmp, path)

    def worker(self, index: int, robots: list[dict], updated_at: float) -> None:
        """robots: dicts with robot_id, state, task, seq, version (RobotWorker._write_status)."""
        status = {"worker": index, "pid": 4000 + index, "updated_at": updated_at, "robots": robots}
        self._replace(f"robots/worker-{index}.json", status)

    def publish(self, version: int, learner_step: int, published_at: float, env_steps: int | None = None) -> None:
        """A PublishedVersion record; env_steps is None for the start version (published
        before the fleet's first step)."""
        record = {
            "version": version,
            "parent_version": version - 1 if version > 1 else 0,
            "learner_step": learner_step,
            "data_snapshot": version,
            "published_at": published_at,
            "env_steps": env_steps,
        }
        self.published[version] = record
        self._append("registry/history.jsonl", record)

    def decide(self, version: int, decision: str, at: float, by: str = "gate", from_version=None, **evidence) -> None:
        record = {"at": at, "version": version, "decision": decision, "by": by, "from_version": from_version}
        self._append("registry/decisions.jsonl", {**record, "evidence": evidence})

    def rollout(self, deployed: int | None, canary: int | None = None, canary_robots=(), pinned=False) -> None:
        """ROLLOUT as `Rollout.to_json` writes it: the published records, not bare numbers."""
        record = {
            "deployed": self.published[deployed] if deployed is not None else None,
            "canary": self.published[canary] if canary is not None else None,
            "canary_robots": list(canary_robots),
            "pinned": pinned,
        }
        self._replace("registry/ROLLOUT", record)

    def evaluation(self, version: int, at: float, per_task: dict[str, float]) -> None:
        """A gate/evaluations.jsonl line (lwd.evaluation.gate.score_version)."""
        success = sum(per_task.values()) / len(per_task)
        record = {
            "version": version,
            "at": at,
            "learner_step": self.published[version]["learner_step"],
            "env_steps": self.published[version]["env_steps"],
            "success": success,
            "per_task": per_task,
            "episodes": 10 * len(per_task),
            "seconds": 4.2,
        }
        self._append("gate/evaluations.jsonl", record)

    def episode(
        self, robot_id: str, task: str, version: int, success: bool, ended_at: float, steps=100, interventions=0
    ) -> dict:
        self.env_steps += steps
        self.episodes += 1
        record = {
            "episode_id": f"{robot_id}/{self.episodes:010d}",
            "robot_id": robot_id,
            "task": task,
            "version": version,
            "versions": [version],
            "success": success,
            "stage_score": float(success),
            "steps": steps,
            "interventions": interventions,
            "started_at": ended_at - steps / 100,
            "ended_at": ended_at,
            "env_steps_total": self.env_steps,
            "learner_step": 10 * self.episodes,
            "episode_to_learner_s": 0.2,
            "model_to_robot_s": 0.5,
        }
        self._append("episodes.jsonl", record)
        return record

    def metrics(self, step: int, time: float, **values: float) -> None:
        self._append("metrics.jsonl", {"step": step, "time": time, **values})

    def tear(self, relative: str, text: str = '{"episode_id": "robot-9/') -> None:
        """A writer killed mid-line: the last line has no newline."""
        with open(self.root / relative, "a") as handle:
            handle.write(text)

    def summary(self, reason: str = "budget") -> None:
        (self.root / "summary.json").write_text(json.dumps({"reason": reason, "env_steps": self.env_steps}))


def build_gated_run(root: Path, t0: float) -> SyntheticRun:
    """A run with a gate: 4 robots on 2 workers, versions 1-4 (v3 rejected, v4 canary on
    robot-003, v2 deployed), 40 episodes over 2 tasks, validation scores, metrics, and a
    torn last line in episodes.jsonl. Robots run v2 (robot-003: v4)."""
    run = SyntheticRun(root, t0)
    for version in (1, 2, 3, 4):
        env_steps = 1000 * (version - 1) if version > 1 else None
        run.publish(version, learner_step=50 * (version - 1), published_at=t0 + 20 * (version - 1), env_steps=env_steps)
    run.decide(1, "promoted", at=t0 + 1, reason="start version")
    run.decide(
        2,
        "promoted",
        at=t0 + 25,
        from_version=1,
        mode="evaluate",
        difference=0.02,
        interval=[-0.01, 0.05],
        episodes=40,
        candidate_success=0.72,
        deployed_success=0.7,
        margin=0.05,
    )
    run.decide(
        3,
        "rejected",
        at=t0 + 45,
        from_version=2,
        mode="evaluate",
        difference=-0.3,
        interval=[-0.4, -0.2],
        episodes=40,
        reason="worse than v2",
    )
    run.decide(4, "canary", at=t0 + 65, from_version=2, robots=["robot-003"])
    run.rollout(deployed=2, canary=4, canary_robots=["robot-003"])
    for version in (1, 2, 3, 4):
        run.evaluation(version, at=t0 + 20 * version, per_task={"reach-v3": 0.9, "push-v3": 0.5})
    for k in range(40):
        robot = f"robot-{k % 4:03d}"
        task = TASKS[k % 2]
        version = 4 if robot == "robot-003" else (1 if k < 8 else 2)
        success = task == "reach-v3" or k % 4 == 1  # reach always succeeds; push half the time
        run.episode(robot, task, version, success, ended_at=t0 + 2 * k + 1, interventions=10 if k % 5 == 0 else 0)
    for k in range(10):
        run.metrics(
            step=20 * k,
            time=t0 + 8 * k,
            **{
                "fleet/env_steps": 400 * k,
                "fleet/env_steps_per_s": 500.0 + k,
                "learner/updates_per_s": 3.0,
                "latency/episode_to_learner_p99_s": 0.8,
                "latency/model_to_robot_p99_s": 2.0,
            },
        )
    robots = [
        {"robot_id": f"robot-{i:03d}", "state": "running", "task": TASKS[i % 2], "seq": 10, "version": 2}
        for i in range(4)
    ]
    robots[3]["version"] = 4
    run.worker(0, robots[:2], updated_at=t0 + 80)
    run.worker(1, robots[2:], updated_at=t0 + 80)
    run.tear("episodes.jsonl")
    return run
