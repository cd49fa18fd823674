"""The main job at the smoke preset: every stage runs for real and the report is written;
a second run reuses every finished stage."""

import json

import pytest

from lwd.recipes.demo import DemoConfig, run_demo

pytestmark = pytest.mark.slow  # a real pipeline: `make test-fast` skips it


def test_demo_smoke_runs_every_stage_and_reuses_them(tmp_path):
    config = DemoConfig(preset="smoke", workdir=str(tmp_path / "demo"), workers=1)
    report = run_demo(config)
    text = report.read_text()
    for name in ("SFT", "LWD offline", "LWD online", "episode → learner latency"):
        assert name in text
    for image in ("stages.png", "success_over_env_steps.png", "interventions.png", "versions.png", "latency.png"):
        assert (report.parent / image).stat().st_size > 0
    first = json.loads((report.parent / "summary.json").read_text())
    assert {"demonstrations", "SFT", "offline RL", "deploy"} <= set(first["stage_seconds"])
    run_demo(config)
    second = json.loads((report.parent / "summary.json").read_text())
    assert "SFT" not in second["stage_seconds"]  # reused, not retrained
    assert second["deploy"] == first["deploy"] and second["average_success"] == first["average_success"]
