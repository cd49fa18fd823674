"""How much of a GPU learner step is host-device synchronisation? (issue 18, item 1)

The learner's update functions turn every metric into a Python float as they go (`float(t)`),
and each such call on a CUDA tensor waits for the GPU, so the host cannot queue the next
kernels ahead. This probe times the online default step and the offline default step as they
are, then with `float` in lwd.algorithms' modules replaced by a no-wait stand-in (metrics stay
tensors), at batch 256 on random tensors of the real shapes, interleaved rounds, and writes
a profiler table of the as-is online step. Not a product path: a measurement.

    python tools/gpu_sync_probe.py OUT_DIR [--device cuda] [--steps 40] [--rounds 3]
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

import lwd.algorithms.divl as divl
import lwd.algorithms.flow_matching as flow_matching
import lwd.algorithms.learner as learner_module
import lwd.algorithms.qam as qam
from lwd.algorithms.batch import LearnerBatch
from lwd.algorithms.learner import LearnerConfig, LWDLearner
from lwd.fleet.online import ONLINE_LEARNER
from lwd.policy.critic import ChunkCritic, CriticConfig, StateValue
from lwd.policy.flow_policy import FlowChunkPolicy, PolicyConfig

MODULES = (learner_module, qam, divl, flow_matching)


def no_wait_float(value):
    return value.detach() if isinstance(value, torch.Tensor) else float(value)


def set_no_wait(enabled: bool) -> None:
    for module in MODULES:
        if enabled:
            module.float = no_wait_float
        elif "float" in vars(module):
            del module.float


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--compile",
        default="",
        help="also time learners whose critic, target critic and value run through torch.compile in this "
        "mode (default, reduce-overhead, max-autotune-no-cudagraphs); their first steps (compilation) are timed apart",
    )
    parser.add_argument(
        "--keep-freed-memory", action="store_true", help="keep freed memory in the process, as the bench and loops do"
    )
    args = parser.parse_args()
    if args.keep_freed_memory:
        from lwd.training.host import keep_freed_memory

        keep_freed_memory()
    device = torch.device(args.device)
    torch.set_num_threads(1)
    n = 256
    batch = LearnerBatch(
        obs=torch.randn(n, 39),
        instruction=torch.randn(n, 384),
        actions=torch.rand(n, 5, 4) * 2 - 1,
        action_mask=torch.ones(n, 5, dtype=torch.bool),
        intervention=torch.zeros(n, 5, dtype=torch.bool),
        reward=torch.rand(n),
        discount=torch.full((n,), 0.95),
        done=torch.zeros(n),
        next_obs=torch.randn(n, 39),
        return_to_go=(torch.rand(n) < 0.7).float(),
    ).to(device)
    configs = {
        "online_default_qam64_every_4th_step": replace(ONLINE_LEARNER, qam_batch=64, policy_every=4),
        "offline_default_qam128_every_step": LearnerConfig(policy_warmup=0),
    }
    generator = torch.Generator().manual_seed(0)

    def new_learner(config: LearnerConfig) -> LWDLearner:
        policy = FlowChunkPolicy(PolicyConfig()).to(device)
        critic_config = CriticConfig(chunk_len=5)
        return LWDLearner(
            policy,
            copy.deepcopy(policy),
            ChunkCritic(critic_config).to(device),
            StateValue(critic_config).to(device),
            config,
        )

    learners = {name: new_learner(config) for name, config in configs.items()}
    if args.compile:
        for name, config in configs.items():
            learner = new_learner(config)
            for module in (learner.critic, learner.critic_target, learner.value):
                module.compile(mode=args.compile)
            learners[f"{name}_compiled_{args.compile}"] = learner

    def synchronize() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def run(learner: LWDLearner, steps: int) -> float:
        imitable = batch if learner.wants_imitable_batch else None
        synchronize()
        began = time.perf_counter()
        for _ in range(steps):
            learner.step(batch, generator, imitable)
        synchronize()
        return steps / (time.perf_counter() - began)

    warm_up_seconds = {}
    for name, learner in learners.items():
        began = time.perf_counter()
        for no_wait in (False, True):
            set_no_wait(no_wait)
            run(learner, 4)
        warm_up_seconds[name] = time.perf_counter() - began
    rates: dict[str, list[float]] = {}
    for _ in range(args.rounds):
        for name, learner in learners.items():
            for no_wait in (False, True):
                set_no_wait(no_wait)
                rates.setdefault(f"{name}{'_no_wait' if no_wait else ''}", []).append(run(learner, args.steps))
    set_no_wait(False)
    report = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "steps_per_s_median": {name: float(np.median(r)) for name, r in rates.items()},
        "rounds": rates,
        "warm_up_seconds": warm_up_seconds,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "sync_probe.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report["steps_per_s_median"], indent=2))
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    learner = learners["online_default_qam64_every_4th_step"]
    with torch.profiler.profile(activities=activities) as profile:
        run(learner, 8)
    table = profile.key_averages().table(sort_by="self_cpu_time_total", row_limit=25)
    (out / "profile_online_default.txt").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
