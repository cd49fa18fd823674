"""The main job (`lwd demo`): demonstrations → SFT → offline RL → learning while
deploying with a simulated fleet → evaluation → report, at a named preset.

Every stage is resumable and reused when already finished, so a second run only
redoes what is missing. Presets: `lwd.recipes.presets.DEMO_PRESETS`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from lwd.configargs import documented
from lwd.evaluation.compare import paired_difference
from lwd.evaluation.report import write_report
from lwd.fleet.gate import GATE_MODES
from lwd.recipes.presets import DEMO_PRESETS
from lwd.recipes.stages import (
    deploy_stage,
    evaluation,
    offline_data_stage,
    offline_rl_stage,
    sft_stage,
    timed,
)


@dataclass(frozen=True)
class DemoConfig:
    preset: str = documented(
        "small",
        "smoke (CI, two tasks), small (MT10, ≤ 20 min on 2 cores), full, mt50 (all 50 Meta-World tasks, one "
        "policy, ~20 min), or from pixels (two cameras, "
        "proprio only): smoke-image, small-image (MT10, ~21 min on an idle 2-core machine)",
    )
    workdir: str = documented("runs/demo", "where the demo keeps stores, checkpoints and the report")
    workers: int = documented(2, "parallel simulator processes for collection and evaluation")
    seed: int = documented(0, "training seed (initialisation, sampling, fleet noise)")
    gate_mode: str = documented(
        "",
        "version gate of the deployment stage (lwd.fleet.gate): off, observe (score every published "
        "version on validation seeds: the report's validation curve), evaluate or canary; empty: the preset's",
    )


def run_demo(config: DemoConfig) -> Path:
    """Run (or finish) every stage; returns the report path."""
    if config.preset not in DEMO_PRESETS:
        raise ValueError(f"unknown preset {config.preset!r}; choose from {sorted(DEMO_PRESETS)}")
    preset = DEMO_PRESETS[config.preset]
    if config.gate_mode and config.gate_mode not in GATE_MODES:
        raise ValueError(f"unknown gate mode {config.gate_mode!r}; choose from {', '.join(GATE_MODES)}")
    if config.gate_mode:
        preset = replace(preset, gate_mode=config.gate_mode)
    work = Path(config.workdir)
    work.mkdir(parents=True, exist_ok=True)
    (work / "demo_config.json").write_text(json.dumps({"demo": asdict(config), "preset": asdict(preset)}, indent=2))
    stages: dict[str, float] = {}
    quiet = config.preset == "smoke"

    print("[1/5] demonstrations + SFT (flow matching)")
    store, sft_final = sft_stage(work, preset, config.seed, config.workers, quiet, stages)

    print("[2/5] offline data (SFT rollouts + play) and offline RL (DIVL + QAM)")
    offline_data_stage(store, sft_final, preset, config.workers, quiet, stages)
    offline_final = offline_rl_stage(work / "offline", store, sft_final, preset, config.seed, quiet, stages)

    print("[3/5] learning while deploying: simulated fleet + online learner")
    summary = deploy_stage(work / "deploy", "lwd", offline_final, store, preset, config.seed, quiet, stages)
    online_final = Path(summary["final"])

    print("[4/5] evaluation on evaluation seeds (no operator)")
    evals = {}
    for name, checkpoint in (("SFT", sft_final), ("LWD offline", Path(offline_final)), ("LWD online", online_final)):
        evals[name] = timed(
            stages,
            f"eval {name}",
            lambda c=checkpoint, n=name: evaluation(
                c, work / "eval" / n.lower().replace(" ", "_"), preset, config.workers, config.seed
            ),
        )

    print("[5/5] report")
    gain = paired_difference(evals["SFT"], evals["LWD online"])
    notes = [
        f"Preset `{config.preset}`, training seed {config.seed}; {len(evals['SFT']['per_task'])} tasks; "
        f"online budget {preset.online_env_steps:,} env steps. Stages not re-run on a second invocation "
        "report no time below.",
        "",
        f"SFT {evals['SFT']['average_success']:.3f} → LWD offline {evals['LWD offline']['average_success']:.3f} "
        f"→ LWD online {evals['LWD online']['average_success']:.3f}: {gain.mean:+.3f} over SFT on the same "
        f"evaluation episodes (95% CI {gain.ci95[0]:+.3f} … {gain.ci95[1]:+.3f}; {gain.gains} episodes solved "
        f"only online, {gain.losses} only by SFT; sign test p = {gain.sign_test_p:.2g}).",
    ]
    report = write_report(
        work / "report", evals, work / "deploy", summary, "lwd demo: learning while deploying", stages, notes
    )
    (work / "report" / "summary.json").write_text(
        json.dumps(
            {
                "average_success": {n: e["average_success"] for n, e in evals.items()},
                "online_vs_sft": asdict(gain),
                "stage_seconds": stages,
                "deploy": summary,
            },
            indent=2,
        )
    )
    return report
