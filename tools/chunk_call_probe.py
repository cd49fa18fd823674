"""What one batched chunk call of the fleet costs, float32 vs a bfloat16 velocity network.

    .venv/bin/python tools/chunk_call_probe.py --batch 10 [--rounds 2]

Times `FrozenSampler` (the fleet's traced float32 graph) and the same encode + K-step
sampler with the velocity network's hidden layers in bfloat16 (traced and frozen too),
on one thread, by thread CPU time, warm and "cold" (64 MiB touched before each call, as the
robots' simulators evict the caches between two policy calls). Default-size policy with
random weights; prints µs per call and per env step (batch × chunk length).
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lwd.fleet.policy_actor import FrozenSampler  # noqa: E402
from lwd.policy.flow_policy import FlowChunkPolicy, PolicyConfig  # noqa: E402


class Bfloat16Sampler(torch.nn.Module):
    """encode in float32, then the K Euler steps of `velocity_field` with its hidden layers in
    bfloat16 (the field QAM uses with `--lwd.qam-dtype bfloat16`)."""

    def __init__(self, policy: FlowChunkPolicy):
        super().__init__()
        self.policy = policy

    def forward(self, obs: torch.Tensor, instruction: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        field = self.policy.velocity_field(self.policy.encode(obs, instruction), torch.bfloat16)
        steps = self.policy.sample_steps
        x = noise
        for k in range(steps):
            x = x + field(x, torch.full((len(x),), k / steps)) / steps
        return self.policy.unnormalize(x)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--calls", type=int, default=100)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    policy = FlowChunkPolicy(PolicyConfig()).eval()
    obs, instruction = torch.randn(args.batch, policy.config.obs_dim), torch.randn(args.batch, policy.config.text_dim)
    noise = torch.randn(args.batch, policy.flat_action_dim)
    float32 = FrozenSampler(policy)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bfloat16 = torch.jit.freeze(torch.jit.trace(Bfloat16Sampler(policy).eval(), (obs, instruction, noise)))
    junk = np.ones(64 * 2**20 // 8)

    def cost(call, cold: bool) -> float:
        total = 0.0
        for i in range(args.calls + 10):
            if cold:
                junk[::8] += 1.0
            began = time.thread_time()
            call(obs, instruction, noise)
            if i >= 10:
                total += time.thread_time() - began
        return total / args.calls * 1e6

    per_step = args.batch * policy.chunk_len
    with torch.inference_mode():
        for _ in range(args.rounds):
            for cold in (False, True):
                a, b = cost(float32, cold), cost(bfloat16, cold)
                print(
                    f"{'cold' if cold else 'warm'}: float32 {a:.0f} µs/call ({a / per_step:.1f}/step), "
                    f"bfloat16 {b:.0f} µs/call ({b / per_step:.1f}/step)"
                )


if __name__ == "__main__":
    main()
