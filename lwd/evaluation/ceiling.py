"""Where the ceiling is (`lwd bench ceiling`): best-of-N chunk selection at every replan.

At each replan the policy samples N chunks for the current state and one is executed,
chosen by a scorer:

- `oracle` (`OracleScorer`): the simulator is snapshotted, and each candidate is rolled
  out on a scratch copy: its own actions, then the same policy (one sample per chunk, at
  candidate 0's temperature)
  until `lookahead` steps have passed since the replan, the task succeeded or the
  episode's time limit came. A candidate scores 2 − t/(L+1) if the task succeeded t
  steps into the lookahead (any success beats any failure; sooner beats later), else the
  task progress at the end of the lookahead (stages done plus the scene's dense shaped
  reward / 10, in [0, 1]). All N continuations of one replan draw the same policy noise
  (common random numbers), so the candidates differ only by their own chunk. Once one
  candidate has succeeded the others stop at the end of that chunk (they cannot win; their
  score is their progress there), which saves simulation without changing the pick.
- `critic` (`CriticScorer`): the learned Q ensemble of an LWD learner checkpoint, reduced
  over heads by the mean (what QAM's policy gradient follows, `LWDLearner.update_policy`)
  or the minimum (what the TD targets use).

With `--critic` beside the oracle, each oracle replan also records the critic's pick under the
oracle: its mean score, and how often it lands more than `PICK_MARGIN` (0.05) below or above
candidate 0. On `lh` the picks below it decide whether a critic's pick pays: the plain
chunk is right at almost every replan, so a few harmful picks per episode cost more than many
small gains bring (docs/benchmarks.md, "A critic given counterfactual labels").

Ties go to the first candidate; candidate 0 is drawn exactly as `lwd eval` draws its one
chunk at `first_noise_scale`, so N = 1 reproduces `lwd eval --noise-scale 1` episode for episode (at
`--first-noise-scale 0`, `lwd eval` without `--unstick`). The oracle is a ceiling for a
perfect critic of this policy's chunks (one-step improvement with a Monte-Carlo look
ahead); the critic is what extraction already optimises. Validation seeds only by default.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from lwd.configargs import documented
from lwd.envs import make_robot, task_spec
from lwd.evaluation.evaluate import (
    EpisodeOutcome,
    LockstepEpisodes,
    check_held_out_seeds,
    episode_generators,
    summarize,
)
from lwd.policy.sampling import check_noise_scale
from lwd.workers import WorkerPool

SELECTORS = ("oracle", "critic")
CRITIC_REDUCTIONS = ("mean", "min")
# A pick "harms" (or "helps") when it scores this much below (above) candidate 0 under the oracle.
PICK_MARGIN = 0.05
# The four tasks the issue names plus one the SFT policy already solves (sanity check).
CEILING_TASKS = ("pick-place-v3", "peg-insert-side-v3", "push-v3", "reach-v3", "drawer-close-v3")


@dataclass(frozen=True)
class CeilingConfig:
    checkpoint: str = documented("runs/deploy/learner/final", "policy checkpoint whose chunks are sampled")
    critic: str = documented(
        "",
        "LWD learner checkpoint (offline or online) whose Q ensemble picks for the 'critic' selector "
        "(default: --checkpoint; an SFT checkpoint has no critic)",
    )
    critic_reduce: str = documented(
        "mean", "how the critic's heads are combined: 'mean' (as QAM extraction uses Q) or 'min' (as TD targets)"
    )
    selectors: tuple[str, ...] = documented(SELECTORS, "who picks among the N chunks: 'oracle', 'critic' or both")
    n: tuple[int, ...] = documented((1, 4, 16), "candidate chunks per replan; N = 1 is the plain policy")
    lookahead: int = documented(
        40,
        "oracle look-ahead in env steps from the replan (the candidate's own steps included); "
        "40 = 8 chunks, ~1/3 of a successful episode (docs/benchmarks.md)",
    )
    tasks: tuple[str, ...] = documented(CEILING_TASKS, "tasks to run")
    episodes_per_task: int = documented(10, "episodes per task (seeds 0..N-1 of the split)")
    split: str = documented("validation", "held-out seeds: 'validation' (choosing defaults) or 'eval' (reporting)")
    execute_steps: int = documented(0, "actions executed from each chunk before replanning (0 = the whole chunk)")
    seed: int = documented(0, "seed of the policy's sampling noise")
    first_noise_scale: float = documented(
        1.0,
        "sampling temperature of candidate 0 (and of the N = 1 run): 1 = a sample like the others, 0 = the "
        "deterministic chunk `lwd eval` scores by default, so the selectors pick between the plain policy "
        "and N - 1 samples at s = 1",
    )
    workers: int = documented(2, "worker processes")
    scratch_robots: int = documented(
        40,
        "most scratch simulators one worker holds for the oracle (episodes run together × N): fewer "
        "episodes run together at large N, so memory stays bounded (a robot of an lh chain is ~80 MB, "
        "of a single scene ~25 MB)",
    )
    out: str = documented("runs/bench/ceiling.json", "where to write the JSON result (and a .md table next to it)")
    progress: bool = documented(True, "show a progress bar per run")

    def __post_init__(self) -> None:
        unknown = [s for s in self.selectors if s not in SELECTORS]
        if unknown or not self.selectors:
            raise ValueError(f"selectors must be among {SELECTORS}, got {self.selectors!r}")
        if self.critic_reduce not in CRITIC_REDUCTIONS:
            raise ValueError(f"critic_reduce must be one of {CRITIC_REDUCTIONS}, got {self.critic_reduce!r}")
        if not self.n or min(self.n) < 1:
            raise ValueError(f"n must be candidate counts >= 1, got {self.n!r}")
        check_noise_scale(self.first_noise_scale, "first_noise_scale")
        if min(self.lookahead, self.episodes_per_task, self.workers, self.scratch_robots) < 1:
            raise ValueError("lookahead, episodes_per_task, workers and scratch_robots must be >= 1")
        for task in self.tasks:
            task_spec(task)  # unknown names fail here, with suggestions


class CandidateScorer(Protocol):
    """Scores N candidate chunks per live episode; higher is better."""

    def score(
        self, robots: list, states: np.ndarray, instructions: list[str], candidates: np.ndarray, execute: int
    ) -> np.ndarray:
        """robots: the B episodes' robots (at the replan state, left there); states (B, obs);
        candidates (B, N, H, A) -> (B, N) scores."""


@torch.inference_mode()
def _sample(policy, encoder, states: np.ndarray, instructions: list[str], noise: torch.Tensor) -> np.ndarray:
    """(B, H, A) chunks from explicit (B, H*A) noise."""
    obs = torch.from_numpy(np.asarray(states, np.float32))
    instruction = torch.from_numpy(encoder.embed(instructions))
    return policy.sample(policy.encode(obs, instruction), noise).numpy()


class CriticScorer:
    """Q(s, A) of a learner's critic ensemble, heads reduced by `reduce` ('mean' or 'min')."""

    def __init__(self, critic, encoder, reduce: str = "mean"):
        if reduce not in CRITIC_REDUCTIONS:
            raise ValueError(f"reduce must be one of {CRITIC_REDUCTIONS}, got {reduce!r}")
        self.critic, self.encoder, self.reduce = critic.eval(), encoder, reduce

    @torch.inference_mode()
    def score(
        self, robots: list, states: np.ndarray, instructions: list[str], candidates: np.ndarray, execute: int
    ) -> np.ndarray:
        batch, n = candidates.shape[:2]
        obs = torch.from_numpy(np.repeat(np.asarray(states, np.float32), n, axis=0))
        instruction = torch.from_numpy(np.repeat(self.encoder.embed(instructions), n, axis=0))
        q = self.critic(obs, instruction, torch.from_numpy(candidates.reshape(batch * n, *candidates.shape[2:])))
        q = q.mean(dim=0) if self.reduce == "mean" else q.min(dim=0).values
        return q.numpy().reshape(batch, n)


