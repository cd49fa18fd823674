"""The benchmarks behind `lwd bench` (figures in docs/benchmarks.md):

    sim       bare Meta-World vs expert collection into the store, same cores
    policy    chunk latency at batch 1 and 16, SFT and learner updates/s (reference vs fast step)
    fleet     fleet env steps/s vs the bare simulator on the same episodes (wall clock and CPU time)
    operator  how often the deployment operator takes over, per task

Simulator throughput: both phases run in the same pool of worker processes (one per core), on the same
physics: the collection phase runs the noisy expert through the Robot interface and
commits every episode to a durable store; the bare phase resets the raw Meta-World
environment with the same seeds and replays exactly the recorded actions (same
contacts, same episode lengths, same number of resets). The ratio is the fraction of
raw simulator speed that survives the expert, our runtime and the store. Reading an
episode's actions back (one small file, well under 1 ms) is inside the bare timing.
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from lwd.configargs import documented
from lwd.envs import SEEDS, suite
from lwd.fleet import collect as collect_mod
from lwd.fleet.worker import FleetConfig


@dataclass(frozen=True)
class SimBenchConfig:
    suite: str = documented("mt10", "task suite")
    episodes_per_task: int = documented(20, "episodes per task in each phase")
    workers: int = documented(2, "worker processes (use the number of cores)")
    noise: float = documented(0.1, "expert action noise during collection")
    repeats: int = documented(2, "alternating bare/collect rounds; the report takes the best of each")
    out: str = documented("runs/bench/sim.json", "where to write the JSON result")


def written_report(report: dict, path: str) -> dict:
    """Write a benchmark's JSON report to `path` (parents created) and return it."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    return report


def _ready_pool(workers: int, tasks: tuple[str, ...]):
    """A collection worker pool whose workers have all built their simulators."""
    pool = collect_mod.worker_pool(workers, tasks)
    pool.map(int, range(workers * 4))
    return pool


def bare_episode(job: tuple[str, str, int, int]) -> int:
    """Reset the raw Meta-World env with the episode's seed and replay its recorded actions."""
    store_path, robot_id, seq, seed = job
    store = collect_mod.cached_store(store_path)
    record = store.get(robot_id, seq)
    actions = store.load(record).actions
    env = collect_mod.cached_robot_and_expert(record.task)[0].scenes[0]
    env.seed(seed)
    env.reset()
    for action in actions:
        env.step(action)
    return len(actions)


def single_stage_tasks(suite_name: str) -> tuple[str, ...]:
    """The suite's tasks, refusing multi-stage ones: the bare replay runs one Meta-World scene."""
    chosen = suite(suite_name)
    chained = [t.name for t in chosen.tasks if t.num_stages > 1]
    if chained:
        raise ValueError(
            f"suite {suite_name!r} has multi-stage tasks ({', '.join(chained)}); the bare-simulator "
            "replay runs one Meta-World scene per episode, so benchmark single-stage suites"
        )
    return chosen.task_names


def run_sim_bench(config: SimBenchConfig) -> dict:
    tasks = single_stage_tasks(config.suite)
    pool = _ready_pool(config.workers, tasks)
    try:
        bare_rates, collect_rates, success = [], [], []
        for round_index in range(config.repeats):
            with tempfile.TemporaryDirectory() as tmp:
                cfg = collect_mod.CollectConfig(
                    store=str(Path(tmp) / "store"),
                    suite=config.suite,
                    episodes_per_task=config.episodes_per_task,
                    noise=config.noise,
                    seed_start=round_index * config.episodes_per_task,
                    workers=config.workers,
                    progress=False,
                )
                result = collect_mod.collect(cfg, pool=pool)
                collect_rates.append(result.steps / result.wall_seconds)
                success.append(np.mean([s.success for s in result.stats]))
                jobs = [
                    (cfg.store, cfg.robot_id(s.task), s.seq, SEEDS.train(cfg.seed_start + s.seq)) for s in result.stats
                ]
                began = time.perf_counter()
                steps = sum(pool.imap_unordered(bare_episode, jobs))
                bare_rates.append(steps / (time.perf_counter() - began))
                assert steps == result.steps, "bare replay must cover exactly the collected steps"
    finally:
        pool.close()
        pool.join()
    report = {
        "config": asdict(config),
        "bare_steps_per_s": max(bare_rates),
        "collect_steps_per_s": max(collect_rates),
        "ratio": max(collect_rates) / max(bare_rates),
        "all_bare_steps_per_s": bare_rates,
        "all_collect_steps_per_s": collect_rates,
        "expert_success": float(np.mean(success)),
        "steps_per_phase": int(sum(s.steps for s in result.stats)),
        "machine": f"{platform.node()} {platform.processor() or platform.machine()}",
        "date": time.strftime("%Y-%m-%d"),
    }
    return written_report(report, config.out)


