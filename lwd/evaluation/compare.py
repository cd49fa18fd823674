"""Side-by-side tables of evaluation reports (eval.json files written by `lwd eval`).

A method evaluated from several training seeds is given as several reports under one
name; its cell is the mean over seeds with the pooled Wilson interval of all episodes.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from lwd.configargs import documented
from lwd.envs.tasks import task_spec
from lwd.evaluation.evaluate import wilson_interval


@dataclass(frozen=True)
class CompareConfig:
    runs: tuple[str, ...] = documented(
        (), "NAME=PATH pairs; PATH is an eval directory or eval.json; repeat a NAME for several training seeds"
    )
    out: str = documented("", "also write the markdown table here")
    paired_against: str = documented(
        "",
        "NAME of a method: also a paired table, every other method minus it on the same evaluation episodes "
        "(a method's seeds are matched in the order its NAME=PATH pairs are given)",
    )


def load_report(path: str) -> dict:
    file = Path(path)
    file = file / "eval.json" if file.is_dir() else file
    if not file.exists():
        raise FileNotFoundError(f"{file}: no evaluation report (run `lwd eval` first)")
    return json.loads(file.read_text())


def _pooled_counts(parts: list[dict]) -> tuple[int, int]:
    """(successes, episodes) of per-task report rows pooled together."""
    return sum(round(p["success"] * p["episodes"]) for p in parts), sum(p["episodes"] for p in parts)


def pooled_average(reports: list[dict]) -> tuple[float, float, float]:
    """A method's average success over several training seeds' reports: the mean of their
    averages, with the Wilson 95% interval of all their episodes pooled."""
    low, high = wilson_interval(*_pooled_counts([t for r in reports for t in r["per_task"].values()]))
    return sum(r["average_success"] for r in reports) / len(reports), low, high


@dataclass(frozen=True)
class PairedDifference:
    """`other` − `baseline` over the same evaluation episodes (same tasks and seeds)."""

    mean: float  # difference in success rate
    ci95: tuple[float, float]  # normal interval of the mean paired difference
    gains: int  # episodes only `other` solved
    losses: int  # episodes only `baseline` solved
    episodes: int
    sign_test_p: float  # exact two-sided sign test (McNemar) on gains vs losses


def scored_noise_scale(report: dict) -> float:
    """The sampling temperature a report's policy was scored at: an `lwd eval` report keeps it in
    its config, a gate evaluator's line at its top; reports from before the field existed were
    all scored at 1."""
    return float(report.get("noise_scale", report.get("config", {}).get("noise_scale", 1.0)))


def scored_unstick_steps(report: dict) -> int:
    """After how many stopped steps a report's scoring resampled a chunk (`EvalConfig.unstick`);
    0 (never) for gate evaluator lines and reports from before the option existed."""
    return int(report.get("config", {}).get("unstick", {}).get("steps", 0))


def scored_alike(report: dict, noise_scale: float, unstick_steps: int) -> bool:
    """Whether `report` was scored at this sampling temperature and `EvalConfig.unstick` window,
    so that it can be reused instead of scoring its checkpoint again."""
    return scored_noise_scale(report) == noise_scale and scored_unstick_steps(report) == unstick_steps


def _episode_differences(baseline: dict, other: dict, across_scales: bool = False) -> list[int]:
    """Per evaluation episode, other's success minus baseline's (each −1, 0 or 1)."""

    def outcomes(report: dict) -> dict[tuple[str, int], bool]:
        return {(o["task"], int(o["seed"])): bool(o["success"]) for o in report["outcomes"]}

    scales = scored_noise_scale(baseline), scored_noise_scale(other)
    if not across_scales and scales[0] != scales[1]:
        raise ValueError(
            f"paired comparison of policies scored at different noise scales ({scales[0]:g} and {scales[1]:g}): "
            "score both alike (lwd eval --noise-scale), or compare the scales on purpose (across_scales=True)"
        )
    unstick = scored_unstick_steps(baseline), scored_unstick_steps(other)
    if not across_scales and unstick[0] != unstick[1]:
        raise ValueError(
            f"paired comparison of policies scored with different --unstick.steps ({unstick[0]} and {unstick[1]}): "
            "score both alike, or compare the scorings on purpose (across_scales=True)"
        )
    base, new = outcomes(baseline), outcomes(other)
    if not base or base.keys() != new.keys():
        raise ValueError(
            "paired comparison needs two evaluations of the same episodes (tasks and seeds); got "
            f"{len(base)} and {len(new)} episodes, {len(base.keys() ^ new.keys())} not in both"
        )
    return [int(new[k]) - int(base[k]) for k in base]


def _summarise(diffs: list[int]) -> PairedDifference:
    n = len(diffs)
    mean = sum(diffs) / n
    spread = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1)) if n > 1 else 0.0
    half = 1.96 * spread / math.sqrt(n)
    gains, losses = diffs.count(1), diffs.count(-1)
    discordant = gains + losses
    tail = sum(math.comb(discordant, i) for i in range(min(gains, losses) + 1)) / 2**discordant
    return PairedDifference(
        mean=mean,
        ci95=(mean - half, mean + half),
        gains=gains,
        losses=losses,
        episodes=n,
        sign_test_p=min(1.0, 2 * tail),
    )


def paired_difference(baseline: dict, other: dict, *, across_scales: bool = False) -> PairedDifference:
    """Compare two evaluation reports episode by episode.

    Both policies ran the same initial states, so the per-episode difference removes the
    spread between easy and hard seeds that two separate Wilson intervals both carry;
    that is what says whether a gain of a few points is real. Reports scored at different
    sampling temperatures, or with different `--unstick.steps`, are refused unless
    `across_scales` (the scale moves success by up to 0.1 on `lh`, docs/benchmarks.md).
    """
    return _summarise(_episode_differences(baseline, other, across_scales))


def paired_difference_over_seeds(pairs: list[tuple[dict, dict]], *, across_scales: bool = False) -> PairedDifference:
    """`paired_difference` pooled over several training seeds: each (baseline, other) pair is
    one seed's two reports on the same episodes; every seed's episodes count once."""
    if not pairs:
        raise ValueError("paired comparison needs at least one (baseline, other) pair of reports")
    return _summarise([d for b, o in pairs for d in _episode_differences(b, o, across_scales)])


def mean_of_independent(differences: list[PairedDifference]) -> tuple[float, tuple[float, float]]:
    """The unweighted mean of paired differences measured on independent episode sets (one per
    suite, say), with its normal 95% interval: the halves add in quadrature."""
    if not differences:
        raise ValueError("nothing to average")
    k = len(differences)
    mean = sum(d.mean for d in differences) / k
    half = math.sqrt(sum(((d.ci95[1] - d.ci95[0]) / 2) ** 2 for d in differences)) / k
    return mean, (mean - half, mean + half)


# Two-sided 95% quantiles of Student's t for 1–30 degrees of freedom.
# fmt: off
_T975 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
    2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)
# fmt: on


def student_t_975(degrees_of_freedom: int) -> float:
    """The 97.5% quantile of Student's t: exact to 3 decimals up to 30 degrees of freedom, then
    the first two terms of its expansion around the normal quantile (error < 0.001)."""
    if degrees_of_freedom < 1:
        raise ValueError(f"Student's t needs at least one degree of freedom, got {degrees_of_freedom}")
    if degrees_of_freedom <= len(_T975):
        return _T975[degrees_of_freedom - 1]
    z, n = 1.959964, degrees_of_freedom
    return z + (z**3 + z) / (4 * n) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * n**2)


@dataclass(frozen=True)
class SeedLevelDifference:
    """A paired difference with the training seed as the unit: what another training run would
    be expected to give, not only these runs' policies on more episodes."""

    mean: float  # mean over seeds of each seed's mean paired difference
    ci95: tuple[float, float]  # Student-t interval over seeds; (mean, mean) for one seed
    per_seed: tuple[float, ...]


