"""Learning while deploying, end to end on real Meta-World with tiny networks: versions
are published and picked up at episode boundaries, a killed robot worker is restarted
without losing or duplicating episodes, SIGTERM stops cleanly, and a run resumes."""

import json
import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from dataclasses import replace

import pytest

from lwd.data.lease import RunLeaseError
from lwd.data.store import EpisodeStore
from lwd.fleet.online import DeployConfig, deploy
from lwd.fleet.registry import PolicyRegistry
from lwd.fleet.worker import FleetConfig
from tests.conftest import tiny_deploy_config
from tools.chaos import alive
from tools.chaos import children as child_processes

pytestmark = pytest.mark.slow  # a real pipeline: `make test-fast` skips it

TASKS = ("reach-v3", "drawer-close-v3")


def _config(tiny_pipeline, out, env_steps=4_000, **overrides):
    _, store, _, _, offline = tiny_pipeline
    return tiny_deploy_config(store, offline, out, env_steps, **overrides)


def _deploy_command(config: DeployConfig) -> list[str]:
    """`lwd deploy` in a process of its own, with the settings of `_config`."""
    settings = {
        "--checkpoint": config.checkpoint,
        "--offline-store": config.offline_store,
        "--out": config.out,
        "--robots.robots-per-worker": "2",
        "--env-steps": str(config.env_steps),
        "--n-sync": "5",
        "--batch-size": "32",
        "--lwd.qam-batch": "8",
        "--refresh-seconds": "0.2",
        "--checkpoint-every": "20",
    }
    args = [sys.executable, "-m", "lwd.cli", "deploy", "--robots.tasks", *TASKS, "--no-progress", "--no-tensorboard"]
    return args + [item for pair in settings.items() for item in pair]


def _episodes(out):
    store = EpisodeStore(out / "online_store", create=False)
    return [store.load(record) for record in store.records()]


@pytest.fixture(scope="module")
def crashed_run(tiny_pipeline, tmp_path_factory):
    out = tmp_path_factory.mktemp("deploy") / "run"
    killed = {}

    def kill_a_worker_once(state):
        if not killed and state.env_steps >= 800:
            process = state.fleet.processes[0]
            killed["pid"] = process.pid
            os.kill(process.pid, signal.SIGKILL)  # mid-episode: its current episodes never commit

    summary = deploy(_config(tiny_pipeline, out, 4_000), on_tick=kill_a_worker_once)
    return out, summary, killed


def test_several_versions_are_published_and_robots_switch_only_at_episode_boundaries(crashed_run):
    out, summary, _ = crashed_run
    history = PolicyRegistry(out / "registry").history()
    assert len(history) >= 3 and summary["latest_version"] == history[-1].version
    by_robot = defaultdict(list)
    for episode in _episodes(out):
        versions = set(episode.policy_version.tolist())
        assert len(versions) == 1, f"{episode.episode_id} changed policy mid-episode: {versions}"
        by_robot[episode.robot_id].append((episode.seq, versions.pop()))
    switched = 0
    for robot, runs in by_robot.items():
        runs.sort()
        versions = [v for _, v in runs]
        assert versions == sorted(versions), f"{robot} went back to an older version"
        switched += len(set(versions)) > 1
    assert switched >= 1


def test_a_killed_worker_is_restarted_and_no_episode_is_lost_or_duplicated(crashed_run):
    out, summary, killed = crashed_run
    assert killed and summary["worker_restarts"] >= 1
    episodes = _episodes(out)
    by_robot = defaultdict(list)
    for episode in episodes:
        by_robot[episode.robot_id].append(episode.seq)
    assert len(by_robot) == 4
    for robot, seqs in by_robot.items():  # every robot's episodes are 0..n-1 exactly once
        assert sorted(seqs) == list(range(len(seqs))), robot
    seeds = [(e.robot_id, e.seed) for e in episodes]
    assert len(seeds) == len(set(seeds))
    report = EpisodeStore(out / "online_store").check()
    assert not report.missing and not report.corrupt
    logged = [json.loads(line)["episode_id"] for line in (out / "episodes.jsonl").read_text().splitlines()]
    assert sorted(logged) == sorted(e.episode_id for e in episodes)


