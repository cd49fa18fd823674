"""The second policy behind the adapter: `TokenFlowPolicy` (a transformer action expert)
trains end to end through the learners, which see only `PolicyAdapter`."""

import json

import numpy as np
import pytest
import torch

from lwd.algorithms.hg_dagger import ImitationConfig
from lwd.algorithms.learner import LearnerConfig
from lwd.algorithms.recap import RecapConfig
from lwd.data.replay import ChunkReplay, ReplayConfig
from lwd.data.store import EpisodeStore
from lwd.evaluation.evaluate import EvalConfig, evaluate
from lwd.fleet.collect import CollectConfig, collect
from lwd.policy.adapter import FlowPolicyBase
from lwd.policy.architectures import build_policy
from lwd.policy.checkpoint import load_checkpoint, load_learner_state
from lwd.policy.flow_policy import FlowChunkPolicy, PolicyConfig
from lwd.policy.token_policy import TokenFlowPolicy
from lwd.training.offline import train_offline
from lwd.training.online_methods import MethodSettings, start_method
from lwd.training.sft import PretrainConfig, pretrain
from tests.conftest import tiny_offline_config

TINY_TOKENS = PolicyConfig(architecture="token_transformer", context_dim=16, hidden_dim=32, num_layers=1, num_heads=2)


def parameters(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in module.named_parameters()}


def changed(before: dict[str, torch.Tensor], module: torch.nn.Module) -> list[str]:
    return [name for name, p in module.named_parameters() if not torch.equal(p, before[name])]


@pytest.fixture(scope="module")
def token_sft(tmp_path_factory):
    """Real expert episodes on reach-v3, and a token-transformer policy SFT'd on them."""
    root = tmp_path_factory.mktemp("token_policy")
    store = str(root / "store")
    collect(CollectConfig(store=store, tasks=("reach-v3",), episodes_per_task=2, workers=1, progress=False))
    sft = pretrain(
        PretrainConfig(
            store=store,
            out=str(root / "sft"),
            steps=3,
            batch_size=8,
            architecture="token_transformer",
            context_dim=16,
            hidden_dim=32,
            num_layers=1,
            progress=False,
            tensorboard=False,
        )
    )
    return root, store, sft


def test_the_token_policy_s_generic_qam_fields_match_its_velocity():
    torch.manual_seed(0)
    policy = build_policy(TINY_TOKENS)
    context = policy.encode(torch.randn(3, TINY_TOKENS.obs_dim), torch.randn(3, TINY_TOKENS.text_dim))
    x, w = torch.randn(6, TINY_TOKENS.flat_action_dim), torch.tensor([0.1] * 3 + [0.6] * 3)
    direct = policy.velocity(context.repeat(2, 1), x, w)
    velocities, vjp = policy.velocity_linearization(context)(x, w)
    torch.testing.assert_close(policy.velocity_field(context)(x, w), direct, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(velocities, direct, rtol=1e-5, atol=1e-6)
    cotangent = torch.randn(3, TINY_TOKENS.flat_action_dim)
    rows = x[3:].clone().requires_grad_(True)
    (expected,) = torch.autograd.grad(policy.velocity(context, rows, w[3:]), rows, cotangent)
    torch.testing.assert_close(vjp(1, cotangent), expected, rtol=1e-5, atol=1e-6)


def test_the_mlp_policy_keeps_its_own_fast_qam_fields():
    assert FlowChunkPolicy.velocity_linearization is not FlowPolicyBase.velocity_linearization
    assert FlowChunkPolicy.velocity_field is not FlowPolicyBase.velocity_field
    assert TokenFlowPolicy.velocity_linearization is FlowPolicyBase.velocity_linearization


def test_a_checkpoint_without_an_architecture_loads_as_the_mlp(tiny_pipeline, tmp_path):
    import shutil

    _, _, sft, _, _ = tiny_pipeline
    old = tmp_path / "old"
    shutil.copytree(sft, old)
    manifest = json.loads((old / "manifest.json").read_text())
    manifest.pop("architecture")
    manifest["config"].pop("architecture")
    (old / "manifest.json").write_text(json.dumps(manifest))
    policy, _, loaded = load_checkpoint(old)
    assert type(policy) is FlowChunkPolicy and loaded.architecture == "flow_mlp"


def test_the_token_policy_trains_through_sft_offline_rl_and_online_and_deploys(token_sft, tmp_path):
    root, store, sft = token_sft
    policy, _, manifest = load_checkpoint(sft)
    assert type(policy) is TokenFlowPolicy and manifest.architecture == "token_transformer"
    torch.manual_seed(0)  # the SFT's initialisation (PretrainConfig.seed)
    assert changed(parameters(build_policy(policy.config)), policy), "SFT never moved the token policy"

    # offline RL: V, Q, QAM on the token policy's generic fields, a learned behaviour prior
    offline = train_offline(tiny_offline_config(store, sft, root / "offline", steps=4, prior="learned"))
    offline_policy, _, offline_manifest = load_checkpoint(offline)
    assert type(offline_policy) is TokenFlowPolicy and offline_manifest.architecture == "token_transformer"
    assert changed(parameters(policy), offline_policy), "QAM never moved the token policy"
    learner_state = load_learner_state(offline)
    moved_prior = [
        key for key, value in policy.state_dict().items() if not torch.equal(learner_state[f"prior.{key}"], value)
    ]
    assert moved_prior, "the learned prior never trained"

    # online: the LWD step with a frozen encoder trains only the action expert
    settings = MethodSettings(
        LearnerConfig(qam_batch=8, policy_warmup=0, prior="learned", freeze_policy_encoder=True),
        ImitationConfig(),
        RecapConfig(value_hidden=16),
    )
    method = start_method("lwd", offline, settings)
    replay = ChunkReplay(EpisodeStore(store, create=False), ReplayConfig(chunk_len=method.policy.chunk_len))
    replay.refresh()
    before = parameters(method.policy)
    metrics = method.step(replay.sample(16, np.random.default_rng(0)), torch.Generator().manual_seed(0))
    assert np.isfinite(list(metrics.values())).all() and "qam/loss" in metrics
    moved = set(changed(before, method.policy))
    expert = {
        name
        for name, p in method.policy.named_parameters()
        if any(p is q for q in method.policy.action_expert_parameters())
    }
    assert moved and moved <= expert, f"online LWD moved {sorted(moved - expert)} outside the action expert"

    # deploy: the offline-RL token policy runs a real episode on the robot's sampling path
    report = evaluate(
        EvalConfig(checkpoint=str(offline), tasks=("reach-v3",), episodes_per_task=1, workers=1, out=str(tmp_path))
    )
    assert json.loads((tmp_path / "eval.json").read_text()) and report
