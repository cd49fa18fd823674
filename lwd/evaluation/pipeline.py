"""The main job (`lwd demo`): demonstrations → SFT → offline RL → learning while
deploying with a simulated fleet → evaluation → report, at a named preset.

Every stage is resumable and reused when already finished, so a second run only
redoes what is missing. Presets:

    smoke   two tasks, tiny networks; for the test suite (a couple of minutes)
    small   MT10 on this 2-core machine in ≤ 20 minutes (the default)
    full    MT10 with the offline and online budgets of docs/benchmarks.md (hours on 2 cores;
            meant for a bigger machine)
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from lwd.configargs import documented
from lwd.evaluation.compare import paired_difference
from lwd.evaluation.evaluate import EvalConfig, evaluate
from lwd.evaluation.report import write_report
from lwd.fleet.collect import (
    CollectConfig,
    OfflineDataConfig,
    build_offline_store,
    collect,
)
from lwd.fleet.online import DeployConfig, deploy
from lwd.policy.checkpoint import read_manifest
from lwd.training.offline import OfflineConfig, train_offline
from lwd.training.sft import PretrainConfig, pretrain


@dataclass(frozen=True)
class DemoConfig:
    preset: str = documented("small", "smoke (CI, two tasks), small (MT10, ≤ 20 min on 2 cores) or full")
    workdir: str = documented("runs/demo", "where the demo keeps stores, checkpoints and the report")
    workers: int = documented(2, "parallel simulator processes for collection and evaluation")
    seed: int = documented(0, "training seed (initialisation, sampling, fleet noise)")


@dataclass(frozen=True)
class Preset:
    suite: str = "mt10"
    tasks: tuple[str, ...] = ()  # () = the whole suite
    demos_per_task: int = 10
    rollouts_per_task: int = 20
    play_per_task: int = 5
    sft_steps: int = 3_000
    hidden_dim: int = 512
    num_layers: int = 4
    batch_size: int = 256
    offline_steps: int = 1_500
    offline_warmup: int = 1_000
    offline_n_step: int = 4  # SPEC §4: n = 10 chunks for long-horizon tasks
    critic_hidden: int = 256
    qam_batch: int = 64
    robots_per_worker: int = 10
    online_env_steps: int = 250_000
    updates_per_1k_env_steps: float = 0.0  # pacing of the online learner (0 = robots and learner run free)
    n_sync: int = 50
    eval_episodes_per_task: int = 20


PRESETS = {
    "smoke": Preset(tasks=("reach-v3", "drawer-close-v3"), demos_per_task=2, rollouts_per_task=2, play_per_task=1,
                    sft_steps=20, hidden_dim=64, num_layers=1, batch_size=32, offline_steps=6, offline_warmup=2,
                    critic_hidden=32, qam_batch=8, robots_per_worker=2, online_env_steps=1_500, n_sync=5,
                    eval_episodes_per_task=2),
    "small": Preset(eval_episodes_per_task=50),  # 500 episodes per policy: ±0.03 on the MT10 average
    "full": Preset(sft_steps=3_000, offline_steps=4_000, offline_warmup=2_000, qam_batch=128,
                   online_env_steps=1_000_000, eval_episodes_per_task=50),
}


def _timed(stage_seconds: dict[str, float], name: str, fn):
    """Run a stage, adding its wall time to `stage_seconds[name]` (also when interrupted)."""
    began = time.perf_counter()
    try:
        return fn()
    finally:
        stage_seconds[name] = stage_seconds.get(name, 0.0) + time.perf_counter() - began


def evaluation(checkpoint: Path, out: Path, preset: Preset, workers: int, seed: int) -> dict:
    """Evaluate on evaluation seeds, or reuse an evaluation of the same checkpoint state and size."""
    report = out / "eval.json"
    step = read_manifest(checkpoint).training_step
    if report.exists():
        saved = json.loads(report.read_text())
        if (saved.get("checkpoint") == str(checkpoint) and saved.get("training_step") == step
                and saved["config"]["episodes_per_task"] == preset.eval_episodes_per_task):
            return saved
    return evaluate(EvalConfig(checkpoint=str(checkpoint), suite=preset.suite,
                               episodes_per_task=preset.eval_episodes_per_task, workers=workers, out=str(out),
                               tasks=preset.tasks, seed=seed))


def sft_stage(work: Path, preset: Preset, seed: int, workers: int, quiet: bool, stages: dict[str, float]
              ) -> tuple[str, Path]:
    """Demonstrations → SFT (flow matching); returns (store, SFT checkpoint)."""
    store = str(work / "store")
    _timed(stages, "demonstrations", lambda: collect(CollectConfig(
        store=store, suite=preset.suite, tasks=preset.tasks, episodes_per_task=preset.demos_per_task, workers=workers,
        progress=not quiet)))
    sft_final = work / "sft" / "final"
    if not (sft_final.exists() and read_manifest(sft_final).training_step == preset.sft_steps):
        _timed(stages, "SFT", lambda: pretrain(PretrainConfig(
            store=store, out=str(work / "sft"), steps=preset.sft_steps, batch_size=preset.batch_size,
            hidden_dim=preset.hidden_dim, num_layers=preset.num_layers, seed=seed, progress=not quiet,
            tensorboard=not quiet)))
    return store, sft_final


def offline_data_stage(store: str, sft_final: Path, preset: Preset, workers: int, quiet: bool,
                       stages: dict[str, float]) -> None:
    """Complete the store with SFT rollouts and play (the offline data of SPEC §6.2)."""
    _timed(stages, "offline data", lambda: build_offline_store(OfflineDataConfig(
        store=store, checkpoint=str(sft_final), suite=preset.suite, tasks=preset.tasks,
        demos_per_task=preset.demos_per_task, rollouts_per_task=preset.rollouts_per_task,
        play_per_task=preset.play_per_task, workers=workers, progress=not quiet)))


def offline_rl_stage(out: Path, store: str, sft_final: Path, preset: Preset, seed: int, quiet: bool,
                     stages: dict[str, float], label: str = "offline RL", **learner: object) -> Path:
    """DIVL + QAM on the offline store; `learner` overrides settings (the ablations)."""
    return _timed(stages, label, lambda: train_offline(OfflineConfig(
        store=store, checkpoint=str(sft_final), out=str(out), steps=preset.offline_steps,
        policy_warmup=preset.offline_warmup, n_step=preset.offline_n_step, batch_size=preset.batch_size,
        qam_batch=preset.qam_batch, critic_hidden=preset.critic_hidden, seed=seed, progress=not quiet,
        tensorboard=not quiet, **learner)))


def deploy_stage(out: Path, method: str, checkpoint: Path, store: str, preset: Preset, seed: int, quiet: bool,
                 stages: dict[str, float], label: str = "deploy", **overrides: object) -> dict:
    """Learning while deploying with `method` on a simulated fleet for the preset's budget."""
    config = DeployConfig(method=method, checkpoint=str(checkpoint), offline_store=store, out=str(out),
                          suite=preset.suite, tasks=preset.tasks, robots_per_worker=preset.robots_per_worker,
                          env_steps=preset.online_env_steps, updates_per_1k_env_steps=preset.updates_per_1k_env_steps,
                          n_sync=preset.n_sync, batch_size=preset.batch_size,
                          qam_batch=preset.qam_batch, seed=seed, progress=not quiet, tensorboard=not quiet,
                          **({"refresh_seconds": 0.2, "log_seconds": 1.0} if quiet else {}), **overrides)
    return _timed(stages, label, lambda: deploy(config))


