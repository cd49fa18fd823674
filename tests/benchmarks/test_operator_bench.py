"""`lwd bench operator`: per-task takeover and success of a fixed policy under the fleet's gate."""

import json

from lwd.benchmarks.operator import OperatorBenchConfig, run_operator_bench
from lwd.envs.operator import OperatorConfig
from lwd.fleet.worker import FleetConfig

TASKS = ("reach-v3", "drawer-close-v3")


def _run(tiny_pipeline, tmp_path, **gate):
    return run_operator_bench(
        OperatorBenchConfig(
            checkpoint=tiny_pipeline[4],
            episodes=6,
            out=str(tmp_path / "operator.json"),
            robots=FleetConfig(tasks=TASKS, robots_per_worker=2, operator=OperatorConfig(**gate)),
        )
    )


def test_an_operator_who_never_watches_never_takes_over(tiny_pipeline, tmp_path):
    report = _run(tiny_pipeline, tmp_path, attention=0.0)
    assert report["takeover"] == 0.0 and report["success"] == report["autonomous_success"]
    assert report["rescued"] is None  # nothing taken over, nothing rescued
    assert set(report["per_task"]) == set(TASKS) and report["episodes"] >= 6
    # no takeover: every episode is the policy alone, and none was unneeded
    for row in report["per_task"].values():
        assert row["policy_alone_success"] == row["success"] and row["unneeded_takeover"] == 0.0
        assert row["unneeded_share_of_takeovers"] is None
        assert row["needed_takeover_recall"] == (0.0 if row["policy_alone_failures"] else None)


def test_an_operator_who_objects_to_everything_takes_over_in_every_episode(tiny_pipeline, tmp_path):
    report = _run(tiny_pipeline, tmp_path, deviation_threshold=0.0, deviation_steps=1)
    assert all(row["takeover"] == 1.0 and row["autonomous_success"] == 0.0 for row in report["per_task"].values())
    assert report["takeover"] == 1.0
    assert all(row["rescued"] == row["success"] for row in report["per_task"].values())
    assert json.loads((tmp_path / "operator.json").read_text())["per_task"] == report["per_task"]
    # every episode taken over at its first step: the counterfactual ran in each, and a
    # takeover was unneeded exactly where the policy alone succeeded
    for row in report["per_task"].values():
        assert row["takeover_episodes"] == row["episodes"]
        assert row["unneeded_takeover"] == row["unneeded_share_of_takeovers"] == row["policy_alone_success"]
        assert row["needed_takeover_recall"] == (1.0 if row["policy_alone_failures"] else None)


def test_without_the_counterfactual_the_bench_reports_takeovers_only(tiny_pipeline, tmp_path):
    report = run_operator_bench(
        OperatorBenchConfig(
            checkpoint=tiny_pipeline[4],
            episodes=2,
            counterfactual=False,
            out=str(tmp_path / "operator.json"),
            robots=FleetConfig(tasks=TASKS[:1], robots_per_worker=1, operator=OperatorConfig(deviation_threshold=0.0)),
        )
    )
    assert "unneeded_takeover" not in report and "unneeded_takeover" not in report["per_task"][TASKS[0]]


def test_a_bench_without_episodes_is_refused(tiny_pipeline):
    import pytest

    with pytest.raises(ValueError, match="episodes"):
        OperatorBenchConfig(checkpoint=tiny_pipeline[4], episodes=0)


def test_the_gate_sweep_scores_each_gate_on_the_same_policy_alone_episodes(tiny_pipeline, tmp_path):
    from lwd.benchmarks.gates import GateSweepConfig, run_gate_sweep

    report = run_gate_sweep(
        GateSweepConfig(
            checkpoint=tiny_pipeline[4],
            episodes=4,
            deviation_thresholds=(0.0, 100.0),  # objects to everything / to nothing
            deviation_steps=(1,),
            stall_steps=(10**6,),
            stall_disagreements=(1.0,),
            out=str(tmp_path / "gates.json"),
            robots=FleetConfig(tasks=TASKS, robots_per_worker=2),
        )
    )
    eager, never = report["gates"]
    assert (eager["gate"]["deviation_threshold"], never["gate"]["deviation_threshold"]) == (0.0, 100.0)
    assert eager["takeover"] == 1.0 and never["takeover"] == 0.0 and never["unneeded_takeover"] == 0.0
    for task, row in eager["per_task"].items():
        assert row["unneeded_takeover"] == report["policy_alone_success"][task]
    assert len(report["episode_rows"]) == report["episodes"] >= 4
