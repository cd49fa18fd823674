"""A policy as an `Actor`: sample a chunk, execute it, replan when it runs out."""

from __future__ import annotations

import numpy as np
import torch

from lwd.envs.robot import Observation
from lwd.policy.flow_policy import FlowChunkPolicy
from lwd.policy.instructions import InstructionEncoder


class PolicyActor:
    """One robot's view of a chunk policy (batch 1). `reset()` drops the queued chunk,
    so after an operator hands control back the policy replans from the new state."""

    def __init__(self, policy: FlowChunkPolicy, encoder: InstructionEncoder, generator: torch.Generator,
                 execute_steps: int = 0):
        self.policy = policy.eval()
        self.encoder = encoder
        self.generator = generator
        self.execute_steps = execute_steps or policy.config.chunk_len
        self._queue: list[np.ndarray] = []

    def reset(self) -> None:
        self._queue = []

    @torch.no_grad()
    def act(self, observation: Observation) -> np.ndarray:
        if not self._queue:
            obs = torch.from_numpy(np.asarray(observation.state, np.float32)[None])
            instruction = torch.from_numpy(self.encoder.embed([observation.instruction]))
            context = self.policy.encode(obs, instruction)
            noise = torch.randn(1, self.policy.config.flat_action_dim, generator=self.generator)
            chunk = self.policy.sample(context, noise)[0].numpy()
            self._queue = list(chunk[: self.execute_steps])
        return self._queue.pop(0)