class OracleScorer:
    """Rolls every candidate out on a scratch simulator (see the module docstring).

    Keeps one scratch robot per (episode slot, candidate), reused across replans; counts
    the simulator steps it spends in `lookahead_steps`.
    """

    def __init__(
        self,
        policy,
        encoder,
        lookahead: int,
        noise_seed: int,
        phrasings: str = "canonical",
        continuation_noise_scale: float = 1.0,
    ):
        if lookahead < 1:
            raise ValueError(f"lookahead must be >= 1, got {lookahead}")
        self.policy, self.encoder, self.lookahead = policy, encoder, lookahead
        self.continuation_noise_scale = continuation_noise_scale
        self.phrasings = phrasings
        self.generator = torch.Generator().manual_seed(noise_seed)  # continuation noise
        self.lookahead_steps = 0
        self._scratch: dict[str, list] = {}

    def _scratch_robots(self, task: str, count: int) -> list:
        pool = self._scratch.setdefault(task, [])
        while len(pool) < count:
            pool.append(make_robot(task, self.phrasings))
        return pool[:count]

    def close(self) -> None:
        for pool in self._scratch.values():
            for robot in pool:
                robot.close()
        self._scratch = {}

    def score(
        self, robots: list, states: np.ndarray, instructions: list[str], candidates: np.ndarray, execute: int
    ) -> np.ndarray:
        batch, n, horizon, _ = candidates.shape
        lookahead = self.lookahead
        # One scratch robot per (episode, candidate), restored to that episode's state.
        scratch: list = []
        used: dict[str, int] = {}
        for robot in robots:
            snapshot = robot.snapshot()
            task = robot.task.name
            mine = self._scratch_robots(task, used.get(task, 0) + n)[used.get(task, 0) :]
            used[task] = used.get(task, 0) + n
            for twin in mine:
                twin.restore(snapshot)
            scratch.extend(mine)
        rows = batch * n
        succeeded_at = np.zeros(rows, dtype=np.int64)  # lookahead step of success, 0 = none
        progress = np.zeros(rows)
        elapsed = np.zeros(rows, dtype=np.int64)
        live = np.ones(rows, dtype=bool)
        row_states = np.repeat(np.asarray(states, np.float32), n, axis=0)
        row_instructions = [text for text in instructions for _ in range(n)]
        chunks = candidates.reshape(rows, horizon, -1)
        width = self.policy.flat_action_dim
        while True:
            for row in np.flatnonzero(live):
                robot = scratch[row]
                for k in range(min(execute, lookahead - elapsed[row])):
                    observation, _, terminated, truncated, info = robot.step(chunks[row, k])
                    elapsed[row] += 1
                    row_states[row] = observation.state
                    progress[row] = info.progress
                    if terminated or truncated:
                        succeeded_at[row] = elapsed[row] if terminated else 0
                        live[row] = False
                        break
                if elapsed[row] >= lookahead:
                    live[row] = False
            # Once one candidate of an episode has succeeded, the others can only score lower
            # (a later success, or none): stop them there, the pick stays the same.
            live &= ~np.repeat((succeeded_at > 0).reshape(batch, n).any(axis=1), n)
            if not live.any():
                break
            # The continuation: one chunk per candidate, the same noise for all N of an episode.
            idx = np.flatnonzero(live)
            noise = torch.randn(batch, width, generator=self.generator).repeat_interleave(n, dim=0)
            noise *= self.continuation_noise_scale
            chunks = np.zeros_like(chunks)
            chunks[idx] = _sample(
                self.policy, self.encoder, row_states[idx], [row_instructions[i] for i in idx], noise[idx]
            )
        self.lookahead_steps += int(elapsed.sum())
        scores = np.where(succeeded_at > 0, 2.0 - succeeded_at / (lookahead + 1), progress)
        return scores.reshape(batch, n)


