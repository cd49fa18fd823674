"""Evaluation protocol (SPEC §8-9): a checkpoint on held-out (evaluation or validation) seeds only, no operator.

Episodes run in lockstep inside each worker process so one policy call serves every
live episode: each worker samples a chunk for all its robots at once, executes
`execute_steps` actions of it, and replans. Reports per-task success with a Wilson 95%
interval, cycle time (steps to success, failures counted at the time limit) and stage
score (fraction of stages completed; equals success on single-stage tasks).
"""

from __future__ import annotations

import json
import time
import zlib
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from lwd.configargs import documented
from lwd.envs import SEEDS, SensorConfig, make_robot, suite, suite_names, task_spec
from lwd.envs.cameras import PROPRIO_DIM
from lwd.envs.operator import HAND_XYZ, hand_stayed_still
from lwd.envs.phrasings import PHRASING_SETS
from lwd.policy.sampling import check_noise_scale
from lwd.workers import WorkerPool

MAX_UNSTICK_STEPS = 150  # a long-horizon stage's whole time budget


@dataclass(frozen=True)
class UnstickConfig:
    """Resampling a deterministic policy that has stopped. Scored at s = 0, a flow policy can
    settle at a fixed point short of its goal (a reach that halts 0.5-2.6 cm outside the
    success radius), which its own sampling noise at s = 1 leaves; so an episode that has
    finished no stage for `steps` steps while its hand stayed within 1 cm (STILL_METRES)
    samples its next chunk at `noise_scale`, and every other chunk at the scoring's own
    temperature, from the same noise draws: an episode that never stops is scored exactly as
    without it. 20 was chosen on validation seeds (docs/benchmarks.md, "Resampling a policy
    that has stopped")."""

    steps: int = documented(
        20,
        "steps without a finished stage, the hand within 1 cm throughout, after which the next chunk "
        "is resampled at --unstick.noise-scale; 0 = never",
    )
    noise_scale: float = documented(1.0, "sampling temperature of a resampled chunk (1 = the policy's own)")
    candidates: int = documented(
        1,
        "chunks drawn at a resample: 1 executes the one drawn; N > 1 draws N and executes the one --critic "
        "values most (the mean of its Q heads), where the alternative is a random sample, not the plain chunk",
    )

    def __post_init__(self) -> None:
        if not 0 <= self.steps <= MAX_UNSTICK_STEPS:
            raise ValueError(f"unstick steps must be in [0, {MAX_UNSTICK_STEPS}], got {self.steps}")
        check_noise_scale(self.noise_scale, "unstick noise_scale")
        if self.candidates < 1:
            raise ValueError(f"unstick candidates must be >= 1, got {self.candidates}")


NEVER_UNSTICK = UnstickConfig(steps=0)