def test_operator_interventions_are_flagged(crashed_run):
    episodes = _episodes(crashed_run[0])
    intervened = [e for e in episodes if e.intervention.any()]
    assert intervened, "the tiny SFT policy should need the operator somewhere"
    assert all(e.source == "rollout" for e in episodes)


def test_metrics_cover_fleet_learner_latency_and_staleness(crashed_run):
    out, summary, _ = crashed_run
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    keys = set().union(*records)
    for key in (
        "fleet/env_steps_per_s",
        "fleet/autonomous_success",
        "fleet/intervention_rate",
        "fleet/cycle_time_steps",
        "learner/updates_per_s",
        "latency/episode_to_learner_p99_s",
        "latency/model_to_robot_p99_s",
        "staleness/learner_steps",
        "success/reach-v3",
        "registry/version",
        "fleet/stage_score",
    ):
        assert key in keys, key
    assert summary["env_steps"] >= 4_000 and summary["final"]


def test_the_episode_log_keeps_each_episodes_outcome_and_stage_score(crashed_run):
    out = crashed_run[0]
    logged = {row["episode_id"]: row for row in map(json.loads, (out / "episodes.jsonl").read_text().splitlines())}
    for episode in _episodes(out):
        row = logged[episode.episode_id]
        assert (row["success"], row["stage_score"], row["steps"]) == (
            episode.success,
            episode.stage_score,
            episode.num_steps,
        )


def test_sigterm_stops_cleanly_and_the_run_resumes(tiny_pipeline, tmp_path):
    out = tmp_path / "run"
    config = _config(tiny_pipeline, out, 1_000_000)
    args = _deploy_command(config)
    process = subprocess.Popen(args)
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            time.sleep(1)
            if (out / "online_store").exists() and len(EpisodeStore(out / "online_store").records()) >= 6:
                break
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=120) == 130
    finally:
        process.kill()
    last = json.loads((out / "learner" / "last" / "manifest.json").read_text())
    stopped_at = last["extras"]["online"]["step"]
    committed = len(_episodes(out))
    assert committed >= 6 and not (out / "learner" / "final").exists()
    summary = deploy(_config(tiny_pipeline, out, 1))  # budget already spent: finish at once from the saved state
    assert summary["learner_steps"] == stopped_at and summary["final"]
    assert len(_episodes(out)) >= committed
    again = deploy(_config(tiny_pipeline, out, 1))  # a finished run is reused, not re-run
    assert again == summary


def test_the_learner_killed_with_sigkill_takes_its_workers_with_it_and_the_run_resumes(tiny_pipeline, tmp_path):
    out = tmp_path / "run"
    config = _config(tiny_pipeline, out, 3_000)
    args = _deploy_command(config)
    process = subprocess.Popen(args)
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            time.sleep(0.5)
            if (out / "online_store").exists() and len(EpisodeStore(out / "online_store").records()) >= 4:
                break
        children = child_processes(process.pid)
        assert len(children) >= 2  # the robot workers (and multiprocessing's resource tracker)
        process.kill()
        process.wait(10)
    finally:
        process.kill()
    time.sleep(10)
    assert [pid for pid in children if alive(pid)] == []
    committed = len(_episodes(out))
    summary = deploy(config)  # the same command again: resumes and spends the rest of the budget
    assert summary["env_steps"] >= 3_000 and summary["final"] and summary["worker_restarts"] == 0
    episodes = _episodes(out)
    assert len(episodes) >= committed
    by_robot = defaultdict(list)
    for episode in episodes:
        by_robot[episode.robot_id].append(episode.seq)
    for robot, seqs in by_robot.items():  # nothing interleaved, lost or twice
        assert sorted(seqs) == list(range(len(seqs))), robot
    report = EpisodeStore(out / "online_store").check()
    assert not report.missing and not report.corrupt and not report.unexpected
    # A writer killed between rename and catalogue commit leaves crash debris by design (an
    # invisible orphan `check(repair=True)` removes); it may only belong to an episode the
    # resumed run committed again.
    committed_ids = {(e.robot_id, e.seq) for e in episodes}
    for orphan in report.orphans:  # episodes/<robot>/<seq>-<digest>.safetensors
        _, robot, name = orphan.split("/")
        assert (robot, int(name.split("-")[0])) in committed_ids, orphan