def _over_seeds(per_seed: list[float]) -> SeedLevelDifference:
    n = len(per_seed)
    mean = sum(per_seed) / n
    if n == 1:
        return SeedLevelDifference(mean, (mean, mean), tuple(per_seed))
    spread = math.sqrt(sum((d - mean) ** 2 for d in per_seed) / (n - 1))
    half = student_t_975(n - 1) * spread / math.sqrt(n)
    return SeedLevelDifference(mean, (mean - half, mean + half), tuple(per_seed))


def seed_level_difference(pairs: list[tuple[dict, dict]], *, across_scales: bool = False) -> SeedLevelDifference:
    """Each (baseline, other) pair is one training seed's two reports on the same episodes; the
    interval counts the spread between seeds, which the episode-pooled interval of
    `paired_difference_over_seeds` leaves out."""
    if not pairs:
        raise ValueError("paired comparison needs at least one (baseline, other) pair of reports")
    return _over_seeds([paired_difference(b, o, across_scales=across_scales).mean for b, o in pairs])


def seed_level_mean_of_suites(
    differences: list[SeedLevelDifference], seeds: list[Sequence[str]] | None = None
) -> SeedLevelDifference:
    """The unweighted mean over suites with seeds as the unit: seed k's differences on the
    suites (independent runs) are averaged, then the interval is taken over those averages.
    With `seeds` (per suite, the training seed of each of its values) the suites may have run
    different seeds: the mean is taken over the seeds every suite ran."""
    if not differences:
        raise ValueError("nothing to average")
    values = [d.per_seed for d in differences]
    if seeds is not None:
        if len(seeds) != len(differences) or any(len(s) != len(v) for s, v in zip(seeds, values)):
            raise ValueError("seeds must name the training seed of every value of every suite")
        common = [seed for seed in seeds[0] if all(seed in other for other in seeds[1:])]
        if not common:
            raise ValueError("no training seed is common to every suite")
        by_seed = [dict(zip(labels, v)) for labels, v in zip(seeds, values)]
        values = [[suite[seed] for seed in common] for suite in by_seed]
    counts = {len(v) for v in values}
    if len(counts) != 1:
        raise ValueError(f"every suite needs the same number of training seeds to average them, got {sorted(counts)}")
    return _over_seeds([sum(per_suite) / len(per_suite) for per_suite in zip(*values)])