@dataclass(frozen=True)
class EvalConfig:
    checkpoint: str = documented("runs/sft/final", "policy checkpoint directory")
    suite: str = documented("mt10", "task suite")
    episodes_per_task: int = documented(50, "episodes per task (seeds 0..N-1 of the split)")
    split: str = documented("eval", "held-out seeds to run on: 'eval' (reporting) or 'validation' (choosing defaults)")
    execute_steps: int = documented(0, "actions executed from each chunk before replanning (0 = the whole chunk)")
    workers: int = documented(2, "worker processes")
    seed: int = documented(0, "seed of the policy's sampling noise")
    out: str = documented("runs/eval", "directory for eval.json, eval.md and eval.png")
    tasks: tuple[str, ...] = documented((), "restrict to these tasks (default: the whole suite)")
    best_of_n: int = documented(
        1,
        "sample N chunks at every replan and execute the one --critic values most: the plain policy's chunk at "
        "--noise-scale and N - 1 samples at s = 1 (1 = the plain policy; `lwd bench ceiling` measured what it "
        "buys, docs/benchmarks.md)",
    )
    critic: str = documented(
        "",
        "LWD learner checkpoint whose Q ensemble (mean of its heads) picks the chunk when --best-of-n > 1, "
        "or the resampled chunk when --unstick.candidates > 1",
    )
    inference_dtype: str = documented(
        "float32",
        "precision of the velocity network's hidden layers when sampling chunks: 'float32' or 'bfloat16' "
        "(what a fleet runs with --robots.inference-dtype)",
    )
    noise_scale: float = documented(
        0.0,
        "sampling temperature: the flow's initial noise x_0 ~ N(0, s²I). 0 (the default) scores the "
        "deterministic flow from x_0 = 0, the policy a fleet exploits once it stops learning, while robots "
        "explore at --robots.noise-scale 1; 1 samples the policy's own distribution, what robots run and what "
        'best-of-N picks from (docs/benchmarks.md, "Sampling temperature")',
    )
    replan_at_stage_end: bool = documented(
        False,
        "a chunk that crosses a stage end of a long-horizon task is dropped there and the policy replans in "
        "the new scene, instead of executing the rest (planned for the old scene) in it "
        "(what --robots.replan-at-stage-end makes robots do; "
        "off by default: +0.008 and +0.013 for LWD online on `lh` in two validation probes, +0.001 on nine "
        "fresh policies, "
        'docs/benchmarks.md, "Where `lh` still fails")',
    )
    unstick: UnstickConfig = documented(
        UnstickConfig(),
        "resample a chunk at s = 1 where the deterministic policy has stopped short (see --unstick.steps; "
        "best-of-N, which samples every chunk at s = 1, does without it)",
    )
    max_live_episodes: int = documented(
        100,
        "episodes a worker steps at once (one simulator each, ~10 MB); more "
        "run in successive batches, with the same outcomes",
    )
    phrasings: tuple[str, ...] = documented(
        ("canonical",),
        "how each task is worded: 'canonical' (its one written sentence), 'train' (a training phrasing "
        "per episode, drawn by seed) or 'heldout' (a phrasing never trained on); several, e.g. "
        "'train heldout', evaluate each on the same seeds into OUT/<set> and report the paired gap",
    )

    def __post_init__(self) -> None:
        if self.max_live_episodes < 1 or self.workers < 1 or self.episodes_per_task < 1:
            raise ValueError("max_live_episodes, workers and episodes_per_task must be >= 1")
        from lwd.policy.adapter import HIDDEN_DTYPES

        if self.inference_dtype not in HIDDEN_DTYPES:
            raise ValueError(f"inference_dtype must be one of {tuple(HIDDEN_DTYPES)}, got {self.inference_dtype!r}")
        if self.inference_dtype != "float32" and self.best_of_n > 1:
            raise ValueError("--best-of-n samples at float32 only")
        check_noise_scale(self.noise_scale)
        if self.best_of_n < 1 or (self.best_of_n > 1 and not self.critic):
            raise ValueError(f"best_of_n must be >= 1 and needs --critic when > 1, got {self.best_of_n}")
        if self.unstick.candidates > 1 and not (self.critic and self.unstick.steps):
            raise ValueError("--unstick.candidates > 1 needs --critic and --unstick.steps > 0")
        if self.unstick.candidates > 1 and self.best_of_n > 1:
            raise ValueError("--best-of-n does without unstick; it does not combine with --unstick.candidates")
        if self.replan_at_stage_end and self.best_of_n > 1:
            raise ValueError("--best-of-n executes whole chunks: it does not combine with --replan-at-stage-end")
        unknown = [p for p in self.phrasings if p not in PHRASING_SETS]
        if not self.phrasings or unknown or len(set(self.phrasings)) != len(self.phrasings):
            raise ValueError(f"phrasings must be distinct names from {PHRASING_SETS}, got {self.phrasings!r}")


@dataclass(frozen=True)
class EpisodeOutcome:
    task: str
    seed: int
    success: bool
    steps: int
    stage_score: float  # fraction of the task's stages completed when the episode ended
    instruction: str = ""  # the wording the policy was given
    resampled: int = 0  # chunks resampled because the policy had stopped (EvalConfig.unstick)
    critic_replans: int = 0  # replans where the critic chose among candidates (best-of-N, or unstick candidates)
    critic_changed: int = 0  # of those, picks other than the first candidate (the chunk run without a critic)


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))


def check_held_out_seeds(seeds: list[int]) -> None:
    for seed in seeds:
        if not (SEEDS.is_eval(seed) or SEEDS.is_validation(seed)):
            raise ValueError(
                f"evaluation refuses seed {seed}: it is not a held-out (evaluation or validation) seed; "
                "training seeds never evaluate"
            )


