"""Paired comparison of two arms of tools/online_arms.sh on the same validation episodes.

    .venv/bin/python tools/online_arms_compare.py OUT_DIR ARM_A ARM_B

Per deploy seed and pooled over seeds: mean difference B - A with its 95% interval,
episodes gained / lost and the sign test (lwd.evaluation.compare.paired_difference).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lwd.evaluation.compare import paired_difference, paired_difference_over_seeds  # noqa: E402


def main(out: Path, arm_a: str, arm_b: str) -> None:
    pairs: list[tuple[dict, dict]] = []
    for seed in range(10):  # deploy seeds 0-9
        paths = [out / f"{arm}_s{seed}" / "eval" / "eval.json" for arm in (arm_a, arm_b)]
        if not all(path.exists() for path in paths):
            continue
        a, b = (json.loads(path.read_text()) for path in paths)
        d = paired_difference(a, b)
        print(
            f"seed {seed}: {arm_a} {a['average_success']:.3f}  {arm_b} {b['average_success']:.3f}  "
            f"diff {d.mean:+.3f} [{d.ci95[0]:+.3f}, {d.ci95[1]:+.3f}]  gained {d.gains} lost {d.losses}"
        )
        pairs.append((a, b))
    if not pairs:
        sys.exit(f"no finished pair of {arm_a} and {arm_b} under {out}")
    d = paired_difference_over_seeds(pairs)
    print(
        f"pooled {d.episodes}: diff {d.mean:+.3f} [{d.ci95[0]:+.3f}, {d.ci95[1]:+.3f}]  "
        f"gained {d.gains} lost {d.losses}  sign test p = {d.sign_test_p:.2g}"
    )


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    main(Path(sys.argv[1]), sys.argv[2], sys.argv[3])
