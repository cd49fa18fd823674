"""The dashboard's numbers from synthetic run directories in the real formats: missing
files, torn and damaged lines, run status, robots, versions and decisions, rolling rates
checked against `FleetMonitor` and a slow reference, and the API over a real server."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from types import SimpleNamespace

import httpx
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lwd.dashboard.files import RunReader, read_run
from lwd.dashboard.server import DashboardConfig, DashboardThread
from lwd.dashboard.state import (
    Settings,
    build_series,
    build_state,
    env_step_clock,
    env_steps_at,
    episode_series,
    finite,
    task_rows,
)
from tests.dashboard.synthetic import SyntheticRun, build_gated_run

T0 = 0.0  # synthetic runs end at T0 + 80; set before each test, as their files are just written


@pytest.fixture(autouse=True)
def _recent_t0():
    global T0
    T0 = time.time() - 90


def state_of(root, now=None, **kw):
    return build_state(read_run(root), time.time() if now is None else now, Settings(**kw))


def test_missing_run_dir_and_files_read_as_empty(tmp_path):
    for root in (tmp_path / "not-there", tmp_path):
        state = state_of(root)
        assert state["status"] == "waiting" and not state["finished"]
        assert state["robots"] == [] and state["versions"] == [] and state["tasks"] == []
        assert state["headline"]["episodes"] == 0 and state["headline"]["deployed_version"] is None
        assert state["problems"] == []
        series = build_series(read_run(root))
        assert series["episodes"]["env_steps"] == [] and series["timeline"] == []
        assert series["validation"]["env_steps"] == [] and series["metrics"]["time"] == []
        json.dumps(state, allow_nan=False)


def test_gated_run_state(tmp_path):
    build_gated_run(tmp_path, T0)
    state = state_of(tmp_path)
    json.dumps(state, allow_nan=False)  # what JSONResponse does
    assert state["status"] == "live" and state["problems"] == []
    h = state["headline"]
    assert h["episodes"] == 40 and h["env_steps"] == 4000  # the torn 41st line is not an episode
    assert (h["deployed_version"], h["canary_version"], h["versions"], h["latest_version"]) == (2, 4, 4, 4)
    # reach: 20/20 successes, 4 with a takeover; push: 10/20, 2 of them with a takeover
    assert h["fleet_success"] == pytest.approx(0.75)
    assert h["fleet_autonomous_success"] == pytest.approx((16 / 20 + 8 / 20) / 2)
    assert h["fleet_intervention_rate"] == pytest.approx(0.02)
    assert h["env_steps_per_s"] == 509.0 and h["learner_step"] == 180
    tasks = {t["task"]: t for t in state["tasks"]}
    assert tasks["push-v3"]["success"] == 0.5 and tasks["reach-v3"]["episodes"] == 20

    versions = {v["version"]: v for v in state["versions"]}
    assert [v["version"] for v in state["versions"]] == [4, 3, 2, 1]  # newest first
    assert {k: v["decision"] for k, v in versions.items()} == {1: "promoted", 2: "promoted", 3: "rejected", 4: "canary"}
    assert versions[2]["deployed"] and versions[4]["canary"] and not versions[3]["deployed"]
    assert versions[3]["evidence"]["reason"] == "worse than v2" and versions[3]["episodes"] == 0
    assert versions[4]["episodes"] == 10 and versions[2]["validation_success"] == pytest.approx(0.7)
    # env steps at publication: the registry's record, or (the start version) from the clock
    assert [versions[v]["env_steps"] for v in (1, 2, 3, 4)] == [0, 1000, 2000, 3000]

    decisions = state["decisions"]
    assert [d["version"] for d in decisions] == [4, 3, 2, 1]
    assert decisions[1]["difference"] == -0.3 and decisions[1]["interval"] == [-0.4, -0.2]

    robots = {r["robot_id"]: r for r in state["robots"]}
    assert sorted(robots) == ["robot-000", "robot-001", "robot-002", "robot-003"]
    assert robots["robot-003"]["canary"] and robots["robot-003"]["version"] == 4
    assert robots["robot-001"]["worker"] == 0 and robots["robot-002"]["worker"] == 1
    assert robots["robot-000"]["episodes"] == 10 and robots["robot-000"]["age_s"] == pytest.approx(10, abs=5)
    assert not any(r["stale"] for r in robots.values())


def test_without_rollout_the_newest_version_is_deployed_and_undecided(tmp_path):
    run = SyntheticRun(tmp_path, T0)
    for version in (1, 2, 3):
        run.publish(version, 50 * version, T0 + version)
    versions = state_of(tmp_path)["versions"]
    assert [v["deployed"] for v in versions] == [True, False, False]
    assert {v["decision"] for v in versions} == {"undecided"}


def test_a_rollback_marks_the_version_rolled_back_from(tmp_path):
    """PolicyRegistry.decide records a rollback on the version robots go back to, with the
    replaced one in from_version: the timeline colours that one "rolled back"."""
    run = build_gated_run(tmp_path, T0)
    run.decide(4, "promoted", at=T0 + 85, from_version=2)
    run.decide(2, "rolled_back", at=T0 + 88, by="user", from_version=4, reason="operator request")
    run.rollout(deployed=2, pinned=True)
    state = state_of(tmp_path)
    versions = {v["version"]: v for v in state["versions"]}
    assert (versions[4]["decision"], versions[4]["decided_by"], versions[4]["note"]) == (
        "rolled_back",
        "user",
        "rolled back to v2",
    )
    assert versions[2]["decision"] == "promoted" and versions[2]["note"] == "rollback target (from v4)"
    assert versions[2]["deployed"] and state["headline"]["pinned"] and state["headline"]["canary_version"] is None
    assert state["decisions"][0]["decision"] == "rolled_back" and state["decisions"][0]["from_version"] == 4


def test_rollout_may_name_bare_version_numbers(tmp_path):
    build_gated_run(tmp_path, T0)
    (tmp_path / "registry" / "ROLLOUT").write_text(json.dumps({"deployed": 3, "canary": None, "pinned": False}))
    headline = state_of(tmp_path)["headline"]
    assert (headline["deployed_version"], headline["canary_version"]) == (3, None)


def test_torn_last_lines_everywhere_and_damaged_lines_are_reported(tmp_path):
    run = build_gated_run(tmp_path, T0)
    for name in ("registry/history.jsonl", "registry/decisions.jsonl", "gate/evaluations.jsonl", "metrics.jsonl"):
        run.tear(name, '{"version": 9')
    state = state_of(tmp_path)
    assert state["problems"] == [] and state["headline"]["versions"] == 4
    # a damaged line in the middle (not a torn last line): the rest is still shown
    with open(tmp_path / "episodes.jsonl", "a") as handle:
        handle.write("\n" + "not json\n" + json.dumps({"robot_id": "robot-000"}) + "\n")
    run.episode("robot-000", "reach-v3", 2, True, ended_at=T0 + 85)
    state = state_of(tmp_path)
    assert state["headline"]["episodes"] == 41
    assert any("episodes.jsonl: 2 damaged lines" in p for p in state["problems"])  # the torn one + "not json"
    assert any("1 records without robot_id, task, success" in p for p in state["problems"])


def test_half_written_json_files_are_skipped(tmp_path):
    build_gated_run(tmp_path, T0)
    (tmp_path / "registry" / "ROLLOUT").write_text('{"deployed": ')
    (tmp_path / "robots" / "worker-1.json").write_text("")
    state = state_of(tmp_path)
    assert state["headline"]["deployed_version"] == 4  # ROLLOUT unreadable: as if missing
    assert [r["robot_id"] for r in state["robots"]] == ["robot-000", "robot-001"]
    assert len([p for p in state["problems"] if "not valid JSON" in p]) == 2


def test_run_status(tmp_path):
    run = build_gated_run(tmp_path, T0)
    now = time.time()
    assert state_of(tmp_path, now=now)["status"] == "live"
    assert state_of(tmp_path, now=now + 120)["status"] == "quiet"
    stale = state_of(tmp_path, now=now + 120)["robots"]
    assert all(r["stale"] for r in stale)  # updated_at is T0 + 80, long ago
    run.summary("budget")
    state = state_of(tmp_path, now=now + 120)
    assert (state["status"], state["reason"], state["finished"]) == ("finished", "budget", True)
    assert state["summary"]["reason"] == "budget" and not any(r["stale"] for r in state["robots"])
    run.summary("interrupted")
    assert state_of(tmp_path, now=now)["status"] == "stopped"
    # a resumed run writes after the old summary.json: live again
    later = os.stat(tmp_path / "summary.json").st_mtime + 5
    run.metrics(step=999, time=later)
    os.utime(tmp_path / "metrics.jsonl", (later, later))
    assert state_of(tmp_path, now=later)["status"] == "live"


def test_a_restarted_worker_under_another_index_newest_status_wins(tmp_path):
    run = SyntheticRun(tmp_path, T0)
    robot = {"robot_id": "robot-000", "state": "running", "task": "reach-v3", "seq": 4, "version": 1}
    run.worker(0, [robot], updated_at=T0)
    run.worker(5, [{**robot, "seq": 7, "state": "idle"}], updated_at=T0 + 3)
    (row,) = state_of(tmp_path)["robots"]
    assert (row["worker"], row["seq"], row["state"]) == (5, 7, "idle")


def test_series_bins_env_steps_and_keeps_tasks_aligned(tmp_path):
    run = build_gated_run(tmp_path, T0)
    series = build_series(read_run(tmp_path), Settings(max_points=150))
    e = series["episodes"]
    assert e["env_steps"] == [100 * (k + 1) for k in range(40)]  # one point per episode
    assert e["tasks"] == ["push-v3", "reach-v3"]
    assert e["success"]["push-v3"][0] is None and e["success"]["reach-v3"][0] == 1.0
    assert all(len(e[k][t]) == 40 for k in ("success", "intervention_rate") for t in e["tasks"])
    assert e["fleet_success"][-1] == pytest.approx(0.75)
    assert e["version_run"][-1] == 4  # the last episode (robot-003) ran the canary
    for k in range(200):
        run.episode(f"robot-{k % 4:03d}", "reach-v3", 2, True, ended_at=T0 + 100 + k)
    e = build_series(read_run(tmp_path), Settings(max_points=50))["episodes"]
    assert len(e["env_steps"]) == 50 and e["env_steps"][-1] == 24000
    assert e["env_steps"] == sorted(e["env_steps"])
    assert e["version_run"][-1] == 2
    v = series["validation"]
    assert v["version"] == [1, 2, 3, 4] and v["per_task"]["push-v3"] == [0.5] * 4
    assert v["env_steps"] == [0, 1000, 2000, 3000]  # v1's line has env_steps null: placed at its publication
    assert series["metrics"]["env_steps_per_s"][-1] == 509.0 and len(series["metrics"]["time"]) == 10
    assert [t["decision"] for t in series["timeline"]] == ["promoted", "promoted", "rejected", "canary"]
    json.dumps(series, allow_nan=False)


def test_env_step_clock_interpolates_and_never_goes_back():
    episodes = [{"ended_at": 10.0, "env_steps_total": 100}, {"ended_at": 20.0, "env_steps_total": 300}]
    metrics = [{"time": 15.0, "fleet/env_steps": 50}]  # an older count logged late: ignored
    clock = env_step_clock(episodes, metrics)
    assert clock[1] == [100.0, 100.0, 300.0]
    assert env_steps_at(clock, 5.0) == 0.0 and env_steps_at(clock, 25.0) == 300.0
    assert env_steps_at(clock, 17.5) == pytest.approx(200.0) and env_steps_at(clock, None) is None


def test_finite_turns_nan_and_inf_into_null():
    assert finite({"a": [1.0, math.nan, {"b": math.inf}], "c": (2, -math.inf)}) == {
        "a": [1.0, None, {"b": None}],
        "c": [2, None],
    }


episode_rows = st.lists(
    st.tuples(st.sampled_from(["reach-v3", "push-v3", "pick-place-v3"]), st.booleans(), st.integers(0, 40)),
    min_size=1,
    max_size=80,
)


@settings(max_examples=60, deadline=None)
@given(rows=episode_rows, window=st.integers(1, 25))
def test_rolling_rates_match_a_slow_reference(rows, window):
    episodes, total = [], 0
    for k, (task, success, interventions) in enumerate(rows):
        total += 40
        episodes.append(
            {
                "robot_id": "r",
                "task": task,
                "success": success,
                "steps": 40,
                "interventions": interventions,
                "env_steps_total": total,
                "version": k,
            }
        )
    got = {t["task"]: t for t in task_rows(episodes, window)}
    for task in got:
        last = [e for e in episodes if e["task"] == task][-window:]
        assert got[task]["success"] == pytest.approx(np.mean([e["success"] for e in last]))
        autonomous = [e["success"] and e["interventions"] == 0 for e in last]
        assert got[task]["autonomous_success"] == pytest.approx(np.mean(autonomous))
        assert got[task]["intervention_rate"] == pytest.approx(np.mean([e["interventions"] / 40 for e in last]))
    series = episode_series(episodes, window, max_points=len(episodes))
    for task in got:  # the last point of the series is the table's value
        assert series["success"][task][-1] == pytest.approx(got[task]["success"])


def _fleet_files_by_the_real_writers(root) -> dict:
    """episodes.jsonl (FleetMonitor), metrics.jsonl (MetricsLogger) and a worker status
    (RobotWorker._write_status on a stand-in worker); returns FleetMonitor's metrics."""
    from lwd.fleet.monitor import FleetMonitor
    from lwd.fleet.worker import RobotSpec, RobotWorker
    from lwd.training.metrics import MetricsLogger
    from tests.conftest import make_episode

    monitor = FleetMonitor(root)
    rng = np.random.default_rng(0)
    for seq in range(60):
        task = ["reach-v3", "push-v3", "drawer-open-v3"][seq % 3]
        intervention = rng.random(30) < 0.2 if seq % 4 == 0 else None
        success = bool(rng.random() < 0.7)
        episode = make_episode(
            f"robot-{seq % 2}",
            seq,
            steps=30,
            task=task,
            source="rollout",
            success=success,
            intervention=intervention,
            version=1 + seq // 20,
        )
        monitor.observe(episode, learner_step=seq)
    expected = monitor.snapshot()
    monitor.close()
    logger = MetricsLogger(root, tensorboard=False)
    logger.log(60, expected)
    logger.close()
    spec = RobotSpec(0, "robot-0", ("reach-v3", "push-v3"))
    robots = [SimpleNamespace(spec=spec, run=SimpleNamespace(seq=5, steps_taken=12), seq=5, version=1)]
    RobotWorker._write_status(SimpleNamespace(log_dir=root, index=0, robots=robots))
    return expected