def episode_generators(noise_seed: int, jobs: list[tuple[str, int]]) -> list:
    """One policy-noise stream per (task, seed) episode, keyed by the noise seed, the task and
    the episode's seed only: an episode's outcome does not depend on which episodes share
    its worker or its run (`--tasks`, `--workers`)."""
    import torch

    return [
        torch.Generator().manual_seed(
            int(np.random.SeedSequence([noise_seed, zlib.crc32(task.encode()), seed]).generate_state(1)[0])
        )
        for task, seed in jobs
    ]


def run_policy_episodes(
    checkpoint: str,
    jobs: list[tuple[str, int]],
    execute_steps: int,
    noise_seed: int,
    *,
    noise_scale: float,
    threads: int = 1,
    max_live: int | None = None,
    phrasings: str = "canonical",
    best_of_n: int = 1,
    critic: str = "",
    inference_dtype: str = "float32",
    replan_at_stage_end: bool = False,
    unstick: UnstickConfig = NEVER_UNSTICK,
    unstick_picker: Callable | None = None,
) -> list[EpisodeOutcome]:
    """Run (task, seed) episodes in lockstep with one batched policy call per replan, at most
    `max_live` at a time (one simulator each; all of them when None), each task worded by a
    phrasing of the set `phrasings` drawn by the episode's seed. Wording the checkpoint never
    saw is embedded by the sentence encoder on the spot. With `best_of_n` > 1 each replan
    samples that many chunks and executes the one the Q ensemble of the learner checkpoint
    `critic` values most (mean of its heads); its first candidate is the plain policy's chunk at
    `noise_scale`, the others are samples at s = 1.
    `inference_dtype` ('float32', 'bfloat16') is the precision of the velocity network's hidden
    layers (`FleetConfig.inference_dtype`); `noise_scale` multiplies the flow's initial noise;
    `replan_at_stage_end` drops a chunk at the step that ends a stage (not with best-of-N);
    `unstick` resamples where the policy has stopped (`UnstickConfig`; best-of-N, whose other
    candidates are samples at s = 1, does without it); with `unstick.candidates` > 1 the Q ensemble
    of `critic` picks among the resampled chunks, or the scorer `unstick_picker(policy, encoder)`
    returns (any `lwd.evaluation.ceiling.CandidateScorer`, e.g. the simulator oracle)."""
    import torch

    from lwd.policy.adapter import HIDDEN_DTYPES
    from lwd.policy.checkpoint import load_checkpoint

    check_held_out_seeds([seed for _, seed in jobs])
    torch.set_num_threads(threads)
    policy, encoder, _ = load_checkpoint(checkpoint)
    policy.eval()
    horizon = policy.chunk_len
    execute = horizon if execute_steps <= 0 else min(execute_steps, horizon)
    generators = episode_generators(noise_seed, jobs)
    batch = max_live or max(len(jobs), 1)
    if best_of_n > 1:
        if replan_at_stage_end:
            raise ValueError("best-of-N executes whole chunks: it does not replan at a stage end")
        from lwd.evaluation.ceiling import CriticScorer, load_critic, run_best_of_n_episodes  # imports this module

        scorer = CriticScorer(load_critic(critic), encoder)
        return [
            replace(result.outcome, critic_replans=result.replans, critic_changed=result.changed)
            for start in range(0, len(jobs), batch)
            for result in run_best_of_n_episodes(
                policy,
                encoder,
                jobs[start : start + batch],
                best_of_n,
                scorer,
                noise_seed,
                execute_steps,
                phrasings,
                first_noise_scale=noise_scale,
            )
        ]
    unstick_scorer = None
    if unstick.candidates > 1 and unstick.steps:
        from lwd.evaluation.ceiling import CriticScorer, load_critic  # imports this module

        if unstick_picker is not None:
            unstick_scorer = unstick_picker(policy, encoder)
        else:
            unstick_scorer = CriticScorer(load_critic(critic), encoder)
    return [
        outcome
        for start in range(0, len(jobs), batch)
        for outcome in _lockstep(
            policy,
            encoder,
            jobs[start : start + batch],
            generators[start : start + batch],
            execute,
            phrasings,
            noise_scale=noise_scale,
            dtype=HIDDEN_DTYPES[inference_dtype],
            replan_at_stage_end=replan_at_stage_end,
            unstick=unstick,
            unstick_scorer=unstick_scorer,
        )
    ]


