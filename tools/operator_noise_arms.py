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
import json
import time
from pathlib import Path

from lwd.envs.operator import OperatorConfig
from lwd.evaluation.evaluate import EvalConfig, evaluate
from lwd.fleet.worker import FleetConfig
from lwd.recipes.presets import EXPERIMENT_PRESETS
from lwd.recipes.stages import deploy_stage, offline_data_stage, offline_rl_stage, sft_stage


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
        work = out / args.suite / f"seed{seed}"
        stages: dict[str, float] = {}
        store, sft = sft_stage(work, preset, seed, args.workers, True, stages)
        offline_data_stage(store, sft, preset, args.workers, True, stages)
        offline = offline_rl_stage(work / "offline", store, sft, preset, seed, True, stages)
        for method in ("lwd", "hg-dagger"):
            for noise in sorted({0.0, args.noise}):  # --noise 0: the default operator's arms only
                arm = f"{method}{'noisy' if noise else 'clean'}"
                run = work / arm
                if not (run / "learner" / "final").exists():
                    robots = FleetConfig(
                        suite=preset.suite,
                        tasks=preset.tasks,
                        robots_per_worker=preset.robots_per_worker,
                        operator=OperatorConfig(action_noise=noise),
                    )
                    start = offline if method == "lwd" else sft
                    deploy_stage(run, method, start, store, preset, seed, True, stages, f"deploy {arm}", robots=robots)
                scored = out / f"{arm}_s{seed}" / "eval"
                if not (scored / "eval.json").exists():
                    evaluate(
                        EvalConfig(
                            checkpoint=str(run / "learner" / "final"),
                            suite=args.suite,
                            split="validation",
                            episodes_per_task=20,
                            workers=args.workers,
                            out=str(scored),
                        )
                    )
                success = json.loads((scored / "eval.json").read_text())["average_success"]
                print(time.strftime("%T"), f"{args.suite} seed {seed} {arm} {success:.3f}", flush=True)


if __name__ == "__main__":  # the simulator pools spawn processes that re-import this file
    main()