@dataclass(frozen=True)
class BestOfNOutcome:
    """One episode of best-of-N, with how the selection went."""

    outcome: EpisodeOutcome
    replans: int = 0
    changed: int = 0  # replans whose pick was not candidate 0 (the plain policy's chunk)
    # Mean score of candidate 0, of the picked candidate and of the second scorer's pick
    # (under the picking scorer), over replans with N > 1.
    first_score: float = 0.0
    picked_score: float = 0.0
    second_pick_score: float | None = None
    # Replans whose second-scorer pick scored more than PICK_MARGIN below / above candidate 0
    # (under the picking scorer); None without a second scorer.
    second_worse: int | None = None
    second_better: int | None = None


def sample_candidates(
    policy, encoder, episodes: LockstepEpisodes, generators: list, idx: np.ndarray, n: int, first_noise_scale: float
) -> np.ndarray:
    """(len(idx), n, H, A) candidate chunks for the live episodes `idx`, in one batched call.
    Candidate k of an episode is the k-th draw of its own noise stream: candidate 0 is exactly
    the chunk `lwd eval` would sample at `first_noise_scale`; the others are sampled at s = 1."""
    from lwd.fleet.policy_actor import sample_chunks

    scales = np.where(np.arange(n) == 0, first_noise_scale, 1.0)  # (n,) sampling temperatures
    return sample_chunks(
        policy,
        encoder,
        np.repeat(episodes.states[idx], n, axis=0),
        [episodes.instructions[i] for i in idx for _ in range(n)],
        [generators[i] for i in idx for _ in range(n)],
        noise_scale=np.tile(scales, len(idx)),
    ).reshape(len(idx), n, policy.chunk_len, -1)


