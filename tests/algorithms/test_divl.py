"""DIVL value-learning functions (SPEC §4), checked against hand-computed numbers."""

from __future__ import annotations

import math

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lwd.algorithms.divl import (
    adaptive_tau,
    categorical_value_loss,
    critic_loss,
    ema_update,
    expectile_loss,
    quantile_readout,
    td_target,
    two_hot,
)

ATOMS = torch.linspace(-0.1, 1.1, 201)
SPACING = 1.2 / 200
LOW, HIGH = ATOMS[0].item(), ATOMS[-1].item()  # the float32 ends of the support


_values = st.one_of(
    st.floats(-3.0, 3.0, allow_nan=False, width=32),
    st.floats(LOW, HIGH, allow_nan=False, width=32),
    st.sampled_from(ATOMS.tolist()),  # exactly on an atom (including both ends)
)


# ---------------------------------------------------------------- two-hot projection


@settings(max_examples=200, deadline=None)
@given(st.lists(_values, min_size=1, max_size=32))
def test_two_hot_rows_sum_to_one_and_are_nonnegative(values):
    probs = two_hot(torch.tensor(values, dtype=torch.float32), ATOMS)
    assert probs.shape == (len(values), 201)
    assert (probs >= 0).all()
    torch.testing.assert_close(probs.sum(-1), torch.ones(len(values)), atol=1e-6, rtol=0)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(LOW, HIGH, allow_nan=False, width=32), min_size=1, max_size=32))
def test_two_hot_mean_equals_value_inside_support(values):
    values = torch.tensor(values, dtype=torch.float32)
    probs = two_hot(values, ATOMS)
    assert ((probs > 0).sum(-1) <= 2).all()
    torch.testing.assert_close((probs * ATOMS).sum(-1), values, atol=1e-5, rtol=0)


def test_two_hot_value_on_atom_puts_all_mass_there():
    probs = two_hot(ATOMS, ATOMS)
    # float32 rounding of the atom positions can leave ~1e-5 on a neighbour
    torch.testing.assert_close(probs, torch.eye(201), atol=1e-4, rtol=0)
    assert torch.equal(probs.argmax(-1), torch.arange(201))
    exact = torch.linspace(-0.1, 1.1, 201, dtype=torch.float64)
    torch.testing.assert_close(two_hot(exact, exact), torch.eye(201, dtype=torch.float64), atol=1e-12, rtol=0)


def test_two_hot_between_atoms_splits_linearly():
    value = ATOMS[10] + 0.25 * SPACING
    probs = two_hot(value[None], ATOMS)[0]
    torch.testing.assert_close(probs[10], torch.tensor(0.75), atol=1e-4, rtol=0)
    torch.testing.assert_close(probs[11], torch.tensor(0.25), atol=1e-4, rtol=0)
    assert probs.sum() - probs[10] - probs[11] == 0
    torch.testing.assert_close((probs * ATOMS).sum(), value, atol=1e-6, rtol=0)


def test_two_hot_clips_values_outside_support_to_end_atoms():
    probs = two_hot(torch.tensor([1.5, 1.1, 5.0, -0.1, -0.7]), ATOMS)
    expected = torch.zeros(5, 201)
    expected[:3, -1] = 1.0
    expected[3:, 0] = 1.0
    torch.testing.assert_close(probs, expected, atol=1e-6, rtol=0)


# ---------------------------------------------------------------- quantile read-out


def test_quantile_readout_is_first_atom_whose_cdf_reaches_tau():
    atoms = torch.tensor([0.0, 1.0, 2.0, 3.0])
    probs = torch.full((6, 4), 0.25)  # CDF 0.25, 0.5, 0.75, 1.0
    tau = torch.tensor([0.1, 0.25, 0.26, 0.5, 0.75, 1.0])
    assert quantile_readout(probs, tau, atoms).tolist() == [0.0, 0.0, 1.0, 1.0, 2.0, 3.0]


def test_quantile_readout_skips_atoms_without_mass():
    atoms = torch.tensor([0.0, 1.0, 2.0, 3.0])
    probs = torch.tensor([[0.0, 0.5, 0.0, 0.5]] * 3)
    tau = torch.tensor([0.01, 0.5, 0.9])
    assert quantile_readout(probs, tau, atoms).tolist() == [1.0, 1.0, 3.0]


# ---------------------------------------------------------------- adaptive τ