class LockstepEpisodes:
    """(task, seed) episodes stepped together, chunk by chunk: their robots, current states
    and how each ended. `lwd eval` and the best-of-N runs of `lwd bench ceiling` share it."""

    def __init__(
        self,
        jobs: list[tuple[str, int]],
        phrasings: str,
        sensors: SensorConfig | None = None,
        replan_at_stage_end: bool = False,
    ):
        """With `replan_at_stage_end`, `execute` stops a chunk at the step that ends a stage."""
        self.jobs = jobs
        self.replan_at_stage_end = replan_at_stage_end
        self.robots = [make_robot(task, phrasings, sensors) for task, _ in jobs]
        first = [robot.reset(seed)[0] for robot, (_, seed) in zip(self.robots, jobs)]
        self.instructions = [observation.instruction for observation in first]
        self.states = np.stack([observation.state for observation in first])
        self.frames = [observation.images for observation in first]  # camera -> frame, per episode
        self.steps = np.zeros(len(jobs), dtype=np.int64)
        self.success = np.zeros(len(jobs), dtype=bool)
        self.stage_score = np.zeros(len(jobs), dtype=np.float64)
        self.live = np.ones(len(jobs), dtype=bool)
        self.stage_end_step = np.zeros(len(jobs), dtype=np.int64)  # the step that ended the last stage
        self.hands = [deque(maxlen=MAX_UNSTICK_STEPS) for _ in jobs]  # the hand after each step
        self.resampled = np.zeros(len(jobs), dtype=np.int64)

    def stopped(self, i: int, steps: int) -> bool:
        """Whether episode `i` has finished no stage in its last `steps` steps and its hand stayed
        within 1 cm of where it is now throughout them (never, when `steps` is 0)."""
        hands = self.hands[i]
        if steps <= 0 or self.steps[i] - self.stage_end_step[i] < steps or len(hands) < steps:
            return False
        return hand_stayed_still([hands[k] for k in range(len(hands) - steps, len(hands))])

    def execute(self, i: int, actions: np.ndarray) -> None:
        """Episode `i` runs the (K, A) `actions` in order until they run out or it ends (or,
        with `replan_at_stage_end`, a stage of it ends)."""
        robot = self.robots[i]
        for action in actions:
            observation, _, terminated, truncated, info = robot.step(action)
            self.steps[i] += 1
            self.states[i] = observation.state
            self.frames[i] = observation.images
            stage_ended = info.stage_score > self.stage_score[i]
            self.stage_score[i] = info.stage_score
            self.hands[i].append(observation.state[HAND_XYZ].copy())
            if stage_ended:
                self.stage_end_step[i] = self.steps[i]
            if terminated or truncated:
                self.success[i] = terminated
                self.live[i] = False
                return
            if stage_ended and self.replan_at_stage_end:
                return

    def close(self) -> list[EpisodeOutcome]:
        """Close the robots; one outcome per job, in order."""
        for robot in self.robots:
            robot.close()
        return [
            EpisodeOutcome(task, seed, bool(s), int(n), float(g), text, int(r))
            for (task, seed), s, n, g, text, r in zip(
                self.jobs, self.success, self.steps, self.stage_score, self.instructions, self.resampled
            )
        ]


