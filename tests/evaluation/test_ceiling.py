import numpy as np
import pytest
import torch

from lwd.envs import SEEDS, make_robot
from lwd.evaluation.ceiling import (
    PICK_MARGIN,
    CeilingConfig,
    CriticScorer,
    OracleScorer,
    episode_groups,
    run_best_of_n_episodes,
    run_ceiling_bench,
)
from lwd.evaluation.evaluate import run_policy_episodes
from lwd.policy.checkpoint import load_checkpoint, save_checkpoint
from lwd.policy.critic import ChunkCritic, CriticConfig
from lwd.policy.flow_policy import FlowChunkPolicy, PolicyConfig
from lwd.policy.instructions import InstructionEncoder

REACH = "Move your hand to the goal position."


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("ckpt") / "policy"
    encoder = InstructionEncoder()
    encoder.embed([REACH])
    torch.manual_seed(0)
    save_checkpoint(path, FlowChunkPolicy(PolicyConfig(chunk_len=5, hidden_dim=32, num_layers=1)), encoder)
    return str(path)


class RecordingScorer:
    """Prefers chunks that push the hand along +x; remembers what it saw at each replan."""

    def __init__(self):
        self.calls = []  # (snapshot of the robot, candidates (N, H, A), scores (N,))

    def score(self, robots, states, instructions, candidates, execute):
        scores = candidates[..., 0].sum(axis=-1)  # (B, N)
        self.calls.append((robots[0].snapshot(), candidates[0].copy(), scores[0].copy(), states[0].copy()))
        return scores


@pytest.mark.slow
def test_best_of_n_executes_the_candidate_the_scorer_ranks_highest(tiny_checkpoint):
    policy, encoder, _ = load_checkpoint(tiny_checkpoint)
    scorer = RecordingScorer()
    run_best_of_n_episodes(policy, encoder, [("reach-v3", SEEDS.validation(0))], 3, scorer, noise_seed=0)
    assert len(scorer.calls) >= 10
    picks = [int(np.argmax(scores)) for _, _, scores, _ in scorer.calls]
    assert any(pick != 0 for pick in picks)  # the test would notice a selector that ignores the scores
    replay = make_robot("reach-v3", "canonical")
    for (snapshot, candidates, scores, _), (_, _, _, next_state) in zip(scorer.calls, scorer.calls[1:]):
        replay.restore(snapshot)
        for action in candidates[int(np.argmax(scores))]:
            observation = replay.step(action)[0]
        np.testing.assert_array_equal(observation.state, next_state)


class SecondCandidateScorer:
    """Always prefers candidate 1."""

    def score(self, robots, states, instructions, candidates, execute):
        scores = np.zeros(candidates.shape[:2])
        scores[:, 1] = 1.0
        return scores


@pytest.mark.slow
def test_best_of_n_counts_the_second_scorers_picks_far_below_and_above_candidate_0(tiny_checkpoint):
    policy, encoder, _ = load_checkpoint(tiny_checkpoint)
    scorer = RecordingScorer()
    jobs = [("reach-v3", SEEDS.validation(0))]
    (result,) = run_best_of_n_episodes(policy, encoder, jobs, 3, scorer, noise_seed=0, second=SecondCandidateScorer())
    # The same comparisons the runner makes, so the counts match exactly on any machine.
    first, second = (np.array([scores[k] for _, _, scores, _ in scorer.calls]) for k in (0, 1))
    assert result.second_worse == int((second < first - PICK_MARGIN).sum()) > 0
    assert result.second_better == int((second > first + PICK_MARGIN).sum()) > 0
    assert result.second_pick_score == pytest.approx(np.mean([scores[1] for _, _, scores, _ in scorer.calls]))


def learner_with_a_random_critic(policy_checkpoint: str, path) -> str:
    """The tiny policy saved as an LWD learner checkpoint whose critic is freshly initialised."""
    policy, encoder, _ = load_checkpoint(policy_checkpoint)
    config = CriticConfig.for_policy(policy.config, hidden_dim=16, num_layers=1)
    torch.manual_seed(1)
    return str(
        save_checkpoint(
            path,
            policy,
            encoder,
            extras={"offline": {"critic": config.to_dict()}},
            learner_modules={"critic": ChunkCritic(config)},
        )
    )