def _registry_by_the_real_writer(root) -> None:
    """history.jsonl lines as PolicyRegistry._announce writes them (publishing needs real
    checkpoints: empty version folders stand in), then the registry's own decisions and
    ROLLOUT (PolicyRegistry.decide)."""
    from lwd.fleet.registry import PolicyRegistry, PublishedVersion

    registry = PolicyRegistry(root / "registry")
    with open(root / "registry" / "history.jsonl", "w") as handle:
        for version in (1, 2, 3):
            record = PublishedVersion(
                version=version,
                parent_version=version - 1,
                learner_step=50 * version,
                data_snapshot=version,
                published_at=T0 + version,
            )
            handle.write(json.dumps(dataclasses.asdict(record)) + "\n")
            registry.path(version).mkdir()
    registry.decide(1, "promoted", by="gate")
    registry.decide(2, "promoted", by="gate", evidence={"difference": 0.01, "interval": [-0.02, 0.04], "episodes": 20})
    registry.decide(3, "canary", by="gate", canary_robots=("robot-0",))
    registry.decide(3, "rejected", by="gate", evidence={"episodes": [10, 10], "mode": "canary"})
    registry.decide(1, "rolled_back", by="user")


def test_real_writers_formats(tmp_path):
    """The files the real writers produce give the numbers FleetMonitor computes, and the
    registry's decisions and rollout."""
    expected = _fleet_files_by_the_real_writers(tmp_path)
    _registry_by_the_real_writer(tmp_path)
    state = build_state(read_run(tmp_path), time.time())
    h = state["headline"]
    assert state["problems"] == [] and h["episodes"] == 60 and h["env_steps"] == expected["fleet/env_steps"]
    assert h["fleet_success"] == pytest.approx(expected["fleet/success"])
    assert h["fleet_autonomous_success"] == pytest.approx(expected["fleet/autonomous_success"])
    assert h["fleet_intervention_rate"] == pytest.approx(expected["fleet/intervention_rate"])
    assert h["env_steps_per_s"] == expected["fleet/env_steps_per_s"]
    assert (h["deployed_version"], h["canary_version"], h["pinned"]) == (1, None, True)
    versions = {v["version"]: v["decision"] for v in state["versions"]}
    assert versions == {1: "promoted", 2: "rolled_back", 3: "rejected"}
    assert [d["decision"] for d in state["decisions"]] == ["rolled_back", "rejected", "canary", "promoted", "promoted"]
    for task in state["tasks"]:
        assert task["success"] == pytest.approx(expected[f"success/{task['task']}"])
    (robot,) = state["robots"]
    assert (robot["robot_id"], robot["state"], robot["task"], robot["seq"], robot["version"]) == (
        "robot-0",
        "running",
        "push-v3",
        5,
        1,
    )


