"""Offline RL (SPEC §6.2): DIVL + QAM from the SFT checkpoint on the offline store.

The SFT checkpoint is both the start of f_θ and the frozen reference f_β. Resumable:
`<out>/last` holds policy, reference, critic, target critic, value, all optimiser
states and the sampler RNG; `<out>/final` is the offline policy, whose learner state
the online stage inherits.
"""

from __future__ import annotations

import copy
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from lwd.algorithms.learner import LearnerConfig, LWDLearner
from lwd.configargs import documented
from lwd.data.lease import RunLease
from lwd.data.replay import ChunkReplay, ReplayConfig, check_stage_reward, sample_learner_batches
from lwd.data.store import EpisodeStore
from lwd.policy.adapter import PolicyAdapter
from lwd.policy.architectures import build_policy
from lwd.policy.checkpoint import (
    load_checkpoint,
    load_learner_state,
    save_checkpoint,
)
from lwd.policy.critic import ChunkCritic, CriticConfig, StateValue
from lwd.policy.instructions import InstructionEncoder
from lwd.training.batches import learner_batch
from lwd.training.host import DEVICE_HELP, prepare_learner_process
from lwd.training.loop import LoopSettings, run_steps
from lwd.training.metrics import MetricsLogger
from lwd.training.resume import ResumeState, find_resume_state, optimizer_state, restore_optimizers_from


@dataclass(frozen=True)
class OfflineConfig:
    """Offline RL: the data, the run, and the DIVL + QAM learner (`learner`)."""

    store: str = documented("runs/store", "offline store: demos + SFT rollouts + play (`lwd offline-data`)")
    checkpoint: str = documented("runs/sft/final", "SFT checkpoint: start of the policy and the frozen reference")
    out: str = documented("runs/offline", "run directory: checkpoints, metrics.jsonl, tensorboard/")
    steps: int = documented(4_000, "learner steps (the first --learner.policy-warmup of them train only V and Q)")
    batch_size: int = documented(256, "chunks per batch (value and critic; QAM uses --learner.qam-batch of them)")
    n_step: int = documented(4, "n: chunks per TD backup offline (4 for MT10 at H = 5; 10 for long-horizon tasks)")
    discount: float = documented(0.99, "γ per environment step")
    stage_reward: float = documented(
        0.0, "reward for each completed stage of a long-horizon chain before its last (shaping; 0 = SPEC's sparse)"
    )
    takeover_as_failure: bool = documented(
        False, "end a policy backup at an operator's takeover as a failure (for fleet data; see `lwd deploy --help`)"
    )
    task_balanced: bool = documented(True, "sample tasks equally often")
    value_kind: str = documented("categorical", "'categorical' (DIVL) or 'expectile' (IQL-style ablation)")
    critic_hidden: int = documented(256, "width of critic and value networks")
    critic_heads: int = documented(2, "Q heads of the critic ensemble (TD targets use their minimum, QAM their mean)")
    critic_action_features: int = documented(
        0, "width of each Q head's own layer over the action chunk (0 = the chunk enters the head directly)"
    )
    seed: int = documented(0, "seed for initialisation and sampling")
    log_every: int = documented(100, "steps between metric records")
    checkpoint_every: int = documented(500, "steps between resumable checkpoints")
    threads: int = documented(2, "torch CPU threads")
    device: str = documented(DEVICE_HELP[0], DEVICE_HELP[1])
    progress: bool = documented(True, "show a progress bar")
    tensorboard: bool = documented(True, "also write TensorBoard event files")
    learner: LearnerConfig = documented(LearnerConfig(), "DIVL + QAM settings (SPEC §4-§5)")

    def __post_init__(self) -> None:
        check_stage_reward(self.stage_reward)


def build_learner(
    policy: PolicyAdapter,
    reference: PolicyAdapter,
    critic_config: CriticConfig,
    learner_config: LearnerConfig,
    obs_stats: tuple[np.ndarray, np.ndarray] | None = None,
    state: dict[str, torch.Tensor] | None = None,
    device: torch.device | str = "cpu",
) -> LWDLearner:
    """New networks normalised by `obs_stats`, or restored from a saved learner `state`;
    every network on `device` (the policy and reference are moved there)."""
    critic, value = ChunkCritic(critic_config), StateValue(critic_config)
    if obs_stats is not None:
        critic.set_normalization(*obs_stats)
        value.set_normalization(*obs_stats)
    networks = (policy, reference, critic, value)
    for network in networks:
        network.to(device)
    learner = LWDLearner(*networks, learner_config)
    if state is not None:
        load_learner_modules(learner, state)
    return learner


def learner_modules(learner: LWDLearner) -> dict[str, torch.nn.Module]:
    modules = {
        "reference": learner.reference,
        "critic": learner.critic,
        "critic_target": learner.critic_target,
        "value": learner.value,
    }
    if learner.prior is not None:
        modules["prior"] = learner.prior
    if learner.policy_average is not None:  # the checkpoint's policy is the average; QAM's own policy lives here
        modules["trained_policy"] = learner.policy
    return modules


def load_learner_modules(learner: LWDLearner, state: dict[str, torch.Tensor]) -> None:
    """Load a saved learner; a learned prior absent from the state (a run that switched
    `--prior learned` on, e.g. online from a frozen-prior offline run) starts as the reference,
    and a trained policy absent from it (`policy_ema` switched on) as the average."""
    modules = learner_modules(learner)
    missing = [name for name in ("prior", "trained_policy") if name in modules and not _saved(state, name)]
    for name in missing:
        modules.pop(name)
    load_modules(modules, state)
    if "prior" in missing:
        learner.sync_prior()


