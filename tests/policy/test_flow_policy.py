import numpy as np
import pytest
import torch

from lwd.algorithms.flow_matching import flow_matching_loss
from lwd.policy.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from lwd.policy.flow_policy import FlowChunkPolicy, PolicyConfig
from lwd.policy.instructions import InstructionEncoder

SMALL = PolicyConfig(chunk_len=4, hidden_dim=128, num_layers=2, context_dim=64)


@pytest.fixture(scope="module")
def encoder():
    return InstructionEncoder()


def test_instructions_embed_differently_and_the_cache_is_stable(encoder):
    a, b = encoder.embed(["Pull the drawer open.", "Push the drawer shut."])
    assert a.shape == (384,) and np.linalg.norm(a) == pytest.approx(1.0, abs=1e-5)
    assert not np.allclose(a, b) and float(a @ b) < 0.99
    again = encoder.embed(["Pull the drawer open."])[0]
    np.testing.assert_array_equal(again, a)
    assert encoder.table["Pull the drawer open."] is not None


def _tiny_dataset(encoder, n=64, seed=0):
    rng = np.random.default_rng(seed)
    obs = rng.normal(size=(n, 39)).astype(np.float32)
    # Two instructions, each with its own deterministic chunk that depends on the state.
    which = rng.integers(0, 2, size=n)
    base = np.where(which[:, None, None] == 0, 0.5, -0.5) * np.ones((n, 4, 4))
    actions = np.clip(base + 0.3 * np.tanh(obs[:, :1, None]), -1, 1).astype(np.float32)
    instructions = torch.from_numpy(encoder.embed(["Pull the drawer open.", "Push the drawer shut."]))[which]
    return torch.from_numpy(obs), instructions, torch.from_numpy(actions)


