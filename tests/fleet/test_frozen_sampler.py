"""The robot workers' traced sampler gives the eager policy's chunks bit for bit, and turns
itself off (the eager policy serves) when it would not."""

import numpy as np
import torch

from lwd.fleet.policy_actor import FrozenSampler, sample_chunks
from lwd.policy.flow_policy import FlowChunkPolicy, PolicyConfig
from lwd.policy.instructions import InstructionEncoder

INSTRUCTIONS = ("reach the goal", "close the drawer")


def _policy_and_encoder(seed: int = 0):
    torch.manual_seed(seed)
    policy = FlowChunkPolicy(PolicyConfig(hidden_dim=32, num_layers=2, context_dim=32, time_dim=8)).eval()
    rng = np.random.default_rng(seed)
    encoder = InstructionEncoder({text: rng.normal(size=384).astype(np.float32) for text in INSTRUCTIONS})
    return policy, encoder


def _chunks(policy, encoder, batch: int, seed: int, sampler=None, dtype=None) -> np.ndarray:
    states = np.random.default_rng(seed).normal(size=(batch, 39)).astype(np.float32)
    instructions = [INSTRUCTIONS[i % 2] for i in range(batch)]
    generator = torch.Generator().manual_seed(seed)
    return sample_chunks(policy, encoder, states, instructions, generator, sampler=sampler, dtype=dtype)


def test_the_frozen_sampler_gives_the_eager_chunks_bit_for_bit_at_every_batch_size():
    policy, encoder = _policy_and_encoder()
    sampler = FrozenSampler(policy)
    for round_index in range(3):  # later calls run the graph unchecked: they must still match
        for batch in (1, 4, 10, 13):
            eager = _chunks(policy, encoder, batch, seed=10 * round_index + batch)
            frozen = _chunks(policy, encoder, batch, seed=10 * round_index + batch, sampler=sampler)
            assert frozen.shape == eager.shape == (batch, policy.config.chunk_len, policy.config.action_dim)
            np.testing.assert_array_equal(frozen, eager)
    assert not sampler.off and sampler.checked == {1, 4, 10, 13}


def test_a_bfloat16_frozen_sampler_gives_the_eager_bfloat16_chunks_bit_for_bit():
    policy, encoder = _policy_and_encoder()
    sampler = FrozenSampler(policy, torch.bfloat16)
    for batch in (1, 6, 6):
        eager = _chunks(policy, encoder, batch, seed=batch, dtype=torch.bfloat16)
        np.testing.assert_array_equal(_chunks(policy, encoder, batch, seed=batch, sampler=sampler), eager)
    assert not sampler.off and sampler.checked == {1, 6}
    assert not np.array_equal(eager, _chunks(policy, encoder, 6, seed=6))  # bfloat16 is not float32


def test_a_graph_that_differs_from_the_policy_is_turned_off_and_the_eager_policy_serves():
    policy, encoder = _policy_and_encoder()
    sampler = FrozenSampler(policy)
    _chunks(policy, encoder, 4, seed=1, sampler=sampler)  # traced and checked at batch 4
    with torch.no_grad():  # the policy changes under the frozen graph (its weights are constants)
        for parameter in policy.parameters():
            parameter.add_(0.1)
    frozen = _chunks(policy, encoder, 5, seed=2, sampler=sampler)  # a new batch size: checked, differs
    assert sampler.off
    np.testing.assert_array_equal(frozen, _chunks(policy, encoder, 5, seed=2))


def test_a_policy_the_tracer_cannot_follow_falls_back_to_eager():
    policy, encoder = _policy_and_encoder()
    sampler = FrozenSampler(policy)
    sampler._trace = lambda *args: (_ for _ in ()).throw(RuntimeError("untraceable"))
    chunks = _chunks(policy, encoder, 3, seed=4, sampler=sampler)
    assert sampler.off
    np.testing.assert_array_equal(chunks, _chunks(policy, encoder, 3, seed=4))
