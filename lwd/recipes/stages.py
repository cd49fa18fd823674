"""The stages the recipes chain: each runs (or reuses) one resumable step of the method
and adds its wall time to a `stage_seconds` dict."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

from lwd.algorithms.learner import LearnerConfig
from lwd.envs.operator import OperatorConfig
from lwd.evaluation.compare import scored_alike
from lwd.evaluation.evaluate import EvalConfig, evaluate
from lwd.evaluation.gate import make_gate
from lwd.fleet.collect import (
    CollectConfig,
    OfflineDataConfig,
    build_offline_store,
    collect,
)
from lwd.fleet.gate import GateConfig
from lwd.fleet.online import ONLINE_LEARNER, DeployConfig, deploy
from lwd.fleet.worker import FleetConfig
from lwd.policy.checkpoint import read_manifest
from lwd.recipes.presets import Preset
from lwd.training.offline import OfflineConfig, train_offline
from lwd.training.sft import PretrainConfig, pretrain


def timed(stage_seconds: dict[str, float], name: str, fn):
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
        if (
            saved.get("checkpoint") == str(checkpoint)
            and saved.get("training_step") == step
            and saved["config"]["episodes_per_task"] == preset.eval_episodes_per_task
            and scored_alike(saved, EvalConfig.noise_scale, EvalConfig.unstick.steps)
        ):
            return saved
    return evaluate(
        EvalConfig(
            checkpoint=str(checkpoint),
            suite=preset.suite,
            episodes_per_task=preset.eval_episodes_per_task,
            workers=workers,
            out=str(out),
            tasks=preset.tasks,
            seed=seed,
        )
    )


def sft_stage(
    work: Path, preset: Preset, seed: int, workers: int, quiet: bool, stages: dict[str, float]
) -> tuple[str, Path]:
    """Demonstrations → SFT (flow matching); returns (store, SFT checkpoint)."""
    store = str(work / "store")
    timed(
        stages,
        "demonstrations",
        lambda: collect(
            CollectConfig(
                store=store,
                suite=preset.suite,
                tasks=preset.tasks,
                episodes_per_task=preset.demos_per_task,
                workers=workers,
                progress=not quiet,
                sensors=preset.sensors,
            )
        ),
    )
    sft_final = work / "sft" / "final"
    if not (sft_final.exists() and read_manifest(sft_final).training_step == preset.sft_steps):
        timed(
            stages,
            "SFT",
            lambda: pretrain(
                PretrainConfig(
                    store=store,
                    out=str(work / "sft"),
                    steps=preset.sft_steps,
                    batch_size=preset.batch_size,
                    hidden_dim=preset.hidden_dim,
                    num_layers=preset.num_layers,
                    cameras=preset.cameras,
                    seed=seed,
                    progress=not quiet,
                    tensorboard=not quiet,
                )
            ),
        )
    return store, sft_final


def offline_data_stage(
    store: str, sft_final: Path, preset: Preset, workers: int, quiet: bool, stages: dict[str, float]
) -> None:
    """Complete the store with SFT rollouts and play (the offline data of SPEC §6.2)."""
    timed(
        stages,
        "offline data",
        lambda: build_offline_store(
            OfflineDataConfig(
                store=store,
                checkpoint=str(sft_final),
                suite=preset.suite,
                tasks=preset.tasks,
                demos_per_task=preset.demos_per_task,
                rollouts_per_task=preset.rollouts_per_task,
                play_per_task=preset.play_per_task,
                workers=workers,
                progress=not quiet,
                sensors=preset.sensors,
            )
        ),
    )


def offline_rl_stage(
    out: Path,
    store: str,
    sft_final: Path,
    preset: Preset,
    seed: int,
    quiet: bool,
    stages: dict[str, float],
    label: str = "offline RL",
    learner: dict[str, object] | None = None,
    **overrides: object,
) -> Path:
    """DIVL + QAM on the offline store; `learner` (LearnerConfig fields) and `overrides` (any
    other OfflineConfig field, e.g. `value_kind` or `discount`) replace the preset's settings
    (the ablations, validation arms)."""
    preset_fields = dict(
        store=store,
        checkpoint=str(sft_final),
        out=str(out),
        steps=preset.offline_steps,
        n_step=preset.offline_n_step,
        batch_size=preset.batch_size,
        critic_hidden=preset.critic_hidden,
        seed=seed,
        progress=not quiet,
        tensorboard=not quiet,
        learner=LearnerConfig(policy_warmup=preset.offline_warmup, qam_batch=preset.qam_batch, **(learner or {})),
    )
    config = OfflineConfig(**{**preset_fields, **overrides})
    return timed(stages, label, lambda: train_offline(config))


def online_learner(preset: Preset) -> LearnerConfig:
    """The LWD online learner a preset deploys: `lwd deploy`'s defaults at the preset's QAM batch
    and tracking setting."""
    return replace(
        ONLINE_LEARNER, qam_batch=preset.qam_batch, policy_tracks_reference=preset.online_policy_tracks_reference
    )


def deploy_stage(
    out: Path,
    method: str,
    checkpoint: Path,
    store: str,
    preset: Preset,
    seed: int,
    quiet: bool,
    stages: dict[str, float],
    label: str = "deploy",
    operator: OperatorConfig | None = None,
    **overrides: object,
) -> dict:
    """Learning while deploying with `method` on a simulated fleet watched by `operator` (the
    default one if None) for the preset's budget; `overrides` replace any DeployConfig field, the
    preset's own (e.g. `robots`) included."""
    preset_fields = dict(
        method=method,
        checkpoint=str(checkpoint),
        offline_store=store,
        out=str(out),
        robots=FleetConfig(
            suite=preset.suite,
            tasks=preset.tasks,
            robots_per_worker=preset.robots_per_worker,
            operator=operator or OperatorConfig(),
        ),
        env_steps=preset.online_env_steps,
        updates_per_1k_env_steps=preset.updates_per_1k_env_steps,
        n_sync=preset.n_sync,
        batch_size=preset.batch_size,
        lwd=online_learner(preset),
        gate=GateConfig(mode=preset.gate_mode),
        seed=seed,
        progress=not quiet,
        tensorboard=not quiet,
        **({"refresh_seconds": 0.2, "log_seconds": 1.0} if quiet else {}),
    )
    config = DeployConfig(**{**preset_fields, **overrides})
    return timed(stages, label, lambda: deploy(config, make_gate=make_gate))
