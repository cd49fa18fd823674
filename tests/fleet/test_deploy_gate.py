"""Version gates in a real deploy run: a deliberately broken version is held back, and a
manual rollback reaches every robot within one episode."""

import copy
import json
import time
from dataclasses import replace

import pytest
import torch

from lwd.data.store import EpisodeStore
from lwd.envs.operator import OperatorConfig
from lwd.evaluation.gate import make_gate
from lwd.fleet.gate import GateConfig
from lwd.fleet.online import DeployConfig, deploy
from lwd.fleet.registry import PolicyRegistry
from lwd.fleet.worker import FleetConfig
from tests.conftest import tiny_deploy_config

pytestmark = pytest.mark.slow  # real deploy runs

# Random actions close the drawer often (16 of 20 validation episodes); a policy whose
# every action is saturated at +1 drives the arm away and never does (0 of 20), while the
# tiny test policy closes it about half the time.
TASKS = ("drawer-close-v3",)


class BreakOnce:
    """Publishes one version (the first candidate) whose actions all saturate at +1."""

    def __init__(self):
        self.broken: int | None = None

    def __call__(self, version: int, policy):
        if self.broken is not None:
            return policy
        self.broken = version
        broken = copy.deepcopy(policy)
        head = [m for m in broken.velocity_net.modules() if isinstance(m, torch.nn.Linear)][-1]
        with torch.no_grad():
            head.weight.zero_()
            head.bias.fill_(5.0)
        return broken


def _config(tiny_pipeline, out, gate: GateConfig, env_steps: int) -> DeployConfig:
    _, store, _, _, offline = tiny_pipeline
    return tiny_deploy_config(
        store,
        offline,
        out,
        env_steps,
        # No operator: autonomous success is the policy's own, so the comparison is sharp.
        robots=FleetConfig(tasks=TASKS, workers=2, robots_per_worker=2, operator=OperatorConfig(attention=0.0)),
        n_sync=40,  # one candidate every few seconds: each is tried before the next arrives
        checkpoint_every=100,
        gate=gate,
    )


def _episodes(out):
    store = EpisodeStore(out / "online_store", create=False)
    return [store.load(record) for record in store.records()]


def test_the_canary_gate_holds_a_broken_version_back_and_a_rollback_reaches_every_robot(tiny_pipeline, tmp_path):
    out, hook = tmp_path / "run", BreakOnce()
    gate = GateConfig(mode="canary", canary_share=0.25, canary_episodes=10, margin=0.05, rollback_episodes=0)
    manual = {}

    def operate(state):
        registry: PolicyRegistry = state.registry
        decisions = registry.decisions()
        rejected = [d for d in decisions if d["decision"] == "rejected" and d["version"] == hook.broken]
        if rejected and "promoted" not in manual:
            newest = registry.latest().version
            registry.decide(newest, "promoted", by="user", evidence={"reason": "test"})
            manual["promoted"], manual["at_env_steps"] = newest, state.env_steps
        elif "promoted" in manual and "rolled_back" not in manual and state.env_steps > manual["at_env_steps"] + 3_000:
            target = registry.rollback_target()
            registry.decide(target, "rolled_back", by="user", evidence={"reason": "test"})
            manual["rolled_back"], manual["rollback_at"] = target, time.time()
            manual["rollback_env_steps"] = state.env_steps

    summary = deploy(_config(tiny_pipeline, out, gate, 24_000), on_tick=operate, make_gate=make_gate, publish_hook=hook)
    assert "rolled_back" in manual and summary["env_steps"] >= 24_000
    assert manual["rollback_env_steps"] < 24_000 - 6_000, "the run must leave room after the rollback"
    registry = PolicyRegistry(out / "registry")
    rejection = next(d for d in registry.decisions() if d["decision"] == "rejected")
    assert rejection["version"] == hook.broken and rejection["by"] == "gate"
    assert rejection["evidence"]["candidate_success"] == 0.0 and rejection["evidence"]["difference"] < -0.05
    episodes = _episodes(out)
    canary_robots = {"robot-000"}  # the first 25% of 4 robots, by id
    ran_broken = {e.robot_id for e in episodes if hook.broken in set(e.policy_version.tolist())}
    assert ran_broken == canary_robots
    # Every robot runs the rolled-back version from its next episode (the one it was in may finish).
    for robot in {e.robot_id for e in episodes}:
        after = sorted(
            (e for e in episodes if e.robot_id == robot and e.started_at > manual["rollback_at"]), key=lambda e: e.seq
        )
        assert len(after) >= 2, robot
        assert all(set(e.policy_version.tolist()) == {manual["rolled_back"]} for e in after[1:]), robot
    rollout = registry.rollout()
    assert rollout.deployed.version == manual["rolled_back"] and rollout.pinned  # no gate promotion after
    assert summary["deployed_version"] == manual["rolled_back"]


