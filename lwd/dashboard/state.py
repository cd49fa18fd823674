"""The dashboard's numbers: pure functions from a run directory's file contents
(`RunFiles`, read by `lwd.dashboard.files`) to the JSON the page draws.

Two payloads, so that the page can poll cheaply every two seconds:

- `build_state` (GET /api/state): small — run status and the robots (fresh at every
  poll), plus `run_overview` (headline numbers, per-task rolling rates, the newest versions
  and decisions), which the server recomputes only when a file changed;
- `build_series` (GET /api/series): the arrays behind the charts; the page fetches it
  only when the state's `revision` (a digest of the files' sizes and mtimes) changes.

Definitions follow `lwd.fleet.monitor.FleetMonitor`, so the page and `metrics.jsonl` agree:
per task, success / autonomous success (success without a takeover) / intervention rate
(share of steps the operator drove) over the last `window` episodes of that task; the
fleet's value is the mean over tasks, not over episodes, so a frequent task does not hide
a failing one.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections import Counter, defaultdict, deque
from dataclasses import dataclass, field

DECISIONS = ("promoted", "rejected", "canary", "rolled_back")  # as the gate writes them; else "undecided"
RECENT_VERSIONS = 30  # rows of the versions table (the timeline chart has them all)
RECENT_DECISIONS = 50
# Metric keys of metrics.jsonl (lwd.fleet.online.OnlineLoop.log) charted over time.
METRIC_KEYS = {
    "env_steps": "fleet/env_steps",
    "env_steps_per_s": "fleet/env_steps_per_s",
    "updates_per_s": "learner/updates_per_s",
    "episode_to_learner_p50_s": "latency/episode_to_learner_p50_s",
    "episode_to_learner_p99_s": "latency/episode_to_learner_p99_s",
    "model_to_robot_p50_s": "latency/model_to_robot_p50_s",
    "model_to_robot_p99_s": "latency/model_to_robot_p99_s",
}


@dataclass(frozen=True)
class RunFiles:
    """What a run directory held when it was read; a missing file reads as empty/None."""

    run: str
    workers: list[dict] = field(default_factory=list)  # robots/worker-<i>.json
    history: list[dict] = field(default_factory=list)  # registry/history.jsonl
    decisions: list[dict] = field(default_factory=list)  # registry/decisions.jsonl
    rollout: dict | None = None  # registry/ROLLOUT
    evaluations: list[dict] = field(default_factory=list)  # gate/evaluations.jsonl
    episodes: list[dict] = field(default_factory=list)  # episodes.jsonl
    metrics: list[dict] = field(default_factory=list)  # metrics.jsonl
    summary: dict | None = None  # summary.json, written when a run ends
    summary_mtime: float | None = None
    newest_mtime: float | None = None  # newest change among the files a live run writes
    revision: str = ""  # changes whenever any file changed
    problems: tuple[str, ...] = ()  # files or lines that could not be used, for the page


@dataclass(frozen=True)
class Settings:
    window: int = 20  # episodes per task in the rolling rates (FleetMonitor's default)
    stale_seconds: float = 60.0  # a worker silent this long while the run is live is "stale"
    max_points: int = 150  # points per chart line; more episodes are binned by env steps


# -- run status -----------------------------------------------------------------------


def run_status(files: RunFiles, now: float, stale_seconds: float) -> dict:
    """finished / stopped (summary.json, not superseded by a resumed run's writes), live
    (a file changed within `stale_seconds`), quiet (nothing changed for longer: the deploy
    may have died) or waiting (nothing written yet)."""
    summary = files.summary
    # A resumed run writes again after the old summary.json, which then no longer holds.
    ended = summary is not None and (
        files.newest_mtime is None or files.summary_mtime is None or files.newest_mtime <= files.summary_mtime
    )
    if ended:
        reason = str(summary.get("reason", "?"))
        status = "stopped" if reason == "interrupted" else "finished"
        return {"status": status, "reason": reason, "finished": True}
    if files.newest_mtime is None:
        return {"status": "waiting", "reason": None, "finished": False}
    quiet = now - files.newest_mtime > stale_seconds
    return {"status": "quiet" if quiet else "live", "reason": None, "finished": False}


# -- robots ---------------------------------------------------------------------------


def robot_episode_stats(episodes: list[dict], window: int) -> dict[str, tuple[int, float]]:
    """Per robot: episodes uploaded, and success over its last `window` episodes."""
    recent: dict[str, deque] = defaultdict(lambda: deque(maxlen=window))
    counts: Counter = Counter()
    for episode in ordered_episodes(episodes):
        recent[episode["robot_id"]].append(bool(episode["success"]))
        counts[episode["robot_id"]] += 1
    return {robot: (counts[robot], sum(rows) / len(rows)) for robot, rows in recent.items()}


def robot_rows(
    workers: list[dict],
    episode_stats: dict[str, tuple[int, float]],
    rollout: dict | None,
    now: float,
    finished: bool,
    stale_seconds: float,
) -> list[dict]:
    """One row per robot from the workers' status files; when two workers name the same
    robot (a restarted worker under a new index), the newer status wins."""
    canary = set((rollout or {}).get("canary_robots") or [])
    rows: dict[str, dict] = {}
    for worker in workers:
        updated = float(worker.get("updated_at", 0.0))
        for robot in worker.get("robots", []):
            robot_id = str(robot["robot_id"])
            if robot_id in rows and rows[robot_id]["updated_at"] >= updated:
                continue
            episodes, success = episode_stats.get(robot_id, (0, None))
            rows[robot_id] = {
                "robot_id": robot_id,
                "worker": worker.get("worker"),
                "pid": worker.get("pid"),
                "state": robot.get("state"),
                "task": robot.get("task"),
                "seq": robot.get("seq"),
                "version": robot.get("version"),
                "updated_at": updated,
                "age_s": max(now - updated, 0.0),
                "stale": not finished and now - updated > stale_seconds,
                "canary": robot_id in canary,
                "episodes": episodes,
                "success": success,
            }
    return [rows[key] for key in sorted(rows)]


# -- episodes: per-task rolling rates -----------------------------------------------------


class _Rolling:
    """The last `window` episodes of each task, with FleetMonitor's rates."""

    def __init__(self, window: int):
        self.by_task: dict[str, deque] = defaultdict(lambda: deque(maxlen=window))

    def add(self, episode: dict) -> None:
        steps = max(int(episode.get("steps") or 0), 1)
        interventions = int(episode.get("interventions") or 0)
        success = bool(episode["success"])
        self.by_task[episode["task"]].append((success, success and interventions == 0, interventions / steps))

    def rates(self, task: str) -> tuple[float, float, float] | None:
        rows = self.by_task.get(task)
        if not rows:
            return None
        n = len(rows)
        return (sum(r[0] for r in rows) / n, sum(r[1] for r in rows) / n, sum(r[2] for r in rows) / n)

    def fleet(self) -> tuple[float, float, float] | None:
        per_task = [self.rates(task) for task in self.by_task]
        per_task = [r for r in per_task if r is not None]
        if not per_task:
            return None
        return tuple(sum(r[i] for r in per_task) / len(per_task) for i in range(3))


def ordered_episodes(episodes: list[dict]) -> list[dict]:
    """Episodes in the order the learner took them in (env_steps_total is its running count)."""
    return sorted(episodes, key=lambda e: e.get("env_steps_total") or 0)


def task_rows(episodes: list[dict], window: int) -> list[dict]:
    rolling = _Rolling(window)
    totals: Counter = Counter()
    last_version: dict[str, int] = {}
    for episode in ordered_episodes(episodes):
        rolling.add(episode)
        totals[episode["task"]] += 1
        last_version[episode["task"]] = episode.get("version")
    rows = []
    for task in sorted(totals):
        success, autonomous, intervention = rolling.rates(task)
        rows.append(
            {
                "task": task,
                "episodes": totals[task],
                "success": success,
                "autonomous_success": autonomous,
                "intervention_rate": intervention,
                "version": last_version[task],
            }
        )
    return rows


def episode_series(episodes: list[dict], window: int, max_points: int) -> dict:
    """Per-task and fleet rolling rates on one env-step axis (uPlot wants one x array for
    all lines): a point per episode, or per bin of env steps when there are more than
    `max_points` episodes. A task with no episode yet is null there. `version_run` is the
    version most episodes of the bin ran, which shows pickups and rollbacks."""
    ordered = ordered_episodes(episodes)
    tasks = sorted({e["task"] for e in ordered})
    out = {
        "env_steps": [],
        "tasks": tasks,
        "success": {t: [] for t in tasks},
        "intervention_rate": {t: [] for t in tasks},
        "fleet_success": [],
        "fleet_autonomous_success": [],
        "fleet_intervention_rate": [],
        "version_run": [],
    }
    if not ordered:
        return out
    total = ordered[-1].get("env_steps_total") or 0
    edges = _bin_edges([e.get("env_steps_total") or 0 for e in ordered], total, max_points)
    rolling, i, versions = _Rolling(window), 0, Counter()
    for edge in edges:
        while i < len(ordered) and (ordered[i].get("env_steps_total") or 0) <= edge:
            rolling.add(ordered[i])
            if ordered[i].get("version") is not None:
                versions[ordered[i]["version"]] += 1
            i += 1
        out["env_steps"].append(edge)
        for task in tasks:
            rates = rolling.rates(task)
            out["success"][task].append(rates[0] if rates else None)
            out["intervention_rate"][task].append(rates[2] if rates else None)
        fleet = rolling.fleet()
        for k, name in enumerate(("fleet_success", "fleet_autonomous_success", "fleet_intervention_rate")):
            out[name].append(fleet[k] if fleet else None)
        # most common version in the bin; on a tie the newer one (max over (count, version))
        out["version_run"].append(max(versions.items(), key=lambda kv: (kv[1], kv[0]))[0] if versions else None)
        versions.clear()
    return out


def _bin_edges(steps: list[int], total: int, max_points: int) -> list[float]:
    if len(steps) <= max_points:
        return sorted(set(steps))
    width = total / max_points
    return [width * (k + 1) for k in range(max_points - 1)] + [total]


# -- versions and decisions -------------------------------------------------------------


def env_step_clock(episodes: list[dict], metrics: list[dict]) -> tuple[list[float], list[float]]:
    """(times, env steps) to place a wall-clock moment (a publication) on the env-step axis:
    episodes give (ended_at, env_steps_total), metrics give (time, fleet/env_steps)."""
    points = [(e["ended_at"], e["env_steps_total"]) for e in episodes if _numbers(e, "ended_at", "env_steps_total")]
    points += [(m["time"], m["fleet/env_steps"]) for m in metrics if _numbers(m, "time", "fleet/env_steps")]
    points.sort()
    times, steps, high = [], [], 0.0
    for t, s in points:
        high = max(high, float(s))  # env steps only grow; a late-reported episode must not pull it back
        times.append(float(t))
        steps.append(high)
    return times, steps


def env_steps_at(clock: tuple[list[float], list[float]], t: float | None) -> float | None:
    times, steps = clock
    if t is None:
        return None
    if not times or t <= times[0]:
        return 0.0
    k = bisect_right(times, t)
    if k >= len(times):
        return steps[-1]
    t0, t1, s0, s1 = times[k - 1], times[k], steps[k - 1], steps[k]
    return s0 + (s1 - s0) * (t - t0) / (t1 - t0) if t1 > t0 else s1


def rollout_version(entry) -> int | None:
    """A version named by ROLLOUT: the registry writes the whole published record
    (`{"version": 7, ...}`); a bare number is read too."""
    if isinstance(entry, dict):
        return entry.get("version")
    return entry if isinstance(entry, int) and not isinstance(entry, bool) else None


def deployed_version(history: list[dict], rollout: dict | None) -> int | None:
    """ROLLOUT's deployed version; without ROLLOUT (no gate) robots take the newest one."""
    if rollout is not None:
        return rollout_version(rollout.get("deployed"))
    return max((h["version"] for h in history), default=None)


def version_statuses(decisions: list[dict]) -> dict[int, dict]:
    """Per version, what the decisions so far make of it: {"status", "by", "note",
    "evidence"}, replayed in order. A rollback is recorded on the version robots go back
    to (PolicyRegistry.decide): that one is deployed again ("promoted"), and the version
    it replaced (`from_version`) is the one shown as "rolled_back"."""
    statuses: dict[int, dict] = {}
    for d in decisions:
        version, decision, evidence = d["version"], d["decision"], d.get("evidence") or {}
        if decision not in DECISIONS:
            continue
        if decision == "rolled_back":
            bad = d.get("from_version", evidence.get("rolled_back_version"))
            statuses[version] = {"status": "promoted", "by": d.get("by"), "evidence": evidence}
            statuses[version]["note"] = f"rollback target (from v{bad})" if bad is not None else "rollback target"
            if bad is not None and bad != version:
                note = f"rolled back to v{version}"
                statuses[bad] = {"status": "rolled_back", "by": d.get("by"), "note": note, "evidence": evidence}
        else:
            statuses[version] = {"status": decision, "by": d.get("by"), "note": None, "evidence": evidence}
    return statuses


def version_rows(files: RunFiles, clock: tuple[list[float], list[float]]) -> list[dict]:
    """Every published version, oldest first: where it was published (time, env steps), its
    gate/rollout status, its validation score and how it did on the robots."""
    statuses = version_statuses(files.decisions)
    validation = {e["version"]: e for e in files.evaluations}
    live: dict[int, list[dict]] = defaultdict(list)
    for episode in files.episodes:
        live[episode.get("version")].append(episode)
    deployed = deployed_version(files.history, files.rollout)
    canary = rollout_version((files.rollout or {}).get("canary"))
    published = {h["version"]: h for h in files.history}  # a version number is never reused
    rows = []
    for version in sorted(published):
        record, status = published[version], statuses.get(version, {})
        ran = live.get(version, [])
        # The registry records env steps at publication; older runs only have the time.
        env_steps = record.get("env_steps")
        rows.append(
            {
                "version": version,
                "parent_version": record.get("parent_version"),
                "learner_step": record.get("learner_step"),
                "published_at": record.get("published_at"),
                "env_steps": env_steps if env_steps is not None else env_steps_at(clock, record.get("published_at")),
                "decision": status.get("status", "undecided"),
                "decided_by": status.get("by"),
                "note": status.get("note"),
                "evidence": status.get("evidence"),
                "deployed": version == deployed,
                "canary": version == canary,
                "validation_success": validation[version].get("success") if version in validation else None,
                "episodes": len(ran),
                "success": sum(bool(e["success"]) for e in ran) / len(ran) if ran else None,
            }
        )
    return rows


def decision_rows(decisions: list[dict], limit: int = RECENT_DECISIONS) -> list[dict]:
    """The newest decisions first, with the evidence fields the table shows."""
    rows = []
    for d in reversed(decisions[-limit:]):
        evidence = d.get("evidence") or {}
        rows.append(
            {
                "at": d.get("at"),
                "version": d.get("version"),
                "decision": d.get("decision"),
                "by": d.get("by"),
                "from_version": d.get("from_version"),
                "difference": evidence.get("difference"),
                "interval": evidence.get("interval"),
                "episodes": evidence.get("episodes"),
                "candidate_success": evidence.get("candidate_success"),
                "deployed_success": evidence.get("deployed_success"),
                "reason": evidence.get("reason"),
                "mode": evidence.get("mode"),  # how the gate compared: "evaluate" or "canary"
                "margin": evidence.get("margin"),
            }
        )
    return rows


def validation_series(evaluations: list[dict], version_steps: dict[int, float | None] | None = None) -> dict:
    """Validation success of each scored version (the gate's evaluator) over env steps; a
    version published before the fleet's first step has env_steps null there: it is placed
    where the versions table places it (`version_steps`), else at 0."""
    version_steps = version_steps or {}

    def steps(e: dict) -> float:
        value = e.get("env_steps")
        return value if _numbers(e, "env_steps") else (version_steps.get(e["version"]) or 0)

    latest = {e["version"]: e for e in evaluations if _numbers(e, "version", "success")}
    ordered = sorted(latest.values(), key=lambda e: (steps(e), e["version"]))
    tasks = sorted({task for e in ordered for task in (e.get("per_task") or {})})
    return {
        "env_steps": [steps(e) for e in ordered],
        "version": [e["version"] for e in ordered],
        "success": [e["success"] for e in ordered],
        "tasks": tasks,
        "per_task": {t: [(e.get("per_task") or {}).get(t) for e in ordered] for t in tasks},
    }


# -- learner and fleet metrics over time --------------------------------------------------


def metric_series(metrics: list[dict], max_points: int) -> dict:
    """metrics.jsonl's throughput and latency keys over wall-clock time (every k-th
    record when there are many; the newest record is always kept)."""
    records = [m for m in metrics if _numbers(m, "time")]
    if len(records) > max_points:
        stride = math.ceil(len(records) / max_points)
        records = records[::-1][::stride][::-1]
    out = {"time": [m["time"] for m in records], "learner_step": [m.get("step") for m in records]}
    for name, key in METRIC_KEYS.items():
        out[name] = [m.get(key) for m in records]
    return out


def latest_metrics(metrics: list[dict]) -> dict:
    """The newest value of every key (a record may lack some, e.g. latencies before the
    first version reached a robot)."""
    latest: dict = {}
    for record in metrics:
        latest.update(record)
    return latest


# -- the two payloads -----------------------------------------------------------------


def run_overview(files: RunFiles, settings: Settings = Settings()) -> dict:
    """The part of the state that depends only on the files (the server keeps it while the
    files' revision is unchanged): headline numbers, tasks, versions, decisions."""
    clock = env_step_clock(files.episodes, files.metrics)
    versions = version_rows(files, clock)
    tasks = task_rows(files.episodes, settings.window)
    metrics = latest_metrics(files.metrics)
    rollout = files.rollout or {}

    def fleet(key: str) -> float | None:  # FleetMonitor's fleet rates: the mean over tasks
        return sum(t[key] for t in tasks) / len(tasks) if tasks else None

    headline = {
        "env_steps": max([e.get("env_steps_total") or 0 for e in files.episodes] + [metrics.get("fleet/env_steps", 0)]),
        "episodes": len(files.episodes),
        "learner_step": metrics.get("step"),
        "versions": len(versions),
        "latest_version": versions[-1]["version"] if versions else None,
        "deployed_version": deployed_version(files.history, files.rollout),
        "canary_version": rollout_version(rollout.get("canary")),
        "pinned": bool(rollout.get("pinned", False)),
        "fleet_success": fleet("success"),
        "fleet_autonomous_success": fleet("autonomous_success"),
        "fleet_intervention_rate": fleet("intervention_rate"),
        **{name: metrics.get(key) for name, key in METRIC_KEYS.items() if name != "env_steps"},
        "workers_alive": metrics.get("fleet/workers_alive"),
        "worker_restarts": metrics.get("fleet/worker_restarts"),
    }
    return {
        "run": files.run,
        "revision": files.revision,
        "headline": headline,
        "tasks": tasks,
        "versions": versions[-RECENT_VERSIONS:][::-1],  # newest first
        "decisions": decision_rows(files.decisions),
        "rollout": files.rollout,
        "window": settings.window,
        "problems": list(files.problems),
        "robot_episodes": robot_episode_stats(files.episodes, settings.window),
    }


def build_state(files: RunFiles, now: float, settings: Settings = Settings(), overview: dict | None = None) -> dict:
    """GET /api/state: `run_overview` plus what changes with the clock (run status, the
    robots' ages). Pass `overview` when it was computed for the same files."""
    overview = dict(overview if overview is not None else run_overview(files, settings))
    status = run_status(files, now, settings.stale_seconds)
    robot_episodes = overview.pop("robot_episodes")
    robots = robot_rows(files.workers, robot_episodes, files.rollout, now, status["finished"], settings.stale_seconds)
    return finite(
        {
            **overview,
            **status,
            "now": now,
            "summary": files.summary if status["finished"] else None,
            "robots": robots,
        }
    )


def build_series(files: RunFiles, settings: Settings = Settings()) -> dict:
    clock = env_step_clock(files.episodes, files.metrics)
    versions = version_rows(files, clock)
    timeline = [
        {k: v[k] for k in ("version", "env_steps", "published_at", "decision", "deployed", "canary")} for v in versions
    ]
    return finite(
        {
            "revision": files.revision,
            "window": settings.window,
            "episodes": episode_series(files.episodes, settings.window, settings.max_points),
            "validation": validation_series(files.evaluations, {v["version"]: v["env_steps"] for v in versions}),
            "metrics": metric_series(files.metrics, settings.max_points * 4),
            "timeline": timeline,
        }
    )


# -- helpers ----------------------------------------------------------------------------


def _numbers(record: dict, *keys: str) -> bool:
    return all(isinstance(record.get(k), int | float) and not isinstance(record.get(k), bool) for k in keys)


def finite(value):
    """The payload with NaN/inf as null: JSON has no NaN, and a NaN metric (no episodes
    in the window yet) must not break the response."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value


def valid_records(records: list, required: tuple[str, ...]) -> tuple[list[dict], int]:
    """The records that are objects with every required key, and how many were not."""
    good = [r for r in records if isinstance(r, dict) and all(k in r for k in required)]
    return good, len(records) - len(good)
