"""LWDLearner: the SPEC §4.5 step order and gradient isolation. Each update touches only
what it trains: V its value, Q its critic (and the target only through the EMA), QAM only
the policy's trainable parameters; the frozen reference is never touched, and warm-up and
`policy_every` decide on which steps QAM runs."""

import copy
from dataclasses import replace

import pytest
import torch

from lwd.algorithms.batch import LearnerBatch
from lwd.algorithms.learner import LearnerConfig, LWDLearner
from lwd.policy.critic import ChunkCritic, CriticConfig, StateValue
from lwd.policy.flow_policy import FlowChunkPolicy, PolicyConfig
from tests.conftest import random_batch

BATCH, CHUNK = 16, 3


def _learner(**overrides) -> LWDLearner:
    torch.manual_seed(0)
    policy = FlowChunkPolicy(PolicyConfig(chunk_len=CHUNK, hidden_dim=32, num_layers=1, context_dim=16, sample_steps=4))
    critic_config = CriticConfig(chunk_len=CHUNK, hidden_dim=32, num_layers=1)
    config = LearnerConfig(**{"policy_warmup": 0, "qam_batch": 8, **overrides})
    return LWDLearner(policy, copy.deepcopy(policy), ChunkCritic(critic_config), StateValue(critic_config), config)


def _batch() -> LearnerBatch:
    generator = torch.Generator().manual_seed(2)
    return random_batch(
        BATCH,
        39,
        384,
        CHUNK,
        4,
        seed=1,
        reward=(torch.rand(BATCH, generator=generator) > 0.7).float(),
        done=(torch.rand(BATCH, generator=generator) > 0.8).float(),
    )


def _state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().clone() for name, tensor in module.state_dict().items()}


def _changed(before: dict[str, torch.Tensor], module: torch.nn.Module) -> set[str]:
    # Exact on purpose: an update that must not touch a parameter leaves its bytes as they were.
    return {name for name, tensor in module.state_dict().items() if not torch.equal(before[name], tensor)}


def _snapshot(learner: LWDLearner) -> dict[str, dict[str, torch.Tensor]]:
    return {
        name: _state(getattr(learner, name)) for name in ("policy", "reference", "critic", "critic_target", "value")
    }


def _modules_changed(learner: LWDLearner, before) -> set[str]:
    return {name for name, state in before.items() if _changed(state, getattr(learner, name))}


def _action_expert_names(learner: LWDLearner) -> set[str]:
    return {f"velocity_net.{name}" for name, _ in learner.policy.velocity_net.named_parameters()}


def test_qam_changes_only_the_policys_trainable_parameters():
    learner = _learner(freeze_policy_encoder=True)
    before = _snapshot(learner)
    batch = _batch()
    metrics = learner.update_policy(batch.obs, batch.instruction, torch.Generator().manual_seed(2))
    assert _modules_changed(learner, before) == {"policy"}
    changed = _changed(before["policy"], learner.policy)
    assert changed and changed <= _action_expert_names(learner)  # the frozen encoder kept its weights
    assert metrics["qam/grad_norm"] > 0


def test_qam_trains_the_policys_encoder_when_it_is_not_frozen():
    learner = _learner(freeze_policy_encoder=False)
    before = _snapshot(learner)
    batch = _batch()
    learner.update_policy(batch.obs, batch.instruction, torch.Generator().manual_seed(2))
    changed = _changed(before["policy"], learner.policy)
    assert changed - _action_expert_names(learner)  # some encoder weights moved, not only the action expert's
    assert not _changed(before["reference"], learner.reference)  # the reference keeps its own encoder


def test_the_policy_loss_sends_no_gradient_to_reference_critic_or_value():
    learner = _learner()
    batch = _batch()
    learner.update_policy(batch.obs, batch.instruction, torch.Generator().manual_seed(2))
    for name in ("reference", "critic", "critic_target", "value"):
        grads = [p.grad for p in getattr(learner, name).parameters() if p.grad is not None]
        assert all(float(g.abs().sum()) == 0.0 for g in grads), name


