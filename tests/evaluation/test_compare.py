import json

import pytest

from lwd.cli import main
from lwd.evaluation.compare import (
    compare_table,
    mean_of_independent,
    paired_difference,
    paired_difference_over_seeds,
    parse_runs,
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
    table = compare_table([("SFT", sft), ("LWD", seed0), ("LWD", seed1)])
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
    assert len(row) == 1 and row[0].startswith("| LWD | +0.250 (") and row[0].endswith(", 3/1, p = 0.62 | 2 |")
    assert main(["compare", "--runs", *runs, "--paired-against", "HGD"]) == 2
    assert "none of the methods" in capsys.readouterr().err