def test_a_second_deploy_on_a_live_run_is_refused_and_the_run_finishes_intact(tiny_pipeline, tmp_path):
    out = tmp_path / "run"
    config = _config(tiny_pipeline, out, 3_000)
    process = subprocess.Popen(_deploy_command(config))
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not (out / "learner" / "last" / "manifest.json").exists():
            time.sleep(0.5)
        assert (out / "learner" / "last" / "manifest.json").exists()  # the live run has a checkpoint to resume from
        log_lines = len((out / "metrics.jsonl").read_text().splitlines()) if (out / "metrics.jsonl").exists() else 0
        with pytest.raises(RunLeaseError, match=f"pid {process.pid} "):
            deploy(config)  # the same command again while the first still runs
        assert process.wait(timeout=180) == 0
    finally:
        process.kill()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["reason"] == "budget" and summary["worker_restarts"] == 0
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(steps) >= log_lines and steps == sorted(steps)  # one learner's log: no second learner's lines
    by_robot = defaultdict(list)
    for episode in _episodes(out):
        by_robot[episode.robot_id].append(episode.seq)
    for robot, seqs in by_robot.items():
        assert sorted(seqs) == list(range(len(seqs))), robot


def _baseline_config(tiny_pipeline, out, method, **overrides):
    _, store, sft, _, _ = tiny_pipeline
    robots = FleetConfig(tasks=TASKS, workers=1, robots_per_worker=2)
    env_steps = overrides.pop("env_steps", 1_200)
    return tiny_deploy_config(store, sft, out, env_steps, robots=robots, method=method, **overrides)


def test_hg_dagger_learns_on_the_same_fleet_from_sft(tiny_pipeline, tmp_path):
    import torch

    from lwd.policy.checkpoint import load_checkpoint

    summary = deploy(_baseline_config(tiny_pipeline, tmp_path / "dagger", "hg-dagger"))
    assert summary["env_steps"] >= 1_200 and summary["versions_published"] >= 3
    sft_policy, _, _ = load_checkpoint(tiny_pipeline[2])
    final_policy, _, manifest = load_checkpoint(summary["final"])
    assert manifest.extras["online"]["method"] == "hg-dagger"
    changed = [
        not torch.equal(a, b)
        for a, b in zip(sft_policy.velocity_net.parameters(), final_policy.velocity_net.parameters())
    ]
    unchanged_encoder = all(
        torch.equal(a, b)
        for a, b in zip(sft_policy.state_encoder.parameters(), final_policy.state_encoder.parameters())
    )
    assert any(changed) and unchanged_encoder


def test_recap_runs_its_offline_stage_first_and_deploys_with_the_positive_indicator(tiny_pipeline, tmp_path):
    import numpy as np

    from lwd.algorithms.recap import conditioned
    from lwd.policy.checkpoint import load_checkpoint

    out = tmp_path / "recap"
    summary = deploy(_baseline_config(tiny_pipeline, out, "recap", offline_steps=12))
    history = PolicyRegistry(out / "registry").history()
    after_offline = next(p for p in history if p.learner_step == 12)
    assert min(int(e.policy_version.min()) for e in _episodes(out)) >= after_offline.version
    _, encoder, manifest = load_checkpoint(summary["final"])
    instruction = "Move your hand to the goal position."
    np.testing.assert_array_equal(
        encoder.embed([instruction])[0], encoder.with_prompt(None).embed([conditioned(instruction, True)])[0]
    )
    state = manifest.extras["online"]["method_state"]
    assert sorted(state["tasks"]) == sorted(TASKS) and all(state["thresholds_seen"])
    _, last_encoder, _ = load_checkpoint(out / "learner" / "last")
    assert last_encoder.prompt is None  # training resumes on plain instructions


