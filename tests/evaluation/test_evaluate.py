import json

import numpy as np
import pytest
import torch

from lwd.envs import SEEDS, make_expert, make_robot, task_spec
from lwd.envs.phrasings import episode_instruction, task_phrasings
from lwd.evaluation.evaluate import (
    MAX_UNSTICK_STEPS,
    EvalConfig,
    LockstepEpisodes,
    UnstickConfig,
    episode_generators,
    evaluate,
    run_policy_episodes,
    wilson_interval,
)
from lwd.policy.checkpoint import CheckpointError, save_checkpoint
from lwd.policy.flow_policy import FlowChunkPolicy, PolicyConfig
from lwd.policy.instructions import InstructionEncoder


def test_wilson_interval_of_known_cases():
    low, high = wilson_interval(45, 50)
    assert low == pytest.approx(0.7864, abs=1e-3) and high == pytest.approx(0.9565, abs=1e-3)
    assert wilson_interval(0, 10)[0] == 0.0 and wilson_interval(10, 10)[1] == 1.0


SMALL_POLICY = PolicyConfig(chunk_len=5, hidden_dim=32, num_layers=1)


@pytest.fixture(scope="module")
def untrained_checkpoint(tmp_path_factory):
    return _save_reach_push_checkpoint(tmp_path_factory.mktemp("ckpt") / "policy", FlowChunkPolicy(SMALL_POLICY))


def _save_reach_push_checkpoint(path, policy: FlowChunkPolicy) -> str:
    """`policy` saved with an encoder that knows reach-v3's and push-v3's instructions."""
    encoder = InstructionEncoder()
    encoder.embed(["Move your hand to the goal position.", "Push the puck to the goal."])
    save_checkpoint(path, policy, encoder)
    return str(path)


def test_evaluation_refuses_training_seeds(untrained_checkpoint):
    with pytest.raises(ValueError, match="evaluation refuses seed 7"):
        run_policy_episodes(untrained_checkpoint, [("reach-v3", SEEDS.eval(0)), ("reach-v3", 7)], 0, 0, noise_scale=0.0)


def test_evaluation_writes_json_markdown_and_chart(tmp_path, untrained_checkpoint):
    summary = evaluate(
        EvalConfig(
            checkpoint=untrained_checkpoint,
            tasks=("reach-v3", "push-v3"),
            episodes_per_task=2,
            workers=1,
            out=str(tmp_path),
        )
    )
    assert set(summary["per_task"]) == {"reach-v3", "push-v3"}
    for task in summary["per_task"].values():
        assert task["episodes"] == 2
        assert 1 <= task["cycle_time_steps"] <= 200
        assert task["ci95"][0] <= task["success"] <= task["ci95"][1]
        assert task["stage_score"] == task["success"]  # one stage: the stage score is the success rate
    assert json.loads((tmp_path / "eval.json").read_text())["eval_seeds"] == [SEEDS.eval(0), SEEDS.eval(1)]
    assert "| **average** |" in (tmp_path / "eval.md").read_text()
    # scored without sampling noise, except where the policy has stopped
    assert "(eval seeds, noise scale 0, a chunk at s = 1 after 20 stopped steps)" in (tmp_path / "eval.md").read_text()


def test_validation_split_runs_on_validation_seeds_only(tmp_path, untrained_checkpoint):
    summary = evaluate(
        EvalConfig(
            checkpoint=untrained_checkpoint,
            tasks=("reach-v3",),
            episodes_per_task=2,
            workers=1,
            out=str(tmp_path),
            split="validation",
        )
    )
    assert summary["eval_seeds"] == [SEEDS.validation(0), SEEDS.validation(1)] and summary["split"] == "validation"
    assert (tmp_path / "eval.png").read_bytes()[:4] == b"\x89PNG"


def test_each_episode_draws_its_own_noise_whatever_runs_beside_it():
    jobs = [("reach-v3", SEEDS.eval(0)), ("push-v3", SEEDS.eval(0)), ("reach-v3", SEEDS.eval(1))]
    draws = [torch.randn(3, generator=g) for g in episode_generators(5, jobs)]
    alone = [torch.randn(3, generator=episode_generators(5, [job])[0]) for job in jobs[::-1]][::-1]
    assert all(torch.equal(a, b) for a, b in zip(draws, alone))  # position and batch-mates do not matter
    assert not torch.equal(draws[0], draws[1]) and not torch.equal(draws[0], draws[2])  # task and seed do
    assert not torch.equal(draws[0], torch.randn(3, generator=episode_generators(6, jobs[:1])[0]))  # noise seed too


