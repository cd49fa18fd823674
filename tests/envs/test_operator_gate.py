"""The scripted operator consults its expert only when a decision needs it, and decides
exactly as the gate's rules read with the expert consulted at every watched step."""

import numpy as np
import pytest

from lwd.envs import make_expert, make_robot
from lwd.envs.operator import OperatorConfig, ScriptedOperator, noisy
from lwd.envs.robot import expert_state


class EveryStepGate:
    """The gate as OperatorConfig documents it, with the expert consulted at every watched
    step (how ScriptedOperator decided before it asked lazily): the reference."""

    def __init__(self, expert, config: OperatorConfig, rng: np.random.Generator):
        self.expert, self.config, self.rng = expert, config, rng
        self.takeovers, self.driving_left, self.deviating_for, self.stalled_for = 0, 0, 0, 0
        self.best_progress = -np.inf

    def decide(self, observation, policy_action, progress):
        cfg = self.config
        if self.driving_left > 0:
            self.driving_left -= 1
            return noisy(self.expert.act(expert_state(observation)), cfg.action_noise, self.rng), True
        if self.rng.random() >= cfg.attention:
            return policy_action, False
        expert_action = self.expert.act(expert_state(observation))
        disagreement = float(np.linalg.norm(policy_action - expert_action))
        self.deviating_for = self.deviating_for + 1 if disagreement > cfg.deviation_threshold else 0
        if progress > self.best_progress + cfg.progress_epsilon:
            self.best_progress, self.stalled_for = progress, 0
        else:
            self.stalled_for += 1
        stalled = self.stalled_for >= cfg.stall_steps and disagreement > cfg.stall_disagreement
        if (self.deviating_for >= cfg.deviation_steps or stalled) and self.takeovers < cfg.max_takeovers:
            self.takeovers += 1
            self.driving_left = cfg.takeover_steps - 1
            self.deviating_for = self.stalled_for = 0
            return noisy(expert_action, cfg.action_noise, self.rng), True
        return policy_action, False


class CountingExpert:
    """A real scripted expert that counts how often it is asked."""

    def __init__(self, task: str):
        self.expert, self.calls = make_expert(task), 0

    def act(self, state):
        self.calls += 1
        return self.expert.act(state)


def wandering_policy_action(expert_action: np.ndarray, step: int, rng: np.random.Generator) -> np.ndarray:
    """A policy that follows the expert closely in some stretches and wanders off in others
    (stretches of 4-24 steps), so that runs of disagreement of every length occur."""
    if (step // 8 + step // 13) % 3 == 0:
        return rng.uniform(-1, 1, 4).astype(np.float32)
    return np.clip(expert_action + rng.normal(0, 0.05, 4), -1, 1).astype(np.float32)


# How the operator drives once it took over (back-off when stuck, opening the gripper) is not
# part of the gate and is tested on its own (tests/fleet/test_rollout.py); the reference drives
# with the expert's actions as they are, so these gates do too.
PLAIN_DRIVING = {"backoff_steps": 0, "open_gripper": False}
GATES = {
    "default": OperatorConfig(**PLAIN_DRIVING),
    "short runs, short takeovers": OperatorConfig(
        deviation_steps=3, takeover_steps=4, max_takeovers=6, **PLAIN_DRIVING
    ),
    "stall rule": OperatorConfig(stall_steps=5, stall_disagreement=0.3, progress_epsilon=0.05, **PLAIN_DRIVING),
    "half attention, noisy driving": OperatorConfig(
        attention=0.5, deviation_steps=4, action_noise=0.2, **PLAIN_DRIVING
    ),
    "budget of one": OperatorConfig(deviation_steps=3, takeover_steps=5, max_takeovers=1, **PLAIN_DRIVING),
}


@pytest.mark.parametrize("gate", GATES, ids=list(GATES))
@pytest.mark.parametrize("task", ["pick-place-v3", "drawer-close-v3"])
def test_lazy_gate_decides_as_the_every_step_gate_with_fewer_expert_calls(task, gate):
    config = GATES[gate]
    lazy_expert, reference_expert, policy_expert = CountingExpert(task), CountingExpert(task), make_expert(task)
    takeovers, steps = 0, 0
    for seed in range(3):
        operator = ScriptedOperator(lazy_expert, config, np.random.default_rng([seed, 1]))
        reference = EveryStepGate(reference_expert, config, np.random.default_rng([seed, 1]))
        robot, policy_rng = make_robot(task), np.random.default_rng([seed, 2])
        observation, info = robot.reset(seed)
        for step in range(robot.task.max_steps):
            policy_action = None
            if not operator.driving:
                policy_action = wandering_policy_action(policy_expert.act(observation.state), step, policy_rng)
            action, by_operator = operator.decide(observation, policy_action, info.progress)
            expected, expected_by_operator = reference.decide(observation, policy_action, info.progress)
            assert by_operator == expected_by_operator, (seed, step)
            np.testing.assert_array_equal(action, expected, err_msg=f"seed {seed}, step {step}")
            observation, _, terminated, truncated, info = robot.step(action)
            steps += 1
            if terminated or truncated:
                break
        assert operator.takeovers == reference.takeovers
        takeovers += operator.takeovers
    assert takeovers > 0, "the wandering policy must make the operator take over"
    assert lazy_expert.calls < reference_expert.calls


def test_a_policy_that_agrees_costs_one_expert_call_per_deviation_run():
    task, config = "reach-v3", OperatorConfig()
    expert = CountingExpert(task)
    operator = ScriptedOperator(expert, config, np.random.default_rng(0))
    robot = make_robot(task)
    observation, info = robot.reset(3)
    for _ in range(100):
        action, by_operator = operator.decide(observation, expert.expert.act(observation.state), info.progress)
        assert not by_operator
        observation, *_, info = robot.step(action)
    assert expert.calls == 100 // config.deviation_steps


@pytest.mark.parametrize("still_steps", [0, 30])
def test_a_hand_stopped_short_of_its_goal_is_taken_over_by_the_still_rule_alone(still_steps):
    """A reach that halts ~10 cm from its goal differs from the expert by less than the stall
    and deviation thresholds (1.0), so only the still rule (`still_steps`) takes it over, once
    progress has stalled and the hand has stood still for that many steps (the hand drifts on
    for a few centimetres after the policy stops, so that comes well after the stop)."""
    task = "reach-v3"
    expert = make_expert(task)
    operator = ScriptedOperator(expert, OperatorConfig(still_steps=still_steps), np.random.default_rng(0))
    robot = make_robot(task)
    observation, info = robot.reset(3)
    stopped_at, taken_over_at = None, None
    for step in range(robot.task.max_steps):
        expert_action = expert.act(expert_state(observation))
        if stopped_at is None and np.linalg.norm(expert_action[:3]) < 0.6:
            stopped_at = step
        policy_action = expert_action if stopped_at is None else np.zeros(4, dtype=np.float32)
        if stopped_at is not None:
            assert np.linalg.norm(policy_action - expert_action) < 1.0  # below both thresholds
        action, by_operator = operator.decide(observation, policy_action, info.progress)
        if by_operator:
            taken_over_at = step
            break
        observation, _, terminated, _, info = robot.step(action)
        assert not terminated, "the stopped policy must not reach its goal"
    assert stopped_at is not None
    if still_steps:
        assert taken_over_at is not None and taken_over_at >= stopped_at + still_steps
    else:
        assert taken_over_at is None


def test_a_negative_still_steps_is_refused():
    with pytest.raises(ValueError, match="still_steps"):
        OperatorConfig(still_steps=-1)
