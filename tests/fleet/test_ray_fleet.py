"""The fleet on Ray (`lwd deploy --fleet ray`), on a local 3-node Ray cluster.

Ray binds the machine's network interface even when told 127.0.0.1, so the cluster tests run
in a private network namespace whose only interface is loopback: run from an ordinary shell,
`test_the_cluster_tests_in_a_private_network_namespace` re-runs this file inside one
(`tools/netns-run`, which needs root or unprivileged user namespaces) and passes when
everything inside passed. Run inside one directly (`tools/netns-run .venv/bin/python -m
pytest tests/fleet/test_ray_fleet.py`), the cluster tests run in this process.

Without the `ray` extra every test here is skipped, with that reason.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import pytest

ray = pytest.importorskip("ray", reason="the `ray` extra is not installed (pip install -e '.[ray]')")

from lwd.data.episode import encode  # noqa: E402
from lwd.data.lease import RobotLease, RobotLeaseError  # noqa: E402
from lwd.data.store import EpisodeStore  # noqa: E402
from lwd.fleet.online import DeployConfig, deploy  # noqa: E402
from lwd.fleet.ray_fleet import IngestActor  # noqa: E402
from lwd.fleet.registry import PolicyRegistry  # noqa: E402
from lwd.fleet.worker import FleetConfig  # noqa: E402
from tests.conftest import make_episode, tiny_deploy_config  # noqa: E402
from tools.chaos import alive  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
TASKS = ("reach-v3", "drawer-close-v3")
NODES = 3


def _loopback_only() -> bool:
    """Whether this process's network namespace has no interface but loopback (/proc/net/dev
    is per namespace; /sys/class/net shows the namespace sysfs was mounted in)."""
    lines = Path("/proc/net/dev").read_text().splitlines()[2:]
    return {line.split(":")[0].strip() for line in lines} <= {"lo"}


in_namespace = pytest.mark.skipif(
    not _loopback_only(),
    reason="needs a loopback-only network namespace; run through test_the_cluster_tests_in_a_private_network_namespace",
)

# -- the ingest actor's rules, without a cluster --------------------------------------------


def _ingest(tmp_path, owners=None) -> IngestActor:
    registry = PolicyRegistry(tmp_path / "registry")
    return IngestActor(str(tmp_path / "store"), str(registry.root), owners or {"robot-000": 0, "robot-001": 1})


async def _append(ingest: IngestActor, data: bytes, slot: int, token: int) -> dict:
    """One episode through `append_batch`, the caller holding `token` for every robot."""
    return (await ingest.append_batch([data], slot, dict.fromkeys(ingest.owners, token)))[0]


def test_a_robot_is_leased_to_its_slot_and_a_stale_incarnation_cannot_commit(tmp_path):
    async def scenario():
        ingest = _ingest(tmp_path)
        assert (await ingest.lease("robot-000", 1, 0.0))["error"] == "lease"  # robot-000 belongs to slot 0
        first = (await ingest.lease("robot-000", 0, 0.0))["token"]
        data, _ = encode(make_episode("robot-000", 0, source="rollout", version=3))
        receipt = await _append(ingest, data, 0, first)
        assert receipt["episode_id"].startswith("robot-000/") and not receipt["duplicate"]
        second = (await ingest.lease("robot-000", 0, 0.0))["token"]  # slot 0 restarted elsewhere
        assert second > first
        data, _ = encode(make_episode("robot-000", 1, source="rollout", version=3))
        stale = await _append(ingest, data, 0, first)
        assert stale["error"] == "lease" and "stale" in stale["message"]
        assert (await _append(ingest, data, 0, second))["snapshot"] > receipt["snapshot"]
        again = await _append(ingest, data, 0, second)  # an at-least-once retry
        assert again["duplicate"] and await ingest.committed_ids("robot-000") == [0, 1]
        await ingest.close()

    asyncio.run(scenario())


def test_episodes_that_fail_validation_or_conflict_are_refused_with_the_reason(tmp_path):
    async def scenario():
        ingest = _ingest(tmp_path)
        token = (await ingest.lease("robot-000", 0, 0.0))["token"]
        assert (await _append(ingest, b"not an episode", 0, token))["error"] == "invalid"
        data, _ = encode(make_episode("robot-000", 0, source="rollout", rng_seed=1))
        assert "episode_id" in await _append(ingest, data, 0, token)
        other, _ = encode(make_episode("robot-000", 0, source="rollout", rng_seed=2))
        assert (await _append(ingest, other, 0, token))["error"] == "conflict"
        await ingest.close()

    asyncio.run(scenario())


def test_a_batch_commits_in_one_snapshot_and_an_invalid_episode_refuses_only_itself(tmp_path):
    async def scenario():
        ingest = _ingest(tmp_path)
        tokens = {"robot-000": (await ingest.lease("robot-000", 0, 0.0))["token"]}
        datas = [encode(make_episode("robot-000", k, source="rollout"))[0] for k in range(3)]
        replies = await ingest.append_batch([datas[0], b"not an episode", datas[1], datas[2]], 0, tokens)
        assert replies[1]["error"] == "invalid"
        assert len({replies[i]["snapshot"] for i in (0, 2, 3)}) == 1  # one transaction, in order
        assert await ingest.committed_ids("robot-000") == [0, 1, 2]
        stale = await ingest.append_batch(datas[:1], 0, {"robot-000": tokens["robot-000"] - 1})
        assert stale[0]["error"] == "lease"
        await ingest.close()

    asyncio.run(scenario())


def test_the_store_lease_keeps_another_run_off_the_robots_until_the_ingest_lets_go(tmp_path):
    async def scenario():
        ingest = _ingest(tmp_path)
        await ingest.lease("robot-000", 0, 0.0)
        with pytest.raises(RobotLeaseError):  # another deploy on the same store (local, gateway or Ray)
            RobotLease(tmp_path / "store" / "leases", "robot-000")
        restarted = _ingest(tmp_path)  # e.g. a second ingest actor: refused at its first claim
        assert (await restarted.lease("robot-000", 0, 0.0))["error"] == "lease"
        await ingest.close()
        assert "token" in await restarted.lease("robot-000", 0, 0.0)
        await restarted.close()

    asyncio.run(scenario())


def test_an_ingest_that_restarted_accepts_the_live_incarnations_token(tmp_path):
    async def scenario():
        ingest = _ingest(tmp_path)
        token = (await ingest.lease("robot-001", 1, 0.0))["token"]
        await ingest.close()  # the actor died; Ray restarts it with empty state
        restarted = _ingest(tmp_path)
        data, _ = encode(make_episode("robot-001", 0, source="rollout"))
        assert "episode_id" in await _append(restarted, data, 1, token)
        data, _ = encode(make_episode("robot-001", 1, source="rollout"))
        assert (await _append(restarted, data, 1, token - 1))["error"] == "lease"
        await restarted.close()

    asyncio.run(scenario())


def test_the_embedded_default_never_imports_ray():
    code = (
        "import sys, lwd.cli, lwd.fleet.online, lwd.fleet.fleet, lwd.recipes.demo, lwd.benchmarks.fleet; "
        "from lwd.fleet.online import make_fleet; "
        "print('ray' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


# -- a local 3-node cluster ------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.skipif(
    _loopback_only() or "LWD_TINY_PIPELINE" in os.environ,
    reason="already in a private network namespace: the cluster tests run here",
)
def test_the_cluster_tests_in_a_private_network_namespace(tiny_pipeline, tmp_path):
    netns = [str(ROOT / "tools" / "netns-run")]
    probe = subprocess.run([*netns, "true"], capture_output=True, text=True, timeout=30)
    if probe.returncode != 0:
        pytest.skip(f"no private network namespace here (tools/netns-run: {probe.stderr.strip()[-300:]})")
    _, store, _, _, offline = tiny_pipeline
    env = {**os.environ, "LWD_TINY_PIPELINE": json.dumps({"store": store, "offline": offline})}
    args = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", f"--basetemp={tmp_path / 'inner'}"]
    args += ["-m", "slow", str(Path(__file__).relative_to(ROOT))]
    result = subprocess.run([*netns, *args], capture_output=True, text=True, cwd=ROOT, env=env, timeout=1_200)
    assert result.returncode == 0, f"{result.stdout[-6000:]}\n{result.stderr[-3000:]}"
    assert " passed" in result.stdout and " failed" not in result.stdout


@pytest.fixture(scope="module")
def pipeline(request) -> tuple[str, str]:
    """(offline store, offline-RL checkpoint) of the tiny pipeline, or the one the outer test built."""
    given = os.environ.get("LWD_TINY_PIPELINE")
    if given:
        paths = json.loads(given)
        return paths["store"], paths["offline"]
    _, store, _, _, offline = request.getfixturevalue("tiny_pipeline")
    return store, offline


@pytest.fixture(scope="module")
def cluster():
    from tools.ray_cluster import start_cluster

    nodes = start_cluster(NODES, cpus_per_node=1.0)
    try:
        ray.init(address=nodes.address, include_dashboard=False, logging_level="WARNING")
        nodes.wait_for_nodes()
        yield nodes
    finally:
        ray.shutdown()
        nodes.shutdown()


def _config(pipeline, out, env_steps, address) -> DeployConfig:
    store, offline = pipeline
    robots = FleetConfig(tasks=TASKS, workers=NODES, robots_per_worker=2)
    return tiny_deploy_config(store, offline, out, env_steps, robots=robots, fleet="ray", ray_address=address)


def _episodes(out: Path):
    store = EpisodeStore(out / "online_store", create=False)
    return [store.load(record) for record in store.records()]


def _learner_step(out: Path) -> int:
    return json.loads((out / "learner" / "last" / "manifest.json").read_text())["extras"]["online"]["step"]


def _assert_nothing_lost_or_twice(out: Path, robots: int, crash_debris_allowed: bool = False) -> list:
    """Every robot's episodes committed once each; no damaged or unexpected files. With
    `crash_debris_allowed` (a killed ingest), an orphan file — written and renamed, the catalogue
    commit killed; by design invisible and removed by `check(repair=True)` — may remain, but only
    for an episode that was committed again after the restart."""
    episodes = _episodes(out)
    by_robot = defaultdict(list)
    for episode in episodes:
        by_robot[episode.robot_id].append(episode.seq)
    assert len(by_robot) == robots
    for robot, seqs in by_robot.items():  # every robot's episodes are 0..n-1 exactly once
        assert sorted(seqs) == list(range(len(seqs))), robot
    assert len({(e.robot_id, e.seed) for e in episodes}) == len(episodes)
    report = EpisodeStore(out / "online_store").check()
    assert not report.missing and not report.corrupt and not report.unexpected
    if crash_debris_allowed:
        committed = {(e.robot_id, e.seq) for e in episodes}
        for orphan in report.orphans:  # episodes/<robot>/<seq>-<digest>.safetensors
            _, robot, name = orphan.split("/")
            assert (robot, int(name.split("-")[0])) in committed, orphan
    else:
        assert not report.orphans
    return episodes


@pytest.fixture(scope="module")
def crashed_run(cluster, pipeline, tmp_path_factory):
    """A deploy on the cluster whose robot actor 0 is killed (-9) mid-episode once. The fleet
    is held until Ray has restarted it (a new actor process takes seconds to import torch and
    Meta-World; the other robots would spend the budget meanwhile), so that the restarted
    actor runs its robots' next episodes."""
    out = tmp_path_factory.mktemp("ray-deploy") / "run"
    seen: dict = {}

    def kill_robot_actor_once(state):
        if not seen and state.env_steps >= 800:
            status = state.fleet.status()
            seen["nodes"] = {actor["node_id"] for actor in status["actors"].values()}
            seen["pid"], seen["at"] = status["actors"][0]["pid"], time.time()
            os.kill(seen["pid"], signal.SIGKILL)  # its robots' current episodes never commit
            state.fleet.hold(True)
        elif seen and state.fleet.holding and time.time() - seen.get("checked", 0) > 0.5:
            seen["checked"] = time.time()
            if state.fleet.status()["incarnations"][0] >= 2 or time.time() - seen["at"] > 120:
                state.fleet.hold(False)

    # 5,000 env steps: after the restart the killed actor's robots must still finish an episode
    # (up to 500 steps each) before the other actors spend the budget; 3,000 was not always enough.
    summary = deploy(_config(pipeline, out, 5_000, cluster.address), on_tick=kill_robot_actor_once)
    return out, summary, seen


