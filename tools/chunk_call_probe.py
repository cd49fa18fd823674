"""What one batched chunk call of the fleet costs, float32 vs bfloat16 (`--robots.inference-dtype`).

    .venv/bin/python tools/chunk_call_probe.py --batch 10 [--rounds 2] [--checkpoint CKPT]

Times the fleet's `FrozenSampler` (traced, frozen) at float32 and with the velocity network's
hidden layers in bfloat16, on one thread, by thread CPU time, warm and "cold" (64 MiB touched
before each call, as the robots' simulators evict the caches between two policy calls).
Default-size policy with random weights, or `--checkpoint`'s; prints µs per call and per env
step (batch × chunk length), and how far the bfloat16 chunks are from the float32 ones.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lwd.fleet.policy_actor import FrozenSampler  # noqa: E402
from lwd.policy.checkpoint import load_checkpoint  # noqa: E402
from lwd.policy.flow_policy import FlowChunkPolicy, PolicyConfig  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--calls", type=int, default=100)
    parser.add_argument("--checkpoint", default="", help="a trained policy (default: random weights)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    policy = load_checkpoint(args.checkpoint)[0] if args.checkpoint else FlowChunkPolicy(PolicyConfig())
    policy.eval()
    obs, instruction = torch.randn(args.batch, policy.config.obs_dim), torch.randn(args.batch, policy.config.text_dim)
    noise = torch.randn(args.batch, policy.flat_action_dim)
    float32, bfloat16 = FrozenSampler(policy), FrozenSampler(policy, torch.bfloat16)
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
        exact, low = float32(obs, instruction, noise), bfloat16(obs, instruction, noise)
        print(f"bfloat16 - float32: max |Δaction| {float((low - exact).abs().max()):.4f} (actions in [-1, 1])")
        for _ in range(args.rounds):
            for cold in (False, True):
                a, b = cost(float32, cold), cost(bfloat16, cold)
                print(
                    f"{'cold' if cold else 'warm'}: float32 {a:.0f} µs/call ({a / per_step:.1f}/step), "
                    f"bfloat16 {b:.0f} µs/call ({b / per_step:.1f}/step)"
                )


if __name__ == "__main__":
    main()
