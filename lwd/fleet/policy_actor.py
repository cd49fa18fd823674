"""A policy as an `Actor`: sample a chunk, execute it, replan when it runs out."""

from __future__ import annotations

import logging
import warnings

import numpy as np
import torch

from lwd.data.episode import NO_POLICY
from lwd.envs.robot import Observation
from lwd.fleet.chunks import ChunkQueue
from lwd.fleet.sensing import policy_images
from lwd.policy.flow_policy import FlowChunkPolicy
from lwd.policy.instructions import InstructionEncoder

log = logging.getLogger(__name__)


class _EncodeAndSample(torch.nn.Module):
    """The two policy calls of a chunk as one module, so that they trace into one graph."""

    def __init__(self, policy: FlowChunkPolicy, dtype: torch.dtype | None = None):
        super().__init__()
        self.policy, self.dtype = policy, dtype

    def forward(self, obs: torch.Tensor, instruction: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        return self.policy.sample(self.policy.encode(obs, instruction), noise, dtype=self.dtype)


class FrozenSampler:
    """A policy's chunk sampling (encode, then the K-step flow sampler) traced into one frozen
    TorchScript graph: the same operations without Python's dispatch between the ~150 small
    ops of a chunk, about a third of a batch-10 chunk's time on one core (docs/benchmarks.md).

    It must not change what robots do, so the graph's output is compared bit for bit with the
    eager policy's the first time each batch size comes up; a difference, or a policy the
    tracer cannot follow, turns it off for good and the eager policy serves from then on.
    `dtype` (bfloat16) runs the velocity network's hidden layers at that precision, in the
    graph and in the eager policy alike (`FleetConfig.inference_dtype`)."""

    def __init__(self, policy: FlowChunkPolicy, dtype: torch.dtype | None = None):
        self.policy, self.dtype = policy, dtype
        self.graph: torch.jit.ScriptModule | None = None
        self.checked: set[int] = set()  # batch sizes whose output matched the eager policy's
        self.off = False

    def _eager(self, obs: torch.Tensor, instruction: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        return self.policy.sample(self.policy.encode(obs, instruction), noise, dtype=self.dtype)

    def _trace(self, obs: torch.Tensor, instruction: torch.Tensor, noise: torch.Tensor) -> torch.jit.ScriptModule:
        # Traced outside inference mode on ordinary copies: freezing keeps the weights as constants.
        with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the tracer's notes on Python values it saw
            example = (obs.clone(), instruction.clone(), noise.clone())
            module = _EncodeAndSample(self.policy, self.dtype).eval()
            return torch.jit.freeze(torch.jit.trace(module, example, check_trace=False))

    def __call__(self, obs: torch.Tensor, instruction: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """What `policy.sample(policy.encode(obs, instruction), noise, dtype)` returns, bit for bit."""
        if self.off:
            return self._eager(obs, instruction, noise)
        try:
            if self.graph is None:
                self.graph = self._trace(obs, instruction, noise)
            rows = self.graph(obs, instruction, noise)
        except Exception as err:  # a policy the tracer cannot follow: eager from now on
            log.warning("frozen sampler off, the eager policy serves: %s", err)
            self.off = True
            return self._eager(obs, instruction, noise)
        if len(obs) not in self.checked:
            reference = self._eager(obs, instruction, noise)
            if not torch.equal(rows, reference):
                log.warning("frozen sampler off: its output differs from the eager policy's at batch %d", len(obs))
                self.off = True
                return reference
            self.checked.add(len(obs))
        return rows


@torch.inference_mode()  # cheaper than no_grad: robots never backpropagate
def sample_chunks(
    policy: FlowChunkPolicy,
    encoder: InstructionEncoder,
    states: np.ndarray,
    instructions: list[str],
    generator: torch.Generator | list[torch.Generator],
    sampler: FrozenSampler | None = None,
    images: np.ndarray | None = None,
    dtype: torch.dtype | None = None,
    noise_scale: float | np.ndarray = 1.0,
) -> np.ndarray:
    """(B, H, A) action chunks for B robots in one batched policy call. With one generator
    per row, each row's noise depends only on its own generator, not on its batch-mates.
    `sampler` (a `FrozenSampler` of `policy`) computes the same chunks faster; `images`
    (B, S, W, 3) uint8 feeds a policy with a camera (the eager policy serves those). `dtype`
    (bfloat16) runs the velocity network's hidden layers at that precision; a `sampler`
    carries its own. `noise_scale` multiplies the flow's initial noise (the sampling temperature:
    1 samples the policy's distribution, 0 runs the deterministic flow from x_0 = 0), one for
    every row or (B,) one per row; the same generator draws are consumed whatever the scale."""
    obs = torch.from_numpy(np.asarray(states, np.float32))
    instruction = torch.from_numpy(encoder.embed(instructions))
    width = policy.flat_action_dim
    if isinstance(generator, torch.Generator):
        noise = torch.randn(len(obs), width, generator=generator)
    else:
        noise = torch.stack([torch.randn(width, generator=g) for g in generator])
    if np.ndim(noise_scale) == 1:
        noise = noise * torch.as_tensor(np.asarray(noise_scale, np.float32)).unsqueeze(1)
    elif noise_scale != 1.0:
        noise = noise * noise_scale
    if images is not None:
        return policy.sample(policy.encode(obs, instruction, torch.from_numpy(images)), noise, dtype=dtype).numpy()
    if sampler is not None:
        return sampler(obs, instruction, noise).numpy()
    return policy.sample(policy.encode(obs, instruction), noise, dtype=dtype).numpy()


class PolicyActor(ChunkQueue):
    """One robot's view of a chunk policy.

    Standalone it samples its own chunks (batch 1); a fleet worker instead checks
    `needs_chunk` on all its robots and `fill`s them from one batched call. `version`
    is the policy version of the chunk being executed.
    """

    def __init__(
        self,
        policy: FlowChunkPolicy | None,
        encoder: InstructionEncoder | None,
        generator: torch.Generator | None,
        execute_steps: int = 0,
        version: int = NO_POLICY,
    ):
        super().__init__(execute_steps, version)
        self.policy = policy.eval() if policy is not None else None
        self.encoder = encoder
        self.generator = generator

    def act(self, observation: Observation) -> np.ndarray:
        if not self._queue:
            if self.policy is None:
                raise RuntimeError("this PolicyActor is filled by a fleet worker and has no chunk queued")
            images = policy_images(self.policy.cameras, [observation.images])
            chunk = sample_chunks(
                self.policy,
                self.encoder,
                observation.state[None],
                [observation.instruction],
                self.generator,
                images=images,
            )[0]
            self.fill(chunk, self.version)
        return self.next_action()
