import numpy as np
import torch

from lwd.fleet.policy_actor import sample_chunks
from lwd.policy.flow_policy import FlowChunkPolicy, PolicyConfig
from lwd.policy.instructions import InstructionEncoder


def _tiny_policy() -> tuple[FlowChunkPolicy, InstructionEncoder]:
    """A small untrained policy (the same weights each call) and an encoder that knows "reach"."""
    torch.manual_seed(0)
    policy = FlowChunkPolicy(PolicyConfig(hidden_dim=32, num_layers=1, context_dim=16)).eval()
    return policy, InstructionEncoder({"reach": np.full(384, 384**-0.5, np.float32)})


def test_a_rows_chunk_depends_on_its_own_generator_not_on_its_batch_mates():
    policy, encoder = _tiny_policy()
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


def test_noise_scale_zero_samples_one_chunk_per_state_whatever_the_generator():
    policy, encoder = _tiny_policy()
    states = np.random.default_rng(0).normal(size=(2, 39)).astype(np.float32)[[0, 0]]

    def chunks(scale: float) -> np.ndarray:
        generators = [torch.Generator().manual_seed(s) for s in (1, 2)]
        return sample_chunks(policy, encoder, states, ["reach"] * 2, generators, noise_scale=scale)

    deterministic = chunks(0.0)
    np.testing.assert_allclose(deterministic[0], deterministic[1], atol=1e-6)  # x_0 = 0 for both streams
    default = sample_chunks(policy, encoder, states, ["reach"] * 2, [torch.Generator().manual_seed(s) for s in (1, 2)])
    np.testing.assert_array_equal(chunks(1.0), default)  # scale 1 is the policy's own distribution, bit for bit
    half = chunks(0.5)
    assert not np.allclose(half[0], half[1]) and not np.allclose(half, default)  # still random, but not s = 1


def test_a_scale_per_row_samples_each_row_as_a_call_at_its_own_scale_would():
    policy, encoder = _tiny_policy()
    states = np.random.default_rng(0).normal(size=(3, 39)).astype(np.float32)
    scales = np.array([0.0, 1.0, 0.5])

    def generators():
        return [torch.Generator().manual_seed(s) for s in (1, 2, 3)]

    mixed = sample_chunks(policy, encoder, states, ["reach"] * 3, generators(), noise_scale=scales)
    for row, scale in enumerate(scales):
        alone = sample_chunks(policy, encoder, states, ["reach"] * 3, generators(), noise_scale=float(scale))
        np.testing.assert_allclose(mixed[row], alone[row], atol=1e-6)
