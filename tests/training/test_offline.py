import json

import pytest
import torch

from lwd.data.lease import RunLeaseError
from lwd.policy.checkpoint import CheckpointError, load_checkpoint, load_learner_state
from lwd.training.offline import train_offline
from tests.conftest import lease_held_by_another_process, tiny_offline_config


@pytest.fixture(scope="module")
def offline_setup(tiny_pipeline):
    root, store, sft, results, _ = tiny_pipeline
    return root, store, sft, results


def test_offline_store_holds_demos_rollouts_and_play(offline_setup):
    _, _, _, results = offline_setup
    assert len(results["demo"].stats) == 0 and results["demo"].skipped == 4  # the SFT demos are reused
    assert len(results["rollout"].stats) == 4 and len(results["play"].stats) == 2
    from lwd.data.store import EpisodeStore

    records = EpisodeStore(offline_setup[1], create=False).records()
    rollouts = [r for r in records if r.source == "rollout"]
    assert len(rollouts) == 4 and all(r.robot_id.startswith("rollout-v0-") for r in rollouts)
    assert all(not r.success for r in records if r.source == "play")


def _offline_config(root, store, sft, steps, **overrides):
    return tiny_offline_config(store, sft, root / overrides.pop("name", "rl"), steps, **overrides)


def test_offline_rl_checkpoint_carries_the_learner_and_resumes(offline_setup):
    root, store, sft, _ = offline_setup
    first = train_offline(_offline_config(root, store, sft, 4))
    policy, _, manifest = load_checkpoint(first)
    sft_policy, _, sft_manifest = load_checkpoint(sft)
    assert manifest.version == sft_manifest.version + 1 and manifest.parent_version == sft_manifest.version
    assert manifest.training_step == sft_manifest.training_step + 4
    state = load_learner_state(first)
    assert {k.split(".")[0] for k in state} == {"reference", "critic", "critic_target", "value"}
    for name, tensor in sft_policy.state_dict().items():  # the reference stays the frozen SFT policy
        torch.testing.assert_close(state[f"reference.{name}"], tensor)
    assert any(not torch.equal(a, b) for a, b in zip(policy.state_dict().values(), sft_policy.state_dict().values()))
    resumed = train_offline(_offline_config(root, store, sft, 6))
    assert load_checkpoint(resumed)[2].training_step == sft_manifest.training_step + 6
    records = [json.loads(line) for line in (root / "rl" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [2, 4, 6]
    for key in (
        "value/loss",
        "value/tau_mean",
        "value/entropy",
        "critic/q_mean",
        "qam/loss",
        "qam/terminal_adjoint_norm",
        "qam/kl_proxy",
    ):
        assert key in records[-1]


def test_offline_rl_refuses_a_run_directory_another_process_is_training_into(offline_setup):
    root, store, sft, _ = offline_setup
    config = _offline_config(root, store, sft, 4, name="held")
    with lease_held_by_another_process("run", config.out) as process:
        with pytest.raises(RunLeaseError, match=f"pid {process.pid} "):
            train_offline(config)
    assert sorted(p.name for p in (root / "held").iterdir()) == ["run.lock"]  # refused before it wrote anything


@pytest.mark.parametrize("ablation", [{"value_kind": "expectile"}, {"tau_mode": "constant"}])
def test_ablations_train(offline_setup, ablation):
    root, store, sft, _ = offline_setup
    name = "ablation-" + "-".join(ablation.values())
    final = train_offline(_offline_config(root, store, sft, 3, name=name, **ablation))
    record = json.loads((root / name / "metrics.jsonl").read_text().splitlines()[-1])
    if "tau_mode" in ablation:
        assert record["value/tau_mean"] == pytest.approx(0.6)
    else:
        assert "value/tau_mean" not in record
    assert load_checkpoint(final)[2].extras["offline"]["learner"]["tau_mode"] == ablation.get("tau_mode", "adaptive")


def test_the_critic_ensemble_has_the_configured_number_of_heads_and_resumes_with_them(offline_setup):
    root, store, sft, _ = offline_setup
    first = train_offline(_offline_config(root, store, sft, 2, name="heads", critic_heads=3))
    heads = {key.split(".")[2] for key in load_learner_state(first) if key.startswith("critic.heads.")}
    assert heads == {"0", "1", "2"}
    assert load_checkpoint(first)[2].extras["offline"]["critic"]["num_heads"] == 3
    resumed = train_offline(_offline_config(root, store, sft, 4, name="heads", critic_heads=3))
    assert load_checkpoint(resumed)[2].extras["offline"]["critic"]["num_heads"] == 3
    with pytest.raises(ValueError, match="'num_heads': 3"):  # resuming it with another ensemble size
        train_offline(_offline_config(root, store, sft, 6, name="heads", critic_heads=2))


def test_a_critic_with_an_action_layer_trains_and_refuses_to_resume_without_it(offline_setup):
    root, store, sft, _ = offline_setup
    first = train_offline(_offline_config(root, store, sft, 2, name="action", critic_action_features=8))
    assert load_checkpoint(first)[2].extras["offline"]["critic"]["action_features"] == 8
    assert any(key.startswith("critic.heads.0.action.") for key in load_learner_state(first))
    with pytest.raises(ValueError, match="'action_features': 8"):
        train_offline(_offline_config(root, store, sft, 4, name="action"))


def test_offline_rl_trains_a_learned_prior_on_its_own_imitable_batches(offline_setup):
    root, store, sft, _ = offline_setup
    final = train_offline(
        _offline_config(root, store, sft, 4, name="own-batch", prior="learned", prior_data="hg-dagger")
    )
    records = [json.loads(line) for line in (root / "own-batch" / "metrics.jsonl").read_text().splitlines()]
    fractions = [r["prior/imitated_fraction"] for r in records if "prior/imitated_fraction" in r]
    assert fractions and all(f == 1.0 for f in fractions)  # every row of the prior's batch is imitable
    assert any(key.startswith("prior.") for key in load_learner_state(final))  # saved with the learner


def test_sft_checkpoint_has_no_learner_state(offline_setup):
    with pytest.raises(CheckpointError, match="policy-only checkpoint"):
        load_learner_state(offline_setup[2])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_offline_rl_trains_on_cuda_resumes_there_and_saves_cpu_checkpoints(offline_setup):
    root, store, sft, _ = offline_setup
    first = train_offline(_offline_config(root, store, sft, 4, name="rl-cuda", device="cuda"))
    policy, _, manifest = load_checkpoint(first)  # loads on the CPU
    assert next(policy.parameters()).device.type == "cpu"
    resumed = train_offline(_offline_config(root, store, sft, 6, name="rl-cuda", device="cuda"))
    assert load_checkpoint(resumed)[2].training_step == manifest.training_step + 2


def test_a_stage_reward_outside_zero_to_one_is_refused_when_configured(tmp_path):
    from lwd.training.offline import OfflineConfig

    with pytest.raises(ValueError, match="stage_reward"):
        OfflineConfig(checkpoint=str(tmp_path / "missing"), out=str(tmp_path / "run"), stage_reward=-0.5)
