import numpy as np
import torch

from lwd.fleet.policy_actor import sample_chunks
from lwd.policy.flow_policy import FlowChunkPolicy, PolicyConfig
from lwd.policy.instructions import InstructionEncoder


def test_a_rows_chunk_depends_on_its_own_generator_not_on_its_batch_mates():
    torch.manual_seed(0)
    policy = FlowChunkPolicy(PolicyConfig(hidden_dim=32, num_layers=1, context_dim=16)).eval()
    encoder = InstructionEncoder({"reach": np.full(384, 384**-0.5, np.float32)})
    states = np.random.default_rng(0).normal(size=(3, 39)).astype(np.float32)
    together = sample_chunks(
        policy, encoder, states, ["reach"] * 3, [torch.Generator().manual_seed(s) for s in (1, 2, 3)]
    )
    alone = sample_chunks(policy, encoder, states[2:], ["reach"], [torch.Generator().manual_seed(3)])
    np.testing.assert_allclose(together[2], alone[0], atol=1e-6)
    same_state = sample_chunks(
        policy, encoder, states[[0, 0]], ["reach"] * 2, [torch.Generator().manual_seed(s) for s in (1, 2)]
    )
    assert not np.allclose(same_state[0], same_state[1])  # different streams, different chunks