def test_evaluating_a_missing_checkpoint_fails_before_any_work(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint at"):
        evaluate(EvalConfig(checkpoint=str(tmp_path / "nope"), out=str(tmp_path)))


def test_evaluation_reports_the_stage_score_of_long_horizon_tasks(tmp_path):
    path = tmp_path / "lh-policy"
    encoder = InstructionEncoder()
    encoder.embed(["Open the drawer, put the puck in its place, then close the drawer."])
    save_checkpoint(path, FlowChunkPolicy(PolicyConfig(obs_dim=44, chunk_len=5, hidden_dim=32, num_layers=1)), encoder)
    summary = evaluate(
        EvalConfig(
            checkpoint=str(path),
            suite="lh",
            tasks=("lh-stock-drawer",),
            episodes_per_task=1,
            workers=1,
            out=str(tmp_path / "eval"),
        )
    )
    task, spec = summary["per_task"]["lh-stock-drawer"], task_spec("lh-stock-drawer")
    assert task["stage_score"] in [k / spec.num_stages for k in range(spec.num_stages + 1)]
    assert task["cycle_time_steps"] <= spec.max_steps
    assert summary["outcomes"][0]["stage_score"] == task["stage_score"]
    assert "| stage score |" in (tmp_path / "eval" / "eval.md").read_text()


def test_evaluation_refuses_tasks_whose_state_size_the_policy_does_not_take(tmp_path, untrained_checkpoint):
    with pytest.raises(ValueError, match="takes 39-number states but task 'lh-stock-drawer' has 44") as refused:
        evaluate(EvalConfig(checkpoint=untrained_checkpoint, suite="lh", workers=1, out=str(tmp_path)))
    assert "--suite mt10" in str(refused.value) and "--suite lh" not in str(refused.value)


def test_episodes_run_in_bounded_batches_with_the_same_outcomes(tmp_path, untrained_checkpoint):
    def outcomes(max_live: int) -> list[dict]:
        return evaluate(
            EvalConfig(
                checkpoint=untrained_checkpoint,
                tasks=("reach-v3", "push-v3"),
                episodes_per_task=3,
                workers=1,
                max_live_episodes=max_live,
                out=str(tmp_path / str(max_live)),
            )
        )["outcomes"]

    small, large = outcomes(2), outcomes(100)
    # The same episodes with the same noise streams. The policy call runs at another batch
    # shape, so its floats may differ in the last bits; that can tip at most a borderline
    # episode, not the set of episodes or their order.
    assert [(o["task"], o["seed"]) for o in small] == [(o["task"], o["seed"]) for o in large]
    assert sum(a["success"] != b["success"] for a, b in zip(small, large)) <= 1


def test_a_non_positive_batch_bound_is_refused():
    with pytest.raises(ValueError, match="max_live_episodes"):
        EvalConfig(max_live_episodes=0)


def test_held_out_phrasings_are_what_the_policy_is_given_and_the_gap_is_paired(tmp_path, untrained_checkpoint):
    result = evaluate(
        EvalConfig(
            checkpoint=untrained_checkpoint,
            tasks=("reach-v3",),
            episodes_per_task=3,
            workers=1,
            split="validation",
            phrasings=("canonical", "heldout"),
            out=str(tmp_path),
        )
    )

    def worded(name: str) -> list[str]:
        return [o["instruction"] for o in json.loads((tmp_path / name / "eval.json").read_text())["outcomes"]]

    seeds = [SEEDS.validation(k) for k in range(3)]
    assert worded("canonical") == ["Move your hand to the goal position."] * 3
    assert worded("heldout") == [episode_instruction("reach-v3", seed, "heldout") for seed in seeds]
    assert set(worded("heldout")) <= set(task_phrasings("reach-v3").held_out)
    gap = result["paired_difference"]["heldout"]
    assert gap["episodes"] == 3 and json.loads((tmp_path / "phrasings.json").read_text())["baseline"] == "canonical"
    assert "heldout − canonical" in (tmp_path / "phrasings.md").read_text()


def test_unknown_phrasing_sets_are_refused():
    with pytest.raises(ValueError, match="phrasings must be distinct names"):
        EvalConfig(phrasings=("held-out",))


def test_an_unknown_precision_or_a_bfloat16_best_of_n_is_refused():
    with pytest.raises(ValueError, match="inference_dtype"):
        EvalConfig(inference_dtype="float16")
    with pytest.raises(ValueError, match="best-of-n"):
        EvalConfig(inference_dtype="bfloat16", best_of_n=4, critic="runs/deploy/learner/final")


def test_a_negative_noise_scale_is_refused():
    with pytest.raises(ValueError, match="noise_scale"):
        EvalConfig(noise_scale=-0.5)


def test_policies_are_scored_without_sampling_noise_while_robots_explore_with_it():
    from lwd.fleet.gate import GateConfig
    from lwd.fleet.worker import FleetConfig

    assert EvalConfig().noise_scale == 0.0 and GateConfig().evaluator_noise_scale == 0.0
    assert EvalConfig().unstick == UnstickConfig(steps=20, noise_scale=1.0)  # a stopped policy samples
    assert FleetConfig().noise_scale == 1.0


@pytest.mark.parametrize("replan", [False, True], ids=["whole chunks", "replan at a stage end"])
def test_a_chunk_that_crosses_a_stage_end_is_dropped_there_only_when_replanning(replan):
    task, seed = "lh-line-up", 3
    robot, expert = make_robot(task), make_expert(task)
    observation, info = robot.reset(seed)
    actions = []  # the expert's actions up to and including the one that ends the first stage
    while info.stage_score == 0 and len(actions) < robot.task.max_steps:
        actions.append(expert.act(observation.state))
        observation, _, _, _, info = robot.step(actions[-1])
    chunk = np.stack(actions + [np.zeros(4, np.float32)] * 5)
    episodes = LockstepEpisodes([(task, seed)], "canonical", replan_at_stage_end=replan)
    episodes.execute(0, chunk)
    assert info.stage_score == episodes.stage_score[0] == 1 / robot.task.num_stages
    assert episodes.steps[0] == (len(actions) if replan else len(chunk))
    assert episodes.live[0]


def test_best_of_n_refuses_to_replan_at_stage_ends():
    with pytest.raises(ValueError, match="replan-at-stage-end"):
        EvalConfig(best_of_n=4, critic="runs/lwd", noise_scale=1.0, replan_at_stage_end=True)


def test_a_policy_has_stopped_once_its_hand_stayed_put_for_the_whole_window_without_a_stage_ending():
    window = 20
    episodes = LockstepEpisodes([("reach-v3", SEEDS.validation(0))], "canonical")
    hold = np.zeros((window - 1, 4), np.float32)  # Meta-World keeps the hand where it is
    episodes.execute(0, hold)
    assert not episodes.stopped(0, window)  # one step short of the window
    episodes.execute(0, hold[:1])
    assert episodes.stopped(0, window)
    assert not episodes.stopped(0, 0)  # 0: never
    episodes.execute(0, np.tile(np.array([[1.0, 0.0, 0.0, 0.0]], np.float32), (10, 1)))
    assert not episodes.stopped(0, window)  # the hand moved more than a centimetre since


def test_only_the_chunks_of_a_stopped_policy_are_sampled_at_the_unstick_temperature(tmp_path, monkeypatch):
    import lwd.fleet.policy_actor as policy_actor

    # A policy with a zero velocity field: from x_0 = 0 its flow stays at the mean action (zero,
    # the hand held still, so it stops), from noise it moves.
    policy = FlowChunkPolicy(SMALL_POLICY)
    with torch.no_grad():
        policy.velocity_net[-1].weight.zero_()
        policy.velocity_net[-1].bias.zero_()
    checkpoint = _save_reach_push_checkpoint(tmp_path / "policy", policy)

    real, scales = policy_actor.sample_chunks, []

    def recording(*args, noise_scale=1.0, **kwargs):  # the real sampler, with its scales written down
        scales.append(np.atleast_1d(np.asarray(noise_scale, np.float32)).copy())
        return real(*args, noise_scale=noise_scale, **kwargs)

    monkeypatch.setattr(policy_actor, "sample_chunks", recording)

    def run(steps: int) -> tuple[list[dict], np.ndarray]:
        scales.clear()
        config = EvalConfig(
            checkpoint=checkpoint,
            tasks=("reach-v3", "push-v3"),
            episodes_per_task=3,
            workers=1,  # in this process, where the sampler is recorded
            unstick=UnstickConfig(steps=steps),
            out=str(tmp_path / str(steps)),
        )
        return evaluate(config)["outcomes"], np.concatenate(scales)

    plain, plain_scales = run(0)
    assert not plain_scales.any() and all(o["resampled"] == 0 for o in plain)
    unstuck, unstuck_scales = run(10)
    resampled = sum(o["resampled"] for o in unstuck)
    assert resampled > 0
    assert set(np.unique(unstuck_scales)) == {0.0, 1.0}
    assert int((unstuck_scales == 1.0).sum()) == resampled  # every other chunk at the scoring's s = 0


@pytest.mark.parametrize("steps, scale", [(-1, 1.0), (MAX_UNSTICK_STEPS + 1, 1.0), (20, float("nan")), (20, -0.5)])
def test_an_unstick_window_or_temperature_out_of_range_is_refused(steps, scale):
    with pytest.raises(ValueError, match="unstick"):
        UnstickConfig(steps=steps, noise_scale=scale)


def _stopping_learner(path) -> str:
    """A policy with a zero velocity field (it holds the hand still from x_0 = 0, so it stops; from
    noise it moves), saved as an LWD learner checkpoint with a freshly initialised critic."""
    from lwd.policy.critic import ChunkCritic, CriticConfig

    torch.manual_seed(0)
    policy = FlowChunkPolicy(SMALL_POLICY)
    with torch.no_grad():
        policy.velocity_net[-1].weight.zero_()
        policy.velocity_net[-1].bias.zero_()
    encoder = InstructionEncoder()
    encoder.embed(["Move your hand to the goal position."])
    critic = CriticConfig.for_policy(policy.config, hidden_dim=16, num_layers=1)
    extras = {"offline": {"critic": critic.to_dict()}}
    save_checkpoint(path, policy, encoder, extras=extras, learner_modules={"critic": ChunkCritic(critic)})
    return str(path)


def test_a_critic_picks_the_resampled_chunk_among_candidates_whose_first_is_the_single_draw(tmp_path, monkeypatch):
    import lwd.evaluation.ceiling as ceiling

    class PrefersPushingRight:  # stands in for the critic's ranking, so the pick is known; records it
        def __init__(self, critic, encoder, reduce="mean"):
            self.calls = []
            seen.append(self)

        def score(self, robots, states, instructions, candidates, execute):
            scores = candidates[..., 0].sum(axis=-1)  # (B, N): the most +x motion wins
            self.calls.append((candidates.copy(), scores))
            return scores

    seen: list = []
    monkeypatch.setattr(ceiling, "CriticScorer", PrefersPushingRight)
    executed: list[np.ndarray] = []
    real_execute = LockstepEpisodes.execute
    monkeypatch.setattr(
        LockstepEpisodes,
        "execute",
        lambda self, i, actions: (executed.append(actions.copy()), real_execute(self, i, actions))[1],
    )
    learner = _stopping_learner(tmp_path / "learner")

    def run(candidates: int) -> dict:
        executed.clear()
        config = EvalConfig(
            checkpoint=learner,
            critic=learner,
            tasks=("reach-v3",),
            episodes_per_task=1,
            split="validation",
            workers=1,  # in this process, where the scorer and the robots are recorded
            unstick=UnstickConfig(steps=10, candidates=candidates),
            out=str(tmp_path / str(candidates)),
        )
        return evaluate(config)

    single = run(1)
    single_executed = list(executed)
    picked = run(4)
    (scorer,) = seen
    outcome = picked["outcomes"][0]
    assert len(scorer.calls) == outcome["resampled"] == outcome["critic_replans"] > 0
    for candidates, scores in scorer.calls:
        assert candidates.shape == (1, 4, SMALL_POLICY.chunk_len, 4)
        chunk = candidates[0, int(np.argmax(scores[0]))]
        assert any(np.array_equal(chunk, actions) for actions in executed)  # the critic's pick ran
    first_resample = next(k for k, actions in enumerate(single_executed) if np.abs(actions).max() > 0)
    np.testing.assert_array_equal(scorer.calls[0][0][0, 0], single_executed[first_resample])
    assert 0 < outcome["critic_changed"] <= outcome["critic_replans"]
    assert picked["critic_changed_fraction"] == pytest.approx(outcome["critic_changed"] / outcome["critic_replans"])
    assert "critic_changed_fraction" not in single


def test_unstick_candidates_need_a_critic_and_do_not_combine_with_best_of_n():
    with pytest.raises(ValueError, match="needs --critic"):
        EvalConfig(unstick=UnstickConfig(candidates=4))
    with pytest.raises(ValueError, match="needs --critic"):
        EvalConfig(critic="runs/lwd", unstick=UnstickConfig(steps=0, candidates=4))
    with pytest.raises(ValueError, match="does not combine"):
        EvalConfig(critic="runs/lwd", best_of_n=4, unstick=UnstickConfig(candidates=4))
    with pytest.raises(ValueError, match="candidates"):
        UnstickConfig(candidates=0)


def test_the_simulator_oracle_can_pick_the_resampled_chunk_from_the_stopped_episodes_own_state(tmp_path):
    from lwd.evaluation.ceiling import OracleScorer

    learner = _stopping_learner(tmp_path / "learner")
    oracles: list[OracleScorer] = []

    def oracle(policy, encoder) -> OracleScorer:
        oracles.append(OracleScorer(policy, encoder, lookahead=10, noise_seed=0, continuation_noise_scale=0.0))
        return oracles[-1]

    jobs = [("reach-v3", SEEDS.validation(k)) for k in range(2)]
    outcomes = run_policy_episodes(
        learner, jobs, 0, 0, noise_scale=0.0, unstick=UnstickConfig(steps=10, candidates=3), unstick_picker=oracle
    )
    (scorer,) = oracles
    assert scorer.lookahead_steps > 0  # it rolled candidates out from the episodes' snapshots
    assert all(o.critic_replans == o.resampled > 0 for o in outcomes)
    scorer.close()