@dataclass(frozen=True)
class PolicyBenchConfig:
    chunk_len: int = documented(5, "H")
    hidden_dim: int = documented(512, "velocity network width")
    num_layers: int = documented(4, "velocity network depth")
    threads: int = documented(2, "torch CPU threads")
    repeats: int = documented(200, "timed calls per latency figure")
    sft_steps: int = documented(100, "timed SFT updates at batch 256")
    learner_steps: int = documented(
        12,
        "timed LWD learner steps at batch 256 per configuration and round (a multiple of 4: "
        "every configuration then runs its average share of QAM updates)",
    )
    learner_rounds: int = documented(
        3,
        "rounds over all learner configurations, interleaved so that each sees the same drift of a "
        "shared machine; each rate is the median round",
    )
    device: str = documented("cpu", "torch device of the timed networks: cpu, or cuda on a GPU machine")
    clock: str = documented(
        "wall",
        "clock of the learner rates: 'wall', or 'cpu' (this process's CPU time; with --threads 1 "
        "close to an idle machine's wall time even while other jobs share the cores)",
    )
    keep_freed_memory: bool = documented(
        True, "keep freed memory in the process (lwd.training.host; as a learner process should)"
    )
    variants: tuple[str, ...] = documented(
        (),
        "time only these learner variants (names as in the JSON) next to the reference and fast "
        "default steps, which always run; empty = all",
    )
    out: str = documented("runs/bench/policy.json", "where to write the JSON result")

    def __post_init__(self) -> None:
        if self.learner_steps < 1 or self.learner_rounds < 1:
            raise ValueError("learner_steps and learner_rounds must be >= 1")
        known = set(LEARNER_VARIANTS) | set(online_learner_variants())
        unknown = sorted(set(self.variants) - known)
        if unknown:
            raise ValueError(f"unknown learner variants {unknown}; known: {', '.join(sorted(known))}")
        if self.clock not in ("wall", "cpu"):
            raise ValueError(f"clock must be 'wall' or 'cpu', got {self.clock!r}")