def run_demo(config: DemoConfig) -> Path:
    """Run (or finish) every stage; returns the report path."""
    if config.preset not in PRESETS:
        raise ValueError(f"unknown preset {config.preset!r}; choose from {sorted(PRESETS)}")
    preset = PRESETS[config.preset]
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
        evals[name] = _timed(stages, f"eval {name}", lambda c=checkpoint, n=name: evaluation(
            c, work / "eval" / n.lower().replace(" ", "_"), preset, config.workers, config.seed))

    print("[5/5] report")
    gain = paired_difference(evals["SFT"], evals["LWD online"])
    notes = [f"Preset `{config.preset}`, training seed {config.seed}; {len(evals['SFT']['per_task'])} tasks; "
             f"online budget {preset.online_env_steps:,} env steps. Stages not re-run on a second invocation "
             "report no time below.", "",
             f"SFT {evals['SFT']['average_success']:.3f} → LWD offline {evals['LWD offline']['average_success']:.3f} "
             f"→ LWD online {evals['LWD online']['average_success']:.3f}: {gain.mean:+.3f} over SFT on the same "
             f"evaluation episodes (95% CI {gain.ci95[0]:+.3f} … {gain.ci95[1]:+.3f}; {gain.gains} episodes solved "
             f"only online, {gain.losses} only by SFT; sign test p = {gain.sign_test_p:.2g})."]
    report = write_report(work / "report", evals, work / "deploy", summary, "lwd demo: learning while deploying",
                          stages, notes)
    (work / "report" / "summary.json").write_text(json.dumps(
        {"average_success": {n: e["average_success"] for n, e in evals.items()}, "online_vs_sft": asdict(gain),
         "stage_seconds": stages, "deploy": summary}, indent=2))
    return report