def run_best_of_n_episodes(
    policy,
    encoder,
    jobs: list[tuple[str, int]],
    n: int,
    scorer: CandidateScorer | None,
    noise_seed: int,
    execute_steps: int = 0,
    phrasings: str = "canonical",
    second: CandidateScorer | None = None,
    first_noise_scale: float = 1.0,
) -> list[BestOfNOutcome]:
    """Run (task, seed) episodes in lockstep; at each replan sample `n` chunks per episode
    and execute the one `scorer` scores highest (ties: the first). `second`, if given,
    also scores the candidates, to see how its pick fares under `scorer` (e.g. the
    critic's pick under the oracle). Candidate 0 is sampled at `first_noise_scale` (0: the
    deterministic chunk the plain policy runs at s = 0), the others at s = 1."""
    if n > 1 and scorer is None:
        raise ValueError("best-of-N with n > 1 needs a scorer")
    check_held_out_seeds([seed for _, seed in jobs])
    horizon = policy.chunk_len
    execute = horizon if execute_steps <= 0 else min(execute_steps, horizon)
    generators = episode_generators(noise_seed, jobs)
    episodes = LockstepEpisodes(jobs, phrasings)
    replans = np.zeros(len(jobs), dtype=np.int64)
    changed = np.zeros(len(jobs), dtype=np.int64)
    sums = np.zeros((len(jobs), 3))  # first, picked, second's pick
    second_worse = np.zeros(len(jobs), dtype=np.int64)
    second_better = np.zeros(len(jobs), dtype=np.int64)
    while episodes.live.any():
        idx = np.flatnonzero(episodes.live)
        candidates = sample_candidates(policy, encoder, episodes, generators, idx, n, first_noise_scale)
        picks = np.zeros(len(idx), dtype=np.int64)
        if n > 1:
            robots = [episodes.robots[i] for i in idx]
            args = (robots, episodes.states[idx], [episodes.instructions[i] for i in idx], candidates, execute)
            scores = scorer.score(*args)
            picks = scores.argmax(axis=1)
            rows = np.arange(len(idx))
            sums[idx, 0] += scores[:, 0]
            sums[idx, 1] += scores[rows, picks]
            if second is not None:
                second_scores = scores[rows, second.score(*args).argmax(axis=1)]
                sums[idx, 2] += second_scores
                second_worse[idx] += second_scores < scores[:, 0] - PICK_MARGIN
                second_better[idx] += second_scores > scores[:, 0] + PICK_MARGIN
        replans[idx] += 1
        changed[idx] += picks != 0
        for row, i in enumerate(idx):
            episodes.execute(i, candidates[row, picks[row], :execute])
    outcomes = episodes.close()
    results = []
    for i, outcome in enumerate(outcomes):
        scored = max(int(replans[i]), 1) if n > 1 else 0
        results.append(
            BestOfNOutcome(
                outcome,
                replans=int(replans[i]),
                changed=int(changed[i]),
                first_score=float(sums[i, 0] / scored) if scored else 0.0,
                picked_score=float(sums[i, 1] / scored) if scored else 0.0,
                second_pick_score=float(sums[i, 2] / scored) if scored and second is not None else None,
                second_worse=int(second_worse[i]) if second is not None else None,
                second_better=int(second_better[i]) if second is not None else None,
            )
        )
    return results


def load_critic(checkpoint: str | Path):
    """The Q ensemble (`ChunkCritic`) of an LWD learner checkpoint (offline or online stage)."""
    from lwd.policy.checkpoint import CheckpointError, load_learner_state, read_manifest
    from lwd.policy.critic import ChunkCritic, CriticConfig

    extras = read_manifest(checkpoint).extras
    stage = extras.get("offline") or (extras.get("online") or {}).get("method_state")
    if not stage or "critic" not in stage:
        raise CheckpointError(
            f"{checkpoint}: no critic config in its manifest; the critic selector needs an LWD learner "
            "checkpoint (`lwd train offline` or `lwd deploy --method lwd` output), not an SFT one"
        )
    config = CriticConfig(**stage["critic"])
    if config.use_images:
        raise CheckpointError(
            f"{checkpoint}: its critic sees cameras {list(config.cameras)}; choosing chunks by the critic "
            "is built for state-only critics (the scorer does not render frames)"
        )
    critic = ChunkCritic(config)
    state = load_learner_state(checkpoint)
    critic.load_state_dict({k.removeprefix("critic."): v for k, v in state.items() if k.startswith("critic.")})
    return critic.eval()