def run_policy_bench(config: PolicyBenchConfig) -> dict:
    """Chunk-sampling latency (encode + K Euler steps) at batch 1 and 16, SFT updates/s at 256,
    and LWD learner steps/s at 256 for each of LEARNER_VARIANTS and the online learner's
    variants (`online_learner_variants`), the reference and the fast
    implementation of the default step side by side in interleaved rounds.

    Inputs are random tensors of the real shapes: the cost of these dense networks does
    not depend on the values.
    """
    import torch

    from lwd.algorithms.batch import LearnerBatch
    from lwd.policy.flow_policy import FlowChunkPolicy, PolicyConfig
    from lwd.training.host import keep_freed_memory
    from lwd.training.sft import sft_step

    torch.set_num_threads(config.threads)
    if config.keep_freed_memory:
        keep_freed_memory()
    device = torch.device(config.device)
    policy_config = PolicyConfig(chunk_len=config.chunk_len, hidden_dim=config.hidden_dim, num_layers=config.num_layers)
    policy = FlowChunkPolicy(policy_config).to(device)
    machine = f"{platform.node()} {platform.machine()}, torch {torch.__version__}"
    if device.type == "cuda":
        machine += f", {torch.cuda.get_device_name(device)}"
    report: dict = {"config": asdict(config), "date": time.strftime("%Y-%m-%d"), "machine": machine}

    def synchronize() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for batch in (1, 16):
        obs, text = torch.randn(batch, 39, device=device), torch.randn(batch, 384, device=device)
        timings = []
        with torch.no_grad():
            for i in range(config.repeats + 10):
                began = time.perf_counter()
                policy.sample(policy.encode(obs, text))
                synchronize()
                if i >= 10:  # warm-up excluded
                    timings.append(time.perf_counter() - began)
        report[f"latency_ms_batch{batch}"] = {
            "p50": 1e3 * float(np.percentile(timings, 50)),
            "p99": 1e3 * float(np.percentile(timings, 99)),
        }
    optimizer = torch.optim.Adam(policy.parameters(), lr=3e-4)
    generator = torch.Generator().manual_seed(0)
    batch = LearnerBatch(
        obs=torch.randn(256, 39),
        instruction=torch.randn(256, 384),
        actions=torch.rand(256, config.chunk_len, 4) * 2 - 1,
        action_mask=torch.ones(256, config.chunk_len, dtype=torch.bool),
        intervention=torch.zeros(256, config.chunk_len, dtype=torch.bool),
        reward=torch.rand(256),
        discount=torch.full((256,), 0.95),
        done=torch.zeros(256),
        next_obs=torch.randn(256, 39),
        # 70% of rows worth imitating for the learned prior: about what the online runs of
        # docs/benchmarks.md ended with (prior/imitated_fraction)
        return_to_go=(torch.rand(256) < 0.7).float(),
    )
    batch = batch.to(device)
    for _ in range(5):
        sft_step(policy, optimizer, batch, generator)
    synchronize()
    began = time.perf_counter()
    for _ in range(config.sft_steps):
        sft_step(policy, optimizer, batch, generator)
    synchronize()
    report["sft_updates_per_s_batch256"] = config.sft_steps / (time.perf_counter() - began)
    rounds = _learner_rounds(policy_config, batch, config, synchronize)
    report["learner_updates_per_s_batch256"] = {name: float(np.median(rates)) for name, rates in rounds.items()}
    report["learner_rounds_updates_per_s"] = rounds
    # Per round, so that both sides of the ratio saw the same load of a shared machine.
    speedups = np.array(rounds[FAST_DEFAULT]) / np.array(rounds[REFERENCE_DEFAULT])
    report["learner_speedup_default"] = float(np.median(speedups))
    return written_report(report, config.out)


REFERENCE_DEFAULT = "reference_implementation_qam128_every_step_default"
FAST_DEFAULT = "qam128_every_step_default"
# name -> (LearnerConfig overrides, action-expert width as a fraction of --hidden-dim).
# QAM on 128 states every step is the default LWD step; the first line is the same step
# in the reference implementation (the step as it was before the fast one;
# tests/algorithms/test_learner.py checks that they agree). The rest are what one could
# trade for speed: precision, QAM batch or frequency (algorithm defaults) and a narrower
# action expert (a model change).
LEARNER_VARIANTS: dict[str, tuple[dict, float]] = {
    REFERENCE_DEFAULT: ({"implementation": "reference"}, 1.0),
    FAST_DEFAULT: ({}, 1.0),
    "value_and_critic_only": ({"policy_warmup": 10**9}, 1.0),
    "bfloat16_qam128_every_step": ({"qam_dtype": "bfloat16"}, 1.0),
    "qam32_every_step": ({"qam_batch": 32}, 1.0),
    "qam64_every_step": ({"qam_batch": 64}, 1.0),
    "qam256_every_step": ({"qam_batch": 256}, 1.0),
    "qam64_every_4th_step": ({"qam_batch": 64, "policy_every": 4}, 1.0),
    "bfloat16_qam64_every_2nd_step": ({"qam_dtype": "bfloat16", "qam_batch": 64, "policy_every": 2}, 1.0),
    "half_width_expert_qam128_every_step": ({}, 0.5),
}


