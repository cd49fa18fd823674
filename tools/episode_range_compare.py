"""Paired comparison of two methods over training seeds, on a range of evaluation episodes only.

    .venv/bin/python tools/episode_range_compare.py --first 20 --stop 120 \
        BASELINE_SEED0/eval.json,OTHER_SEED0/eval.json BASELINE_SEED1/eval.json,OTHER_SEED1/eval.json ...

Each argument is one training seed's two `lwd eval` reports on the same episodes (baseline first).
Only episodes first .. stop-1 of every task count (episode i of a task runs seed i of the report's
held-out split, `lwd.envs.SEEDS.held_out`), so policies re-scored on more episodes than an experiment ran (`lwd eval
--episodes-per-task 120`) can be compared on the fresh ones alone. Prints, pooled over the seeds:
the episode-paired difference (what `lwd experiment`'s tables give), the difference with the
training seed as the unit, and an interval clustered by initial condition (each (task, episode)
averaged over the seeds first: every seed runs the same initial conditions, so their outcomes
are not independent across seeds); then the failed episodes by the stage they stopped in.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lwd.envs import SEEDS  # noqa: E402
from lwd.evaluation.compare import (  # noqa: E402
    load_report,
    paired_difference_over_seeds,
    seed_level_difference,
    signed_interval,
    stopped_in,
)


def episodes_in_range(report: dict, first: int, stop: int) -> dict:
    first_seed = SEEDS.held_out(report["split"], 0)
    kept = [o for o in report["outcomes"] if first <= int(o["seed"]) - first_seed < stop]
    if not kept:
        raise SystemExit(f"{report.get('checkpoint')}: no evaluation episodes in {first}..{stop - 1}")
    return {**report, "outcomes": kept}


def clustered_by_initial_condition(pairs: list[tuple[dict, dict]]) -> tuple[float, tuple[float, float]]:
    by_condition: dict[tuple[str, int], list[int]] = {}
    for baseline, other in pairs:
        other_success = {(o["task"], int(o["seed"])): bool(o["success"]) for o in other["outcomes"]}
        for o in baseline["outcomes"]:
            key = (o["task"], int(o["seed"]))
            by_condition.setdefault(key, []).append(int(other_success[key]) - int(bool(o["success"])))
    means = [sum(d) / len(d) for d in by_condition.values()]
    mean = sum(means) / len(means)
    half = 1.96 * math.sqrt(sum((m - mean) ** 2 for m in means) / (len(means) - 1) / len(means))
    return mean, (mean - half, mean + half)


def success(reports: list[dict]) -> float:
    outcomes = [o for r in reports for o in r["outcomes"]]
    return sum(bool(o["success"]) for o in outcomes) / len(outcomes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("pairs", nargs="+", help="BASELINE_REPORT,OTHER_REPORT per training seed")
    parser.add_argument("--first", type=int, default=0, help="first episode index of each task to count")
    parser.add_argument("--stop", type=int, default=10**9, help="count episodes up to this index, exclusive")
    args = parser.parse_args()
    pairs = []
    for pair in args.pairs:
        paths = pair.split(",")
        if len(paths) != 2:
            raise SystemExit(f"expected BASELINE_REPORT,OTHER_REPORT, got {pair!r}")
        baseline, other = (episodes_in_range(load_report(p), args.first, args.stop) for p in paths)
        pairs.append((baseline, other))
    episodes = paired_difference_over_seeds(pairs)
    seeds = seed_level_difference(pairs)
    clustered = clustered_by_initial_condition(pairs)
    most = 1 + max(int(o["seed"]) - SEEDS.held_out(other["split"], 0) for _, other in pairs for o in other["outcomes"])
    print(
        f"{len(pairs)} training seeds, episodes {args.first}–{min(args.stop, most) - 1} of each task: "
        f"baseline {success([b for b, _ in pairs]):.3f}, other {success([o for _, o in pairs]):.3f}"
    )
    print(
        f"  other − baseline, episode-paired: {signed_interval(episodes.mean, episodes.ci95)}, "
        f"{episodes.gains} gained / {episodes.losses} lost, sign test p = {episodes.sign_test_p:.2g}, "
        f"{episodes.episodes} episodes"
    )
    print(
        f"  training seed as the unit: {signed_interval(seeds.mean, seeds.ci95)}; per seed "
        + " ".join(f"{d:+.3f}" for d in seeds.per_seed)
    )
    print(f"  clustered by initial condition: {signed_interval(*clustered)}")
    for name, index in (("baseline", 0), ("other", 1)):
        failed = Counter(stopped_in(o) for pair in pairs for o in pair[index]["outcomes"] if not o["success"])
        print(f"  {name} failed episodes by the stage they stopped in: {dict(failed.most_common())}")


if __name__ == "__main__":
    main()