@pytest.mark.slow
def test_eval_best_of_n_reports_how_often_the_critic_left_the_plain_chunk(tiny_checkpoint, tmp_path):
    from lwd.evaluation.evaluate import EvalConfig, evaluate

    learner = learner_with_a_random_critic(tiny_checkpoint, tmp_path / "learner")
    summary = evaluate(
        EvalConfig(
            checkpoint=str(learner),
            critic=str(learner),
            best_of_n=3,
            tasks=("reach-v3",),
            episodes_per_task=2,
            split="validation",
            workers=1,
            out=str(tmp_path / "eval"),
        )
    )
    replans = sum(o["critic_replans"] for o in summary["outcomes"])
    changed = sum(o["critic_changed"] for o in summary["outcomes"])
    assert replans >= sum(o["steps"] for o in summary["outcomes"]) // load_checkpoint(tiny_checkpoint)[0].chunk_len
    assert 0 < changed < replans  # a random critic leaves the plain chunk sometimes, not always
    assert summary["critic_changed_fraction"] == pytest.approx(changed / replans)


@pytest.mark.slow
def test_one_candidate_reproduces_lwd_eval_episode_for_episode(tiny_checkpoint):
    jobs = [("reach-v3", SEEDS.validation(0)), ("reach-v3", SEEDS.validation(1))]
    policy, encoder, _ = load_checkpoint(tiny_checkpoint)
    best_of_one = [r.outcome for r in run_best_of_n_episodes(policy, encoder, jobs, 1, None, noise_seed=3)]
    assert best_of_one == run_policy_episodes(tiny_checkpoint, jobs, 0, 3, noise_scale=1.0)


class FirstCandidateScorer(RecordingScorer):
    """Records like RecordingScorer (and each call's first instruction) but always ranks candidate 0 highest."""

    def __init__(self):
        super().__init__()
        self.instructions = []

    def score(self, robots, states, instructions, candidates, execute):
        self.instructions.append(instructions[0])
        ranks = np.zeros_like(super().score(robots, states, instructions, candidates, execute))
        ranks[:, 0] = 1.0
        return ranks


@pytest.mark.slow
def test_a_deterministic_first_candidate_is_the_plain_policy_at_zero_temperature(tiny_checkpoint):
    jobs = [("reach-v3", SEEDS.validation(0)), ("reach-v3", SEEDS.validation(1))]
    policy, encoder, _ = load_checkpoint(tiny_checkpoint)
    scorer = FirstCandidateScorer()
    picked_first = run_best_of_n_episodes(policy, encoder, jobs, 3, scorer, noise_seed=3, first_noise_scale=0.0)
    plain = run_policy_episodes(tiny_checkpoint, jobs, 0, 3, noise_scale=0.0)
    # Batches of 3 rows against 1 per episode: the same chunks up to float rounding, so compare
    # what each executed within a tolerance and the outcomes by their discrete result.
    assert [r.outcome.success for r in picked_first] == [o.success for o in plain]
    for (_, candidates, _, state), instruction in zip(scorer.calls, scorer.instructions):
        with torch.inference_mode():
            encoded = policy.encode(torch.from_numpy(state[None]), torch.from_numpy(encoder.embed([instruction])))
            deterministic = policy.sample(encoded, torch.zeros(1, policy.flat_action_dim)).numpy()[0]
        np.testing.assert_allclose(candidates[0], deterministic, atol=1e-5)
        assert not np.allclose(candidates[1], candidates[0], atol=1e-3)  # the others are samples at s = 1


def test_oracle_scores_deterministically_and_leaves_the_scored_robot_untouched(tiny_checkpoint):
    policy, encoder, _ = load_checkpoint(tiny_checkpoint)
    robot = make_robot("reach-v3", "canonical")
    observation, _ = robot.reset(SEEDS.validation(2))
    before = robot.snapshot()
    candidates = np.random.default_rng(0).uniform(-1, 1, (1, 2, 5, 4)).astype(np.float32)
    scores = [
        OracleScorer(policy, encoder, lookahead=12, noise_seed=5).score(
            [robot], observation.state[None], [observation.instruction], candidates, execute=5
        )
        for _ in range(2)
    ]
    np.testing.assert_array_equal(scores[0], scores[1])
    assert scores[0].shape == (1, 2) and ((0 <= scores[0]) & (scores[0] < 2)).all()
    action = np.array([0.5, 0.0, 0.0, 0.0], np.float32)
    after = robot.step(action)[0].state
    robot.restore(before)
    np.testing.assert_array_equal(robot.step(action)[0].state, after)


def test_an_oracle_with_a_deterministic_continuation_ignores_its_noise_seed(tiny_checkpoint):
    policy, encoder, _ = load_checkpoint(tiny_checkpoint)
    robot = make_robot("reach-v3", "canonical")
    observation, _ = robot.reset(SEEDS.validation(3))
    candidates = np.random.default_rng(1).uniform(-1, 1, (1, 3, 5, 4)).astype(np.float32)

    def scores(noise_seed: int, scale: float) -> np.ndarray:
        oracle = OracleScorer(policy, encoder, lookahead=15, noise_seed=noise_seed, continuation_noise_scale=scale)
        return oracle.score([robot], observation.state[None], [observation.instruction], candidates, execute=5)

    np.testing.assert_array_equal(scores(5, 0.0), scores(6, 0.0))
    assert not np.array_equal(scores(5, 1.0), scores(6, 1.0))  # sampled continuations do depend on it