class BreakUntilJudged(BreakOnce):
    """Breaks every version until the gate has judged one: the evaluator scores only the
    newest candidate when it gets to it, so the one it judges first is a broken one."""

    def __init__(self, registry_root):
        super().__init__()
        self.registry_root, self.broken_versions = registry_root, set()

    def __call__(self, version: int, policy):
        judged = [d for d in PolicyRegistry(self.registry_root).decisions() if d["decision"] == "rejected"]
        if judged:
            return policy
        self.broken, self.broken_versions = None, self.broken_versions | {version}
        return super().__call__(version, policy)


def test_the_evaluator_gate_rejects_a_broken_version_before_any_robot_runs_it(tiny_pipeline, tmp_path):
    out = tmp_path / "run"
    hook = BreakUntilJudged(out / "registry")
    # Scored at the robots' temperature: the tiny policy closes the drawer only with its sampling
    # noise (about half the time; from x_0 = 0 so rarely that a broken version tied it in a CI run).
    gate = GateConfig(
        mode="evaluate", episodes_per_task=20, margin=0.05, rollback_episodes=0, evaluator_noise_scale=1.0
    )

    def wait_for_the_evaluator(state):
        # On a loaded machine the robots could spend the budget before the evaluator has
        # scored a candidate: hold them at their episode boundaries until it has.
        judged = any(d["decision"] == "rejected" for d in state.registry.decisions())
        state.fleet.hold(not judged and state.env_steps > 1_500)

    # The robots are held at 1,500 env steps until the first judgement, so a short budget
    # leaves room for it; a longer one only ran more steps beside an evaluator scoring every
    # version (16,000 took 86-143 s in the full suite).
    config = replace(_config(tiny_pipeline, out, gate, 4_000), max_minutes=10.0)  # fail, not hang
    deploy(config, on_tick=wait_for_the_evaluator, make_gate=make_gate, publish_hook=hook)
    judged = [
        d for d in PolicyRegistry(out / "registry").decisions() if d["by"] == "gate" and d["evidence"].get("mode")
    ]
    assert judged, "the evaluator judged no candidate within the run"
    first = judged[0]
    assert first["decision"] == "rejected" and first["version"] in hook.broken_versions
    evidence = first["evidence"]
    assert evidence["candidate_success"] == 0.0 and evidence["difference"] < -0.05 and evidence["episodes"] == 20
    ran = {int(v) for e in _episodes(out) for v in e.policy_version}
    assert not ran & hook.broken_versions  # no robot ran a broken version
    scored = [json.loads(line) for line in (out / "gate" / "evaluations.jsonl").read_text().splitlines()]
    start = PolicyRegistry(out / "registry").history()[0].version
    assert {start, first["version"]} <= {line["version"] for line in scored}
    assert all(line["episodes"] == 20 and line["env_steps"] is not None for line in scored)


def test_observe_scores_published_versions_at_its_own_temperature_and_decides_nothing(tiny_pipeline, tmp_path):
    out = tmp_path / "run"
    gate = GateConfig(mode="observe", episodes_per_task=3, evaluator_noise_scale=0.5)
    summary = deploy(_config(tiny_pipeline, out, gate, 3_000), make_gate=make_gate)
    scored = [json.loads(line) for line in (out / "gate" / "evaluations.jsonl").read_text().splitlines()]
    assert scored and all(line["episodes"] == 3 and line["noise_scale"] == 0.5 for line in scored)
    registry = PolicyRegistry(out / "registry")
    assert not (registry.root / "ROLLOUT").exists() and registry.decisions() == []
    assert summary["deployed_version"] == registry.latest().version  # robots followed every version
