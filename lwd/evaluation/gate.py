"""The `evaluate` version gate: a background process scores candidates on validation seeds.

The evaluator process runs the evaluation protocol (no operator, batched lockstep
episodes) on the same validation episodes for every version it scores, newest candidate
first, and appends one line per version to `<out>/gate/evaluations.jsonl` (success per task
and per episode). The learner-side `EvaluatorGate` reads those lines and decides: the
candidate against the deployed version, paired on the same episodes
(`paired_difference`); promoted unless worse by more than the margin. Candidates published
while the evaluator is busy are skipped (only the newest is scored), so its cost per
version is bounded by the evaluator's one core, whatever N_sync is.

The same lines are the validation curve of published versions that the report and the
dashboard plot against env steps. `make_gate` builds the gate of any mode; `lwd deploy`
and the recipes hand it to `deploy` (which, in the fleet layer, cannot import this one).
"""

from __future__ import annotations

import ctypes
import json
import logging
import multiprocessing as mp
import os
import time
from pathlib import Path

from lwd.data.episode import Episode
from lwd.envs import SEEDS
from lwd.evaluation.compare import paired_difference, scored_noise_scale
from lwd.evaluation.evaluate import run_policy_episodes, summarize
from lwd.fleet.gate import GateConfig, LiveWatch, VersionGate, adopt_start_version, make_fleet_gate
from lwd.fleet.registry import PolicyRegistry, PublishedVersion
from lwd.policy.checkpoint import CheckpointError
from lwd.training.metrics import open_jsonl_for_append, read_jsonl

log = logging.getLogger(__name__)


def evaluations_path(out: str | os.PathLike) -> Path:
    return Path(out) / "gate" / "evaluations.jsonl"


def validation_jobs(tasks: tuple[str, ...], episodes_per_task: int) -> list[tuple[str, int]]:
    return [(task, SEEDS.validation(k)) for task in tasks for k in range(episodes_per_task)]


def score_version(
    registry: PolicyRegistry, version: int, jobs: list[tuple[str, int]], noise_seed: int, *, noise_scale: float
) -> dict:
    """One evaluations.jsonl line: `version` on `jobs`, no operator, sampling at `noise_scale`."""
    began = time.perf_counter()
    outcomes = run_policy_episodes(
        str(registry.path(version)), jobs, execute_steps=0, noise_seed=noise_seed, noise_scale=noise_scale
    )
    summary = summarize(outcomes)
    published = registry.published(version)
    return {
        "version": version,
        "at": time.time(),
        "learner_step": published.learner_step,
        "env_steps": published.env_steps,
        "success": summary["average_success"],
        "per_task": {task: row["success"] for task, row in summary["per_task"].items()},
        "episodes": len(outcomes),
        "noise_scale": noise_scale,
        "seconds": time.perf_counter() - began,
        "outcomes": [{"task": o.task, "seed": o.seed, "success": bool(o.success)} for o in outcomes],
    }


def _next_versions(registry: PolicyRegistry, done: set[int]) -> list[int]:
    """The deployed version if never scored (the baseline of every comparison), then the
    newest candidate if newer than the deployed one and not scored."""
    rollout, latest = registry.rollout(), registry.latest()
    if rollout is None or rollout.deployed is None or latest is None:
        return []
    todo = [] if rollout.deployed.version in done else [rollout.deployed.version]
    if latest.version > rollout.deployed.version and latest.version not in done:
        todo.append(latest.version)
    return todo


def versions_scored_at(path: Path, noise_scale: float) -> set[int]:
    """Versions that `path` (an evaluations.jsonl) holds scores of at `noise_scale`: a resumed run
    may hold lines scored at another temperature, and those versions are scored again."""
    lines = read_jsonl(path) if path.exists() else []
    return {line["version"] for line in lines if scored_noise_scale(line) == noise_scale}


