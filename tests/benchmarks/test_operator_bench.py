"""`lwd bench operator`: per-task takeover and success of a fixed policy under the fleet's gate."""

import json

from lwd.benchmarks import OperatorBenchConfig, run_operator_bench
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
    assert set(report["per_task"]) == set(TASKS) and report["episodes"] >= 6


def test_an_operator_who_objects_to_everything_takes_over_in_every_episode(tiny_pipeline, tmp_path):
    report = _run(tiny_pipeline, tmp_path, deviation_threshold=0.0, deviation_steps=1)
    assert all(row["takeover"] == 1.0 and row["autonomous_success"] == 0.0 for row in report["per_task"].values())
    assert report["takeover"] == 1.0
    assert json.loads((tmp_path / "operator.json").read_text())["per_task"] == report["per_task"]


def test_a_bench_without_episodes_is_refused(tiny_pipeline):
    import pytest

    with pytest.raises(ValueError, match="episodes"):
        OperatorBenchConfig(checkpoint=tiny_pipeline[4], episodes=0)