def _lockstep(
    policy,
    encoder,
    jobs: list[tuple[str, int]],
    generators: list,
    execute: int,
    phrasings: str,
    *,
    noise_scale: float,
    dtype=None,
    replan_at_stage_end: bool = False,
    unstick: UnstickConfig = NEVER_UNSTICK,
    unstick_scorer=None,
) -> list[EpisodeOutcome]:
    """Step `jobs` together until each ends, executing `execute` actions of every chunk; an
    episode whose policy has stopped (`unstick`) samples its next chunk at `unstick.noise_scale`,
    or with `unstick_scorer` (a `CandidateScorer`) `unstick.candidates` of them and executes the one
    it scores highest: the first is the chunk a single resample would execute, the others are
    drawn after it from the episode's own noise stream."""
    from lwd.fleet.policy_actor import sample_chunks
    from lwd.fleet.sensing import policy_images, policy_sensors

    episodes = LockstepEpisodes(jobs, phrasings, policy_sensors(policy.config), replan_at_stage_end)
    picked = np.zeros(len(jobs), dtype=np.int64)  # resamples whose pick was not the first candidate
    while episodes.live.any():
        idx = np.flatnonzero(episodes.live)
        scales = np.full(len(idx), noise_scale, dtype=np.float32)
        stuck = []
        for row, i in enumerate(idx):
            if episodes.stopped(i, unstick.steps):
                scales[row] = unstick.noise_scale
                episodes.resampled[i] += 1
                stuck.append(row)
        chunks = sample_chunks(
            policy,
            encoder,
            episodes.states[idx],
            [episodes.instructions[i] for i in idx],
            [generators[i] for i in idx],
            images=policy_images(policy.cameras, [episodes.frames[i] for i in idx]),
            dtype=dtype,
            noise_scale=scales,
        )
        if unstick_scorer is not None and stuck:
            others = unstick.candidates - 1
            rows = [row for row in stuck for _ in range(others)]
            extra = sample_chunks(
                policy,
                encoder,
                episodes.states[idx[rows]],
                [episodes.instructions[idx[row]] for row in rows],
                [generators[idx[row]] for row in rows],
                images=policy_images(policy.cameras, [episodes.frames[idx[row]] for row in rows]),
                dtype=dtype,
                noise_scale=np.full(len(rows), unstick.noise_scale, dtype=np.float32),
            ).reshape(len(stuck), others, *chunks.shape[1:])
            candidates = np.concatenate([chunks[stuck][:, None], extra], axis=1)  # (stuck, N, H, A)
            stuck_idx = idx[stuck]
            states = episodes.states[stuck_idx]
            instructions = [episodes.instructions[i] for i in stuck_idx]
            robots = [episodes.robots[i] for i in stuck_idx]
            choice = unstick_scorer.score(robots, states, instructions, candidates, execute).argmax(axis=1)
            chunks[stuck] = candidates[np.arange(len(stuck)), choice]
            picked[stuck_idx] += choice != 0
        for row, i in enumerate(idx):
            episodes.execute(i, chunks[row, :execute])
    outcomes = episodes.close()
    if unstick_scorer is None:
        return outcomes
    # The critic chose at every resample; `critic_changed` counts picks other than the first draw.
    return [replace(o, critic_replans=o.resampled, critic_changed=int(n)) for o, n in zip(outcomes, picked)]


def _worker(args) -> list[EpisodeOutcome]:
    (
        checkpoint,
        jobs,
        execute_steps,
        noise_seed,
        max_live,
        phrasings,
        best_of_n,
        critic,
        inference_dtype,
        scale,
        replan,
        unstick,
    ) = args
    return run_policy_episodes(
        checkpoint,
        jobs,
        execute_steps,
        noise_seed,
        max_live=max_live,
        phrasings=phrasings,
        best_of_n=best_of_n,
        critic=critic,
        inference_dtype=inference_dtype,
        noise_scale=scale,
        replan_at_stage_end=replan,
        unstick=unstick,
    )


def summarize(outcomes: list[EpisodeOutcome]) -> dict:
    tasks = sorted({o.task for o in outcomes})
    per_task = {}
    for task in tasks:
        mine = [o for o in outcomes if o.task == task]
        wins = sum(o.success for o in mine)
        low, high = wilson_interval(wins, len(mine))
        per_task[task] = {
            "episodes": len(mine),
            "success": wins / len(mine),
            "ci95": [low, high],
            "cycle_time_steps": float(np.mean([o.steps for o in mine])),
            "stage_score": float(np.mean([o.stage_score for o in mine])),
        }
    average = float(np.mean([v["success"] for v in per_task.values()]))
    total = sum(o.success for o in outcomes)
    return {
        "per_task": per_task,
        "average_success": average,
        "average_ci95": list(wilson_interval(total, len(outcomes))),
        "average_cycle_time_steps": float(np.mean([v["cycle_time_steps"] for v in per_task.values()])),
        "average_stage_score": float(np.mean([v["stage_score"] for v in per_task.values()])),
    }


