import json

import pytest

from lwd.cli import main
from lwd.evaluation.compare import (
    compare_table,
    failed_stage_table,
    load_runs,
    mean_of_independent,
    paired_difference,
    paired_difference_over_seeds,
    parse_runs,
    scored_alike,
    seed_level_difference,
    seed_level_mean_of_suites,
    student_t_975,
)


def _report(path, rates: dict[str, float], episodes: int = 10):
    path.mkdir(parents=True)
    per_task = {
        task: {"episodes": episodes, "success": rate, "ci95": [0, 1], "cycle_time_steps": 100.0}
        for task, rate in rates.items()
    }
    (path / "eval.json").write_text(
        json.dumps({"per_task": per_task, "average_success": sum(rates.values()) / len(rates)})
    )
    return str(path)


def test_seeds_of_one_method_are_averaged_and_methods_sit_side_by_side(tmp_path):
    sft = _report(tmp_path / "sft", {"reach-v3": 0.5, "push-v3": 0.7})
    seed0 = _report(tmp_path / "a", {"reach-v3": 0.6, "push-v3": 0.8})
    seed1 = _report(tmp_path / "b", {"reach-v3": 0.8, "push-v3": 0.8})
    table = compare_table(load_runs([("SFT", sft), ("LWD", seed0), ("LWD", seed1)]))
    lines = table.splitlines()
    assert lines[0] == "| task | SFT (1 seed) | LWD (2 seeds) |"
    assert lines[2].startswith("| push | 0.700") and "| 0.800" in lines[2]
    assert lines[3].startswith("| reach | 0.500") and "| 0.700" in lines[3]  # (6 + 8) / 20
    assert "**0.600" in lines[4] and "**0.750" in lines[4]


def test_bad_pairs_and_missing_reports_fail_clearly(tmp_path, capsys):
    with pytest.raises(ValueError, match="NAME=PATH"):
        parse_runs(("just-a-path",))
    assert main(["compare", "--runs", f"x={tmp_path / 'nowhere'}"]) == 2
    assert "no evaluation report" in capsys.readouterr().err


def _outcomes(successes: list[bool], task: str = "reach-v3") -> dict:
    return {"outcomes": [{"task": task, "seed": 1_000_000_000 + k, "success": ok} for k, ok in enumerate(successes)]}


def test_paired_difference_counts_the_episodes_only_one_policy_solved():
    baseline = _outcomes([True, False, False, False, True, False])
    other = _outcomes([True, True, True, False, False, True])
    d = paired_difference(baseline, other)
    assert (d.gains, d.losses, d.episodes) == (3, 1, 6)
    assert d.mean == pytest.approx(2 / 6)
    assert d.ci95[0] < d.mean < d.ci95[1]
    assert d.sign_test_p == pytest.approx(2 * (1 + 4) / 16)  # P(X <= 1 | 4 discordant, p = 1/2), two-sided


def test_a_lopsided_paired_gain_is_significant_and_a_tie_is_not():
    assert paired_difference(_outcomes([False] * 12), _outcomes([True] * 12)).sign_test_p == pytest.approx(2 / 2**12)
    tie = paired_difference(_outcomes([True, False] * 5), _outcomes([False, True] * 5))
    assert tie.mean == 0 and tie.sign_test_p == 1.0


def test_paired_difference_refuses_evaluations_of_different_episodes():
    with pytest.raises(ValueError, match="same episodes"):
        paired_difference(_outcomes([True, False]), _outcomes([True, False], task="push-v3"))


def test_paired_difference_refuses_policies_scored_at_different_temperatures_unless_asked():
    deterministic = {**_outcomes([True] * 6), "config": {"noise_scale": 0.0}}
    sampled = _outcomes([True, False] * 3)  # a report from before the field: scored at 1
    with pytest.raises(ValueError, match="different noise scales"):
        paired_difference(sampled, deterministic)
    with pytest.raises(ValueError, match="different noise scales"):
        seed_level_difference([(sampled, deterministic)])
    assert paired_difference(sampled, deterministic, across_scales=True).mean == pytest.approx(0.5)
    gate_line = {**_outcomes([True] * 6), "noise_scale": 0.0}  # the gate evaluator's lines carry it on top
    assert paired_difference(gate_line, deterministic).mean == 0.0


def test_paired_difference_refuses_policies_scored_with_and_without_unstick_unless_asked():
    plain = {**_outcomes([True, False] * 3), "config": {"noise_scale": 0.0}}  # before the option: never
    unstuck = {**_outcomes([True] * 6), "config": {"noise_scale": 0.0, "unstick": {"steps": 20, "noise_scale": 1.0}}}
    with pytest.raises(ValueError, match="different --unstick.steps"):
        paired_difference(plain, unstuck)
    assert paired_difference(plain, unstuck, across_scales=True).mean == pytest.approx(0.5)