def test_lwd_online_trains_its_prior_on_imitable_batches_of_its_own(tiny_pipeline, tmp_path):
    out = tmp_path / "run"
    config = _config(tiny_pipeline, out, env_steps=1_200, robots=FleetConfig(tasks=TASKS, workers=1))
    assert config.lwd.prior == "learned" and config.lwd.prior_data == "hg-dagger"  # the online defaults
    summary = deploy(config)
    assert summary["env_steps"] >= 1_200 and summary["learner_steps"] > 0
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    fractions = [r["prior/imitated_fraction"] for r in records if "prior/imitated_fraction" in r]
    assert fractions and all(f == 1.0 for f in fractions)  # every row of the prior's batch is imitable


def test_with_policy_ema_lwd_online_deploys_the_average_and_saves_the_trained_policy_with_the_learner(
    tiny_pipeline, tmp_path
):
    from lwd.training.online_methods import MethodSettings, start_method

    config = _config(tiny_pipeline, tmp_path / "run")
    settings = MethodSettings(replace(config.lwd, policy_ema=0.05), config.hg_dagger, config.recap)
    method = start_method("lwd", config.checkpoint, settings)
    # What the loop publishes and saves as the policy (`method.policy`) is the average; the network QAM
    # trains is saved among the learner modules, so a resumed run gets both back.
    assert method.policy is method.learner.policy_average is method.learner.deployed_policy
    assert method.modules()["trained_policy"] is method.learner.policy is not method.policy