@ray.remote(num_cpus=0)
class _SlowIngest:
    """The ingest's poll, answering after `delay` seconds with the flags it was given."""

    def __init__(self, delay: float):
        self.delay, self.flags = delay, (False, False)

    def set_flags(self, stop: bool, hold: bool) -> None:
        self.flags = (stop, hold)

    async def poll(self, slot: int):
        await asyncio.sleep(self.delay)
        return (*self.flags, None)


@pytest.mark.slow
@in_namespace
def test_the_robots_poll_of_the_ingest_waits_only_for_its_first_reply(cluster):
    from lwd.fleet.ray_fleet import POLL_SECONDS, IngestPoll

    ingest = _SlowIngest.remote(delay=2.0)
    try:
        ray.get(ingest.set_flags.remote(False, True))
        poll = IngestPoll(ingest, slot=0)
        assert poll.holding()  # the first read waits: robots need the rollout to start
        ray.get(ingest.set_flags.remote(True, False))
        time.sleep(POLL_SECONDS)
        began = time.monotonic()
        sweeps = [(poll.stopping(), poll.holding()) for _ in range(20)]  # the next reply is on its way
        assert time.monotonic() - began < 1.0 and set(sweeps) == {(False, True)}
        deadline = time.monotonic() + 20
        while not poll.stopping():  # a later sweep picks the reply up
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert not poll.holding()
    finally:
        ray.kill(ingest)