def online_learner_variants() -> dict:
    """name -> LearnerConfig of the online learner as `lwd deploy` runs it (ONLINE_LEARNER:
    learned behaviour prior, frozen policy encoder) at the presets' QAM batch of 64, with
    QAM every step, every 4th step (with the prior's update every step or every 2nd), and QAM
    and the prior's update every 4th step."""
    from lwd.fleet.online import ONLINE_LEARNER

    return {
        "online_learned_prior_qam64_every_step": replace(ONLINE_LEARNER, qam_batch=64, policy_every=1),
        "online_learned_prior_qam64_every_4th_step": replace(ONLINE_LEARNER, qam_batch=64, policy_every=4),
        "online_learned_prior_qam64_every_4th_step_prior_every_2nd": replace(
            ONLINE_LEARNER, qam_batch=64, policy_every=4, prior_every=2
        ),
        "online_learned_prior_qam64_and_prior_every_4th_step": replace(
            ONLINE_LEARNER, qam_batch=64, policy_every=4, prior_every=4
        ),
    }


def _learner_rounds(policy_config, batch, config: PolicyBenchConfig, synchronize) -> dict[str, list[float]]:
    """LWD learner steps/s at batch 256 for each of LEARNER_VARIANTS, measured in
    `learner_rounds` interleaved rounds: name -> one rate per round."""
    import copy

    import torch

    from lwd.algorithms.learner import LearnerConfig, LWDLearner
    from lwd.policy.critic import ChunkCritic, CriticConfig, StateValue
    from lwd.policy.flow_policy import FlowChunkPolicy

    device = batch.obs.device
    critic_config = CriticConfig(chunk_len=config.chunk_len)
    generator = torch.Generator().manual_seed(0)
    configs = {
        name: (LearnerConfig(**{"policy_warmup": 0, **overrides}), width)
        for name, (overrides, width) in LEARNER_VARIANTS.items()
    }
    configs.update({name: (learner_config, 1.0) for name, learner_config in online_learner_variants().items()})
    if config.variants:
        wanted = {REFERENCE_DEFAULT, FAST_DEFAULT, *config.variants}
        configs = {name: value for name, value in configs.items() if name in wanted}
    learners = {}
    for name, (learner_config, width) in configs.items():
        hidden_dim = max(1, round(width * policy_config.hidden_dim))
        policy = FlowChunkPolicy(replace(policy_config, hidden_dim=hidden_dim)).to(device)
        learners[name] = LWDLearner(
            policy,
            copy.deepcopy(policy),
            ChunkCritic(critic_config).to(device),
            StateValue(critic_config).to(device),
            learner_config,
        )
        for _ in range(3):  # warm-up: allocator, first-call dispatch
            learners[name].step(batch, generator)
    clock = time.process_time if config.clock == "cpu" else time.perf_counter
    rounds: dict[str, list[float]] = {name: [] for name in learners}
    for _ in range(config.learner_rounds):
        for name, learner in learners.items():
            synchronize()
            began = clock()
            for _ in range(config.learner_steps):
                learner.step(batch, generator)
            synchronize()
            rounds[name].append(config.learner_steps / (clock() - began))
    return rounds


@dataclass(frozen=True)
class FleetBenchConfig:
    checkpoint: str = documented("runs/offline/final", "policy the fleet runs")
    suite: str = documented("mt10", "task suite")
    workers: int = documented(2, "robot worker processes (use the number of cores; no learner runs)")
    robots_per_worker: int = documented(
        10, "robots per worker: more robots share each batched policy call (docs/benchmarks.md)"
    )
    fleet: str = documented("local", "where the robots run: 'local' processes or 'ray' actors (lwd[ray])")
    ray_address: str = documented("", "--fleet ray: the cluster to join ('' = a private Ray instance here)")
    seconds: float = documented(60.0, "measured window of fleet time per round")
    warmup_seconds: float = documented(15.0, "fleet time before each window (process start, simulator build)")
    repeats: int = documented(
        3,
        "rounds of fleet then bare replay; the report takes the median of the rounds' ratios "
        "(one round's wall-clock ratio on a shared VM varies by ±0.05 and more)",
    )
    out: str = documented("runs/bench/fleet.json", "where to write the JSON result")

    def __post_init__(self) -> None:
        if self.repeats < 1 or self.seconds <= 0 or self.warmup_seconds < 0:
            raise ValueError("repeats must be >= 1, seconds > 0 and warmup_seconds >= 0")


