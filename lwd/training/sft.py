"""SFT: supervised flow-matching pretraining of the chunk policy on demonstrations.

Resumable: `<out>/last` holds the newest checkpoint with optimiser state, step and
sampler RNG; running the same command again continues from it. `<out>/final` is the
finished policy (the SFT baseline and the frozen reference for RL).
"""

from __future__ import annotations

import json
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from lwd.algorithms.batch import LearnerBatch
from lwd.algorithms.flow_matching import flow_matching_update
from lwd.configargs import documented
from lwd.data.lease import RunLease
from lwd.data.replay import ChunkReplay, ReplayConfig
from lwd.data.store import EpisodeStore
from lwd.envs.phrasings import task_phrasings
from lwd.policy.adapter import PolicyAdapter
from lwd.policy.architectures import build_policy
from lwd.policy.checkpoint import (
    load_checkpoint,
    save_checkpoint,
)
from lwd.policy.flow_policy import ARCHITECTURES, PolicyConfig
from lwd.policy.instructions import InstructionEncoder
from lwd.training.batches import learner_batch
from lwd.training.host import DEVICE_HELP, prepare_learner_process
from lwd.training.loop import LoopSettings, run_steps
from lwd.training.metrics import MetricsLogger
from lwd.training.resume import ResumeState, find_resume_state, optimizer_state, restore_optimizers_from


@dataclass(frozen=True)
class PretrainConfig:
    store: str = documented("runs/store", "episode store with demonstrations")
    out: str = documented("runs/sft", "run directory: checkpoints, metrics.jsonl, tensorboard/")
    steps: int = documented(3_000, "gradient steps (the demo-budget measurement in docs/benchmarks.md used 3000)")
    batch_size: int = documented(256, "chunks per batch")
    lr: float = documented(3e-4, "Adam learning rate (cosine-decayed to a tenth of it)")
    chunk_len: int = documented(5, "H: actions per chunk (chosen on validation seeds, docs/benchmarks.md)")
    hidden_dim: int = documented(512, "velocity network width (token_transformer: feed-forward width)")
    num_layers: int = documented(4, "velocity network depth (token_transformer: transformer layers)")
    architecture: str = documented(
        "flow_mlp", f"policy class, one of {ARCHITECTURES} (PolicyConfig.architecture; the checkpoint names it)"
    )
    context_dim: int = documented(256, "context size (token_transformer: token width)")
    sources: tuple[str, ...] = documented(("demo",), "episode sources to imitate")
    cameras: tuple[str, ...] = documented(
        (),
        "cameras the policy sees (a CNN over their frames side by side; the store's episodes must have them); "
        "empty: no images",
    )
    image_memory_mb: float = documented(4096.0, "most decoded camera frames the replay holds in memory (MiB)")
    seed: int = documented(0, "seed for initialisation and sampling")
    log_every: int = documented(100, "steps between metric records")
    checkpoint_every: int = documented(1_000, "steps between resumable checkpoints")
    threads: int = documented(2, "torch CPU threads")
    device: str = documented(DEVICE_HELP[0], DEVICE_HELP[1])
    progress: bool = documented(True, "show a progress bar")
    tensorboard: bool = documented(True, "also write TensorBoard event files")


def sft_step(
    policy: PolicyAdapter, optimizer: torch.optim.Optimizer, batch: LearnerBatch, generator: torch.Generator
) -> dict[str, float]:
    metrics = flow_matching_update(
        policy,
        optimizer,
        list(policy.parameters()),
        10.0,
        batch.obs,
        batch.instruction,
        batch.actions,
        batch.action_mask,
        generator,
        batch.images,
    )
    metrics["sft/grad_norm"] = metrics.pop("policy/grad_norm")
    return metrics


def pretrain(config: PretrainConfig) -> Path:
    """Train (or resume) and return the path of the final checkpoint; another process still
    training into the same `out` is refused (`RunLeaseError`)."""
    device = prepare_learner_process(config.device, config.threads)  # a missing GPU fails before any file
    out = Path(config.out)
    with RunLease(out):  # creates `out`
        return _pretrain_holding_lease(config, out, device)


