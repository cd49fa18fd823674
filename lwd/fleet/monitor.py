"""Fleet metrics (SPEC §9), derived on the learner side from the episodes the robots
uploaded: rolling per-task success and intervention rate of the deployed policy, cycle
time, env steps/s, episode→learner and model→robot latency, and one line per episode
in `episodes.jsonl` for the report's plots."""

from __future__ import annotations

import json
import time
from collections import defaultdict, deque
from pathlib import Path

import numpy as np

from lwd.data.episode import Episode
from lwd.training.metrics import open_jsonl_for_append, read_jsonl


def percentile(values, q: float) -> float:
    return float(np.percentile(values, q)) if len(values) else float("nan")


class FleetMonitor:
    """Fed every new online episode (`observe`); `snapshot()` gives the metrics since the
    last call plus rolling windows of the last `window` episodes per task."""

    def __init__(self, out: Path, window: int = 20):
        self.path = Path(out) / "episodes.jsonl"
        self.window = window
        self._file = open_jsonl_for_append(self.path)
        # A resumed run does not log an episode twice.
        self.logged = {record["episode_id"] for record in read_jsonl(self.path)}
        self.by_task: dict[str, deque] = defaultdict(lambda: deque(maxlen=window))
        self.env_steps = 0
        self.episodes = 0
        self._interval_steps = 0
        self._interval_started = time.time()
        self.episode_to_learner: list[float] = []
        self.model_to_robot: list[float] = []

    def observe(self, episode: Episode, learner_step: int) -> None:
        now = time.time()
        self.env_steps += episode.num_steps
        self.episodes += 1
        self._interval_steps += episode.num_steps
        intervened = episode.num_interventions
        self.by_task[episode.task].append(
            (
                episode.success,
                intervened > 0,
                intervened / episode.num_steps,
                episode.num_steps,
                episode.ended_at - episode.started_at,
                episode.stage_score,
            )
        )
        if episode.episode_id in self.logged:
            return
        latency = now - episode.ended_at
        self.episode_to_learner.append(latency)
        model_latency = episode.extras.get("model_to_robot_s")
        if model_latency is not None:
            self.model_to_robot.append(float(model_latency))
        self._file.write(
            json.dumps(
                {
                    "episode_id": episode.episode_id,
                    "robot_id": episode.robot_id,
                    "task": episode.task,
                    "version": int(episode.policy_version[0]),
                    "versions": sorted({int(v) for v in episode.policy_version}),
                    "success": bool(episode.success),
                    "stage_score": float(episode.stage_score),
                    "steps": episode.num_steps,
                    "interventions": intervened,
                    "started_at": episode.started_at,
                    "ended_at": episode.ended_at,
                    "env_steps_total": self.env_steps,
                    "learner_step": learner_step,
                    "episode_to_learner_s": latency,
                    "model_to_robot_s": model_latency,
                }
            )
            + "\n"
        )
        self.logged.add(episode.episode_id)

    def snapshot(self) -> dict[str, float]:
        now = time.time()
        metrics: dict[str, float] = {
            "fleet/env_steps": self.env_steps,
            "fleet/episodes": self.episodes,
            "fleet/env_steps_per_s": self._interval_steps / max(now - self._interval_started, 1e-9),
        }
        self._interval_steps, self._interval_started = 0, now
        per_task = {task: np.array(rows, dtype=np.float64) for task, rows in self.by_task.items() if rows}
        for task, rows in per_task.items():
            metrics[f"success/{task}"] = float(rows[:, 0].mean())
            metrics[f"autonomous_success/{task}"] = float((rows[:, 0] * (1 - rows[:, 1])).mean())
            metrics[f"intervention_rate/{task}"] = float(rows[:, 2].mean())
        if per_task:

            def average(column_fn):
                return float(np.mean([column_fn(rows) for rows in per_task.values()]))

            metrics["fleet/success"] = average(lambda r: r[:, 0].mean())
            metrics["fleet/autonomous_success"] = average(lambda r: (r[:, 0] * (1 - r[:, 1])).mean())
            metrics["fleet/intervention_rate"] = average(lambda r: r[:, 2].mean())
            metrics["fleet/episodes_with_intervention"] = average(lambda r: r[:, 1].mean())
            metrics["fleet/cycle_time_steps"] = average(lambda r: r[:, 3].mean())
            metrics["fleet/cycle_time_s"] = average(lambda r: r[:, 4].mean())
            metrics["fleet/stage_score"] = average(lambda r: r[:, 5].mean())
        for name, values in (("episode_to_learner", self.episode_to_learner), ("model_to_robot", self.model_to_robot)):
            recent = values[-500:]
            if recent:
                metrics[f"latency/{name}_p50_s"] = percentile(recent, 50)
                metrics[f"latency/{name}_p99_s"] = percentile(recent, 99)
        return metrics

    def close(self) -> None:
        self._file.close()
