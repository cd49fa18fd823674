"""The one resume path of SFT, offline RL and learning while deploying."""

import numpy as np
import pytest
import torch

from lwd.policy.checkpoint import save_checkpoint
from lwd.policy.flow_policy import FlowChunkPolicy, PolicyConfig
from lwd.policy.instructions import InstructionEncoder
from lwd.training.resume import ResumeState, find_resume_state, optimizer_state, restore_optimizers


def test_the_sampler_continues_exactly_where_the_run_stopped():
    rng = np.random.default_rng(3)
    rng.random(10)
    state = ResumeState.from_json(ResumeState(7, rng.bit_generator.state, {"store": "s"}).to_json())
    assert (state.step, state.extras) == (7, {"store": "s"})
    np.testing.assert_array_equal(state.sampler().random(5), rng.random(5))  # the same stream replayed


def test_every_optimisers_state_survives_the_round_trip():
    torch.manual_seed(0)
    nets = {"critic": torch.nn.Linear(3, 2), "policy": torch.nn.Linear(3, 1)}
    optimizers = {name: torch.optim.Adam(net.parameters(), lr=1e-2) for name, net in nets.items()}
    for net, optimizer in zip(nets.values(), optimizers.values()):
        net(torch.randn(4, 3)).sum().backward()
        optimizer.step()
    fresh = {name: torch.optim.Adam(net.parameters(), lr=1e-2) for name, net in nets.items()}
    restore_optimizers(fresh, optimizer_state(optimizers))
    for name in nets:
        saved, restored = optimizers[name].state_dict()["state"], fresh[name].state_dict()["state"]
        for index in saved:
            for key in ("exp_avg", "exp_avg_sq"):  # stored bytes read back: exact
                assert torch.equal(saved[index][key], restored[index][key]), (name, key)


def test_a_fresh_run_has_no_resume_state_and_another_stages_checkpoint_is_refused(tmp_path):
    assert find_resume_state(tmp_path / "last", "sft") is None
    policy = FlowChunkPolicy(PolicyConfig(hidden_dim=16, num_layers=1, context_dim=8))
    save_checkpoint(
        tmp_path / "last",
        policy,
        InstructionEncoder(),
        extras={"offline": ResumeState(3, np.random.default_rng(0).bit_generator.state).to_json()},
    )
    with pytest.raises(ValueError, match="is not a resumable sft run .*offline"):
        find_resume_state(tmp_path / "last", "sft")
    state, manifest = find_resume_state(tmp_path / "last", "offline")
    assert state.step == 3 and manifest.extras["offline"]["step"] == 3