def _pretrain_holding_lease(config: PretrainConfig, out: Path, device: torch.device) -> Path:
    replay = ChunkReplay(
        EpisodeStore(config.store, create=False),
        ReplayConfig(
            chunk_len=config.chunk_len,
            sources=config.sources,
            image_cameras=config.cameras,
            image_memory_mb=config.image_memory_mb,
        ),
    )
    resume = find_resume_state(out / "last", "sft")
    if resume is not None:
        state, manifest = resume
        policy, encoder, _ = load_checkpoint(out / "last")
        if policy.chunk_len != config.chunk_len:
            raise ValueError(
                f"{out / 'last'} was trained with chunk_len={policy.chunk_len}; pass the same value to resume"
            )
        replay.refresh(up_to=manifest.data_snapshot)
    else:
        state = None
        policy, encoder = _new_policy(config, replay)
    policy.to(device)
    (out / "config.json").write_text(json.dumps(asdict(config), indent=2))
    start = state.step if state else 0
    optimizer, schedule = _optimizer_and_schedule(policy, config, start)
    if state is not None:
        restore_optimizers_from({"policy": optimizer}, out / "last")
    rng = state.sampler() if state else np.random.default_rng(config.seed)
    torch_seed = state.extras["torch_seed"] if state else config.seed
    generator = torch.Generator().manual_seed(torch_seed + start)
    logger = MetricsLogger(out, tensorboard=config.tensorboard)

    def checkpoint(path: Path, step: int) -> None:
        resume_state = ResumeState(
            step,
            rng.bit_generator.state,
            {"torch_seed": torch_seed, "store": config.store, "sources": list(config.sources)},
        )
        save_checkpoint(
            path,
            policy,
            encoder,
            version=0,
            training_step=step,
            data_snapshot=replay.snapshot,
            optimizer_state=optimizer_state({"policy": optimizer}),
            extras={"sft": resume_state.to_json()},
        )

    def step() -> dict[str, float]:
        metrics = sft_step(
            policy, optimizer, learner_batch(replay.sample(config.batch_size, rng), encoder).to(device), generator
        )
        schedule.step()
        return metrics

    settings = LoopSettings(
        "pretrain", "sft/updates_per_s", config.steps, config.log_every, config.checkpoint_every, config.progress
    )
    return run_steps(
        settings,
        out,
        start,
        step,
        logger,
        checkpoint,
        summary=lambda mean: {"loss": f"{mean['sft/flow_loss']:.4f}"},
        extra_metrics=lambda: {"sft/lr": schedule.get_last_lr()[0]},
    )


def _new_policy(config: PretrainConfig, replay: ChunkReplay) -> tuple[PolicyAdapter, InstructionEncoder]:
    """A fresh policy normalised on the store's data, and the embeddings of its instructions."""
    replay.refresh()
    if replay.num_steps == 0:
        raise ValueError(f"store {config.store} has no episodes from sources {config.sources}; run `lwd collect` first")
    torch.manual_seed(config.seed)
    obs, act = replay.observation_array, replay.action_array  # (N, obs_dim), (M, action_dim)
    policy = build_policy(
        PolicyConfig(
            obs_dim=obs.shape[1],
            action_dim=act.shape[1],
            chunk_len=config.chunk_len,
            context_dim=config.context_dim,
            hidden_dim=config.hidden_dim,
            num_layers=config.num_layers,
            architecture=config.architecture,
            use_images=bool(config.cameras),
            image_size=replay.image_shape[0] if config.cameras else PolicyConfig.image_size,
            cameras=config.cameras,
        )
    )
    policy.set_normalization(obs.mean(0), obs.std(0), act.mean(0), act.std(0))
    encoder = InstructionEncoder()
    # Every training phrasing of the store's tasks, not only those its episodes drew: robots
    # word each episode from the same table, and a phrasing missing from the checkpoint's
    # table would make every robot process load the sentence encoder (seconds, ~90 MB).
    phrasings = [text for task in replay.task_vocab for text in task_phrasings(task).train]
    encoder.embed(list(replay.instruction_vocab) + phrasings)
    return policy, encoder


def _optimizer_and_schedule(policy: PolicyAdapter, config: PretrainConfig, start: int):
    """Adam with a cosine schedule down to 10% of `lr`, fast-forwarded to `start`."""
    optimizer = torch.optim.Adam(policy.parameters(), lr=config.lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: 0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * min(s / max(config.steps, 1), 1.0)))
    )
    with warnings.catch_warnings():  # fast-forwarding the schedule to the resumed step is intended
        warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler\.step\(\)` before")
        for _ in range(start):
            schedule.step()
    return optimizer, schedule
