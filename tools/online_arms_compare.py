"""Paired comparison of arms of tools/online_arms.sh (or tools/rescore_online.sh) on the same
validation episodes.

    .venv/bin/python tools/online_arms_compare.py OUT_DIR ARM_A ARM_B [ARM_B2 ...]
    SEEDS="6 7 8" .venv/bin/python tools/online_arms_compare.py OUT_DIR ARM_A ARM_B   # only these seeds

Without SEEDS, every seed 0-99 with both arms scored is paired.

For each ARM_B against ARM_A, per seed and pooled over seeds: mean difference B - A with its
95% interval, episodes gained / lost and the sign test (lwd.evaluation.compare.paired_difference),
and the run-level interval over seeds. With several B arms (e.g. reruns of one config), also
pooled over all their pairs.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lwd.evaluation.compare import (  # noqa: E402
    paired_difference,
    paired_difference_over_seeds,
    seed_level_difference,
)


def report_pooled(label: str, pairs: list[tuple[dict, dict]]) -> None:
    d = paired_difference_over_seeds(pairs, across_scales=True)
    line = (
        f"{label}, {len(pairs)} runs, {d.episodes} episodes: diff {d.mean:+.3f} [{d.ci95[0]:+.3f}, "
        f"{d.ci95[1]:+.3f}]  gained {d.gains} lost {d.losses}  sign test p = {d.sign_test_p:.2g}"
    )
    if len(pairs) > 1:
        runs = seed_level_difference(pairs, across_scales=True)
        line += f"  run level {runs.mean:+.3f} [{runs.ci95[0]:+.3f}, {runs.ci95[1]:+.3f}]"
    print(line)


def chosen_seeds() -> list[int]:
    """Deploy (or training) seeds to pair: $SEEDS (space-separated) if set, else 0-99."""
    text = os.environ.get("SEEDS", "").strip()
    return [int(seed) for seed in text.split()] if text else list(range(100))


def compare(out: Path, arm_a: str, arm_b: str) -> list[tuple[dict, dict]]:
    pairs: list[tuple[dict, dict]] = []
    for seed in chosen_seeds():
        paths = [out / f"{arm}_s{seed}" / "eval" / "eval.json" for arm in (arm_a, arm_b)]
        if not all(path.exists() for path in paths):
            continue
        a, b = (json.loads(path.read_text()) for path in paths)
        d = paired_difference(a, b, across_scales=True)
        print(
            f"seed {seed}: {arm_a} {a['average_success']:.3f}  {arm_b} {b['average_success']:.3f}  "
            f"diff {d.mean:+.3f} [{d.ci95[0]:+.3f}, {d.ci95[1]:+.3f}]  gained {d.gains} lost {d.losses}"
        )
        pairs.append((a, b))
    if not pairs:
        sys.exit(f"no finished pair of {arm_a} and {arm_b} under {out}")
    report_pooled(f"pooled {arm_b} - {arm_a}", pairs)
    return pairs


def main(out: Path, arm_a: str, arms_b: list[str]) -> None:
    all_pairs = [pair for arm_b in arms_b for pair in compare(out, arm_a, arm_b)]
    if len(arms_b) > 1:
        report_pooled(f"pooled {' + '.join(arms_b)} - {arm_a}", all_pairs)


if __name__ == "__main__":
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    main(Path(sys.argv[1]), sys.argv[2], sys.argv[3:])