def test_a_saved_report_is_reusable_only_when_scored_at_the_same_scale_and_unstick_window():
    unstuck = {"config": {"noise_scale": 0.0, "unstick": {"steps": 20, "noise_scale": 1.0}}}
    assert scored_alike(unstuck, 0.0, 20)
    assert not scored_alike(unstuck, 0.0, 0)
    assert not scored_alike(unstuck, 1.0, 20)
    assert scored_alike({"config": {}}, 1.0, 0)  # a report from before both fields: scale 1, never resampled


def test_seeds_pool_into_one_paired_difference_even_when_they_share_evaluation_seeds():
    # Two training seeds evaluated on the same episodes: each seed's pairs count once, none overwrite.
    seed0 = (_outcomes([False, False, True]), _outcomes([True, False, True]))
    seed1 = (_outcomes([True, True, True]), _outcomes([True, False, True]))
    d = paired_difference_over_seeds([seed0, seed1])
    assert (d.gains, d.losses, d.episodes) == (1, 1, 6)
    assert d.mean == 0


def test_the_average_of_independent_differences_has_the_halves_in_quadrature():
    a = paired_difference(_outcomes([False] * 8 + [True] * 2), _outcomes([True] * 10))
    b = paired_difference(_outcomes([True, False] * 5), _outcomes([True] * 10))
    mean, (low, high) = mean_of_independent([a, b])
    assert mean == pytest.approx((a.mean + b.mean) / 2)
    half_a, half_b = (a.ci95[1] - a.ci95[0]) / 2, (b.ci95[1] - b.ci95[0]) / 2
    assert (high - low) / 2 == pytest.approx((half_a**2 + half_b**2) ** 0.5 / 2)
    with pytest.raises(ValueError, match="at least one"):
        paired_difference_over_seeds([])


def test_student_t_quantiles_match_the_table_and_approach_the_normal_one():
    assert student_t_975(1) == 12.706 and student_t_975(7) == 2.365
    assert student_t_975(31) == pytest.approx(2.040, abs=1e-3)
    assert student_t_975(100_000) == pytest.approx(1.960, abs=1e-3)
    with pytest.raises(ValueError, match="degree of freedom"):
        student_t_975(0)


def test_seed_level_difference_averages_each_seeds_difference_and_widens_with_their_spread():
    agree = [(_outcomes([False] * 10), _outcomes([True] * 2 + [False] * 8))] * 3  # +0.2 on every seed
    d = seed_level_difference(agree)
    assert d.per_seed == pytest.approx((0.2, 0.2, 0.2)) and d.ci95 == pytest.approx((0.2, 0.2))
    split = [
        (_outcomes([False] * 10), _outcomes([True] * 5 + [False] * 5)),  # +0.5
        (_outcomes([True] * 10), _outcomes([True] * 9 + [False])),  # -0.1
    ]
    d = seed_level_difference(split)
    assert d.mean == pytest.approx(0.2)
    half = 12.706 * (0.6 / 2**0.5) / 2**0.5  # t(1) × standard deviation / √n
    assert d.ci95 == pytest.approx((0.2 - half, 0.2 + half))
    # The episode-pooled interval of the same pairs is far narrower: it ignores the seeds' disagreement.
    pooled = paired_difference_over_seeds(split)
    assert pooled.ci95[1] - pooled.ci95[0] < (d.ci95[1] - d.ci95[0]) / 5


def test_the_seed_level_average_over_suites_pairs_seed_k_of_each_suite():
    up = seed_level_difference([(_outcomes([False] * 4), _outcomes([True] * 4))] * 2)  # +1, +1
    mixed = seed_level_difference(
        [(_outcomes([False] * 4), _outcomes([False] * 4)), (_outcomes([True] * 4), _outcomes([False] * 4))]
    )  # 0, -1
    average = seed_level_mean_of_suites([up, mixed])
    assert average.per_seed == pytest.approx((0.5, 0.0)) and average.mean == pytest.approx(0.25)
    with pytest.raises(ValueError, match="same number of training seeds"):
        seed_level_mean_of_suites([up, seed_level_difference([(_outcomes([True]), _outcomes([True]))])])