# -- the benchmark: worker processes, one (selector, N) run at a time ------------------

_WORKER: dict = {}


def _init_worker(config: CeilingConfig) -> None:
    from lwd.policy.checkpoint import load_checkpoint

    torch.set_num_threads(1)
    policy, encoder, _ = load_checkpoint(config.checkpoint)
    # With --critic given, oracle runs also record how the critic's pick scores under the oracle.
    wanted = "critic" in config.selectors or config.critic
    critic = load_critic(config.critic or config.checkpoint) if wanted else None
    _WORKER.update(config=config, policy=policy.eval(), encoder=encoder, critic=critic)


def _run_group(args: tuple[str, int, list[tuple[str, int]]]) -> tuple[list[dict], float, int]:
    selector, n, jobs = args
    config, policy, encoder, critic = (_WORKER[k] for k in ("config", "policy", "encoder", "critic"))
    began = time.process_time()
    critic_scorer = CriticScorer(critic, encoder, config.critic_reduce) if critic is not None else None
    oracle = None
    if selector == "oracle" and n > 1:
        key = np.random.SeedSequence([config.seed, n, *(seed for _, seed in jobs)]).generate_state(1)[0]
        # The continuation runs the policy as candidate 0 runs (s = 0 makes it the plain policy's).
        oracle = OracleScorer(
            policy, encoder, config.lookahead, int(key), continuation_noise_scale=config.first_noise_scale
        )
    scorer = oracle if selector == "oracle" else critic_scorer
    second = critic_scorer if selector == "oracle" else None
    results = run_best_of_n_episodes(
        policy,
        encoder,
        jobs,
        n,
        scorer if n > 1 else None,
        config.seed,
        config.execute_steps,
        second=second,
        first_noise_scale=config.first_noise_scale,
    )
    lookahead_steps = 0
    if oracle is not None:
        lookahead_steps = oracle.lookahead_steps
        oracle.close()
    # `lwd eval`'s critic_replans / critic_changed stay out: `replans` / `changed` count the picks of any selector.
    rows = [
        {
            **{k: v for k, v in asdict(r.outcome).items() if k not in ("critic_replans", "critic_changed")},
            "replans": r.replans,
            "changed": r.changed,
            "first_score": r.first_score,
            "picked_score": r.picked_score,
            "second_pick_score": r.second_pick_score,
            "second_worse": r.second_worse,
            "second_better": r.second_better,
        }
        for r in results
    ]
    return rows, time.process_time() - began, lookahead_steps


