"""The chunk a robot is executing. Torch-free, so the robot client (`lwd.client`) can use it
without loading a policy stack."""

from __future__ import annotations

import numpy as np

from lwd.data.episode import NO_POLICY


class ChunkQueue:
    """The actions left of the chunk a robot is executing, and the version that produced
    them. `reset()` drops them, so after an operator hands control back the policy replans
    from the new state. Shared by the in-process `PolicyActor` and the gateway client's
    `RemotePolicy`: they differ only in where a chunk comes from."""

    def __init__(self, execute_steps: int = 0, version: int = NO_POLICY):
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

    def next_action(self) -> np.ndarray:
        return self._queue.pop(0)

    def queued_actions(self) -> list[np.ndarray]:
        """The actions still to execute of the current chunk (a copy of the list)."""
        return list(self._queue)