def test_adaptive_tau_falls_from_base_as_entropy_rises():
    one_hot = torch.zeros(201)
    one_hot[50] = 1.0
    two_atoms = torch.zeros(201)
    two_atoms[[50, 60]] = 0.5
    uniform = torch.full((201,), 1.0 / 201)
    tau = adaptive_tau(torch.stack([one_hot, two_atoms, uniform]), tau_base=0.9, alpha=0.3, tau_min=0.4, tau_max=0.95)
    expected = torch.tensor([0.9, 0.9 - 0.3 * math.log(2) / math.log(201), 0.6])
    torch.testing.assert_close(tau, expected, atol=1e-6, rtol=0)
    assert tau[0] > tau[1] > tau[2]


def test_adaptive_tau_is_clipped_to_range():
    one_hot = torch.zeros(201)
    one_hot[0] = 1.0
    uniform = torch.full((201,), 1.0 / 201)
    probs = torch.stack([one_hot, uniform])
    high = adaptive_tau(probs, tau_base=0.99, alpha=0.3, tau_min=0.4, tau_max=0.95)
    torch.testing.assert_close(high, torch.tensor([0.95, 0.69]), atol=1e-6, rtol=0)
    low = adaptive_tau(probs, tau_base=0.6, alpha=0.3, tau_min=0.4, tau_max=0.95)
    torch.testing.assert_close(low, torch.tensor([0.6, 0.4]), atol=1e-6, rtol=0)


def test_adaptive_tau_carries_no_gradient():
    logits = torch.randn(3, 201, requires_grad=True)
    tau = adaptive_tau(logits.softmax(-1), tau_base=0.6, alpha=0.3, tau_min=0.4, tau_max=0.95)
    assert not tau.requires_grad
    assert tau.grad_fn is None


# ---------------------------------------------------------------- losses and targets


def test_expectile_loss_weights_underestimates_by_expectile():
    values = torch.tensor([0.0, 0.0, 1.0], requires_grad=True)
    action_values = torch.tensor([1.0, -2.0, 1.0])
    # diff = +1 (under-estimate, weight 0.7), −2 (over-estimate, weight 0.3), 0
    loss = expectile_loss(values, action_values, expectile=0.7)
    torch.testing.assert_close(loss, torch.tensor((0.7 * 1.0 + 0.3 * 4.0 + 0.0) / 3))
    loss.backward()
    torch.testing.assert_close(values.grad, torch.tensor([-2 * 0.7 * 1.0, 2 * 0.3 * 2.0, 0.0]) / 3)


def test_td_target_bootstraps_only_when_not_done():
    reward = torch.tensor([1.0, 0.5, 0.0])
    discount = torch.tensor([0.9, 0.81, 0.99])
    done = torch.tensor([0.0, 1.0, 0.0])
    next_value = torch.tensor([2.0, 3.0, -1.0])
    y = td_target(reward, discount, done, next_value)
    torch.testing.assert_close(y, torch.tensor([1.0 + 0.9 * 2.0, 0.5, -0.99]))


def test_critic_loss_is_per_head_mse_summed_over_heads():
    q_values = torch.tensor([[1.0, 2.0], [0.0, 4.0]], requires_grad=True)  # (heads=2, B=2)
    target = torch.tensor([1.0, 1.0], requires_grad=True)
    loss = critic_loss(q_values, target)
    # head 0: (0² + 1²)/2 = 0.5; head 1: (1² + 3²)/2 = 5
    torch.testing.assert_close(loss, torch.tensor(5.5))
    loss.backward()
    assert target.grad is None


def test_ema_update_moves_target_by_rate():
    torch.manual_seed(0)
    online, target = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    before = [p.detach().clone() for p in target.parameters()]
    ema_update(target, online, rate=0.005)
    for t, b, o in zip(target.parameters(), before, online.parameters()):
        torch.testing.assert_close(t, b + 0.005 * (o - b))


def test_categorical_value_loss_is_minimised_by_two_hot_target():
    values = torch.tensor([0.123, 0.5, 1.3, -0.05])
    logits = torch.zeros(4, 201, requires_grad=True)
    optimiser = torch.optim.Adam([logits], lr=0.1)
    for _ in range(500):
        optimiser.zero_grad()
        categorical_value_loss(logits, values, ATOMS).backward()
        optimiser.step()
    probs = logits.detach().softmax(-1)
    target = two_hot(values, ATOMS)
    torch.testing.assert_close((probs * ATOMS).sum(-1), (target * ATOMS).sum(-1), atol=5e-3, rtol=0)
    torch.testing.assert_close(probs, target, atol=2e-2, rtol=0)
    entropy_of_target = -(target * target.clamp_min(1e-12).log()).sum(-1).mean()
    assert categorical_value_loss(logits.detach(), values, ATOMS) < entropy_of_target + 2e-2
