"""`lwd bench policy`: chunk latency, SFT updates/s and LWD learner steps/s (reference vs
fast step, and the variants one could trade for speed)."""

from __future__ import annotations

import platform
import time
from dataclasses import asdict, dataclass, replace

import numpy as np

from lwd.benchmarks import written_report
from lwd.configargs import documented


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
        if isinstance(self.variants, str):
            raise ValueError(f"variants is a tuple of names, got the string {self.variants!r}")
        object.__setattr__(self, "variants", tuple(self.variants))
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
    QAM every step, every 4th step (with the prior's update every step or every 2nd, or the prior
    on the shared batch as before its own batch became the default; or QAM in
    bfloat16, with the prior every step or every 2nd), and QAM and the prior's update every 4th step."""
    from lwd.fleet.online import ONLINE_LEARNER

    return {
        "online_learned_prior_qam64_every_step": replace(ONLINE_LEARNER, qam_batch=64, policy_every=1),
        "online_learned_prior_qam64_every_4th_step": replace(ONLINE_LEARNER, qam_batch=64, policy_every=4),
        # the online default before the prior's own batch: the prior learns from the shared batch
        "online_learned_prior_shared_batch_qam64_every_4th_step": replace(
            ONLINE_LEARNER, qam_batch=64, policy_every=4, prior_data="successes"
        ),
        "online_learned_prior_qam64_every_4th_step_prior_every_2nd": replace(
            ONLINE_LEARNER, qam_batch=64, policy_every=4, prior_every=2
        ),
        "online_learned_prior_qam64_and_prior_every_4th_step": replace(
            ONLINE_LEARNER, qam_batch=64, policy_every=4, prior_every=4
        ),
        "online_learned_prior_bfloat16_qam64_every_4th_step": replace(
            ONLINE_LEARNER, qam_batch=64, policy_every=4, qam_dtype="bfloat16"
        ),
        "online_learned_prior_bfloat16_qam64_every_4th_step_prior_every_2nd": replace(
            ONLINE_LEARNER, qam_batch=64, policy_every=4, qam_dtype="bfloat16", prior_every=2
        ),
    }


def _imitable(learner, batch):
    """The prior's own batch where the learner takes one (`prior_data = "hg-dagger"`): the same
    batch stands in, every row imitated, as many rows as the imitation-only batch `lwd deploy` samples."""
    return batch if learner.wants_imitable_batch else None


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
            learners[name].step(batch, generator, _imitable(learners[name], batch))
    clock = time.process_time if config.clock == "cpu" else time.perf_counter
    rounds: dict[str, list[float]] = {name: [] for name in learners}
    for _ in range(config.learner_rounds):
        for name, learner in learners.items():
            synchronize()
            began = clock()
            imitable = _imitable(learner, batch)
            for _ in range(config.learner_steps):
                learner.step(batch, generator, imitable)
            synchronize()
            rounds[name].append(config.learner_steps / (clock() - began))
    return rounds
