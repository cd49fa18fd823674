"""`lwd bench operator`: per-task takeover and success of a fixed policy under the fleet's gate."""

import json

from lwd.evaluation.bench import OperatorBenchConfig, run_operator_bench

TASKS = ("reach-v3", "drawer-close-v3")


def _run(tiny_pipeline, tmp_path, **gate):
    return run_operator_bench(OperatorBenchConfig(checkpoint=tiny_pipeline[4], tasks=TASKS, robots_per_worker=2,
                                                  episodes=6, out=str(tmp_path / "operator.json"), **gate))


def test_an_operator_who_never_watches_never_takes_over(tiny_pipeline, tmp_path):
    report = _run(tiny_pipeline, tmp_path, operator_attention=0.0)
    assert report["takeover"] == 0.0 and report["success"] == report["autonomous_success"]
    assert set(report["per_task"]) == set(TASKS) and report["episodes"] >= 6


def test_success_without_takeover_never_exceeds_success_and_the_report_is_written(tiny_pipeline, tmp_path):
    report = _run(tiny_pipeline, tmp_path)
    for row in report["per_task"].values():
        assert 0.0 <= row["autonomous_success"] <= row["success"] <= 1.0
    assert sum(row["episodes"] for row in report["per_task"].values()) == report["episodes"]
    assert json.loads((tmp_path / "operator.json").read_text())["per_task"] == report["per_task"]
