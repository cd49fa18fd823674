"""`lwd deploy --fleet gateway`: learner + gateway + `lwd robot` processes on loopback only."""

import os
import signal
from collections import defaultdict

import pytest

from lwd.data.store import EpisodeStore
from lwd.fleet.online import DeployConfig, deploy
from tests.conftest import tiny_deploy_config
from tools.chaos import alive
from tools.chaos import children as child_processes

pytestmark = pytest.mark.slow  # real deploy runs with a gateway and robot processes

TASKS = ("reach-v3", "drawer-close-v3")


def _config(tiny_pipeline, out, env_steps: int, **overrides) -> DeployConfig:
    _, store, _, _, offline = tiny_pipeline
    return tiny_deploy_config(store, offline, out, env_steps, fleet="gateway", **overrides)


def _episodes(out):
    store = EpisodeStore(out / "online_store", create=False)
    return store, [store.load(record) for record in store.records()]


def _spooled(out) -> int:
    return sum(1 for _ in (out / "robot_spools").glob("worker-*/pending/**/*.safetensors"))


def _robot_log_tails(out) -> str:
    """The end of each robot process's log, to say why a spool did not drain."""
    return "\n".join(
        "\n".join(log.read_text(errors="replace").splitlines()[-20:]) for log in sorted(out.glob("robot-worker-*.log"))
    )


def _assert_exactly_once(out) -> list:
    store, episodes = _episodes(out)
    by_robot = defaultdict(list)
    for episode in episodes:
        by_robot[episode.robot_id].append(episode.seq)
    for robot, seqs in by_robot.items():  # nothing lost, nothing twice
        assert sorted(seqs) == list(range(len(seqs))), robot
    report = store.check()
    assert not report.missing and not report.corrupt and not report.orphans
    return episodes


def test_robots_reach_the_learner_only_through_the_gateway(tiny_pipeline, tmp_path):
    out = tmp_path / "run"
    summary = deploy(_config(tiny_pipeline, out, 3_000))
    episodes = _assert_exactly_once(out)
    assert summary["env_steps"] >= 3_000 and _spooled(out) == 0
    assert {e.robot_id for e in episodes} == {f"robot-{i:03d}" for i in range(4)}
    for episode in episodes:  # a version is picked up at an episode boundary only
        assert len(set(episode.policy_version.tolist())) == 1
    first, last = min(episodes, key=lambda e: e.started_at), max(episodes, key=lambda e: e.started_at)
    assert last.policy_version[0] > first.policy_version[0]  # robots moved to newer versions
    assert any(e.intervention.any() for e in episodes)  # the operator's takeovers are recorded
    assert summary["latency/episode_to_learner_p99_s"] > 0 and summary["latency/model_to_robot_p99_s"] > 0
    assert (out / "gateway" / "gateway.log").exists() and sorted(p.name for p in (out / "robots").iterdir()) == [
        "worker-0.json",
        "worker-1.json",
    ]
    assert not [pid for pid in child_processes(os.getpid(), b"lwd.") if alive(pid)]  # gateway and robots are gone


def test_a_killed_gateway_and_a_killed_robot_process_lose_nothing(tiny_pipeline, tmp_path):
    out, killed = tmp_path / "run", {}

    def kill_once(state):
        fleet = state.fleet
        if "gateway" not in killed and state.env_steps > 800:
            killed["gateway"] = fleet.gateway.process.pid
            os.kill(fleet.gateway.process.pid, signal.SIGKILL)  # uploads spool meanwhile
        elif "gateway" in killed and "robot" not in killed and state.env_steps > 2_000:
            killed["robot"] = fleet.processes[0].pid
            os.kill(fleet.processes[0].pid, signal.SIGKILL)  # mid-episode or mid-upload

    summary = deploy(_config(tiny_pipeline, out, 5_000), on_tick=kill_once)
    assert set(killed) == {"gateway", "robot"} and summary["worker_restarts"] >= 2
    assert summary["env_steps"] >= 5_000  # the run finished its budget
    _assert_exactly_once(out)
    assert _spooled(out) == 0, _robot_log_tails(out)  # everything spooled was delivered
    assert not [pid for pid in child_processes(os.getpid(), b"lwd.") if alive(pid)]


def test_a_robot_process_stopped_while_it_restarts_still_drains_its_spool(tiny_pipeline, tmp_path):
    out, seen = tmp_path / "run", {}

    def kill_near_the_end(state):
        seen["fleet"] = state.fleet
        if "robot" not in seen and state.env_steps > 900:  # the budget (1,500) ends while it restarts
            seen["robot"] = state.fleet.processes[0].pid
            os.kill(seen["robot"], signal.SIGKILL)

    summary = deploy(_config(tiny_pipeline, out, 1_500), on_tick=kill_near_the_end)
    assert "robot" in seen and summary["worker_restarts"] >= 1
    assert [p.returncode for p in seen["fleet"].processes] == [0, 0]  # stopped by SIGTERM, cleanly
    _assert_exactly_once(out)
    assert _spooled(out) == 0, _robot_log_tails(out)