def test_the_value_update_trains_only_the_value_and_the_critic_update_only_the_critic():
    learner = _learner()
    batch = _batch()
    before = _snapshot(learner)
    learner.update_value(batch.obs, batch.instruction, batch.actions)
    assert _modules_changed(learner, before) == {"value"}
    before = _snapshot(learner)
    learner.update_critic(batch.obs, batch.instruction, batch.actions, torch.rand(BATCH))
    assert _modules_changed(learner, before) == {"critic"}


def test_one_step_updates_value_critic_and_target_and_qam_after_warmup():
    learner = _learner(policy_warmup=0)
    before = _snapshot(learner)
    metrics = learner.step(_batch(), torch.Generator().manual_seed(3))
    assert _modules_changed(learner, before) == {"value", "critic", "critic_target", "policy"}
    for key in ("value/loss", "critic/loss", "qam/loss", "value/tau_mean"):
        assert key in metrics, key


def test_the_target_critic_follows_the_critic_by_the_ema_rate():
    learner = _learner(critic_ema=0.25, policy_warmup=10)
    target_before = _state(learner.critic_target)
    learner.step(_batch(), torch.Generator().manual_seed(3))
    critic_after = learner.critic.state_dict()
    for name, tensor in learner.critic_target.state_dict().items():
        expected = 0.75 * target_before[name] + 0.25 * critic_after[name]
        torch.testing.assert_close(tensor, expected, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize(
    ("warmup", "every", "expected"),
    [
        (3, 1, [False, False, False, True, True, True]),
        (0, 2, [True, False, True, False, True, False]),
        (2, 3, [False, False, False, True, False, False]),
    ],
)
def test_warmup_and_policy_every_gate_the_policy_update(warmup, every, expected):
    learner = _learner(policy_warmup=warmup, policy_every=every)
    batch, generator = _batch(), torch.Generator().manual_seed(4)
    updated = []
    for _ in expected:
        before = _state(learner.policy)
        metrics = learner.step(batch, generator)
        updated.append(bool(_changed(before, learner.policy)))
        assert ("qam/loss" in metrics) == updated[-1]
    assert updated == expected


def _policy_grad(learner: LWDLearner) -> torch.Tensor:
    return torch.cat([p.grad.flatten() for p in learner.policy.parameters()])


@pytest.mark.parametrize("adjoint_time", ["step_start", "step_end"])
def test_fast_steps_match_the_reference_implementation(adjoint_time):
    """Three full steps (V, Q, EMA, QAM) of the default 'fast' learner and of the literal
    'reference' one, from the same start on the same batches: the same metrics, QAM policy
    gradients and parameters up to float32 rounding (batched matmuls, fused Adam). Stated
    tolerance: 1e-4 relative on metrics and on the gradient's norm, 1e-6 on parameters."""
    fast = _learner(adjoint_time=adjoint_time)
    slow = _learner(adjoint_time=adjoint_time, implementation="reference")
    batch = _batch()
    for seed in range(3):
        fast_metrics = fast.step(batch, torch.Generator().manual_seed(seed))
        slow_metrics = slow.step(batch, torch.Generator().manual_seed(seed))
        assert fast_metrics.keys() == slow_metrics.keys()
        for key, value in slow_metrics.items():
            assert fast_metrics[key] == pytest.approx(value, rel=1e-4, abs=1e-6), key
        fast_grad, slow_grad = _policy_grad(fast), _policy_grad(slow)
        assert float(slow_grad.norm()) > 0
        assert float((fast_grad - slow_grad).norm() / slow_grad.norm()) < 1e-4
    for name, state in _snapshot(slow).items():
        for key, tensor in getattr(fast, name).state_dict().items():
            torch.testing.assert_close(tensor, state[key], rtol=0, atol=1e-6, msg=f"{name}.{key}")


def test_bfloat16_qam_stays_within_its_stated_tolerance_of_float32():
    """qam_dtype='bfloat16' runs the velocity network's hidden layers in bf16: the QAM loss
    and policy gradient stay within 5% of the float32 step (a tolerance, not a bound)."""
    batch = _batch()
    results = []
    for dtype in ("float32", "bfloat16"):
        learner = _learner(qam_dtype=dtype)
        metrics = learner.update_policy(batch.obs, batch.instruction, torch.Generator().manual_seed(2))
        results.append((metrics["qam/loss"], _policy_grad(learner)))
    (loss, grad), (low_loss, low_grad) = results
    assert low_loss == pytest.approx(loss, rel=5e-2)
    assert float((low_grad - grad).norm() / grad.norm()) < 5e-2


@pytest.mark.parametrize("implementation", ["fast", "reference"])
def test_a_gradient_scaled_lam_sets_the_mean_terminal_adjoint_to_its_inverse(implementation):
    learner = _learner(lam_scale="gradient", lam=0.5, implementation=implementation)
    batch = _batch()
    metrics = learner.update_policy(batch.obs, batch.instruction, torch.Generator().manual_seed(2))
    assert metrics["qam/terminal_adjoint_norm"] == pytest.approx(2.0, rel=1e-5)


def test_an_unknown_lam_scale_is_refused():
    with pytest.raises(ValueError, match="lam_scale"):
        LearnerConfig(lam_scale="relative")


def test_unknown_implementation_or_dtype_is_refused():
    with pytest.raises(ValueError, match="implementation"):
        LearnerConfig(implementation="turbo")
    with pytest.raises(ValueError, match="qam_dtype"):
        LearnerConfig(qam_dtype="float16")
    with pytest.raises(ValueError, match="float32 only"):
        LearnerConfig(implementation="reference", qam_dtype="bfloat16")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("implementation", ["fast", "reference"])
def test_the_step_runs_on_cuda_and_matches_the_cpu_step(implementation):
    """Nothing in the learner is tied to the CPU: modules and batch moved to CUDA give the
    CPU's step (noise is drawn on the CPU generator and moved)."""
    cpu, gpu = _learner(implementation=implementation), _learner(implementation=implementation)
    for module in (gpu.policy, gpu.reference, gpu.critic, gpu.critic_target, gpu.value):
        module.to("cuda")
    gpu = LWDLearner(gpu.policy, gpu.reference, gpu.critic, gpu.value, gpu.config, critic_target=gpu.critic_target)
    batch = _batch()
    cpu_metrics = cpu.step(batch, torch.Generator().manual_seed(5))
    gpu_metrics = gpu.step(batch.to("cuda"), torch.Generator().manual_seed(5))
    for key, value in cpu_metrics.items():
        assert gpu_metrics[key] == pytest.approx(value, rel=1e-3, abs=1e-5), key


def test_the_reference_stays_frozen_by_default():
    learner = _learner()
    before = _state(learner.reference)
    learner.step(_batch(), torch.Generator().manual_seed(3))
    assert learner.prior is None and not _changed(before, learner.reference)


def _with_rows_to_imitate(batch: LearnerBatch, rows: list[int]) -> LearnerBatch:
    intervention = torch.zeros_like(batch.intervention)
    intervention[rows, 0] = True
    return replace(batch, intervention=intervention, return_to_go=torch.zeros_like(batch.return_to_go))


def test_the_learned_prior_imitates_only_operator_and_successful_chunks():
    learner = _learner(prior="learned")
    batch = _with_rows_to_imitate(_batch(), [])  # no intervention, no success: nothing to imitate
    before = _state(learner.prior)
    metrics = learner.update_prior(batch, torch.Generator().manual_seed(3))
    assert metrics["prior/imitated_fraction"] == 0.0 and not _changed(before, learner.prior)
    metrics = learner.update_prior(_with_rows_to_imitate(batch, [0, 5]), torch.Generator().manual_seed(3))
    assert metrics["prior/imitated_fraction"] == pytest.approx(2 / BATCH)
    changed = _changed(before, learner.prior)
    assert changed and all(name.startswith("velocity_net.") for name in changed)  # the encoder is the reference's


def test_the_reference_follows_the_learned_prior_by_its_ema_rate():
    learner = _learner(prior="learned", prior_ema=0.25)
    reference_before = _state(learner.reference)
    learner.update_prior(_with_rows_to_imitate(_batch(), [1, 2, 3]), torch.Generator().manual_seed(3))
    prior = learner.prior.state_dict()
    for name, tensor in learner.reference.state_dict().items():
        if not tensor.is_floating_point():
            continue
        expected = reference_before[name] + 0.25 * (prior[name] - reference_before[name])
        torch.testing.assert_close(tensor, expected, rtol=1e-5, atol=1e-6)


def test_a_policy_that_tracks_the_reference_moves_by_the_references_ema_step():
    learner = _learner(prior="learned", prior_ema=0.25, policy_tracks_reference=True)
    with torch.no_grad():  # a policy QAM has already tilted away from the reference
        for parameter in learner.policy.action_expert_parameters():
            parameter.add_(0.1)
    reference_before, policy_before = _state(learner.reference), _state(learner.policy)
    learner.update_prior(_with_rows_to_imitate(_batch(), [1, 2, 3]), torch.Generator().manual_seed(3))
    reference = learner.reference.state_dict()
    for name, tensor in learner.policy.state_dict().items():
        if tensor.is_floating_point():
            expected = policy_before[name] + (reference[name] - reference_before[name])
            torch.testing.assert_close(tensor, expected, rtol=1e-5, atol=1e-6)
    moved = _changed(policy_before, learner.policy)
    assert moved and all(name.startswith("velocity_net.") for name in moved)  # the test can fail; encoder kept


def test_a_policy_that_does_not_track_stays_put_when_the_reference_moves():
    learner = _learner(prior="learned", prior_ema=0.25)
    policy_before = _state(learner.policy)
    learner.update_prior(_with_rows_to_imitate(_batch(), [1, 2, 3]), torch.Generator().manual_seed(3))
    assert not _changed(policy_before, learner.policy)


def test_tracking_a_frozen_reference_is_refused():
    with pytest.raises(ValueError, match="policy_tracks_reference"):
        LearnerConfig(prior="frozen", policy_tracks_reference=True)


def test_a_learned_prior_missing_from_a_saved_state_starts_as_the_reference():
    from lwd.training.offline import learner_modules, load_learner_modules

    saved = _learner()  # a frozen-prior run, e.g. offline RL before `--lwd.prior learned` online
    with torch.no_grad():
        for parameter in saved.reference.parameters():
            parameter.add_(0.5)
    state = {
        f"{name}.{key}": value
        for name, module in learner_modules(saved).items()
        for key, value in module.state_dict().items()
    }
    learner = _learner(prior="learned")
    load_learner_modules(learner, state)
    for name, tensor in learner.prior.state_dict().items():
        assert torch.equal(tensor, saved.reference.state_dict()[name]), name


def test_an_unknown_prior_is_refused():
    with pytest.raises(ValueError, match="prior"):
        LearnerConfig(prior="dreamed")


def test_the_learned_prior_updates_only_every_prior_every_steps():
    learner = _learner(prior="learned", prior_every=3, policy_warmup=10**6)
    batch = _with_rows_to_imitate(_batch(), [0, 1, 2])
    generator = torch.Generator().manual_seed(3)
    updated = []
    for _ in range(6):
        before = _state(learner.prior)
        metrics = learner.step(batch, generator)
        updated.append(bool(_changed(before, learner.prior)))
        assert ("prior/imitated_fraction" in metrics) == updated[-1]
    assert updated == [True, False, False, True, False, False]


def test_operator_imitation_trains_the_policy_on_the_operators_actions_only():
    batch = _with_rows_to_imitate(_batch(), [])  # no operator actions: nothing to imitate
    learner = _learner(imitate_operator=True)
    before = _state(learner.policy)
    assert learner.imitate_operator(batch, torch.Generator().manual_seed(3))["operator/imitated_fraction"] == 0.0
    assert not _changed(before, learner.policy)

    corrected = _with_rows_to_imitate(batch, [0, 5])  # the operator drove the first action of rows 0 and 5
    other_actions = corrected.actions.clone()
    other_actions[1:5] += 1.0  # rows the operator did not touch
    after = []
    for actions in (corrected.actions, other_actions):
        learner = _learner(imitate_operator=True)
        metrics = learner.imitate_operator(replace(corrected, actions=actions), torch.Generator().manual_seed(3))
        assert metrics["operator/imitated_fraction"] == pytest.approx(2 / BATCH)
        after.append(_state(learner.policy))
    assert _changed(before, learner.policy)
    for name, tensor in after[0].items():  # the other rows did not count
        torch.testing.assert_close(tensor, after[1][name], rtol=0, atol=1e-6)


def test_operator_imitation_runs_at_every_learner_step_only_when_asked():
    batch = _with_rows_to_imitate(_batch(), [0, 1])
    generator = torch.Generator().manual_seed(3)
    assert "operator/imitated_fraction" not in _learner(policy_warmup=10**6).step(batch, generator)
    learner = _learner(imitate_operator=True, policy_warmup=10**6)  # QAM not started: the policy moves anyway
    before = _state(learner.policy)
    assert learner.step(batch, generator)["operator/imitated_fraction"] == pytest.approx(2 / BATCH)
    assert _changed(before, learner.policy)


def test_the_aggregate_prior_imitates_hg_daggers_actions_not_the_policys_before_a_takeover():
    # Every row is of an episode that succeeded, but only rows 0 and 5 hold actions HG-DAgger
    # would imitate (their first action); the rest are the policy's own before a takeover.
    # (Within an imitated row the masked actions still enter the noisy chunk the network sees,
    # as in HG-DAgger's update; only their loss terms are masked.)
    batch = replace(_batch(), return_to_go=torch.ones(BATCH), intervention=torch.zeros(BATCH, CHUNK, dtype=torch.bool))
    imitable = torch.zeros(BATCH, CHUNK, dtype=torch.bool)
    imitable[[0, 5], 0] = True
    other_actions = batch.actions.clone()
    other_actions[1:5] += 1.0
    after = []
    for actions in (batch.actions, other_actions):
        learner = _learner(prior="learned", prior_data="aggregate")
        metrics = learner.update_prior(
            replace(batch, actions=actions, imitable=imitable), torch.Generator().manual_seed(3)
        )
        assert metrics["prior/imitated_fraction"] == pytest.approx(2 / BATCH)
        after.append(_state(learner.prior))
    for name, tensor in after[0].items():
        torch.testing.assert_close(tensor, after[1][name], rtol=0, atol=1e-6)
    # The default rule imitates every row of the successful episodes, so the same change moves it.
    default = [_learner(prior="learned") for _ in range(2)]
    for learner, actions in zip(default, (batch.actions, other_actions)):
        assert learner.update_prior(replace(batch, actions=actions), torch.Generator().manual_seed(3))[
            "prior/imitated_fraction"
        ] == pytest.approx(1.0)
    assert _changed(_state(default[0].prior), default[1].prior)


def test_the_hg_dagger_prior_trains_on_its_own_batch_and_waits_without_one():
    batch = replace(_batch(), return_to_go=torch.ones(BATCH))  # the shared batch: every row imitable by default
    imitable_batch = replace(_batch(), actions=-_batch().actions)  # other actions than the shared batch's
    learner = _learner(prior="learned", prior_data="hg-dagger", policy_warmup=10**6)
    assert learner.wants_imitable_batch and not _learner(prior="learned").wants_imitable_batch
    before = _state(learner.prior)
    assert learner.step(batch, torch.Generator().manual_seed(3))["prior/imitated_fraction"] == 0.0
    assert not _changed(before, learner.prior)  # no imitable step in the replays yet: the prior waits
    after = []
    for shared, own in ((batch, imitable_batch), (replace(batch, actions=batch.actions + 1.0), imitable_batch)):
        learner = _learner(prior="learned", prior_data="hg-dagger", policy_warmup=10**6)
        metrics = learner.step(shared, torch.Generator().manual_seed(3), own)
        assert metrics["prior/imitated_fraction"] == pytest.approx(1.0)
        after.append(_state(learner.prior))
    for name, tensor in after[0].items():  # the shared batch's actions did not reach the prior
        torch.testing.assert_close(tensor, after[1][name], rtol=0, atol=1e-6)
    moved = _learner(prior="learned", prior_data="hg-dagger", policy_warmup=10**6)
    own = replace(imitable_batch, actions=imitable_batch.actions + 1.0)
    moved.step(batch, torch.Generator().manual_seed(3), own)
    assert _changed(after[0], moved.prior)  # its own batch's did


def test_the_prior_wants_its_own_batch_only_at_the_steps_it_updates():
    learner = _learner(prior="learned", prior_data="hg-dagger", prior_every=2, policy_warmup=10**6)
    batch = _batch()
    wanted = []
    for _ in range(4):
        wanted.append(learner.wants_imitable_batch)
        learner.step(batch, torch.Generator().manual_seed(3), batch if wanted[-1] else None)
    assert wanted == [True, False, True, False]


def test_the_aggregate_prior_refuses_batches_without_imitable_flags_and_unknown_rules():
    learner = _learner(prior="learned", prior_data="aggregate")
    with pytest.raises(ValueError, match="imitable"):
        learner.update_prior(_batch(), torch.Generator().manual_seed(3))
    with pytest.raises(ValueError, match="prior_data"):
        LearnerConfig(prior="learned", prior_data="everything")


def test_without_policy_ema_the_deployed_policy_is_the_trained_one():
    learner = _learner()
    assert learner.policy_average is None and learner.deployed_policy is learner.policy


def test_the_deployed_policy_follows_the_trained_one_by_its_ema_rate_after_each_policy_update():
    learner = _learner(policy_ema=0.25, policy_every=2)
    generator = torch.Generator().manual_seed(3)
    average_before = _state(learner.deployed_policy)
    learner.step(_batch(), generator)  # step 0: QAM updates the trained policy
    trained = learner.policy.state_dict()
    assert _changed(average_before, learner.policy)
    for name, tensor in learner.deployed_policy.state_dict().items():
        if tensor.is_floating_point():
            expected = average_before[name] + 0.25 * (trained[name] - average_before[name])
            torch.testing.assert_close(tensor, expected, rtol=1e-5, atol=1e-6)
    average_after_update = _state(learner.deployed_policy)
    learner.step(_batch(), generator)  # step 1: no QAM update, so the average stays
    assert not _changed(average_after_update, learner.deployed_policy)


def test_a_saved_learner_restores_the_trained_policy_behind_its_average():
    from lwd.training.offline import learner_modules, load_learner_modules

    saved = _learner(policy_ema=0.5)
    saved.step(_batch(), torch.Generator().manual_seed(3))
    state = {
        f"{name}.{key}": value
        for name, module in learner_modules(saved).items()
        for key, value in module.state_dict().items()
    }
    # A checkpoint's policy file holds the deployed (averaged) policy; the learner is built around it.
    torch.manual_seed(0)
    resumed = LWDLearner(
        copy.deepcopy(saved.deployed_policy),
        copy.deepcopy(saved.reference),
        ChunkCritic(saved.critic.config),
        StateValue(saved.value.config),
        saved.config,
    )
    load_learner_modules(resumed, state)
    assert not _changed(_state(saved.policy), resumed.policy)
    assert not _changed(_state(saved.deployed_policy), resumed.deployed_policy)
    assert _changed(_state(saved.policy), saved.deployed_policy)  # the two differ: the test can tell them apart


def test_a_policy_ema_outside_zero_to_one_is_refused():
    with pytest.raises(ValueError, match="policy_ema"):
        LearnerConfig(policy_ema=1.5)
