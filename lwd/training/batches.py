"""From the data layer's batches to the learners' typed tensor batches."""

from __future__ import annotations

import torch

from lwd.algorithms.batch import LearnerBatch
from lwd.data.replay import ChunkBatch
from lwd.policy.instructions import InstructionEncoder


def learner_batch(batch: ChunkBatch, encoder: InstructionEncoder) -> LearnerBatch:
    """The batch as tensors (sharing the arrays' memory), instructions embedded by `encoder`."""
    table = torch.from_numpy(encoder.embed(list(batch.instruction_vocab)))
    return LearnerBatch(
        obs=torch.from_numpy(batch.obs),
        instruction=table[torch.from_numpy(batch.instruction_ids)],
        actions=torch.from_numpy(batch.actions),
        action_mask=torch.from_numpy(batch.action_mask),
        intervention=torch.from_numpy(batch.intervention),
        imitable=torch.from_numpy(batch.imitable),
        reward=torch.from_numpy(batch.reward),
        discount=torch.from_numpy(batch.discount),
        done=torch.from_numpy(batch.done),
        next_obs=torch.from_numpy(batch.next_obs),
        return_to_go=torch.from_numpy(batch.return_to_go),
        images=None if batch.images is None else torch.from_numpy(batch.images),
        next_images=None if batch.next_images is None else torch.from_numpy(batch.next_images),
    )
