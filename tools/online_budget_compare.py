"""Paired tables for tools/online_budget_arms.sh: LWD online − HG-DAgger at 1× and at FACTOR×
the preset's online budget, and each method's gain from the longer deployment, on the same
validation episodes (episodes pooled over seeds, and with the training seed as the unit).

    .venv/bin/python tools/online_budget_compare.py OUT_DIR [FACTOR]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lwd.evaluation.compare import (  # noqa: E402
    paired_cell,
    paired_difference_over_seeds,
    seed_level_difference,
    signed_interval,
)

METHODS = ("lwd", "hg-dagger")


def main(out: Path, factor: int) -> None:
    long = f"x{factor}"

    def report(suite: str, seed: int, method: str, budget: str) -> dict | None:
        path = out / suite / f"seed{seed}" / f"{method}_{budget}_eval" / "eval.json"
        return json.loads(path.read_text()) if path.exists() else None

    for suite in ("mt10", "lh"):
        seeds = [s for s in range(16) if all(report(suite, s, m, b) for m in METHODS for b in ("x1", long))]
        if not seeds:
            continue
        print(f"## {suite}: training seeds {seeds}")
        for method in METHODS:
            for budget in ("x1", long):
                values = " / ".join(f"{report(suite, s, method, budget)['average_success']:.3f}" for s in seeds)
                print(f"  {method} {budget}: {values}")
        rows = {
            "LWD − HG-DAgger at x1": (("hg-dagger", "x1"), ("lwd", "x1")),
            f"LWD − HG-DAgger at {long}": (("hg-dagger", long), ("lwd", long)),
            f"LWD {long} − x1": (("lwd", "x1"), ("lwd", long)),
            f"HG-DAgger {long} − x1": (("hg-dagger", "x1"), ("hg-dagger", long)),
        }
        for name, (base, other) in rows.items():
            pairs = [(report(suite, s, *base), report(suite, s, *other)) for s in seeds]
            pooled, by_seed = paired_difference_over_seeds(pairs), seed_level_difference(pairs)
            per_seed = " / ".join(f"{v:+.3f}" for v in by_seed.per_seed)
            print(
                f"  {name}: {paired_cell(pooled)}; seed as unit {signed_interval(by_seed.mean, by_seed.ci95)}; "
                f"per seed {per_seed}"
            )


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3):
        sys.exit(__doc__)
    main(Path(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) == 3 else 2)
