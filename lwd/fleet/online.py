"""Learning while deploying (SPEC §6.3): the learner loop next to a running fleet.

The learner inherits the offline checkpoint (policy, frozen reference, critic, target
critic, value), samples ≈ 1:1 from the offline store and the growing online store,
runs the same DIVL + QAM step with the online settings (τ_base 0.9, no critic warm-up,
policy encoder frozen; n = 4 chunk backups cut at every policy↔operator switch, where
the SPEC says n = 1 — see `DeployConfig.n_step`), and publishes a new policy version
every N_sync steps. Robots pick it up at their next episode boundary.

The baselines of SPEC §7 (`--method hg-dagger`, `--method recap`) run in the same loop
with the same fleet, operator and budget, starting from the SFT checkpoint; what differs
lives behind `lwd.training.online_methods.OnlineMethod`. `--offline-steps` trains on the
offline store alone before the robots start (RECAP's offline stage).

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

from lwd.algorithms.hg_dagger import ImitationConfig
from lwd.algorithms.learner import LearnerConfig
from lwd.algorithms.recap import RecapConfig
from lwd.configargs import documented
from lwd.data.replay import ChunkReplay, MixedReplay, ReplayConfig
from lwd.data.store import EpisodeStore
from lwd.fleet.fleet import LocalFleet
from lwd.fleet.monitor import FleetMonitor
from lwd.fleet.registry import PolicyRegistry
from lwd.fleet.worker import FleetConfig
from lwd.policy.checkpoint import has_checkpoint, load_trainer_state, read_manifest, save_checkpoint
from lwd.training.metrics import MetricsLogger
from lwd.training.online_methods import METHODS, MethodSettings, start_method

# Chunks per online TD backup when --n-step is 0. lwd keeps MT10's offline n (cut at
# takeovers, see DeployConfig.n_step); RECAP keeps the 1-chunk advantage it was measured with.
DEFAULT_N_STEP = {"lwd": 4, "recap": 1}


@dataclass(frozen=True)
class DeployConfig(LearnerConfig, FleetConfig):
    """Learner settings (LearnerConfig), the fleet (FleetConfig) and the online stage."""

    # Online values of the learner settings (SPEC §6.3); the rest as offline.
    tau_base: float = documented(0.9, "τ_base online (SPEC §6.3)")
    policy_warmup: int = documented(0, "critic-only steps first; 0 online, the critic comes trained from offline RL")
    freeze_policy_encoder: bool = documented(True, "train only the action expert online (the paper freezes the VLM)")
    method: str = documented("lwd", "learner: 'lwd' (DIVL + QAM), 'hg-dagger' or 'recap' (baselines, SPEC §7)")
    checkpoint: str = documented("runs/offline/final", "start checkpoint: offline RL for lwd (`lwd train offline`), "
                                                       "SFT for the baselines")
    offline_steps: int = documented(0, "learner steps on the offline store alone before the robots start (RECAP's "
                                       "offline stage; lwd has its own, `lwd train offline`)")
    imitation_lr: float = documented(1e-4, "AdamW learning rate of the baselines' flow-matching updates")
    recap_positive_fraction: float = documented(0.3, "RECAP: share of data with a positive indicator (sets ε per task)")
    recap_dropout: float = documented(0.3, "RECAP: probability of training without the indicator (guidance dropout)")
    offline_store: str = documented("runs/store", "offline store sampled next to the online data")
    out: str = documented("runs/deploy", "run directory: online store, registry, learner checkpoints, metrics")
    env_steps: int = documented(100_000, "budget: online env steps in total (across resumes)")
    max_minutes: float = documented(0.0, "also finish after this much wall time in this invocation (0 = no limit)")
    max_learner_steps: int = documented(0, "also stop after this many learner steps in total (0 = no limit)")
    updates_per_1k_env_steps: float = documented(
        0.0, "pacing: learner updates per 1,000 online env steps, held both ways (robots wait at episode boundaries "
             "while the learner is behind, the learner waits for data when ahead), so every method gets the same "
             "updates for the same env steps however fast the machine; 0 = robots and learner run free")
    n_sync: int = documented(50, "N_sync: learner steps between published versions")
    online_fraction: float = documented(0.5, "share of each batch from the online store (0.5 = 1:1)")
    batch_size: int = documented(256, "chunks per learner batch")
    # The SPEC's n = 1 online keeps a backup from straddling policy and intervention
    # segments; cutting longer backups at each switch keeps that, and on validation seeds
    # n = 1 gave back offline RL's peg-insert gain where n = 4 held it (docs/benchmarks.md).
    n_step: int = documented(0, "n: chunks per TD backup (or RECAP's n-step advantage); beyond the first chunk a "
                                "backup stops at a switch between policy and operator, so none straddles the two; "
                                "0 = the method's default: 4 for lwd (the SPEC says 1), 1 for recap")
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
        if self.n_step < 0:
            raise ValueError(f"n_step must be >= 0 (0 = the method's default), got {self.n_step}")
        if self.n_sync < 1 or self.env_steps < 1:
            raise ValueError("n_sync and env_steps must be >= 1")
        if self.updates_per_1k_env_steps < 0:
            raise ValueError(f"updates_per_1k_env_steps must be >= 0, got {self.updates_per_1k_env_steps}")
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r} (known: {', '.join(METHODS)})")
        self.method_settings()  # validates the baselines' settings up front

    def resolved_n_step(self) -> int:
        """`n_step`, with 0 resolved to the method's default."""
        return self.n_step or DEFAULT_N_STEP.get(self.method, 1)

    def method_settings(self) -> MethodSettings:
        return MethodSettings(
            learner=self.learner_config(),
            imitation=ImitationConfig(lr=self.imitation_lr, grad_clip=self.grad_clip,
                                      freeze_encoder=self.freeze_policy_encoder),
            recap=RecapConfig(lr=self.imitation_lr, value_lr=self.critic_lr, grad_clip=self.grad_clip,
                              freeze_encoder=self.freeze_policy_encoder, positive_fraction=self.recap_positive_fraction,
                              dropout=self.recap_dropout))


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
    resumed = has_checkpoint(last)
    saved = read_manifest(last).extras["online"] if resumed else None
    if saved is not None and saved.get("method", "lwd") != config.method:
        raise ValueError(f"{out} holds a {saved.get('method', 'lwd')!r} run; resume it with --method "
                         f"{saved.get('method', 'lwd')} or choose another --out")
    method = start_method(config.method, last if resumed else config.checkpoint, config.method_settings(),
                          saved=saved.get("method_state", saved) if saved else None)
    policy, encoder, manifest = method.policy, method.encoder, method.manifest
    rng = np.random.default_rng(config.seed)
    if saved is not None:
        method.restore_optimizers(load_trainer_state(last) or {})
        rng.bit_generator.state = saved["rng"]
        step, base_training_step = saved["online_step"], saved["base_training_step"]
        pace_anchor, wall_before = saved.get("pace_anchor"), saved.get("online_wall_seconds", 0.0)
        offline_snapshot, deployed_from = saved["offline_snapshot"], saved["deployed_from"]
    else:
        step, base_training_step, offline_snapshot, deployed_from = 0, manifest.training_step, None, str(config.checkpoint)
        pace_anchor, wall_before = None, 0.0
    (out / "config.json").write_text(json.dumps(asdict(config), indent=2))

    replay_config = method.replay_config(ReplayConfig(chunk_len=policy.config.chunk_len, discount=config.discount,
                                                      n_step=config.resolved_n_step(), task_balanced=config.task_balanced))
    offline = ChunkReplay(EpisodeStore(config.offline_store, create=False), replay_config)
    offline.refresh(up_to=offline_snapshot)
    if saved is None:
        method.prepare(offline, config.fleet_config().task_names())
    method.set_step(step)
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

    def checkpoint(path: Path, deployable: bool = False) -> None:
        save_checkpoint(path, policy, method.deployable_encoder() if deployable else encoder, version=latest.version,
                        parent_version=latest.parent_version, training_step=base_training_step + step,
                        data_snapshot=online.snapshot, optimizer_state=method.optimizer_state(),
                        learner_modules=method.modules(),
                        extras={"online": {"method": config.method, "method_state": method.state(),
                                           "rng": rng.bit_generator.state, "online_step": step,
                                           "base_training_step": base_training_step,
                                           "offline_snapshot": offline.snapshot, "deployed_from": deployed_from,
                                           "online_snapshot": online.snapshot,
                                           # (learner step, env steps) when the robots first started: pacing and
                                           # the update rate count from here across resumes
                                           "pace_anchor": pace_anchor,
                                           "online_wall_seconds": wall_before + time.time() - began}})

    def publish() -> None:
        nonlocal latest
        latest = registry.publish(policy, method.deployable_encoder(), version=registry.next_version(latest.version + 1),
                                  parent_version=latest.version, learner_step=step, data_snapshot=online.snapshot,
                                  extras={"training_step": base_training_step + step})
        version_step[latest.version] = step

    def request_stop(*_):
        raise _Stop()

    previous_sigterm = signal.signal(signal.SIGTERM, request_stop)
    fleet = LocalFleet(config.fleet_config(), out / "online_store", out / "registry", log_dir=out)
    began = time.time()
    last_refresh = last_log = began
    env_steps_at_start, learner_steps_at_start = monitor.env_steps, step
    window: list[dict[str, float]] = []
    steps_at_log, interrupted, reason, completed = step, False, "budget", False
    bar = tqdm(total=config.env_steps, initial=min(monitor.env_steps, config.env_steps), desc="deploy",
               unit="env step", disable=not config.progress, smoothing=0.1)
    try:
        if step < config.offline_steps:
            for _ in tqdm(range(step, config.offline_steps), desc=f"{config.method}: offline stage", unit="step",
                          disable=not config.progress):
                window.append(method.step(offline.sample(config.batch_size, rng), generator))
                step += 1
                if step % config.checkpoint_every == 0:
                    checkpoint(last)
            publish()  # robots start with the offline-stage policy
            steps_at_log = learner_steps_at_start = step
            began = last_refresh = last_log = time.time()
        fleet.start()
        pace = config.updates_per_1k_env_steps / 1000.0
        if pace_anchor is None:
            pace_anchor = [step, monitor.env_steps]

        def updates_due(env_steps: int) -> float:
            return pace_anchor[0] + (env_steps - pace_anchor[1]) * pace

        waiting = False  # paced learner ahead of its data
        while True:
            now = time.time()
            if (now - last_refresh >= (0.05 if waiting else config.refresh_seconds)) or online.num_steps == 0:
                before = monitor.env_steps
                pull_online_episodes()
                bar.update(min(monitor.env_steps, config.env_steps) - min(before, config.env_steps))
                last_refresh = now
                fleet.supervise()
            if config.max_minutes and now - began >= 60 * config.max_minutes:
                reason = "wall time"
                break
            if config.max_learner_steps and step >= config.max_learner_steps:
                reason = "learner steps"
                break
            if monitor.env_steps >= config.env_steps:
                if not pace or step >= updates_due(config.env_steps):
                    break
                fleet.hold(True)  # budget spent: robots rest while the learner makes the updates it is owed
                waiting = False
            elif pace:
                due = updates_due(monitor.env_steps)
                fleet.hold(step < due - config.n_sync)
                waiting = step >= due
                if waiting:
                    time.sleep(0.01)
                    continue
            batch = mix.sample(config.batch_size, rng)
            metrics = method.step(batch, generator)
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
        checkpoint(out / "learner" / "final", deployable=True)
    wall = time.time() - began
    anchor_step, anchor_env = pace_anchor or (learner_steps_at_start, env_steps_at_start)
    summary = {"reason": reason, "learner_steps": step, "env_steps": monitor.env_steps, "episodes": monitor.episodes,
               "env_steps_per_s": (monitor.env_steps - env_steps_at_start) / wall,
               "learner_updates_per_s": (step - learner_steps_at_start) / wall,
               "learner_updates_per_1k_env_steps": 1000.0 * (step - anchor_step) / max(monitor.env_steps - anchor_env, 1),
               "online_wall_seconds": wall_before + wall,
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
