"""Score policies at several sampling temperatures on the same validation episodes (issue 18).

For each seed and policy (`sft`, `offline`, or an online arm's run folder name under
OUT/SUITE/seedN), scores its final checkpoint at each `--scales` value (the flow's initial
noise x_0 ~ N(0, s²I); `lwd eval --noise-scale`) on 20 validation episodes per task into
OUT/POLICY-xSCALE_sSEED/eval, so `tools/online_arms_compare.py OUT POLICY-x1 POLICY-x0.5` pairs
them (the same episodes and the same noise draws, scaled). Resumable.

    python tools/temperature_arms.py /work/runs/lh_noisyop --suite lh --seeds 0 1 2 3 4 5 \\
        --policies sft hg-daggerclean lwdclean --scales 1 0.5 0
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from deploy_arms import score_validation  # tools/, this script's own folder


def checkpoint(out: Path, suite: str, seed: int, policy: str) -> Path:
    work = out / suite / f"seed{seed}"
    return work / policy / "final" if policy in ("sft", "offline") else work / policy / "learner" / "final"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out")
    parser.add_argument("--suite", default="lh")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--policies", nargs="+", default=["sft", "hg-daggerclean", "lwdclean"])
    parser.add_argument("--scales", type=float, nargs="+", default=[1.0, 0.5, 0.0])
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    out = Path(args.out)
    for seed in args.seeds:
        for policy in args.policies:
            for scale in args.scales:
                scored = out / f"{policy}-x{scale:g}_s{seed}" / "eval"
                policy_checkpoint = checkpoint(out, args.suite, seed, policy)
                success = score_validation(policy_checkpoint, args.suite, scored, args.workers, scale)
                print(time.strftime("%T"), f"{args.suite} seed {seed} {policy} x{scale:g} {success:.3f}", flush=True)


if __name__ == "__main__":  # the evaluation pools spawn processes that re-import this file
    main()