def evaluator_main(
    registry_root: str,
    out: str,
    tasks: tuple[str, ...],
    episodes_per_task: int,
    noise_seed: int,
    stop_flag,
    parent_pid: int,
    noise_scale: float,
) -> None:
    """Process entry point: score versions until `stop_flag.value`; dies with its parent."""
    import signal

    import torch

    from lwd.fleet.worker import die_with_parent

    die_with_parent(parent_pid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the learner's to handle
    torch.set_num_threads(1)
    registry, path = PolicyRegistry(registry_root), evaluations_path(out)
    done = versions_scored_at(path, noise_scale)
    jobs = validation_jobs(tasks, episodes_per_task)
    while not stop_flag.value:
        todo = _next_versions(registry, done)
        if not todo:
            time.sleep(0.5)
            continue
        for version in todo:
            if stop_flag.value:
                return
            try:
                line = score_version(registry, version, jobs, noise_seed, noise_scale=noise_scale)
            except CheckpointError as err:  # pruned under us: nothing to score
                log.warning("gate evaluator skips version %d: %s", version, err)
                done.add(version)
                continue
            with open_jsonl_for_append(path) as handle:
                handle.write(json.dumps(line) + "\n")
            done.add(version)


class EvaluatorGate:
    """Mode `evaluate`: decides on the evaluator process's scores, learner side (mode
    `observe`: the same evaluator, no decisions)."""

    def __init__(
        self,
        registry: PolicyRegistry,
        config: GateConfig,
        out: Path,
        tasks: tuple[str, ...],
        noise_seed: int,
        decide: bool = True,
    ):
        self.registry, self.config, self.path, self.deciding = registry, config, evaluations_path(out), decide
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.watch = LiveWatch(registry, config)
        self.scores: dict[int, dict] = {}
        self.read_lines = 0
        if decide:
            adopt_start_version(registry)
        self.decided = {d["version"] for d in registry.decisions() if d["decision"] in ("promoted", "rejected")}
        context = mp.get_context("spawn")
        self._stop = context.RawValue(ctypes.c_bool, False)
        self.process = context.Process(
            target=evaluator_main,
            name="lwd-gate-evaluator",
            daemon=True,
            args=(
                str(registry.root),
                str(out),
                tasks,
                config.episodes_per_task,
                noise_seed,
                self._stop,
                os.getpid(),
                config.evaluator_noise_scale,
            ),
        )
        self.process.start()

    def published(self, version: PublishedVersion) -> None:
        pass  # the evaluator watches the registry itself

    def observe(self, episode: Episode) -> None:
        self.watch.observe(episode, ())

    def _read_scores(self) -> None:
        if not self.path.exists():
            return
        lines = read_jsonl(self.path)
        for line in lines[self.read_lines :]:
            if scored_noise_scale(line) == self.config.evaluator_noise_scale:
                self.scores[line["version"]] = line
        self.read_lines = len(lines)

    def poll(self) -> None:
        if not self.deciding:
            return  # observe: the evaluator only scores
        self._read_scores()
        rollout = self.registry.rollout()
        if rollout is None or rollout.deployed is None or rollout.pinned:
            return
        baseline = self.scores.get(rollout.deployed.version)
        newer = [v for v in self.scores if v > rollout.deployed.version and v not in self.decided]
        if baseline is not None and newer:
            self._decide(max(newer), baseline)
        self.watch.poll()

    def _decide(self, version: int, baseline: dict) -> None:
        candidate = self.scores[version]
        paired = paired_difference(baseline, candidate)
        promote = paired.mean >= -self.config.margin
        self.decided.add(version)
        if promote and not self.registry.path(version).exists():
            return  # pruned while it was scored (a fast learner publishes many): a newer one comes
        self.registry.decide(
            version,
            "promoted" if promote else "rejected",
            by="gate",
            evidence={
                "mode": "evaluate",
                "candidate_success": candidate["success"],
                "deployed_success": baseline["success"],
                "deployed_version": baseline["version"],
                "difference": paired.mean,
                "interval": list(paired.ci95),
                "episodes": paired.episodes,
                "sign_test_p": paired.sign_test_p,
                "margin": self.config.margin,
            },
        )
        self.decided.add(version)

    def close(self) -> None:
        # A score in progress is only worth its CPU while the run goes on: a killed
        # evaluator leaves at most a torn last line, which readers skip.
        self._stop.value = True
        self.process.join(timeout=2)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()


def make_gate(
    config: GateConfig,
    registry: PolicyRegistry,
    *,
    out: Path,
    robot_ids: list[str],
    tasks: tuple[str, ...],
    noise_seed: int = 0,
) -> VersionGate:
    """The gate of `config.mode` for a run in `out` whose robots are `robot_ids` (a `GateFactory`); its
    evaluator samples at `config.evaluator_noise_scale`."""
    if config.mode in ("evaluate", "observe"):
        return EvaluatorGate(registry, config, out, tasks, noise_seed, decide=config.mode == "evaluate")
    return make_fleet_gate(config, registry, out=out, robot_ids=robot_ids, tasks=tasks, noise_seed=noise_seed)


def validation_curve(out: str | os.PathLike) -> list[dict]:
    """(version, env steps, success) of every scored version, in version order."""
    path = evaluations_path(out)
    lines = read_jsonl(path) if path.exists() else []
    return sorted(
        ({k: line[k] for k in ("version", "env_steps", "learner_step", "success")} for line in lines),
        key=lambda row: row["version"],
    )
