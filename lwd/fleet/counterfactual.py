"""Was a takeover needed? What the policy would have done had the operator stayed out.

At the first takeover of an episode, `PolicyAloneProbe` snapshots the robot, lets the
policy run alone from that very state (the action it had just proposed, the rest of its
chunk, then fresh chunks) to the episode's step limit, records whether it succeeded, and
restores the robot, so the operator then drives exactly as it would have without the
probe. The probe draws its policy noise from a generator of its own, so the fleet's
noise, and with it every later chunk of every robot, is untouched (tests check that the
episodes are the same with and without the probe).

Before the first takeover the operator changes nothing, so "policy alone from the first
takeover" is the whole episode the policy would have had without an operator.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from lwd.fleet.chunks import ChunkQueue
from lwd.fleet.policy_actor import PolicyActor
from lwd.fleet.rollout import EpisodeRun
from lwd.policy.flow_policy import FlowChunkPolicy
from lwd.policy.instructions import InstructionEncoder


@dataclass(frozen=True)
class PolicyAloneOutcome:
    """How one episode would have ended without its first takeover and what came after."""

    robot_id: str
    seq: int
    takeover_step: int  # actions executed before the operator's first one
    success: bool  # the policy alone reached success within the episode's step limit
    steps: int  # the episode's length had the policy stayed alone


class PolicyAloneProbe:
    """Called by an `EpisodeRun` at its first takeover (`on_first_takeover`); collects one
    `PolicyAloneOutcome` per episode in `outcomes`, keyed by (robot id, seq)."""

    def __init__(self, seed: int = 0):
        self.seed = seed
        self.outcomes: dict[tuple[str, int], PolicyAloneOutcome] = {}

    def generator(self, run: EpisodeRun) -> torch.Generator:
        """The probe's policy noise for one episode: fixed by the probe's seed and the
        episode's, independent of the fleet's generator."""
        words = np.random.SeedSequence([self.seed, run.seed or 0, run.seq]).generate_state(2, dtype=np.uint32)
        return torch.Generator().manual_seed(int(words[0]) << 32 | int(words[1]))

    def __call__(
        self, run: EpisodeRun, policy_action: np.ndarray, policy: FlowChunkPolicy, encoder: InstructionEncoder
    ) -> None:
        actor = PolicyActor(policy, encoder, self.generator(run), execute_steps=getattr(run.actor, "execute_steps", 0))
        if isinstance(run.actor, ChunkQueue) and run.actor.queued_actions():
            # the rest of the chunk the policy is executing: it would have carried on with it
            actor.fill(np.stack(run.actor.queued_actions()), run.policy_version)
        success, steps = policy_alone(run, policy_action, actor)
        key = (run.robot_id, run.seq)
        self.outcomes[key] = PolicyAloneOutcome(run.robot_id, run.seq, run.steps_taken, success, steps)


def policy_alone(run: EpisodeRun, first_action: np.ndarray, actor: PolicyActor) -> tuple[bool, int]:
    """Execute `first_action`, then `actor`, from the run's current state until success or
    the episode's step limit; put the robot back as it was. Returns (success, episode length)."""
    robot = run.robot
    snapshot = robot.snapshot()
    steps, action = run.steps_taken, first_action
    try:
        while True:
            observation, _, _, truncated, info = robot.step(np.clip(np.asarray(action, dtype=np.float32), -1.0, 1.0))
            steps += 1
            if info.success:
                return True, steps
            if truncated or steps >= robot.task.max_steps:
                return False, steps
            action = actor.act(observation)
    finally:
        robot.restore(snapshot)