def episode_groups(
    config: CeilingConfig, jobs: list[tuple[str, int]], selector: str, n: int
) -> list[list[tuple[str, int]]]:
    """`jobs` (`config.episodes_per_task` per task, task after task) split into groups that one
    worker runs together: one task's episodes, an equal share per worker so that its policy calls
    are batched, and for the oracle no more than `scratch_robots` // N episodes, since each holds
    N scratch simulators."""
    per_task = config.episodes_per_task
    per_group = -(-per_task // config.workers)
    if selector == "oracle" and n > 1:
        per_group = max(1, min(per_group, config.scratch_robots // n))
    return [
        jobs[first + start : first + min(start + per_group, per_task)]
        for first in range(0, len(jobs), per_task)
        for start in range(0, per_task, per_group)
    ]


def _run_name(selector: str, n: int) -> str:
    return "policy" if n == 1 else f"{selector} N={n}"


def run_ceiling_bench(config: CeilingConfig) -> dict:
    """Every (selector, N) run on the same episodes; writes JSON (and .md) after each run."""
    from tqdm import tqdm

    from lwd.evaluation.compare import paired_difference
    from lwd.policy.checkpoint import read_manifest

    read_manifest(config.checkpoint)  # fail fast, before starting workers
    if "critic" in config.selectors:
        load_critic(config.critic or config.checkpoint)
    from lwd.envs import SEEDS

    jobs = [(task, SEEDS.held_out(config.split, k)) for task in config.tasks for k in range(config.episodes_per_task)]
    check_held_out_seeds([seed for _, seed in jobs])
    runs = [("policy", 1)] if 1 in config.n else []
    runs += [(selector, n) for selector in config.selectors for n in sorted(set(config.n)) if n > 1]
    report = {"config": asdict(config), "runs": {}}
    out = Path(config.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with WorkerPool(config.workers, _init_worker, (config,)) as pool:
        for selector, n in runs:
            name = _run_name(selector, n)
            began = time.perf_counter()
            rows, cpu, lookahead_steps = [], 0.0, 0
            groups = episode_groups(config, jobs, selector, n)
            with tqdm(total=len(jobs), desc=name, unit="episode", disable=not config.progress) as bar:
                for part, seconds, steps in pool.imap_unordered(_run_group, [(selector, n, g) for g in groups]):
                    rows += part
                    cpu += seconds
                    lookahead_steps += steps
                    bar.update(len(part))
            rows.sort(key=lambda r: (r["task"], r["seed"]))
            known = EpisodeOutcome.__dataclass_fields__
            outcomes = [EpisodeOutcome(**{k: v for k, v in r.items() if k in known}) for r in rows]
            summary = summarize(outcomes)
            replans = sum(r["replans"] for r in rows)
            summary.update(
                {
                    "selector": selector if n > 1 else "none",
                    "n": n,
                    "cpu_seconds": cpu,
                    "wall_seconds": time.perf_counter() - began,
                    "lookahead_env_steps": lookahead_steps,
                    "env_steps": int(sum(r["steps"] for r in rows)),
                    "replans": replans,
                    "changed_fraction": sum(r["changed"] for r in rows) / max(replans, 1),
                    "episodes": rows,
                }
            )
            if n > 1:
                weights = np.array([r["replans"] for r in rows], dtype=float)
                for key in ("first_score", "picked_score", "second_pick_score"):
                    values = [r[key] for r in rows]
                    if all(v is not None for v in values):
                        summary[f"mean_{key}"] = float(np.average(values, weights=weights))
                for key in ("second_worse", "second_better"):
                    if all(r[key] is not None for r in rows):
                        summary[f"{key}_per_episode"] = sum(r[key] for r in rows) / len(rows)
            if "policy" in report["runs"] and n > 1:  # the same episodes: pair them (sign test)
                base = {"outcomes": report["runs"]["policy"]["episodes"]}
                summary["paired_vs_policy"] = asdict(paired_difference(base, {"outcomes": rows}))
            report["runs"][name] = summary
            out.write_text(json.dumps(report, indent=2))
            out.with_suffix(".md").write_text(ceiling_table(report))
    return report


def ceiling_table(report: dict) -> str:
    """Markdown: success per task and run, with the average's Wilson interval."""
    runs = report["runs"]
    names = list(runs)
    tasks = sorted({task for run in runs.values() for task in run["per_task"]})
    lines = [
        f"# best-of-N: {report['config']['checkpoint']} ({report['config']['split']} seeds, "
        f"lookahead {report['config']['lookahead']})",
        "",
        "| task | " + " | ".join(names) + " |",
        "|---|" + "---|" * len(names),
    ]
    for task in tasks:
        cells = []
        for name in names:
            v = runs[name]["per_task"].get(task)
            cells.append("" if v is None else f"{v['success']:.2f} ({v['ci95'][0]:.2f}–{v['ci95'][1]:.2f})")
        lines.append(f"| {task.removesuffix('-v3')} | " + " | ".join(cells) + " |")
    lines.append(
        "| **average** | "
        + " | ".join(
            f"**{runs[n]['average_success']:.2f}** ({runs[n]['average_ci95'][0]:.2f}–{runs[n]['average_ci95'][1]:.2f})"
            for n in names
        )
        + " |"
    )
    paired = [runs[n].get("paired_vs_policy") for n in names]
    if any(paired):
        lines.append(
            "| vs policy, paired (sign test p) | "
            + " | ".join("" if d is None else f"{d['mean']:+.2f} (p = {d['sign_test_p']:.2g})" for d in paired)
            + " |"
        )
    if any("second_worse_per_episode" in runs[n] for n in names):
        lines.append(
            f"| critic's pick > {PICK_MARGIN} below / above candidate 0, per episode | "
            + " | ".join(
                f"{runs[n]['second_worse_per_episode']:.2f} / {runs[n]['second_better_per_episode']:.2f}"
                if "second_worse_per_episode" in runs[n]
                else ""
                for n in names
            )
            + " |"
        )
    lines.append("| CPU s | " + " | ".join(f"{runs[n]['cpu_seconds']:.0f}" for n in names) + " |")
    return "\n".join(lines) + "\n"