CPU_ROLES = ("robots", "ingest", "other")


def process_tree_cpu_seconds() -> dict[str, float] | None:
    """CPU seconds (user + system) spent so far by every live process below this one, from
    Linux's /proc, by role: "robots" (robot worker processes, Ray robot actors, and the
    spawned pool that replays episodes bare), "ingest" (the Ray fleet's ingest actor) and
    "other" (Ray's daemons, multiprocessing's helpers). None without /proc."""
    proc = Path("/proc")
    if not (proc / "self" / "stat").exists():
        return None
    ticks = os.sysconf("SC_CLK_TCK")
    parents, cpu = {}, {}
    for stat in proc.glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process ended meanwhile
            continue
        parents[int(stat.parent.name)] = int(fields[1])
        cpu[int(stat.parent.name)] = (int(fields[11]) + int(fields[12])) / ticks
    mine = {os.getpid()}
    for _ in range(8):  # depth: this process -> raylet -> Ray workers ...
        mine |= {pid for pid, parent in parents.items() if parent in mine}
    roles = dict.fromkeys(CPU_ROLES, 0.0)
    for pid in mine - {os.getpid()}:
        try:
            command = (proc / str(pid) / "cmdline").read_bytes()
        except OSError:
            continue
        role = "ingest" if b"IngestActor" in command else "other"
        if b"RobotActor" in command or b"spawn_main" in command:
            role = "robots"
        roles[role] += cpu[pid]
    return roles


def _cpu_since(before: dict[str, float] | None) -> dict[str, float] | None:
    now = process_tree_cpu_seconds()
    return None if before is None or now is None else {role: now[role] - before[role] for role in CPU_ROLES}


def _fleet_round(config: FleetBenchConfig, fleet_config: FleetConfig, tmp: Path) -> dict:
    """One round: the fleet for warm-up + window, then bare Meta-World on its episodes; env
    steps per wall second and CPU seconds per env step of each."""
    from lwd.data.store import EpisodeStore
    from lwd.fleet.online import make_fleet
    from lwd.fleet.registry import PolicyRegistry

    store_path, registry = tmp / "store", PolicyRegistry(tmp / "registry")
    registry.publish_checkpoint(config.checkpoint, learner_step=0)
    fleet = make_fleet(config.fleet, fleet_config, store_path, registry.root, None, ray_address=config.ray_address)
    fleet.start()
    began = time.time()
    time.sleep(config.warmup_seconds)
    cpu_before = process_tree_cpu_seconds()
    time.sleep(max(0.0, began + config.warmup_seconds + config.seconds - time.time()))
    fleet_cpu = _cpu_since(cpu_before)
    window = (began + config.warmup_seconds, began + config.warmup_seconds + config.seconds)
    fleet.stop()
    store = EpisodeStore(store_path)
    records = store.records()
    episodes = [store.load(r) for r in records]
    in_window = sum(int(((e.timestamps >= window[0]) & (e.timestamps < window[1])).sum()) for e in episodes)
    if not in_window:
        raise RuntimeError(
            f"the fleet made no env step in the {config.seconds:g} s window after {config.warmup_seconds:g} s of "
            f"warm-up ({len(episodes)} episodes committed): give it more --warmup-seconds (each robot builds its "
            "simulator first) or a less loaded machine"
        )
    fleet_rate = in_window / config.seconds
    pool = _ready_pool(config.workers, fleet_config.task_names())
    try:
        jobs = [(str(store_path), r.robot_id, r.seq, r.seed) for r in records]
        cpu_before, replay_began = process_tree_cpu_seconds(), time.perf_counter()
        bare_steps = sum(pool.imap_unordered(bare_episode, jobs))
        bare_rate = bare_steps / (time.perf_counter() - replay_began)
        bare_cpu = _cpu_since(cpu_before)
    finally:
        pool.close()
        pool.join()
    round_figures = {
        "fleet_steps_per_s": fleet_rate,
        "bare_steps_per_s": bare_rate,
        "ratio": fleet_rate / bare_rate,
        "episodes": len(episodes),
        "episodes_with_intervention": float(np.mean([e.intervention.any() for e in episodes])),
    }
    if fleet_cpu is not None and bare_cpu is not None and in_window and bare_steps:
        # Bare: the replay pool's processes only (a Ray instance may still be winding down).
        bare_us = 1e6 * bare_cpu["robots"] / bare_steps
        fleet_us = {role: 1e6 * seconds / in_window for role, seconds in fleet_cpu.items()}
        round_figures.update(
            fleet_cpu_us_per_step=sum(fleet_us.values()),
            fleet_cpu_us_per_step_by_role=fleet_us,
            bare_cpu_us_per_step=bare_us,
            cpu_ratio=bare_us / sum(fleet_us.values()),
            cpu_ratio_robots=bare_us / fleet_us["robots"],
        )
    return round_figures