def test_policy_overfits_a_tiny_dataset(encoder):
    torch.manual_seed(0)
    obs, instructions, actions = _tiny_dataset(encoder)
    policy = FlowChunkPolicy(SMALL)
    policy.set_normalization(obs.mean(0), obs.std(0), actions.reshape(-1, 4).mean(0), actions.reshape(-1, 4).std(0))
    optimizer = torch.optim.Adam(policy.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(0)
    mask = torch.ones(actions.shape[:2], dtype=torch.bool)
    losses = []
    for _ in range(1500):
        x_0 = torch.randn(len(obs), SMALL.flat_action_dim, generator=generator)
        w = torch.rand(len(obs), generator=generator)
        loss, _ = flow_matching_loss(policy, policy.encode(obs, instructions), actions, mask, x_0, w)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert np.mean(losses[-50:]) < np.mean(losses[:50]) / 10
    with torch.no_grad():
        sampled = policy.sample(policy.encode(obs, instructions))
    assert (sampled - actions).abs().mean() < 0.1


def test_masked_steps_do_not_count_in_the_loss(encoder):
    obs, instructions, actions = _tiny_dataset(encoder, n=8)
    policy = FlowChunkPolicy(SMALL)
    x_0, w = torch.randn(8, SMALL.flat_action_dim), torch.rand(8)
    mask = torch.ones(8, 4, dtype=torch.bool)
    mask[:, 2:] = False
    with torch.no_grad():
        context = policy.encode(obs, instructions)
        loss, _ = flow_matching_loss(policy, context, actions, mask, x_0, w)
        x_1 = policy.normalize_actions(actions)
        vel = policy.velocity(context, (1 - w)[:, None] * x_0 + w[:, None] * x_1, w)
        err = ((vel - (x_1 - x_0)) ** 2).reshape(8, 4, 4)
    assert float(loss) == pytest.approx(float(err[:, :2].mean()), rel=1e-5)
    assert float(loss) != pytest.approx(float(err.mean()), rel=1e-3)


def test_sampled_actions_are_clipped_to_the_action_range(encoder):
    policy = FlowChunkPolicy(SMALL)
    policy.set_normalization(np.zeros(39), np.ones(39), np.zeros(4), np.full(4, 50.0))
    obs, instructions, _ = _tiny_dataset(encoder, n=16)
    with torch.no_grad():
        actions = policy.sample(policy.encode(obs, instructions))
    assert actions.shape == (16, 4, 4) and actions.abs().max() <= 1.0


def test_sampling_integrates_the_velocity_field_it_was_trained_as():
    """The sampler splits the first layer for speed; it must still be K Euler steps of `velocity`."""
    torch.manual_seed(0)
    policy = FlowChunkPolicy(SMALL)
    context, noise = torch.randn(7, SMALL.context_dim), torch.randn(7, SMALL.flat_action_dim)
    x = noise.clone()
    for k in range(SMALL.sample_steps):
        x = x + policy.velocity(context, x, torch.full((7,), k / SMALL.sample_steps)) / SMALL.sample_steps
    with torch.no_grad():
        assert torch.allclose(policy.sample_normalized(context, noise), x, atol=1e-5)


def test_bfloat16_sampling_takes_euler_steps_of_the_bfloat16_field_and_stays_near_float32():
    """`sample_normalized(dtype=bfloat16)` is K Euler steps of `velocity_field(context, bfloat16)`,
    and its chunks stay within a stated 3% of the float32 chunks' norm. The two bfloat16 paths
    sum the first layer's parts in different orders, and rounding to bfloat16 turns a last-bit
    float32 difference into one of bfloat16's (~0.4%) now and then: hence 0.1% of the norm (measured ~0.01%)."""
    torch.manual_seed(4)
    policy = FlowChunkPolicy(SMALL).requires_grad_(False)
    context, noise = torch.randn(6, SMALL.context_dim), torch.randn(6, SMALL.flat_action_dim)
    field, x = policy.velocity_field(context, torch.bfloat16), noise.clone()
    for k in range(SMALL.sample_steps):
        x = x + field(x, torch.full((6,), k / SMALL.sample_steps)) / SMALL.sample_steps
    low = policy.sample_normalized(context, noise, dtype=torch.bfloat16)
    assert low.dtype == torch.float32
    assert float((low - x).norm() / x.norm()) < 1e-3
    exact = policy.sample_normalized(context, noise)
    assert 0 < float((low - exact).norm() / exact.norm()) < 3e-2


def _blocks_of_states(policy: FlowChunkPolicy, n: int, batch: int, dtype=torch.float32):
    """B contexts and n blocks of B states (n·B rows), each block at its own flow time."""
    context = torch.randn(batch, policy.config.context_dim, dtype=dtype)
    x = torch.randn(n * batch, policy.config.flat_action_dim, dtype=dtype)
    w = (torch.arange(n, dtype=dtype) / n).repeat_interleave(batch)
    return context, x, w


def test_velocity_field_is_velocity_with_the_context_bound():
    """The split first layer and the functional layers compute `velocity` on context.repeat(n, 1)."""
    torch.manual_seed(0)
    policy = FlowChunkPolicy(SMALL)
    policy.requires_grad_(False)
    context, x, w = _blocks_of_states(policy, n=3, batch=5)
    expected = policy.velocity(context.repeat(3, 1), x, w)
    torch.testing.assert_close(policy.velocity_field(context)(x, w), expected, rtol=1e-5, atol=1e-6)
    # bfloat16 hidden layers: ~3 significant digits (stated tolerance 3% of the velocity's norm)
    low = policy.velocity_field(context, torch.bfloat16)(x, w)
    assert low.dtype == torch.float32
    assert float((low - expected).norm() / expected.norm()) < 3e-2


def test_velocity_field_gradient_reaches_encoder_and_weights_as_velocity_does():
    torch.manual_seed(1)
    policy = FlowChunkPolicy(SMALL)
    obs, text = torch.randn(4, 39), torch.randn(4, SMALL.text_dim)
    _, x, w = _blocks_of_states(policy, n=2, batch=4)
    grads = []
    for fast in (False, True):
        policy.zero_grad(set_to_none=True)
        context = policy.encode(obs, text)
        out = policy.velocity_field(context)(x, w) if fast else policy.velocity(context.repeat(2, 1), x, w)
        out.square().sum().backward()
        grads.append([p.grad.clone() for p in policy.parameters()])
    for fast_grad, slow_grad in zip(*grads):
        # Two float32 gradient paths: a CI machine saw 1.9e-6 on one element.
        torch.testing.assert_close(fast_grad, slow_grad, rtol=1e-4, atol=1e-5)


def test_velocity_linearization_gives_the_velocities_and_the_input_vjp_of_autograd():
    """`vjp(k, a)` = Jᵀa on block k by hand equals autograd through `velocity` (float64: 1e-10)."""
    torch.manual_seed(2)
    policy = FlowChunkPolicy(SMALL).double().requires_grad_(False)
    n, batch = 3, 4
    context, x, w = _blocks_of_states(policy, n, batch, torch.float64)
    velocities, vjp = policy.velocity_linearization(context)(x, w)
    torch.testing.assert_close(velocities, policy.velocity(context.repeat(n, 1), x, w), rtol=1e-10, atol=1e-12)
    for k in range(n):
        rows = slice(k * batch, (k + 1) * batch)
        block = x[rows].clone().requires_grad_(True)
        cotangent = torch.randn(batch, SMALL.flat_action_dim, dtype=torch.float64)
        (expected,) = torch.autograd.grad(policy.velocity(context, block, w[rows]), block, cotangent)
        torch.testing.assert_close(vjp(k, cotangent), expected, rtol=1e-10, atol=1e-12)


def test_velocity_linearization_in_bfloat16_stays_within_its_stated_tolerance():
    torch.manual_seed(3)
    policy = FlowChunkPolicy(SMALL).requires_grad_(False)
    context, x, w = _blocks_of_states(policy, n=2, batch=6)
    exact_velocities, exact_vjp = policy.velocity_linearization(context)(x, w)
    velocities, vjp = policy.velocity_linearization(context, torch.bfloat16)(x, w)
    cotangent = torch.randn(6, SMALL.flat_action_dim)
    assert velocities.dtype == torch.float32 and vjp(1, cotangent).dtype == torch.float32
    assert float((velocities - exact_velocities).norm() / exact_velocities.norm()) < 3e-2
    assert float((vjp(1, cotangent) - exact_vjp(1, cotangent)).norm() / exact_vjp(1, cotangent).norm()) < 3e-2


def test_checkpoint_round_trip_gives_identical_actions(tmp_path, encoder):
    torch.manual_seed(1)
    policy = FlowChunkPolicy(SMALL)
    policy.set_normalization(np.arange(39) * 0.1, np.ones(39) * 2, np.full(4, 0.1), np.full(4, 0.7))
    cache = InstructionEncoder(encoder.table)
    cache.embed(["Pull the drawer open."])
    save_checkpoint(tmp_path / "ckpt", policy, cache, version=3, parent_version=2, training_step=17, data_snapshot=5)
    loaded, loaded_encoder, manifest = load_checkpoint(tmp_path / "ckpt")
    obs = torch.randn(5, 39)
    instructions = torch.from_numpy(loaded_encoder.embed(["Pull the drawer open."] * 5))
    noise = torch.randn(5, SMALL.flat_action_dim)
    with torch.no_grad():
        a = policy.sample(policy.encode(obs, instructions), noise)
        b = loaded.sample(loaded.encode(obs, instructions), noise)
    # The weights read back are the bytes written (exact); the actions are a computation on
    # them, equal up to what another memory layout may change in a BLAS kernel.
    for name, tensor in policy.state_dict().items():
        assert torch.equal(tensor, loaded.state_dict()[name]), name
    torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    assert (manifest.version, manifest.parent_version, manifest.training_step, manifest.data_snapshot) == (3, 2, 17, 5)
    assert manifest.code_version.startswith("lwd ")


def test_mismatched_or_missing_checkpoints_fail_clearly(tmp_path, encoder):
    save_checkpoint(tmp_path / "ckpt", FlowChunkPolicy(SMALL), InstructionEncoder())
    with pytest.raises(CheckpointError, match="architecture differs.*chunk_len"):
        load_checkpoint(
            tmp_path / "ckpt", expect=PolicyConfig(chunk_len=8, hidden_dim=128, num_layers=2, context_dim=64)
        )
    with pytest.raises(CheckpointError, match="no checkpoint at"):
        load_checkpoint(tmp_path / "absent")
    (tmp_path / "ckpt" / "policy.safetensors").unlink()
    with pytest.raises(CheckpointError, match="policy.safetensors: missing"):
        load_checkpoint(tmp_path / "ckpt")


def test_weights_from_another_architecture_are_refused(tmp_path):
    save_checkpoint(tmp_path / "a", FlowChunkPolicy(SMALL), InstructionEncoder())
    other = PolicyConfig(chunk_len=4, hidden_dim=64, num_layers=2, context_dim=64)
    save_checkpoint(tmp_path / "b", FlowChunkPolicy(other), InstructionEncoder())
    (tmp_path / "b" / "policy.safetensors").replace(tmp_path / "a" / "policy.safetensors")
    with pytest.raises(CheckpointError, match="weights do not fit the manifest's architecture"):
        load_checkpoint(tmp_path / "a")


def test_image_flag_adds_a_camera_encoder_that_changes_the_context(encoder):
    config = PolicyConfig(chunk_len=4, hidden_dim=32, num_layers=1, context_dim=16, use_images=True)
    policy = FlowChunkPolicy(config)
    obs, instructions, _ = _tiny_dataset(encoder, n=3)
    dark = torch.zeros(3, 64, 64, 3, dtype=torch.uint8)
    bright = torch.full((3, 64, 64, 3), 255, dtype=torch.uint8)
    with torch.no_grad():
        assert not torch.allclose(policy.encode(obs, instructions, dark), policy.encode(obs, instructions, bright))
        assert policy.sample(policy.encode(obs, instructions, dark)).shape == (3, 4, 4)
    with pytest.raises(ValueError, match="needs camera images"):
        policy.encode(obs, instructions)


def test_a_checkpoint_embeds_an_instruction_it_was_never_trained_on(tmp_path, encoder):
    trained_on = InstructionEncoder({"Pull the drawer open.": encoder.embed(["Pull the drawer open."])[0]})
    save_checkpoint(tmp_path / "ckpt", FlowChunkPolicy(SMALL), trained_on)
    policy, loaded, _ = load_checkpoint(tmp_path / "ckpt")
    unseen = "Could you open that drawer?"
    assert unseen not in loaded.table  # the table is a cache, not a vocabulary
    vector = loaded.embed([unseen])
    np.testing.assert_allclose(vector, encoder.embed([unseen]), atol=1e-5)
    with torch.no_grad():
        chunk = policy.sample(policy.encode(torch.zeros(1, 39), torch.from_numpy(vector)))
    assert chunk.shape == (1, SMALL.chunk_len, 4) and torch.isfinite(chunk).all()
