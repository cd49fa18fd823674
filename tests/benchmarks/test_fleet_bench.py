"""`lwd bench fleet`: fleet throughput against bare Meta-World on the same episodes, in rounds."""

import json

import pytest

from lwd.benchmarks.fleet import FleetBenchConfig, cpu_figures, run_fleet_bench, wait_until_every_robot_steps


@pytest.mark.slow  # a real pipeline: `make test-fast` skips it; the unit tests below run there too
def test_the_report_is_the_median_round_of_fleet_and_bare_phases(tiny_pipeline, tmp_path):
    out = tmp_path / "fleet.json"
    report = run_fleet_bench(
        FleetBenchConfig(
            checkpoint=tiny_pipeline[4],
            workers=1,
            robots_per_worker=2,
            warmup_seconds=1.0,  # counted from every robot's first step
            seconds=2.0,
            repeats=3,
            out=str(out),
        )
    )
    ratios = sorted(r["ratio"] for r in report["rounds"])
    assert len(ratios) == 3 and report["ratio"] == ratios[1]
    assert all(r["fleet_steps_per_s"] > 0 and r["bare_steps_per_s"] > 0 and r["episodes"] > 0 for r in report["rounds"])
    assert json.loads(out.read_text())["ratio"] == report["ratio"]
    # The same in CPU time: the worker process's CPU seconds per env step against the replay pool's.
    assert report["cpu_ratio"] == sorted(r["cpu_ratio"] for r in report["rounds"])[1]
    for r in report["rounds"]:
        assert r["fleet_cpu_us_per_step_by_role"]["robots"] > 0 and r["bare_cpu_us_per_step"] > 0
        assert r["cpu_ratio"] == pytest.approx(r["bare_cpu_us_per_step"] / r["fleet_cpu_us_per_step"], rel=1e-12)


def test_cpu_figures_are_left_out_when_the_robots_run_outside_this_process_tree():
    # Joining a cluster started elsewhere (`--ray-address`), the robot actors are the
    # raylets' children: no robot CPU is seen, and the round has wall-clock figures only.
    bare = {"robots": 3.0, "ingest": 0.0, "other": 0.0}
    assert cpu_figures({"robots": 0.0, "ingest": 0.0, "other": 0.1}, bare, fleet_steps=1000, bare_steps=1000) == {}
    figures = cpu_figures({"robots": 4.0, "ingest": 0.5, "other": 0.5}, bare, fleet_steps=1000, bare_steps=1000)
    assert figures["cpu_ratio"] == pytest.approx(3.0 / 5.0) and figures["cpu_ratio_robots"] == pytest.approx(3.0 / 4.0)


def test_a_bench_without_rounds_is_refused():
    with pytest.raises(ValueError, match="repeats"):
        FleetBenchConfig(repeats=0)


def _status(folder, worker, steps):
    robots = [{"robot_id": f"w{worker}r{i}", "state": "running", "steps": n} for i, n in enumerate(steps)]
    (folder / f"worker-{worker}.json").write_text(json.dumps({"worker": worker, "robots": robots}))


def test_the_window_waits_for_every_robot_to_have_taken_a_step(tmp_path):
    # A fixed warm-up from the fleet's start failed in CI: the robots had not yet made a
    # step when the window closed. Then, under load, robots "running" their first episode
    # had not stepped 5 s later (their first policy call). The window counts from every
    # robot's first step.
    _status(tmp_path, 0, [3, 1])
    _status(tmp_path, 1, [5, 0])
    with pytest.raises(RuntimeError, match="3 of 4 robots"):
        wait_until_every_robot_steps(tmp_path, robots=4, timeout=0.3)
    _status(tmp_path, 1, [5, 2])
    assert wait_until_every_robot_steps(tmp_path, robots=4, timeout=0.3) > 0