def _saved(state: dict[str, torch.Tensor], name: str) -> bool:
    return any(key.startswith(name + ".") for key in state)


def load_modules(modules: dict[str, torch.nn.Module], state: dict[str, torch.Tensor]) -> None:
    """Load each module from the `<name>.`-prefixed entries of a saved learner state."""
    for name, module in modules.items():
        prefix = name + "."
        module.load_state_dict({k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)})


def train_offline(config: OfflineConfig) -> Path:
    """Train (or resume) and return the path of the final checkpoint; another process still
    training into the same `out` is refused (`RunLeaseError`)."""
    device = prepare_learner_process(config.device, config.threads)  # a missing GPU fails before any file
    out = Path(config.out)
    with RunLease(out):  # creates `out`
        return _train_offline_holding_lease(config, out, device)


def _train_offline_holding_lease(config: OfflineConfig, out: Path, device: torch.device) -> Path:
    resume = find_resume_state(out / "last", "offline")
    policy, encoder, manifest = load_checkpoint(out / "last" if resume else Path(config.checkpoint))
    replay = ChunkReplay(
        EpisodeStore(config.store, create=False),
        ReplayConfig(
            chunk_len=policy.chunk_len,
            discount=config.discount,
            n_step=config.n_step,
            task_balanced=config.task_balanced,
            takeover_as_failure=config.takeover_as_failure,
            stage_reward=config.stage_reward,
            image_cameras=policy.cameras,
        ),
    )
    if resume is not None:
        state = resume[0]
        critic_config = CriticConfig(**state.extras["critic"])
        asked = {
            "hidden_dim": config.critic_hidden,
            "num_heads": config.critic_heads,
            "value_kind": config.value_kind,
            "action_features": config.critic_action_features,
        }
        saved = {name: getattr(critic_config, name) for name in asked}
        if saved != asked:
            raise ValueError(
                f"{out / 'last'} holds a critic with {saved}, not {asked}: resume with those or use another --out"
            )
        replay.refresh(up_to=manifest.data_snapshot)
        learner = build_learner(
            policy,
            build_policy(policy.config),
            critic_config,
            config.learner,
            state=load_learner_state(out / "last"),
            device=device,
        )
        restore_optimizers_from(learner.optimizers, out / "last")
        base_step, base_version = state.extras["start_step"], state.extras["base_version"]
    else:
        state = None
        learner, critic_config = _new_learner(config, policy, encoder, replay, device)
        base_step, base_version = manifest.training_step, manifest.version
    start = learner.step_count = state.step if state else 0
    (out / "config.json").write_text(json.dumps(asdict(config), indent=2))
    rng = state.sampler() if state else np.random.default_rng(config.seed)
    generator = torch.Generator().manual_seed(config.seed + start)
    logger = MetricsLogger(out, tensorboard=config.tensorboard)

    def checkpoint(path: Path, step: int) -> None:
        resume_state = ResumeState(
            step,
            rng.bit_generator.state,
            {
                "critic": critic_config.to_dict(),
                "learner": config.learner.to_dict(),
                "start_step": base_step,
                "base_version": base_version,
                "store": config.store,
                "reference_checkpoint": config.checkpoint,
            },
        )
        save_checkpoint(
            path,
            learner.deployed_policy,
            encoder,
            version=base_version + 1,
            parent_version=base_version,
            training_step=base_step + step,
            data_snapshot=replay.snapshot,
            optimizer_state=optimizer_state(learner.optimizers),
            learner_modules=learner_modules(learner),
            extras={"offline": resume_state.to_json()},
        )

    def step() -> dict[str, float]:
        sampled, imitable = sample_learner_batches(replay, config.batch_size, rng, learner.wants_imitable_batch)
        batch = learner_batch(sampled, encoder).to(device)
        imitable_batch = None if imitable is None else learner_batch(imitable, encoder).to(device)
        return learner.step(batch, generator, imitable_batch)

    def summary(mean: dict[str, float]) -> dict[str, str]:
        return {
            "q": f"{mean['critic/q_mean']:.3f}",
            "tau": f"{mean.get('value/tau_mean', 0):.2f}",
            "kl": f"{mean.get('qam/kl_proxy', 0):.3f}",
        }

    settings = LoopSettings(
        "offline RL", "learner/updates_per_s", config.steps, config.log_every, config.checkpoint_every, config.progress
    )
    return run_steps(settings, out, start, step, logger, checkpoint, summary)


def _new_learner(
    config: OfflineConfig,
    policy: PolicyAdapter,
    encoder: InstructionEncoder,
    replay: ChunkReplay,
    device: torch.device,
) -> tuple[LWDLearner, CriticConfig]:
    """A learner around the SFT policy: its frozen copy as reference, fresh critic and value
    normalised on the offline store."""
    replay.refresh()
    if replay.num_steps == 0:
        raise ValueError(f"store {config.store} is empty; build it with `lwd offline-data`")
    missing = sorted(set(replay.instruction_vocab) - set(encoder.table))
    encoder.embed(missing)  # loads the sentence encoder only for instructions the SFT never saw
    critic_config = CriticConfig.for_policy(
        policy.config,
        hidden_dim=config.critic_hidden,
        num_heads=config.critic_heads,
        value_kind=config.value_kind,
        action_features=config.critic_action_features,
    )
    torch.manual_seed(config.seed)
    reference = copy.deepcopy(policy)  # the SFT policy, frozen
    obs = replay.observation_array
    stats = (obs.mean(0), obs.std(0))
    return build_learner(policy, reference, critic_config, config.learner, stats, device=device), critic_config