@pytest.mark.slow
@in_namespace
def test_robots_stop_when_the_ingest_they_poll_is_gone(cluster):
    from lwd.fleet.ray_fleet import POLL_SECONDS, IngestPoll

    ingest = _SlowIngest.remote(delay=0.0)
    poll = IngestPoll(ingest, slot=0)
    assert not poll.stopping()
    ray.kill(ingest, no_restart=True)
    time.sleep(POLL_SECONDS)
    deadline = time.monotonic() + 20
    while not poll.stopping():
        assert time.monotonic() < deadline
        time.sleep(0.01)


def test_core_lists_are_read_as_taskset_writes_them_and_bad_ones_refused():
    import argparse

    from tools.ray_cluster import core_set

    first = min(os.sched_getaffinity(0))
    assert core_set(f"{first}") == {first}
    assert core_set(",".join(str(c) for c in sorted(os.sched_getaffinity(0)))) == os.sched_getaffinity(0)
    if {0, 1} <= os.sched_getaffinity(0):
        assert core_set("0-1") == {0, 1}
    for bad in ("1-0", "x", "", str(max(os.sched_getaffinity(0)) + 1000)):
        with pytest.raises(argparse.ArgumentTypeError):
            core_set(bad)


_AFFINITIES = """
import json, os, ray
ray.init("auto", logging_level="ERROR")
task = ray.remote(num_cpus=1)(lambda: sorted(os.sched_getaffinity(0))).remote()
print(json.dumps({"robot_node_worker": ray.get(task), "command": sorted(os.sched_getaffinity(0))}))
"""


