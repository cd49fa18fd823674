"""Learning while deploying (SPEC §6.3): the learner loop next to a running fleet.

The learner inherits the offline checkpoint (policy, frozen reference, critic, target
critic, value), samples ≈ 1:1 from the offline store and the growing online store,
runs the same DIVL + QAM step with the online settings (τ_base 0.9, n = 1, no critic
warm-up, policy encoder frozen), and publishes a new policy version every N_sync
steps. Robots pick it up at their next episode boundary.

    <out>/online_store/      the episodes the fleet uploads (an EpisodeStore)
    <out>/registry/          published versions (a PolicyRegistry)
    <out>/learner/last       resumable learner checkpoint; <out>/learner/final at the end
    <out>/metrics.jsonl      learner + fleet metrics (and tensorboard/)
    <out>/episodes.jsonl     one line per online episode, for the report

Ctrl-C or SIGTERM stops the fleet after robots finish their episodes, saves the learner
and exits; running the same command again resumes until the budget is spent.
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from lwd.algorithms.learner import LearnerConfig
from lwd.configargs import documented
from lwd.data.replay import ChunkReplay, MixedReplay, ReplayConfig
from lwd.data.store import EpisodeStore
from lwd.fleet.fleet import LocalFleet
from lwd.fleet.monitor import FleetMonitor
from lwd.fleet.registry import PolicyRegistry
from lwd.fleet.worker import FleetConfig
from lwd.policy.checkpoint import (
    load_checkpoint,
    load_learner_state,
    load_trainer_state,
    save_checkpoint,
)
from lwd.policy.critic import CriticConfig
from lwd.policy.flow_policy import FlowChunkPolicy
from lwd.training.metrics import MetricsLogger
from lwd.training.offline import (
    build_learner,
    learner_modules,
    learner_optimizer_state,
    learner_tensors,
    restore_learner_optimizers,
)


@dataclass(frozen=True)
class DeployConfig(LearnerConfig, FleetConfig):
    """Learner settings (LearnerConfig), the fleet (FleetConfig) and the online stage."""

    # Online values of the learner settings (SPEC §6.3); the rest as offline.
    tau_base: float = documented(0.9, "τ_base online (SPEC §6.3)")
    policy_warmup: int = documented(0, "critic-only steps first; 0 online, the critic comes trained from offline RL")
    freeze_policy_encoder: bool = documented(True, "train only the action expert online (the paper freezes the VLM)")
    checkpoint: str = documented("runs/offline/final", "offline-RL checkpoint with learner state (`lwd train offline`)")
    offline_store: str = documented("runs/store", "offline store sampled next to the online data")
    out: str = documented("runs/deploy", "run directory: online store, registry, learner checkpoints, metrics")
    env_steps: int = documented(100_000, "budget: online env steps in total (across resumes)")
    max_minutes: float = documented(0.0, "also finish after this much wall time in this invocation (0 = no limit)")
    max_learner_steps: int = documented(0, "also stop after this many learner steps in total (0 = no limit)")
    n_sync: int = documented(50, "N_sync: learner steps between published versions")
    online_fraction: float = documented(0.5, "share of each batch from the online store (0.5 = 1:1)")
    batch_size: int = documented(256, "chunks per learner batch")
    n_step: int = documented(1, "n: chunks per TD backup online (SPEC: 1)")
    discount: float = documented(0.99, "γ per environment step")
    task_balanced: bool = documented(True, "sample tasks equally often")
    refresh_seconds: float = documented(1.0, "how often the learner pulls new episodes from the online store")
    log_seconds: float = documented(10.0, "seconds between metric records")
    checkpoint_every: int = documented(250, "learner steps between resumable checkpoints")
    threads: int = documented(1, "torch CPU threads of the learner (the robot workers use --workers more cores)")
    seed: int = documented(0, "seed of sampling, policy noise and operators")
    progress: bool = documented(True, "show a live progress display")
    tensorboard: bool = documented(True, "also write TensorBoard event files")

    def __post_init__(self) -> None:
        LearnerConfig.__post_init__(self)
        FleetConfig.__post_init__(self)  # tasks and fleet size, before anything starts
        if not 0.0 < self.online_fraction < 1.0:
            raise ValueError(f"online_fraction must be in (0, 1), got {self.online_fraction}")
        if self.n_sync < 1 or self.env_steps < 1:
            raise ValueError("n_sync and env_steps must be >= 1")


@dataclass
class DeployState:
    """What a tick callback (tests, a dashboard) can look at while the loop runs."""

    learner_step: int
    version: int
    env_steps: int
    fleet: LocalFleet
    registry: PolicyRegistry


class _Stop(Exception):
    pass


def deploy(config: DeployConfig, on_tick: Callable[[DeployState], None] | None = None) -> dict:
    """Run the online stage until the budget is spent (or Ctrl-C/SIGTERM); resumable."""
    from tqdm import tqdm

    out = Path(config.out)
    finished = _finished_summary(out, config)
    if finished is not None:
        return finished
    torch.set_num_threads(config.threads)
    (out / "learner").mkdir(parents=True, exist_ok=True)
    last = out / "learner" / "last"
    resumed = (last / "manifest.json").exists()
    source = last if resumed else Path(config.checkpoint)
    policy, encoder, manifest = load_checkpoint(source)
    learner_state = load_learner_state(source)  # names the problem if given an SFT checkpoint
    stage = manifest.extras.get("online") if resumed else manifest.extras.get("offline")
    if stage is None or "critic" not in stage:
        raise ValueError(f"{source}: not an offline-RL checkpoint (no critic config in its manifest)")
    critic_config = CriticConfig(**stage["critic"])
    learner = build_learner(policy, FlowChunkPolicy(policy.config), critic_config, config.learner_config(),
                            state=learner_state)
    rng = np.random.default_rng(config.seed)
    if resumed:
        restore_learner_optimizers(learner, load_trainer_state(last) or {})
        rng.bit_generator.state = stage["rng"]
        step, base_training_step = stage["online_step"], stage["base_training_step"]
        offline_snapshot, deployed_from = stage["offline_snapshot"], stage["deployed_from"]
    else:
        step, base_training_step, offline_snapshot, deployed_from = 0, manifest.training_step, None, str(config.checkpoint)
    learner.step_count = step
    (out / "config.json").write_text(json.dumps(asdict(config), indent=2))

    replay_config = ReplayConfig(chunk_len=policy.config.chunk_len, discount=config.discount, n_step=config.n_step,
                                 task_balanced=config.task_balanced)
    offline = ChunkReplay(EpisodeStore(config.offline_store, create=False), replay_config)
    offline.refresh(up_to=offline_snapshot)
    online = ChunkReplay(EpisodeStore(out / "online_store"), replay_config)
    mix = MixedReplay([(offline, 1.0 - config.online_fraction), (online, config.online_fraction)])
    encoder.embed(sorted(set(offline.instruction_vocab) - set(encoder.table)))

    registry = PolicyRegistry(out / "registry")
    latest = registry.latest() or registry.publish_checkpoint(config.checkpoint, learner_step=0)
    history = registry.history()
    first_version = history[0].version
    version_step = {p.version: p.learner_step for p in history}
    monitor = FleetMonitor(out)

    def pull_online_episodes() -> None:
        online.refresh(on_episode=lambda episode: monitor.observe(episode, step))

    pull_online_episodes()
    logger = MetricsLogger(out, tensorboard=config.tensorboard)
    generator = torch.Generator().manual_seed(config.seed * 7_919 + step)

    def checkpoint(path: Path) -> None:
        save_checkpoint(path, learner.policy, encoder, version=latest.version,
                        parent_version=latest.parent_version, training_step=base_training_step + step,
                        data_snapshot=online.snapshot, optimizer_state=learner_optimizer_state(learner),
                        learner_modules=learner_modules(learner),
                        extras={"online": {"critic": critic_config.to_dict(), "learner": config.learner_config().to_dict(),
                                           "rng": rng.bit_generator.state, "online_step": step,
                                           "base_training_step": base_training_step,
                                           "offline_snapshot": offline.snapshot, "deployed_from": deployed_from,
                                           "online_snapshot": online.snapshot}})

    def publish() -> None:
        nonlocal latest
        latest = registry.publish(learner.policy, encoder, version=registry.next_version(latest.version + 1),
                                  parent_version=latest.version, learner_step=step, data_snapshot=online.snapshot,
                                  extras={"training_step": base_training_step + step})
        version_step[latest.version] = step

    def request_stop(*_):
        raise _Stop()

    previous_sigterm = signal.signal(signal.SIGTERM, request_stop)
    fleet = LocalFleet(config.fleet_config(), out / "online_store", out / "registry", log_dir=out)
    fleet.start()
    began = time.time()
    last_refresh = last_log = began
    env_steps_at_start, learner_steps_at_start = monitor.env_steps, step
    window: list[dict[str, float]] = []
    steps_at_log, interrupted, reason, completed = step, False, "budget", False
    bar = tqdm(total=config.env_steps, initial=min(monitor.env_steps, config.env_steps), desc="deploy",
               unit="env step", disable=not config.progress, smoothing=0.1)
    try:
        while True:
            now = time.time()
            if now - last_refresh >= config.refresh_seconds or online.num_steps == 0:
                before = monitor.env_steps
                pull_online_episodes()
                bar.update(min(monitor.env_steps, config.env_steps) - min(before, config.env_steps))
                last_refresh = now
                fleet.supervise()
            if monitor.env_steps >= config.env_steps:
                break
            if config.max_minutes and now - began >= 60 * config.max_minutes:
                reason = "wall time"
                break
            if config.max_learner_steps and step >= config.max_learner_steps:
                reason = "learner steps"
                break
            batch = mix.sample(config.batch_size, rng)
            metrics = learner.step(learner_tensors(batch, encoder), generator)
            online_rows = batch.policy_version[batch.policy_version >= first_version]
            if len(online_rows):
                metrics["staleness/learner_steps"] = float(np.mean([step - version_step.get(int(v), 0) for v in online_rows]))
                metrics["staleness/versions"] = float(latest.version - online_rows.mean())
                metrics["replay/online_share"] = len(online_rows) / len(batch)
            window.append(metrics)
            step += 1
            if step % config.n_sync == 0:
                publish()
            if step % config.checkpoint_every == 0:
                checkpoint(last)
            if on_tick is not None:
                on_tick(DeployState(step, latest.version, monitor.env_steps, fleet, registry))
            if time.time() - last_log >= config.log_seconds:
                _log(logger, monitor, window, step, steps_at_log, last_log, latest.version, fleet, bar)
                window, steps_at_log, last_log = [], step, time.time()
        completed = True
    except (KeyboardInterrupt, _Stop):
        interrupted, reason, completed = True, "interrupted", False
    finally:
        signal.signal(signal.SIGTERM, previous_sigterm)
        bar.set_description("deploy: stopping robots (they finish their episodes)")
        fleet.stop()
        pull_online_episodes()
        _log(logger, monitor, window, step, steps_at_log, last_log, latest.version, fleet, bar)
        bar.close()
        if completed:
            publish()  # the final policy is a published version too
        checkpoint(last)
        monitor.close()
        logger.close()
    if completed:
        checkpoint(out / "learner" / "final")
    wall = time.time() - began
    summary = {"reason": reason, "learner_steps": step, "env_steps": monitor.env_steps, "episodes": monitor.episodes,
               "env_steps_per_s": (monitor.env_steps - env_steps_at_start) / wall,
               "learner_updates_per_s": (step - learner_steps_at_start) / wall,
               "versions_published": len(registry.history()), "latest_version": latest.version,
               "worker_restarts": fleet.restarts, "wall_seconds": wall,
               "final": str(out / "learner" / "final") if (out / "learner" / "final").exists() else None,
               **{k: v for k, v in monitor.snapshot().items() if not k.startswith(("success/", "autonomous_success/",
                                                                                   "intervention_rate/", "fleet/env_steps_per_s"))}}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    if interrupted:
        raise KeyboardInterrupt
    return summary


def _finished_summary(out: Path, config: DeployConfig) -> dict | None:
    """The summary of a run in `out` that already spent this budget (a re-run reuses it)."""
    path = out / "summary.json"
    if not path.exists() or not (out / "learner" / "final" / "manifest.json").exists():
        return None
    summary = json.loads(path.read_text())
    done = summary.get("reason") != "interrupted" and (
        summary["env_steps"] >= config.env_steps or summary["reason"] in ("wall time", "learner steps"))
    return summary if done else None


def _log(logger: MetricsLogger, monitor: FleetMonitor, window: list[dict[str, float]], step: int, steps_at_log: int,
         last_log: float, version: int, fleet: LocalFleet, bar) -> None:
    from lwd.training.metrics import average_metrics

    metrics = average_metrics(window) if window else {}
    metrics.update(monitor.snapshot())
    metrics["learner/updates_per_s"] = (step - steps_at_log) / max(time.time() - last_log, 1e-9)
    metrics["registry/version"] = version
    metrics["fleet/workers_alive"] = fleet.alive
    metrics["fleet/worker_restarts"] = fleet.restarts
    logger.log(step, metrics)
    bar.set_postfix({"v": metrics["registry/version"], "success": f"{metrics.get('fleet/autonomous_success', 0):.2f}",
                     "interv": f"{metrics.get('fleet/intervention_rate', 0):.2f}",
                     "env/s": f"{metrics['fleet/env_steps_per_s']:.0f}", "upd/s": f"{metrics['learner/updates_per_s']:.1f}"})