def test_reader_reparses_only_changed_files(tmp_path):
    run = build_gated_run(tmp_path, T0)
    reader = RunReader(tmp_path)
    first = reader.read()
    assert reader.read().revision == first.revision
    assert reader.read().episodes is first.episodes  # cached, not parsed again
    run.episode("robot-000", "reach-v3", 2, True, ended_at=T0 + 99)
    second = reader.read()
    assert second.revision != first.revision and len(second.episodes) == 41


def test_api_over_a_real_server(tmp_path):
    run = build_gated_run(tmp_path, T0)
    with DashboardThread(DashboardConfig(run=str(tmp_path), port=0, poll_seconds=0.5)) as server:
        with httpx.Client(base_url=server.url, timeout=10) as client:
            state = client.get("/api/state").json()
            assert state["headline"]["episodes"] == 40 and state["poll_seconds"] == 0.5
            assert client.get("/api/state").headers["cache-control"] == "no-store"
            series = client.get("/api/series").json()
            assert series["revision"] == state["revision"]
            page = client.get("/")
            assert page.status_code == 200 and 'data-testid="robots-table"' in page.text
            for asset in ("uPlot.iife.min.js", "uPlot.min.css", "dashboard.js", "dashboard.css", "uPlot.LICENSE"):
                assert client.get(f"/static/{asset}").status_code == 200, asset
            run.episode("robot-000", "reach-v3", 2, True, ended_at=T0 + 99)
            assert client.get("/api/state").json()["headline"]["episodes"] == 41