def test_ceiling_refuses_a_negative_first_candidate_temperature():
    with pytest.raises(ValueError, match="first_noise_scale"):
        CeilingConfig(first_noise_scale=-1.0)


def test_critic_scorer_reduces_the_heads_by_mean_or_min():
    torch.manual_seed(0)
    critic = ChunkCritic(CriticConfig(hidden_dim=16, num_layers=1, num_heads=3))
    encoder = InstructionEncoder({REACH: np.full(384, 384**-0.5, np.float32)})
    states = np.random.default_rng(0).normal(size=(2, 39)).astype(np.float32)
    candidates = np.random.default_rng(1).uniform(-1, 1, (2, 4, 5, 4)).astype(np.float32)
    with torch.no_grad():
        heads = critic(
            torch.from_numpy(np.repeat(states, 4, axis=0)),
            torch.from_numpy(encoder.embed([REACH] * 8)),
            torch.from_numpy(candidates.reshape(8, 5, 4)),
        ).numpy()  # (3, 8)
    for reduce, expected in (("mean", heads.mean(0)), ("min", heads.min(0))):
        got = CriticScorer(critic, encoder, reduce).score([], states, [REACH, REACH], candidates, 5)
        np.testing.assert_allclose(got, expected.reshape(2, 4), rtol=1e-6)


def test_config_rejects_unknown_selectors_and_candidate_counts():
    with pytest.raises(ValueError, match="selectors"):
        CeilingConfig(selectors=("best",))
    with pytest.raises(ValueError, match="n must be"):
        CeilingConfig(n=(0, 4))


@pytest.mark.parametrize("selector, n", [("oracle", 16), ("oracle", 4), ("critic", 16), ("oracle", 64)])
def test_episode_groups_cover_every_episode_once_and_bound_the_oracles_scratch_robots(selector, n):
    config = CeilingConfig(tasks=("reach-v3", "push-v3"), episodes_per_task=10, workers=2, scratch_robots=40)
    expected = [(task, SEEDS.held_out("validation", k)) for task in config.tasks for k in range(10)]
    groups = episode_groups(config, expected, selector, n)
    assert [job for group in groups for job in group] == expected
    assert all(len({task for task, _ in group}) == 1 for group in groups)
    sizes = {len(group) for group in groups}
    if selector == "oracle":
        assert max(sizes) == max(1, min(5, 40 // n))  # 2 at N = 16, the 5 of one worker's share at N = 4
    else:
        assert sizes == {5}  # the critic holds no scratch robots: one worker's share of a task


def test_the_critic_of_an_sft_checkpoint_is_refused_by_name(tiny_checkpoint):
    from lwd.evaluation.ceiling import load_critic
    from lwd.policy.checkpoint import CheckpointError

    with pytest.raises(CheckpointError, match="no critic config"):
        load_critic(tiny_checkpoint)


def test_eval_best_of_n_needs_a_critic():
    from lwd.evaluation.evaluate import EvalConfig

    with pytest.raises(ValueError, match="needs --critic"):
        EvalConfig(best_of_n=4)
    assert EvalConfig(best_of_n=4, critic="runs/offline/final", noise_scale=1.0).best_of_n == 4


@pytest.mark.slow
def test_ceiling_bench_pairs_each_run_with_the_policy_and_counts_its_own_picks(tiny_checkpoint, tmp_path):
    learner = learner_with_a_random_critic(tiny_checkpoint, tmp_path / "learner")
    config = CeilingConfig(
        checkpoint=learner,
        critic=learner,
        selectors=("oracle",),
        n=(1, 2),
        lookahead=5,
        tasks=("reach-v3",),
        episodes_per_task=1,
        workers=1,
        out=str(tmp_path / "ceiling.json"),
        progress=False,
    )
    report = run_ceiling_bench(config)
    oracle = report["runs"]["oracle N=2"]
    (row,) = oracle["episodes"]
    assert row["replans"] == oracle["replans"] > 0
    assert 0 <= row["changed"] <= row["replans"]
    assert "critic_replans" not in row and "critic_changed" not in row  # eval's fields, not the ceiling's
    assert oracle["paired_vs_policy"]["episodes"] == 1
    # The critic's pick under the oracle, beside the oracle's own.
    assert row["second_worse"] + row["second_better"] <= row["replans"]
    assert oracle["second_worse_per_episode"] == row["second_worse"]
    table = (tmp_path / "ceiling.md").read_text()
    assert table.count("oracle N=2") == 1 and "critic's pick > 0.05 below / above" in table
