"""Does LWD's lead over HG-DAgger grow when the operator is imperfect? (issue 18; validation seeds)

For each training seed, builds the starts as `lwd experiment --preset small` does (demonstrations,
SFT, offline data, LWD offline; no ablations, no RECAP), then deploys LWD (from offline) and
HG-DAgger (from SFT) for the preset's budget, once with the default operator and once with noise
on the operator's actions, and scores each final policy on 20 validation episodes per task.
Resumable: finished stages, deploys and evaluations are reused. Compare arms with
`tools/online_arms_compare.py OUT ARM_A ARM_B` (arms: lwdclean, lwdnoisy, hg-daggerclean,
hg-daggernoisy; evaluations in OUT/ARM_sSEED/eval).

    python tools/operator_noise_arms.py OUT --suite lh --seeds 0 1 2 [--noise 0.3]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from deploy_arms import arm_starts, deploy_and_score  # tools/, this script's own folder

from lwd.envs.operator import OperatorConfig
from lwd.fleet.worker import FleetConfig
from lwd.recipes.presets import EXPERIMENT_PRESETS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out")
    parser.add_argument("--suite", default="lh", choices=sorted(EXPERIMENT_PRESETS["small"]))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--noise", type=float, default=0.3, help="std of the noisy operator's action noise")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    out, preset = Path(args.out), EXPERIMENT_PRESETS["small"][args.suite]
    for seed in args.seeds:
        stages: dict[str, float] = {}
        store, sft, offline = arm_starts(out, args.suite, seed, args.workers, stages)
        for method in ("lwd", "hg-dagger"):
            for noise in sorted({0.0, args.noise}):  # --noise 0: the default operator's arms only
                arm = f"{method}{'noisy' if noise else 'clean'}"
                robots = FleetConfig(
                    suite=preset.suite,
                    tasks=preset.tasks,
                    robots_per_worker=preset.robots_per_worker,
                    operator=OperatorConfig(action_noise=noise),
                )
                start = offline if method == "lwd" else sft
                success = deploy_and_score(
                    out, args.suite, seed, arm, method, start, store, args.workers, stages, robots=robots
                )
                print(time.strftime("%T"), f"{args.suite} seed {seed} {arm} {success:.3f}", flush=True)


if __name__ == "__main__":  # the simulator pools spawn processes that re-import this file
    main()
