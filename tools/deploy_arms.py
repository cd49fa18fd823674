"""One more online arm on the starts of tools/operator_noise_arms.py (validation seeds, issue 18).

Reuses OUT/SUITE/seedN's demonstrations, SFT, offline data and LWD offline (builds them as
`lwd experiment --preset small` does where missing), deploys METHOD from its usual start
(LWD from offline RL, the baselines from SFT) for the preset's budget with DeployConfig
fields replaced by `--set` (LWD's learner is the one the preset deploys, `lwd.recipes.stages.online_learner`,
before `lwd.` settings), and scores the final policy on 20 validation episodes per task
into OUT/ARM_sSEED/eval, so `tools/online_arms_compare.py OUT lwdclean ARM` pairs it with
the default arm on the same episodes. Resumable.

    python tools/deploy_arms.py OUT --suite lh --seeds 0 1 2 3 4 5 --arm lwdn10 --set n_step=10
    python tools/deploy_arms.py OUT --arm lwdlam01 --set lwd.lam=0.01   # a LearnerConfig field
    python tools/deploy_arms.py OUT --arm lwdx05 --set robots.noise_scale=0.5   # a FleetConfig field
    python tools/deploy_arms.py OUT --arm lwdg995 --offline-set discount=0.995 --set discount=0.995

With `--offline-set` (OfflineConfig fields) the arm trains its own LWD offline start into
OUT/SUITE/seedN/offline_ARM from the same SFT and store. Policies are scored at the noise scale
their robots ran at unless `--score-noise-scale` says otherwise; `lwd eval` and `lwd experiment`
score at s = 0 (the deterministic flow), so pass `--score-noise-scale 0` to decide as they report:

    python tools/deploy_arms.py OUT --suite lh --seeds 6 7 8 --arm lwdu60 --set updates_per_1k_env_steps=60 \
        --score-noise-scale 0
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

from lwd.evaluation.compare import scored_alike
from lwd.evaluation.evaluate import EvalConfig, evaluate
from lwd.fleet.worker import FleetConfig
from lwd.policy.sampling import check_noise_scale
from lwd.recipes.presets import EXPERIMENT_PRESETS, Preset
from lwd.recipes.stages import deploy_stage, offline_data_stage, offline_rl_stage, online_learner, sft_stage


def parse_settings(settings: list[str]) -> dict[str, object]:
    """`field=value` pairs; values are JSON where they parse as JSON (numbers, true/false), else strings."""
    parsed: dict[str, object] = {}
    for setting in settings:
        key, sep, text = setting.partition("=")
        if not sep:
            raise SystemExit(f"--set wants field=value, got {setting!r}")
        try:
            parsed[key] = json.loads(text)
        except json.JSONDecodeError:
            parsed[key] = text
    return parsed


def deploy_overrides(settings: list[str], preset: Preset) -> dict[str, object]:
    """DeployConfig fields from `field=value`, the LWD learner's from `lwd.field=value`, the
    robots' (FleetConfig) from `robots.field=value`."""
    parsed = parse_settings(settings)
    overrides = {k: v for k, v in parsed.items() if not k.startswith(("lwd.", "robots."))}
    learner = {k.removeprefix("lwd."): v for k, v in parsed.items() if k.startswith("lwd.")}
    robots = {k.removeprefix("robots."): v for k, v in parsed.items() if k.startswith("robots.")}
    if learner:
        overrides["lwd"] = replace(online_learner(preset), **learner)
    if robots:
        overrides["robots"] = FleetConfig(
            suite=preset.suite, tasks=preset.tasks, robots_per_worker=preset.robots_per_worker, **robots
        )
    return overrides


def arm_starts(out: Path, suite: str, seed: int, workers: int, stages: dict[str, float]) -> tuple[str, Path, Path]:
    """OUT/SUITE/seedN's store, SFT and LWD offline checkpoints, built as `lwd experiment --preset
    small` builds them where missing (no ablations, no RECAP)."""
    preset, work = EXPERIMENT_PRESETS["small"][suite], out / suite / f"seed{seed}"
    store, sft = sft_stage(work, preset, seed, workers, True, stages)
    offline_data_stage(store, sft, preset, workers, True, stages)
    return store, sft, offline_rl_stage(work / "offline", store, sft, preset, seed, True, stages)