def test_a_run_cannot_be_resumed_with_another_method(tiny_pipeline, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        deploy(
            _baseline_config(tiny_pipeline, out, "hg-dagger", env_steps=100_000),
            on_tick=lambda state: (_ for _ in ()).throw(KeyboardInterrupt) if state.learner_step >= 5 else None,
        )
    with pytest.raises(ValueError, match="hg-dagger"):
        deploy(_baseline_config(tiny_pipeline, out, "recap"))


@pytest.mark.parametrize(("method", "pace"), [("lwd", 100.0), ("hg-dagger", 10.0)])
def test_pacing_gives_the_learner_its_updates_per_env_step_whatever_its_speed(tiny_pipeline, tmp_path, method, pace):
    # 100 updates per 1,000 env steps is more than the learner keeps up with: the robots are held
    # back. 10 is far fewer than the baseline's fast learner would make: it waits for data.
    # Either way the run ends with the updates its env steps are worth.
    overrides = dict(env_steps=2_000, updates_per_1k_env_steps=pace)
    config = (
        _config(tiny_pipeline, tmp_path / "run", **overrides)
        if method == "lwd"
        else _baseline_config(tiny_pipeline, tmp_path / "run", method, **overrides)
    )
    held_before_the_budget = []

    def watch(state):
        if state.fleet.holding and state.env_steps < config.env_steps:
            held_before_the_budget.append(state.learner_step)

    summary = deploy(config, on_tick=watch)
    assert summary["env_steps"] >= 2_000
    assert bool(held_before_the_budget) == (method == "lwd")  # only the learner that falls behind holds robots
    assert 2_000 * pace / 1000 <= summary["learner_steps"] <= summary["env_steps"] * pace / 1000 + 1
    assert summary["learner_updates_per_1k_env_steps"] == pytest.approx(
        1000 * summary["learner_steps"] / summary["env_steps"]
    )


def test_a_negative_pace_is_refused(tiny_pipeline, tmp_path):
    with pytest.raises(ValueError, match="updates_per_1k_env_steps"):
        _config(tiny_pipeline, tmp_path / "run", 100, updates_per_1k_env_steps=-1.0)


@pytest.mark.parametrize(
    ("method", "n_step", "expected"), [("lwd", 0, 4), ("recap", 0, 1), ("lwd", 1, 1), ("recap", 3, 3)]
)
def test_n_step_zero_means_the_methods_default_and_any_other_value_is_kept(
    tiny_pipeline, tmp_path, method, n_step, expected
):
    config = _config(tiny_pipeline, tmp_path / "run", 100, method=method, n_step=n_step)
    assert config.resolved_n_step() == expected


@pytest.mark.parametrize(
    ("method", "fraction", "expected"),
    [("lwd", 0.0, 0.75), ("hg-dagger", 0.0, 0.75), ("recap", 0.0, 0.5), ("lwd", 0.5, 0.5), ("recap", 0.25, 0.25)],
)
def test_online_fraction_zero_means_the_methods_default_and_any_other_value_is_kept(
    tiny_pipeline, tmp_path, method, fraction, expected
):
    config = _config(tiny_pipeline, tmp_path / "run", 100, method=method, online_fraction=fraction)
    assert config.resolved_online_fraction() == expected


@pytest.mark.parametrize("fraction", [-0.1, 1.0])
def test_an_online_fraction_outside_zero_to_one_is_refused(tiny_pipeline, tmp_path, fraction):
    with pytest.raises(ValueError, match="online_fraction"):
        _config(tiny_pipeline, tmp_path / "run", 100, online_fraction=fraction)


def test_a_negative_n_step_is_refused(tiny_pipeline, tmp_path):
    with pytest.raises(ValueError, match="n_step"):
        _config(tiny_pipeline, tmp_path / "run", 100, n_step=-1)


def test_a_stage_reward_outside_zero_to_one_is_refused_before_anything_loads(tmp_path):
    with pytest.raises(ValueError, match="stage_reward"):
        DeployConfig(checkpoint=str(tmp_path / "missing"), out=str(tmp_path / "run"), stage_reward=1.5)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"online_recent_fraction": 1.5}, "online_recent_fraction"),
        ({"online_recent_fraction": 0.5, "online_recent_steps": 0}, "online_recent_steps"),
        ({"online_recent_fraction": 0.5, "method": "hg-dagger"}, "hg-dagger"),
    ],
)
def test_impossible_recency_settings_are_refused_before_anything_runs(settings, message):
    with pytest.raises(ValueError, match=message):
        DeployConfig(**settings)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"prior_corrections": "some"}, "prior_corrections"),
        ({"prior_corrections": "completed", "method": "hg-dagger"}, "lwd"),
    ],
)
def test_impossible_prior_corrections_are_refused_before_anything_runs(settings, message):
    with pytest.raises(ValueError, match=message):
        DeployConfig(**settings)


def test_offline_and_online_training_run_on_the_rest_of_a_repaired_store(tiny_pipeline, tmp_path):
    import shutil

    from lwd.training.offline import train_offline
    from tests.conftest import tiny_offline_config

    root, store_path, sft, _, offline = tiny_pipeline
    damaged = tmp_path / "store"
    shutil.copytree(store_path, damaged)
    store = EpisodeStore(damaged, create=False)
    truncated, flipped, missing = (damaged / record.path for record in store.records()[:3])
    truncated.write_bytes(truncated.read_bytes()[:100])
    data = bytearray(flipped.read_bytes())
    data[len(data) // 2] ^= 0xFF
    flipped.write_bytes(bytes(data))
    missing.unlink()
    total = len(store.records())
    report = store.check(repair=True)
    assert len(report.quarantined_now) == 3 and len(store.records()) == total - 3
    final = train_offline(tiny_offline_config(damaged, sft, tmp_path / "rl", steps=4))
    assert (final / "manifest.json").exists()
    config = replace(_config(tiny_pipeline, tmp_path / "run", 600), offline_store=str(damaged))
    summary = deploy(config)
    assert summary["env_steps"] >= 600 and summary["final"]