def test_suites_that_ran_different_seeds_are_averaged_over_the_seeds_they_share():
    gain = (_outcomes([False] * 4), _outcomes([True] * 4))
    loss = (_outcomes([True] * 4), _outcomes([False] * 4))
    tie = (_outcomes([True] * 4), _outcomes([True] * 4))
    long_suite = seed_level_difference([gain, gain, loss])  # seeds 0, 1, 2: +1, +1, -1
    short_suite = seed_level_difference([tie, gain])  # seeds 2, 0: 0, +1
    average = seed_level_mean_of_suites([long_suite, short_suite], [["0", "1", "2"], ["2", "0"]])
    assert average.per_seed == pytest.approx((1.0, -0.5))  # seed 0: (1 + 1) / 2; seed 2: (-1 + 0) / 2
    with pytest.raises(ValueError, match="no training seed is common"):
        seed_level_mean_of_suites([long_suite, short_suite], [["0", "1", "2"], ["7", "8"]])
    with pytest.raises(ValueError, match="every value of every suite"):
        seed_level_mean_of_suites([long_suite, short_suite], [["0", "1"], ["2", "0"]])


def _report_with_outcomes(path, successes: list[bool]) -> str:
    path.mkdir(parents=True)
    rate = sum(successes) / len(successes)
    per_task = {"reach-v3": {"episodes": len(successes), "success": rate, "ci95": [0, 1], "cycle_time_steps": 1.0}}
    report = {"per_task": per_task, "average_success": rate, **_outcomes(successes)}
    (path / "eval.json").write_text(json.dumps(report))
    return str(path)


def test_compare_cli_adds_a_paired_table_against_the_named_method(tmp_path, capsys):
    runs = [
        f"SFT={_report_with_outcomes(tmp_path / 'sft0', [False, False, True, True])}",
        f"SFT={_report_with_outcomes(tmp_path / 'sft1', [False, True, True, True])}",
        f"LWD={_report_with_outcomes(tmp_path / 'lwd0', [True, True, True, True])}",
        f"LWD={_report_with_outcomes(tmp_path / 'lwd1', [True, True, True, False])}",
    ]
    assert main(["compare", "--runs", *runs, "--paired-against", "SFT"]) == 0
    row = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| LWD |")]
    assert len(row) == 1 and row[0].startswith("| LWD | +0.250 (") and ", 3/1, p = 0.62 |" in row[0]
    # Seeds gained +0.5 and +0.0: mean +0.25, t(1) interval ± 12.706 × 0.354 / √2 = ± 3.18.
    seed_cell = row[0].split("|")[-3]
    low, high = (float(x) for x in seed_cell.split("(")[1].rstrip(") ").split(" … "))
    assert seed_cell.strip().startswith("+0.250") and (low, high) == pytest.approx(
        (0.25 - 3.1765, 0.25 + 3.1765), abs=2e-3
    )
    assert main(["compare", "--runs", *runs, "--paired-against", "HGD"]) == 2
    assert "none of the methods" in capsys.readouterr().err


def _chain_report(path, stage_scores: list[float], task: str = "lh-stock-drawer") -> str:
    """A report of `task` episodes with these stage scores (1.0 = the chain succeeded)."""
    path.mkdir(parents=True)
    outcomes = [
        {"task": task, "seed": 900_000_000 + k, "success": score == 1.0, "stage_score": score}
        for k, score in enumerate(stage_scores)
    ]
    rate = sum(o["success"] for o in outcomes) / len(outcomes)
    per_task = {task: {"episodes": len(outcomes), "success": rate, "ci95": [0, 1], "cycle_time_steps": 300.0}}
    (path / "eval.json").write_text(json.dumps({"per_task": per_task, "average_success": rate, "outcomes": outcomes}))
    return str(path)


def test_failed_chains_are_counted_by_the_stage_they_stopped_in(tmp_path):
    # lh-stock-drawer: pick-place, drawer-open, pick-place, drawer-close.
    runs = [
        ("LWD", _chain_report(tmp_path / "a", [1.0, 0.0, 0.5, 0.75])),
        ("LWD", _chain_report(tmp_path / "b", [1.0, 0.5])),
        ("HG", _chain_report(tmp_path / "c", [0.25, 1.0, 1.0])),
    ]
    lines = failed_stage_table(load_runs(runs)).splitlines()
    header = "| failed episodes, by the stage they stopped in | all | pick-place | drawer-close | drawer-open |"
    assert lines[0] == header
    assert lines[2] == "| LWD | 4 | 3 | 1 | 0 |"
    assert lines[3] == "| HG | 1 | 0 | 0 | 1 |"


def test_compare_cli_shows_failed_stages_only_for_chained_tasks(tmp_path, capsys):
    chains = [f"LWD={_chain_report(tmp_path / 'lh', [1.0, 0.25])}"]
    assert main(["compare", "--runs", *chains]) == 0
    out = capsys.readouterr().out
    assert "stopped in | all | drawer-open |" in out and "| LWD | 1 | 1 |" in out
    single = [f"LWD={_report_with_outcomes(tmp_path / 'mt', [True, False])}"]
    assert main(["compare", "--runs", *single]) == 0
    assert "stopped in" not in capsys.readouterr().out