def signed_interval(mean: float, ci95: tuple[float, float]) -> str:
    return f"{mean:+.3f} ({ci95[0]:+.3f} … {ci95[1]:+.3f})"


def paired_cell(d: PairedDifference) -> str:
    """A paired difference as one table cell: mean (95% interval), gained / lost, sign-test p."""
    return f"{signed_interval(d.mean, d.ci95)}, {d.gains}/{d.losses}, p = {d.sign_test_p:.2g}"


def load_runs(runs: list[tuple[str, str]]) -> dict[str, list[dict]]:
    """Each method's evaluation reports, in the order its NAME=PATH pairs were given."""
    reports: dict[str, list[dict]] = {}
    for name, path in runs:
        reports.setdefault(name, []).append(load_report(path))
    return reports


def paired_table(reports: dict[str, list[dict]], against: str) -> str:
    """Markdown, from `load_runs`'s reports: every other method minus `against`, episode by episode,
    its seeds pooled; and the same difference with the training seed as the unit (Student-t over seeds)."""
    if against not in reports:
        raise ValueError(f"--paired-against {against!r} is none of the methods {list(reports)}")
    lines = [
        f"| − {against} | difference (95% CI), gained/lost, sign test | over training seeds (95% CI) | seeds |",
        "|---|---|---|---|",
    ]
    for name, group in reports.items():
        if name == against:
            continue
        if len(group) != len(reports[against]):
            raise ValueError(
                f"paired comparison matches seeds in order: {name} has {len(group)} reports, "
                f"{against} {len(reports[against])}"
            )
        pairs = list(zip(reports[against], group))
        d, by_seed = paired_difference_over_seeds(pairs), seed_level_difference(pairs)
        lines.append(f"| {name} | {paired_cell(d)} | {signed_interval(by_seed.mean, by_seed.ci95)} | {len(group)} |")
    return "\n".join(lines)