def test_config_is_validated():
    with pytest.raises(ValueError, match="--port"):
        DashboardConfig(port=70000)
    with pytest.raises(ValueError, match="--window"):
        DashboardConfig(window=0)
    assert DashboardConfig().host == "127.0.0.1"


def test_reader_follows_a_log_line_by_line(tmp_path):
    """A line being written is taken once complete; a log replaced (or cut shorter than
    what was read) is read again from the start."""
    run = build_gated_run(tmp_path, T0)  # episodes.jsonl ends in a torn line
    reader = RunReader(tmp_path)
    assert len(reader.read().episodes) == 40
    record = run.episode("robot-001", "push-v3", 2, True, ended_at=T0 + 99)  # cuts the torn line first
    line = json.dumps({**record, "episode_id": "robot-001/late"})
    with open(tmp_path / "episodes.jsonl", "a") as handle:
        handle.write(line[:25])
        handle.flush()
        assert [e["episode_id"] for e in reader.read().episodes[-1:]] == [record["episode_id"]]
        handle.write(line[25:] + "\n")
    assert reader.read().episodes[-1]["episode_id"] == "robot-001/late" and reader.read().problems == ()
    fresh = tmp_path / "episodes.new"
    fresh.write_text(line + "\n")
    os.replace(fresh, tmp_path / "episodes.jsonl")
    assert [e["episode_id"] for e in reader.read().episodes] == ["robot-001/late"]