def deploy_and_score(
    out: Path,
    suite: str,
    seed: int,
    arm: str,
    method: str,
    start: Path,
    store: str,
    workers: int,
    stages: dict[str, float],
    noise_scale: float,
    **overrides: object,
) -> float:
    """Deploy `method` from `start` into OUT/SUITE/seedN/ARM for the preset's budget (DeployConfig
    `overrides`) unless done, score its final policy on 20 validation episodes per task into
    OUT/ARM_sSEED/eval unless done (sampling at `noise_scale`, what its robots ran at); the
    average success."""
    preset, run = EXPERIMENT_PRESETS["small"][suite], out / suite / f"seed{seed}" / arm
    if not (run / "learner" / "final").exists():
        deploy_stage(run, method, start, store, preset, seed, True, stages, f"deploy {arm}", **overrides)
    return score_validation(run / "learner" / "final", suite, out / f"{arm}_s{seed}" / "eval", workers, noise_scale)


def score_validation(checkpoint: Path, suite: str, scored: Path, workers: int, noise_scale: float) -> float:
    """`checkpoint`'s average success on 20 validation episodes per task, sampling at `noise_scale`,
    scored into `scored` unless done there already alike (scale and `EvalConfig.unstick`)."""
    report = scored / "eval.json"
    saved = json.loads(report.read_text()) if report.exists() else None
    if not (saved and scored_alike(saved, noise_scale, EvalConfig.unstick.steps)):
        evaluate(
            EvalConfig(
                checkpoint=str(checkpoint),
                suite=suite,
                split="validation",
                episodes_per_task=20,
                workers=workers,
                noise_scale=noise_scale,
                out=str(scored),
            )
        )
    return json.loads((scored / "eval.json").read_text())["average_success"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out")
    parser.add_argument("--suite", default="lh", choices=sorted(EXPERIMENT_PRESETS["small"]))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--arm", required=True, help="name of the arm's run and evaluation folders")
    parser.add_argument("--method", default="lwd", choices=["lwd", "hg-dagger", "recap"])
    parser.add_argument("--set", dest="settings", nargs="*", default=[], metavar="FIELD=VALUE")
    parser.add_argument("--offline-set", dest="offline_settings", nargs="*", default=[], metavar="FIELD=VALUE")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--score-noise-scale",
        type=float,
        default=None,
        help="sampling temperature when scoring the final policy (default: the robots' own, 1 unless "
        "--set robots.noise_scale=...; lwd eval scores at 0)",
    )
    args = parser.parse_args()
    if args.score_noise_scale is not None:
        check_noise_scale(args.score_noise_scale, "--score-noise-scale")  # before hours of deploys, not after
    out, preset = Path(args.out), EXPERIMENT_PRESETS["small"][args.suite]
    overrides = deploy_overrides(args.settings, preset)
    offline_overrides = parse_settings(args.offline_settings)
    for seed in args.seeds:
        stages: dict[str, float] = {}
        store, sft, offline = arm_starts(out, args.suite, seed, args.workers, stages)
        if offline_overrides:
            arm_start = out / args.suite / f"seed{seed}" / f"offline_{args.arm}"
            offline = offline_rl_stage(arm_start, store, sft, preset, seed, True, stages, "arm", **offline_overrides)
        start = offline if args.method == "lwd" else sft
        robots = overrides.get("robots")
        scale = robots.noise_scale if isinstance(robots, FleetConfig) else 1.0
        if args.score_noise_scale is not None:
            scale = args.score_noise_scale
        success = deploy_and_score(
            out, args.suite, seed, args.arm, args.method, start, store, args.workers, stages, scale, **overrides
        )
        print(time.strftime("%T"), f"{args.suite} seed {seed} {args.arm} {success:.3f} {stages}", flush=True)


if __name__ == "__main__":  # the simulator pools spawn processes that re-import this file
    main()