def compare_table(reports: dict[str, list[dict]]) -> str:
    """Markdown, from `load_runs`'s reports: one row per task + the average, one column per method."""
    if not reports:
        raise ValueError("nothing to compare: pass NAME=PATH pairs")
    tasks = sorted({task for group in reports.values() for r in group for task in r["per_task"]})
    names = list(reports)
    lines = [
        "| task | " + " | ".join(f"{n} ({len(reports[n])} seed{'s' * (len(reports[n]) > 1)})" for n in names) + " |",
        "|---|" + "---|" * len(names),
    ]

    def cell(group: list[dict], task: str | None) -> str:
        if task is None:
            rate, low, high = pooled_average(group)
            return f"{rate:.3f} ({low:.2f}–{high:.2f})"
        parts = [r["per_task"][task] for r in group if task in r["per_task"]]
        if not parts:
            return "–"
        successes, episodes = _pooled_counts(parts)
        low, high = wilson_interval(successes, episodes)
        return f"{successes / episodes:.3f} ({low:.2f}–{high:.2f})"

    for task in tasks:
        lines.append(f"| {task.removesuffix('-v3')} | " + " | ".join(cell(reports[n], task) for n in names) + " |")
    lines.append("| **average** | " + " | ".join(f"**{cell(reports[n], None)}**" for n in names) + " |")
    return "\n".join(lines)


def stopped_in(outcome: dict) -> str:
    """The scene a failed episode stopped in: the stage after the ones its stage score says it completed
    (a single-stage task's only scene)."""
    stages = task_spec(outcome["task"]).stages
    completed = round(outcome.get("stage_score", 0.0) * len(stages))
    return stages[min(completed, len(stages) - 1)].removesuffix("-v3")


def has_multi_stage_outcomes(reports: dict[str, list[dict]]) -> bool:
    """Whether every report (`load_runs`) lists its episodes and some of them belong to a multi-stage task."""
    flat = [r for group in reports.values() for r in group]
    return all(r.get("outcomes") for r in flat) and any(
        task_spec(o["task"]).num_stages > 1 for r in flat for o in r["outcomes"]
    )


def failed_stage_table(reports: dict[str, list[dict]]) -> str:
    """Markdown: per method (its seeds' reports from `load_runs` pooled), the failed episodes counted by
    the stage they stopped in — on chained tasks, where the failures of two methods with the same success differ."""
    counts = {name: Counter() for name in reports}
    for name, group in reports.items():
        for report in group:
            if not report.get("outcomes"):
                raise ValueError(f"{name}: a report without its episodes (`outcomes`); re-run `lwd eval`")
            counts[name].update(stopped_in(o) for o in report["outcomes"] if not o["success"])
    scenes = [scene for scene, _ in sum(counts.values(), Counter()).most_common()]
    lines = [
        "| failed episodes, by the stage they stopped in | all | " + " | ".join(scenes) + " |",
        "|---|---|" + "---|" * len(scenes),
    ]
    for name, counted in counts.items():
        cells = " | ".join(str(counted[scene]) for scene in scenes)
        lines.append(f"| {name} | {sum(counted.values())} | {cells} |")
    return "\n".join(lines)


def parse_runs(pairs: tuple[str, ...]) -> list[tuple[str, str]]:
    runs = []
    for pair in pairs:
        name, sep, path = pair.partition("=")
        if not sep or not name or not path:
            raise ValueError(f"expected NAME=PATH, got {pair!r}")
        runs.append((name, path))
    return runs