def episodes_report(outcomes: list[EpisodeOutcome], began: float) -> dict:
    """`summarize(outcomes)` with what every report of scored episodes carries: the wall time since
    `began` (a `time.perf_counter()` reading), env steps, each outcome and the resampled chunks."""
    summary = summarize(outcomes)
    summary.update(
        {
            "wall_seconds": time.perf_counter() - began,
            "env_steps": int(sum(o.steps for o in outcomes)),
            "outcomes": [asdict(o) for o in outcomes],
            "resampled_chunks": int(sum(o.resampled for o in outcomes)),
        }
    )
    return summary


def write_report(summary: dict, out: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    (out / "eval.json").write_text(json.dumps(summary, indent=2))
    lines = [
        f"# {title}",
        "",
        "| task | success | 95% CI | stage score | cycle time (steps) | episodes |",
        "|---|---|---|---|---|---|",
    ]
    for task, v in summary["per_task"].items():
        lines.append(
            f"| {task} | {v['success']:.3f} | {v['ci95'][0]:.2f}–{v['ci95'][1]:.2f} | {v['stage_score']:.3f} | "
            f"{v['cycle_time_steps']:.1f} | {v['episodes']} |"
        )
    lines.append(
        f"| **average** | **{summary['average_success']:.3f}** | {summary['average_ci95'][0]:.2f}–"
        f"{summary['average_ci95'][1]:.2f} | {summary['average_stage_score']:.3f} | "
        f"{summary['average_cycle_time_steps']:.1f} | |"
    )
    (out / "eval.md").write_text("\n".join(lines) + "\n")
    tasks = list(summary["per_task"])
    rates = [summary["per_task"][t]["success"] for t in tasks]
    errors = np.array(
        [[r - summary["per_task"][t]["ci95"][0], summary["per_task"][t]["ci95"][1] - r] for t, r in zip(tasks, rates)]
    ).T
    fig, ax = plt.subplots(figsize=(max(6, 0.7 * len(tasks)), 4))
    ax.bar(range(len(tasks)), rates, yerr=errors, capsize=3, color="#4C72B0")
    ax.axhline(summary["average_success"], color="k", ls="--", lw=1, label=f"average {summary['average_success']:.2f}")
    ax.set_xticks(range(len(tasks)), [t.removesuffix("-v3") for t in tasks], rotation=45, ha="right")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("success rate (95% CI)")
    ax.set_title(title)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(out / "eval.png", dpi=120)
    plt.close(fig)


def _suites_hint(obs_dim: int) -> str:
    """Which --suite a policy of this state size can be evaluated on (the default is mt10)."""
    fitting = [name for name in suite_names() if all(spec.obs_dim == obs_dim for spec in suite(name).tasks)]
    if not fitting:
        return "no registered suite has tasks of that size: name them with --tasks"
    return "evaluate it on a suite whose tasks fit: " + ", ".join(f"--suite {name}" for name in fitting)


def evaluate(config: EvalConfig) -> dict:
    """Evaluate `config.checkpoint` and write its report; with several phrasing sets, see
    `evaluate_phrasings`."""
    if len(config.phrasings) > 1:
        return evaluate_phrasings(config)
    from lwd.policy.checkpoint import read_manifest

    manifest = read_manifest(config.checkpoint)  # fail fast, before starting workers
    if config.best_of_n > 1 or config.unstick.candidates > 1:
        from lwd.evaluation.ceiling import load_critic  # imports this module

        load_critic(config.critic)
    tasks = config.tasks or suite(config.suite).task_names
    for task in tasks:
        obs_dim = task_spec(task).obs_dim
        if manifest.config.get("use_images") and manifest.config.get("obs_dim") == PROPRIO_DIM:
            obs_dim = PROPRIO_DIM  # a policy that sees: its robots report only hand and gripper in numbers
        if manifest.config.get("obs_dim", obs_dim) != obs_dim:
            raise ValueError(
                f"{config.checkpoint} takes {manifest.config['obs_dim']}-number states but task {task!r} "
                f"has {obs_dim} (MT tasks have 39, long-horizon tasks 39 + a stage one-hot); "
                + _suites_hint(manifest.config["obs_dim"])
            )
    jobs = [(task, SEEDS.held_out(config.split, k)) for task in tasks for k in range(config.episodes_per_task)]
    shards = [jobs[i :: config.workers] for i in range(config.workers)]
    began = time.perf_counter()
    args = [
        (
            config.checkpoint,
            shard,
            config.execute_steps,
            config.seed,
            config.max_live_episodes,
            config.phrasings[0],
            config.best_of_n,
            config.critic,
            config.inference_dtype,
            config.noise_scale,
            config.replan_at_stage_end,
            config.unstick,
        )
        for shard in shards
        if shard
    ]
    if len(args) == 1:
        results = [_worker(args[0])]
    else:
        with WorkerPool(len(args)) as pool:
            results = pool.map(_worker, args)
    outcomes = [o for part in results for o in part]
    summary = episodes_report(outcomes, began)
    summary.update(
        {
            "checkpoint": config.checkpoint,
            "training_step": manifest.training_step,
            "config": asdict(config),
            "split": config.split,
            "phrasings": config.phrasings[0],
            "eval_seeds": [SEEDS.held_out(config.split, 0), SEEDS.held_out(config.split, config.episodes_per_task - 1)],
        }
    )
    if config.best_of_n > 1 or config.unstick.candidates > 1:
        replans = sum(o.critic_replans for o in outcomes)
        summary["critic_changed_fraction"] = sum(o.critic_changed for o in outcomes) / max(replans, 1)
    write_report(
        summary,
        Path(config.out),
        f"{Path(config.checkpoint).parent.name or config.checkpoint} on {config.suite} ({config.split} seeds"
        + ("" if config.phrasings[0] == "canonical" else f", {config.phrasings[0]} phrasings")
        + ("" if config.best_of_n == 1 else f", best of {config.best_of_n} by the critic")
        + f", noise scale {config.noise_scale:g}"
        + (
            f", a chunk at s = {config.unstick.noise_scale:g} after {config.unstick.steps} stopped steps"
            + (f", the critic's pick of {config.unstick.candidates}" if config.unstick.candidates > 1 else "")
            if config.unstick.steps and config.best_of_n == 1
            else ""
        )
        + ")",
    )
    return summary


def evaluate_phrasings(config: EvalConfig) -> dict:
    """Evaluate each phrasing set of `config` on the same seeds into OUT/<set>/, and write
    OUT/phrasings.{json,md}: each set's success and its paired difference from the first set
    (the same episodes with other wording, so the seeds' spread cancels)."""
    from lwd.evaluation.compare import paired_difference  # compare imports this module

    summaries = {
        name: evaluate(replace(config, phrasings=(name,), out=str(Path(config.out) / name)))
        for name in config.phrasings
    }
    base_name, base = config.phrasings[0], summaries[config.phrasings[0]]
    gaps = {name: asdict(paired_difference(base, summaries[name])) for name in config.phrasings[1:]}
    result = {
        "checkpoint": config.checkpoint,
        "split": config.split,
        "baseline": base_name,
        "average_success": {name: s["average_success"] for name, s in summaries.items()},
        "per_task": {
            task: {name: s["per_task"][task]["success"] for name, s in summaries.items()} for task in base["per_task"]
        },
        "paired_difference": gaps,
    }
    out = Path(config.out)
    (out / "phrasings.json").write_text(json.dumps(result, indent=2))
    names = list(config.phrasings)
    lines = [
        f"# {config.checkpoint} on {config.suite} ({config.split} seeds): success by wording",
        "",
        "| task | " + " | ".join(names) + " |",
        "|---|" + "---|" * len(names),
        *(
            f"| {task.removesuffix('-v3')} | " + " | ".join(f"{rates[n]:.3f}" for n in names) + " |"
            for task, rates in result["per_task"].items()
        ),
        "| **average** | " + " | ".join(f"**{result['average_success'][n]:.3f}**" for n in names) + " |",
        "",
        *(
            f"{name} − {base_name}: {g['mean']:+.3f} (paired 95% CI {g['ci95'][0]:+.3f} … {g['ci95'][1]:+.3f}; "
            f"{g['gains']} episodes gained, {g['losses']} lost of {g['episodes']}; "
            f"sign test p = {g['sign_test_p']:.3g})"
            for name, g in gaps.items()
        ),
    ]
    (out / "phrasings.md").write_text("\n".join(lines) + "\n")
    return result