def run_fleet_bench(config: FleetBenchConfig) -> dict:
    """Fleet env steps/s (policy inference, operator, durable uploads) ÷ bare Meta-World
    replaying exactly the same episodes (seeds, actions, resets) on the same cores.

    Fleet throughput counts the per-step timestamps that fall inside the measured window,
    so episodes cut by the window edges count for the steps they ran inside it. Rounds
    alternate fleet and bare phases so that both see the same drift of a shared machine.
    Two ratios per round: wall clock (`ratio`: env steps/s, fleet ÷ bare) and CPU time
    (`cpu_ratio`: bare CPU seconds per env step ÷ the fleet's, every process under this
    one counted; `cpu_ratio_robots`: the robot processes alone, what a robot node of a
    cluster spends, whose ingest runs on the learner's node). Other jobs on a shared
    machine move the wall-clock ratio a lot and the CPU-time ratio little. The report
    gives the median of the rounds for each ratio and the other figures of the round
    with the median wall-clock ratio.
    """
    single_stage_tasks(config.suite)  # before starting a fleet whose episodes could not be replayed bare
    fleet_config = FleetConfig(suite=config.suite, workers=config.workers, robots_per_worker=config.robots_per_worker)
    rounds = []
    for _ in range(config.repeats):
        with tempfile.TemporaryDirectory() as tmp:
            rounds.append(_fleet_round(config, fleet_config, Path(tmp)))
    median_round = sorted(rounds, key=lambda r: r["ratio"])[len(rounds) // 2]
    medians = {
        key: float(np.median([r[key] for r in rounds]))
        for key in ("ratio", "cpu_ratio", "cpu_ratio_robots")
        if all(key in r for r in rounds)
    }
    report = {
        "config": asdict(config),
        **median_round,
        **medians,
        "rounds": rounds,
        "machine": f"{platform.node()} {platform.processor() or platform.machine()}",
        "date": time.strftime("%Y-%m-%d"),
    }
    return written_report(report, config.out)


@dataclass(frozen=True)
class OperatorBenchConfig:
    checkpoint: str = documented("runs/offline/final", "policy the robots run (no learner)")
    episodes: int = documented(300, "episodes to run in all (each robot runs its assigned task)")
    seed: int = documented(0, "seed of the robots' policy noise and operators")
    counterfactual: bool = documented(
        True,
        "at each episode's first takeover, also run the policy alone from that state (then restore "
        "the simulator): was the takeover needed?",
    )
    out: str = documented("runs/bench/operator.json", "where to write the JSON result")
    robots: FleetConfig = documented(
        FleetConfig(), "the robots and their operator (tune the gate: --robots.operator.*)"
    )

    def __post_init__(self) -> None:
        if self.episodes < 1:
            raise ValueError(f"episodes must be >= 1, got {self.episodes}")


def _share(flags: list[bool]) -> float | None:
    """The fraction of true flags; None for no flags (a rate of nothing is not 0)."""
    return float(np.mean(flags)) if flags else None


def gate_figures(rows: list[tuple[bool, bool, bool | None]]) -> dict:
    """Takeover figures of one task from (success, takeover, policy alone succeeded) per
    episode; the last is None where the probe did not run (no takeover: the episode itself
    is the policy alone, so its success is the answer).

    unneeded_takeover: share of episodes with a takeover the policy would have done without.
    unneeded_share_of_takeovers: of the episodes with a takeover, the share the policy would
    have completed alone. needed_takeover_recall: of the episodes the policy alone would
    have failed, the share the operator took over."""
    figures: dict = {
        "episodes": len(rows),
        "takeover": float(np.mean([t for _, t, _ in rows])),
        "success": float(np.mean([s for s, _, _ in rows])),
        "autonomous_success": float(np.mean([s and not t for s, t, _ in rows])),
    }
    if any(t and alone is None for _, t, alone in rows):
        return figures  # no counterfactual
    alone = [bool(a) if t else s for s, t, a in rows]
    taken = [t for _, t, _ in rows]
    figures.update(
        policy_alone_success=float(np.mean(alone)),
        unneeded_takeover=float(np.mean([t and a for t, a in zip(taken, alone)])),
        unneeded_share_of_takeovers=_share([a for t, a in zip(taken, alone) if t]),
        needed_takeover_recall=_share([t for t, a in zip(taken, alone) if not a]),
        takeover_episodes=int(sum(taken)),
        unneeded_takeover_episodes=int(sum(t and a for t, a in zip(taken, alone))),
        policy_alone_failures=int(sum(not a for a in alone)),
    )
    return figures


def run_operator_bench(config: OperatorBenchConfig) -> dict:
    """How often the deployment operator takes over, per task, from a fixed policy: the share
    of episodes with a takeover, success with the operator, success without any takeover
    and, with `counterfactual`, whether each takeover was needed: at the first takeover the
    simulator is snapshotted, the policy runs alone to the step limit, and the simulator is
    restored, so the episode goes on as it would have (lwd.fleet.counterfactual). One worker
    process; the gate is `--robots.operator.*`. The overall figures average the tasks
    (skipping tasks where a figure is undefined, e.g. recall without any failure)."""
    from lwd.data.store import EpisodeStore
    from lwd.fleet.counterfactual import PolicyAloneProbe
    from lwd.fleet.registry import PolicyRegistry
    from lwd.fleet.worker import RobotWorker, robot_specs

    fleet_config = config.robots
    probe = PolicyAloneProbe(config.seed) if config.counterfactual else None
    with tempfile.TemporaryDirectory() as tmp:
        registry = PolicyRegistry(Path(tmp) / "registry")
        registry.publish_checkpoint(config.checkpoint, learner_step=0)
        store = EpisodeStore(Path(tmp) / "store")
        specs = robot_specs(replace(fleet_config, workers=1, robots_per_worker=fleet_config.num_robots))
        worker = RobotWorker(0, specs, fleet_config, store, registry, seed=config.seed, takeover_probe=probe)
        began = time.perf_counter()
        worker.run(lambda: worker.uploaded >= config.episodes)
        wall_seconds = time.perf_counter() - began
        worker.release()
        rows: dict[str, list[tuple[bool, bool, bool | None]]] = {}
        for record in store.records():
            episode = store.load(record)
            outcome = probe.outcomes.get((episode.robot_id, episode.seq)) if probe else None
            rows.setdefault(episode.task, []).append(
                (bool(episode.success), bool(episode.intervention.any()), outcome.success if outcome else None)
            )
    per_task = {task: gate_figures(r) for task, r in sorted(rows.items())}
    # Averages over tasks, not episodes: tasks with short episodes finish more of them.
    keys = ["takeover", "success", "autonomous_success"]
    if config.counterfactual:
        keys += ["policy_alone_success", "unneeded_takeover", "unneeded_share_of_takeovers", "needed_takeover_recall"]
    overall = {}
    for key in keys:
        values = [row[key] for row in per_task.values() if row.get(key) is not None]
        overall[key] = float(np.mean(values)) if values else None
    report = {
        "config": asdict(config),
        "per_task": per_task,
        "episodes": sum(len(r) for r in rows.values()),
        **overall,
        "wall_seconds": wall_seconds,
        "machine": f"{platform.node()} {platform.processor() or platform.machine()}",
        "date": time.strftime("%Y-%m-%d"),
    }
    return written_report(report, config.out)
