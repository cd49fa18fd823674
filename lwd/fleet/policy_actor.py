"""A policy as an `Actor`: sample a chunk, execute it, replan when it runs out."""

from __future__ import annotations

import numpy as np
import torch

from lwd.data.episode import NO_POLICY
from lwd.envs.robot import Observation
from lwd.policy.flow_policy import FlowChunkPolicy
from lwd.policy.instructions import InstructionEncoder


@torch.inference_mode()  # cheaper than no_grad: robots never backpropagate
def sample_chunks(
    policy: FlowChunkPolicy,
    encoder: InstructionEncoder,
    states: np.ndarray,
    instructions: list[str],
    generator: torch.Generator | list[torch.Generator],
) -> np.ndarray:
    """(B, H, A) action chunks for B robots in one batched policy call. With one generator
    per row, each row's noise depends only on its own generator, not on its batch-mates."""
    obs = torch.from_numpy(np.asarray(states, np.float32))
    context = policy.encode(obs, torch.from_numpy(encoder.embed(instructions)))
    width = policy.config.flat_action_dim
    if isinstance(generator, torch.Generator):
        noise = torch.randn(len(obs), width, generator=generator)
    else:
        noise = torch.stack([torch.randn(width, generator=g) for g in generator])
    return policy.sample(context, noise).numpy()


class PolicyActor:
    """One robot's view of a chunk policy. `reset()` drops the queued chunk, so after an
    operator hands control back the policy replans from the new state.

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
        self.policy = policy.eval() if policy is not None else None
        self.encoder = encoder
        self.generator = generator
        self.execute_steps = execute_steps
        self.version = version
        self._queue: list[np.ndarray] = []

    def reset(self) -> None:
        self._queue = []

    @property
    def needs_chunk(self) -> bool:
        return not self._queue

    def fill(self, chunk: np.ndarray, version: int) -> None:
        """Queue the first `execute_steps` actions (all if 0) of a (H, A) chunk."""
        steps = self.execute_steps or len(chunk)
        self._queue = list(chunk[:steps])
        self.version = version

    def act(self, observation: Observation) -> np.ndarray:
        if not self._queue:
            if self.policy is None:
                raise RuntimeError("this PolicyActor is filled by a fleet worker and has no chunk queued")
            chunk = sample_chunks(
                self.policy, self.encoder, observation.state[None], [observation.instruction], self.generator
            )[0]
            self.fill(chunk, self.version)
        return self._queue.pop(0)