@pytest.mark.slow
@in_namespace
@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="pinning two nodes to their own cores needs two cores")
def test_a_pinned_cluster_runs_a_robot_nodes_workers_and_the_command_on_their_cores(tmp_path):
    # `tools/ray_cluster.py --node-cores`: a robot node that shares no core with the learner's,
    # as on separate machines (`make bench-ray-node`, docs/benchmarks.md). In a subprocess: a
    # second cluster would take over this test process's connection to the module's.
    head_core, robot_core = sorted(os.sched_getaffinity(0))[:2]
    script = tmp_path / "affinities.py"
    script.write_text(_AFFINITIES)
    result = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "ray_cluster.py"), "--nodes", "2", "--head-cpus", "0"]
        + ["--node-cores", str(head_core), str(robot_core), "--command-cores", str(robot_core)]
        + ["--", sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    assert seen == {"robot_node_worker": [robot_core], "command": [robot_core]}


@pytest.mark.slow
@in_namespace
def test_robot_actors_spread_over_the_nodes_and_a_killed_one_loses_and_repeats_nothing(crashed_run):
    out, summary, seen = crashed_run
    assert len(seen["nodes"]) == NODES  # SPREAD: one robot actor per node
    assert not alive(seen["pid"]) and summary["worker_restarts"] >= 1
    assert summary["env_steps"] >= 5_000 and summary["final"]
    episodes = _assert_nothing_lost_or_twice(out, NODES * 2)
    # robot actor 0 serves robot-000 and robot-003; its new incarnation ran them on
    resumed = [e for e in episodes if e.robot_id in ("robot-000", "robot-003") and e.started_at > seen["at"]]
    assert resumed
    logged = [json.loads(line)["episode_id"] for line in (out / "episodes.jsonl").read_text().splitlines()]
    assert sorted(logged) == sorted(e.episode_id for e in episodes)
    acknowledged = {line.split("\t")[0] for line in (out / "acknowledged_episodes.tsv").read_text().splitlines()}
    # Every receipt is in the store (a robot killed between commit and receipt leaves one unacknowledged).
    assert acknowledged <= {e.episode_id for e in episodes}


@pytest.mark.slow
@in_namespace
def test_robots_pick_up_new_versions_only_at_episode_boundaries(crashed_run):
    out, summary, _ = crashed_run
    assert len(PolicyRegistry(out / "registry").history()) >= 3
    by_robot = defaultdict(list)
    for episode in _episodes(out):
        versions = set(episode.policy_version.tolist())
        assert len(versions) == 1, f"{episode.episode_id} changed policy mid-episode: {versions}"
        by_robot[episode.robot_id].append((episode.seq, versions.pop()))
    switched = 0
    for robot, runs in by_robot.items():
        versions = [version for _, version in sorted(runs)]
        assert versions == sorted(versions), f"{robot} went back to an older version"
        switched += len(set(versions)) > 1
    assert switched >= 1


@pytest.mark.slow
@in_namespace
def test_interventions_are_recorded(crashed_run):
    episodes = _episodes(crashed_run[0])
    assert any(e.intervention.any() for e in episodes), "the tiny policy should need the operator somewhere"
    assert all(e.source == "rollout" for e in episodes)


@pytest.mark.slow
@in_namespace
def test_a_killed_learner_takes_its_robot_actors_with_it_and_the_run_resumes(cluster, pipeline, tmp_path):
    out = tmp_path / "run"
    config = _config(pipeline, out, 2_500, cluster.address)
    store, offline = pipeline
    args = [sys.executable, "-m", "lwd.cli", "deploy", "--fleet", "ray", "--ray-address", cluster.address]
    args += ["--checkpoint", offline, "--offline-store", store, "--out", str(out), "--robots.tasks", *TASKS]
    args += ["--robots.workers", str(NODES), "--robots.robots-per-worker", "2", "--env-steps", "2500"]
    args += ["--n-sync", "5", "--batch-size", "32", "--lwd.qam-batch", "8", "--refresh-seconds", "0.2"]
    args += ["--checkpoint-every", "20", "--no-progress", "--no-tensorboard"]
    learner = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 180
        while time.time() < deadline and learner.poll() is None:
            time.sleep(0.5)
            started = (out / "online_store").exists() and len(EpisodeStore(out / "online_store").records()) >= 4
            statuses = [json.loads(path.read_text()) for path in (out / "robots").glob("worker-*.json")]
            robot_pids = {status["pid"] for status in statuses}
            if started and (out / "learner" / "last" / "manifest.json").exists() and len(robot_pids) == NODES:
                break
        assert learner.poll() is None and len(robot_pids) == NODES
        learner.kill()
        learner.wait(10)
        killed_at = time.time()
    finally:
        learner.kill()
    deadline = time.time() + 30  # Ray kills a dead driver's actors
    while time.time() < deadline and any(alive(pid) for pid in robot_pids):
        time.sleep(0.5)
    assert not any(alive(pid) for pid in robot_pids)
    committed = len(_episodes(out))
    saved_step = _learner_step(out)
    # The same command again resumes from learner/last. On a loaded machine the last robot
    # actor can start so late that the killed run had spent its budget: then the resumed one
    # gets 1,000 env steps more than were made, so that it has learning left to resume.
    made = sum(e.num_steps for e in _episodes(out))
    if made >= config.env_steps - 500:
        config = dataclasses.replace(config, env_steps=made + 1_000)
    summary = deploy(config)
    assert summary["env_steps"] >= config.env_steps and summary["final"] and summary["worker_restarts"] == 0
    assert summary["learner_steps"] == _learner_step(out) > saved_step > 0
    resumed = [v.learner_step for v in PolicyRegistry(out / "registry").history() if v.published_at > killed_at]
    assert resumed and min(resumed) > saved_step  # it went on from where it was saved, not from step 0
    assert len(_assert_nothing_lost_or_twice(out, NODES * 2, crash_debris_allowed=True)) >= committed
