"""The narrow interface a flow-matching policy offers the learners.

Not yet the whole seam: the flow-matching losses use only this protocol, but QAM and the
online methods still reach `velocity_net` (the trainable action expert) and `unnormalize`
of `FlowChunkPolicy`, and the fast QAM step its `velocity_field` and
`velocity_linearization`, so a second policy class needs those too (an open issue; the
`reference` learner implementation needs only `velocity`)."""

from __future__ import annotations

from typing import Protocol

import torch


class PolicyAdapter(Protocol):
    """A flow-matching action-chunk policy as the learners see it.

    All action tensors handed to `velocity` live in the policy's normalised, flattened
    chunk space (B, H*A); `sample` returns env-unit chunks (B, H, A) clipped to the
    action range. `encode` may be frozen (SPEC §3: the VLM backbone online).
    """

    def encode(
        self, obs: torch.Tensor, instruction: torch.Tensor, images: torch.Tensor | None = None
    ) -> torch.Tensor: ...

    def velocity(self, context: torch.Tensor, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor: ...

    def sample(
        self, context: torch.Tensor, noise: torch.Tensor | None = None, steps: int | None = None
    ) -> torch.Tensor: ...

    def normalize_actions(self, actions: torch.Tensor) -> torch.Tensor: ...
