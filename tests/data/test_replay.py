from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lwd.data.replay import ChunkReplay, MixedReplay, ReplayConfig, sample_learner_batches
from lwd.data.store import EpisodeStore
from lwd.envs.tasks import MAX_STAGES, METAWORLD_OBS_DIM
from tests.conftest import make_episode


def indexed_episode(
    steps: int, success: bool, *, seq: int = 0, task: str = "reach-v3", source: str = "demo", offset: float = 0.0
):
    """An episode whose observation i is filled with offset + i and action i with (i+1)/1000."""
    ep = make_episode(seq=seq, steps=steps, success=success, task=task, source=source)
    obs = np.repeat(offset + np.arange(steps + 1, dtype=np.float32)[:, None], 39, axis=1)
    act = np.repeat((np.arange(steps, dtype=np.float32)[:, None] + 1) / 1000, 4, axis=1)
    return replace(ep, observations=obs, actions=act)


def replay_of(tmp_path, episodes, **config):
    store = EpisodeStore(tmp_path)
    store.append_many(episodes)
    replay = ChunkReplay(store, ReplayConfig(**config))
    replay.refresh()
    return replay


def test_one_step_chunks_match_hand_computed_values(tmp_path):
    # T = 4, success: r = [0, 0, 0, 1]; H = 2, n = 1, gamma = 0.5.
    replay = replay_of(tmp_path, [indexed_episode(4, True)], chunk_len=2, n_step=1, discount=0.5)
    batch = replay.gather(np.arange(4))
    np.testing.assert_allclose(batch.reward, [0.0, 0.0, 0.5, 1.0])
    np.testing.assert_allclose(batch.next_obs[:, 0], [2, 3, 4, 4])
    np.testing.assert_allclose(batch.done, [0, 0, 1, 1])
    np.testing.assert_allclose(batch.discount, [0.25, 0.25, 0.25, 0.5])
    np.testing.assert_array_equal(batch.action_mask, [[1, 1], [1, 1], [1, 1], [1, 0]])
    np.testing.assert_allclose(batch.actions[:, :, 0], [[0.001, 0.002], [0.002, 0.003], [0.003, 0.004], [0.004, 0.004]])
    np.testing.assert_allclose(batch.obs[:, 0], [0, 1, 2, 3])


def test_n_step_chunks_match_hand_computed_values(tmp_path):
    # Same episode, n = 2 chunks of H = 2: the window is 4 steps.
    replay = replay_of(tmp_path, [indexed_episode(4, True)], chunk_len=2, n_step=2, discount=0.5)
    batch = replay.gather(np.arange(4))
    np.testing.assert_allclose(batch.reward, [0.125, 0.25, 0.5, 1.0])
    np.testing.assert_allclose(batch.next_obs[:, 0], [4, 4, 4, 4])
    np.testing.assert_allclose(batch.done, [1, 1, 1, 1])
    np.testing.assert_allclose(batch.discount, [0.0625, 0.125, 0.25, 0.5])


def test_failures_are_terminal_unless_time_limits_bootstrap(tmp_path):
    episodes = [indexed_episode(3, False)]
    terminal = replay_of(tmp_path / "a", episodes, chunk_len=2, discount=0.5).gather(np.arange(3))
    np.testing.assert_allclose(terminal.reward, [0, 0, 0])
    np.testing.assert_allclose(terminal.done, [0, 1, 1])
    bootstrap = replay_of(tmp_path / "b", episodes, chunk_len=2, discount=0.5, bootstrap_at_time_limit=True).gather(
        np.arange(3)
    )
    np.testing.assert_allclose(bootstrap.done, [0, 0, 0])
    np.testing.assert_allclose(bootstrap.next_obs[:, 0], [2, 3, 3])
    np.testing.assert_allclose(bootstrap.discount, [0.25, 0.25, 0.5])


def test_a_policy_backup_that_reaches_a_takeover_ends_there_as_a_failure(tmp_path):
    # T = 8, the operator drives steps 4-5 and the episode succeeds; H = 2, n = 2.
    takeover = np.zeros(8, bool)
    takeover[4:6] = True
    episode = replace(indexed_episode(8, True), source="rollout", intervention=takeover)
    plain = replay_of(tmp_path / "a", [episode], chunk_len=2, n_step=2, discount=0.5).gather(np.arange(8))
    failure = replay_of(tmp_path / "b", [episode], chunk_len=2, n_step=2, discount=0.5, takeover_as_failure=True)
    batch = failure.gather(np.arange(8))
    # Steps 0-2 are policy backups cut at the takeover (step 4); step 3's first chunk already
    # holds an operator action, and the operator's own backups (steps 4, 5) are untouched.
    np.testing.assert_allclose(plain.done, [0, 0, 0, 0, 0, 0, 1, 1])
    np.testing.assert_allclose(batch.done, [1, 1, 1, 0, 0, 0, 1, 1])
    np.testing.assert_allclose(batch.next_obs[:, 0], plain.next_obs[:, 0])
    np.testing.assert_allclose(batch.reward, plain.reward)


def test_chunks_never_cross_into_the_next_episode(tmp_path):
    replay = replay_of(
        tmp_path, [indexed_episode(3, True, seq=0), indexed_episode(5, True, seq=1, offset=100)], chunk_len=4
    )
    last_of_first = replay.gather(np.array([2]))
    assert last_of_first.next_obs[0, 0] == 3  # s_T of the first episode, not the second's s_0
    np.testing.assert_array_equal(last_of_first.action_mask[0], [1, 0, 0, 0])
    np.testing.assert_allclose(last_of_first.actions[0, :, 0], [0.003] * 4)


def reference_chunk(episode, t, H, n, gamma, bootstrap_at_time_limit, takeover_as_failure=False):
    """A slow, literal reading of the definitions in lwd/data/replay.py."""
    T = episode.num_steps
    r = [0.0] * T
    if episode.success:
        r[T - 1] = 1.0
    L = n * H
    flags = episode.intervention
    same_control = next((j for j in range(t + 1, T) if flags[j] != flags[t]), T) - t
    steps = min(L, T - t, max(min(H, T - t), same_control))  # beyond one chunk, never across a takeover
    reward = sum(gamma**i * r[t + i] for i in range(steps))
    terminal = episode.success or not bootstrap_at_time_limit
    taken_over = not flags[t] and t + same_control < T and steps == same_control
    done = float((t + steps >= T and terminal) or (takeover_as_failure and taken_over))
    actions = [episode.actions[min(t + i, T - 1)] for i in range(H)]
    mask = [t + i < T for i in range(H)]
    return reward, episode.observations[t + steps], done, gamma**steps, np.stack(actions), mask


@settings(max_examples=60, deadline=None)
@given(
    lengths=st.lists(st.integers(1, 30), min_size=1, max_size=4),
    successes=st.lists(st.booleans(), min_size=4, max_size=4),
    H=st.integers(1, 8),
    n=st.integers(1, 4),
    gamma=st.floats(0.5, 1.0),
    bootstrap=st.booleans(),
    takeover_seed=st.integers(0, 2**16),
    takeover_as_failure=st.booleans(),
)
def test_chunks_match_the_slow_reference(
    tmp_path_factory, lengths, successes, H, n, gamma, bootstrap, takeover_seed, takeover_as_failure
):
    flags = np.random.default_rng(takeover_seed)
    episodes = [
        make_episode(
            seq=i,
            steps=T,
            success=successes[i],
            source="rollout",
            intervention=np.cumsum(flags.random(T) < 0.15) % 2 == 1,
        )  # a few takeovers
        for i, T in enumerate(lengths)
    ]
    replay = replay_of(
        tmp_path_factory.mktemp("store"),
        episodes,
        chunk_len=H,
        n_step=n,
        discount=gamma,
        bootstrap_at_time_limit=bootstrap,
        takeover_as_failure=takeover_as_failure,
    )
    batch = replay.gather(np.arange(replay.num_steps))
    row = 0
    for episode in episodes:
        for t in range(episode.num_steps):
            reward, next_obs, done, discount, actions, mask = reference_chunk(
                episode, t, H, n, gamma, bootstrap, takeover_as_failure
            )
            assert batch.reward[row] == pytest.approx(reward, rel=1e-5, abs=1e-6)
            np.testing.assert_array_equal(batch.next_obs[row], next_obs)
            assert batch.done[row] == done
            assert batch.discount[row] == pytest.approx(discount, rel=1e-5)
            np.testing.assert_array_equal(batch.actions[row], actions)
            np.testing.assert_array_equal(batch.action_mask[row], mask)
            np.testing.assert_array_equal(batch.obs[row], episode.observations[t])
            monte_carlo = sum(
                gamma**i * float(episode.success and t + i == episode.num_steps - 1)
                for i in range(episode.num_steps - t)
            )
            assert batch.return_to_go[row] == pytest.approx(monte_carlo, rel=1e-5, abs=1e-6)
            row += 1


def long_horizon_episode(stages: list[int], seq: int = 0):
    """An `lh` episode of len(stages) - 1 steps whose observation i encodes stage stages[i]."""
    episode = make_episode(seq=seq, steps=len(stages) - 1, task="lh-inspect", source="rollout")
    observations = episode.observations.copy()
    observations[:, METAWORLD_OBS_DIM:] = np.eye(MAX_STAGES, dtype=np.float32)[stages]
    return replace(episode, observations=observations)


def test_a_stage_reward_pays_each_completed_stage_before_the_last(tmp_path):
    # Step 2 completes stage 0, step 4 stage 1; the chain succeeds on its last step (5).
    episode = long_horizon_episode([0, 0, 0, 1, 1, 2, 2])
    sparse = replay_of(tmp_path / "a", [episode], chunk_len=1, discount=0.5).gather(np.arange(6))
    shaped = replay_of(tmp_path / "b", [episode], chunk_len=1, discount=0.5, stage_reward=0.25).gather(np.arange(6))
    np.testing.assert_allclose(sparse.reward, [0, 0, 0, 0, 0, 1])
    np.testing.assert_allclose(shaped.reward, [0, 0, 0.25, 0, 0.25, 1])
    np.testing.assert_allclose(sparse.return_to_go, [1 / 32, 1 / 16, 1 / 8, 1 / 4, 1 / 2, 1])
    # The Monte-Carlo return sums the stage rewards too: from step 1, 0.5 * 0.25 + 0.5**3 * 0.25 + 0.5**4.
    assert shaped.return_to_go[1] == pytest.approx(0.125 + 0.03125 + 0.0625)


@pytest.mark.parametrize("stage_reward", [-0.1, 1.5, float("nan")])
def test_a_stage_reward_outside_zero_to_one_is_refused(stage_reward):
    with pytest.raises(ValueError, match="stage_reward"):
        ReplayConfig(stage_reward=stage_reward)


def test_chunks_past_a_stage_end_imitate_the_next_stage_nothing_or_the_last_action(tmp_path):
    # Step 2's action ends stage 0 (s_3 is in stage 1), step 4's ends stage 1; H = 3.
    episode = long_horizon_episode([0, 0, 0, 1, 1, 2, 2])
    batches = {
        mode: replay_of(tmp_path / mode, [episode], chunk_len=3, stage_end_targets=mode).gather(np.arange(6))
        for mode in ("next", "mask", "hold")
    }
    executed = [[0, 1, 2], [1, 2, 3], [2, 3, 4], [3, 4, 5], [4, 5, 5], [5, 5, 5]]
    held = [[0, 1, 2], [1, 2, 2], [2, 2, 2], [3, 4, 4], [4, 4, 4], [5, 5, 5]]
    to_episode_end = [[1, 1, 1], [1, 1, 1], [1, 1, 1], [1, 1, 1], [1, 1, 0], [1, 0, 0]]
    to_stage_end = [[1, 1, 1], [1, 1, 0], [1, 0, 0], [1, 1, 0], [1, 0, 0], [1, 0, 0]]
    for mode, indices, mask in (
        ("next", executed, to_episode_end),
        ("mask", executed, to_stage_end),  # the critic still sees the executed actions
        ("hold", held, to_episode_end),
    ):
        np.testing.assert_array_equal(batches[mode].actions, episode.actions[indices], err_msg=mode)
        np.testing.assert_array_equal(batches[mode].action_mask, mask, err_msg=mode)
        np.testing.assert_array_equal(batches[mode].next_obs, batches["next"].next_obs, err_msg=mode)


@settings(max_examples=30, deadline=None)
@given(
    stage_lengths=st.lists(st.lists(st.integers(1, 6), min_size=1, max_size=MAX_STAGES), min_size=1, max_size=3),
    H=st.integers(1, 6),
)
def test_chunks_past_a_stage_end_follow_the_slow_reference(tmp_path_factory, stage_lengths, H):
    episodes = [
        long_horizon_episode([k for k, n in enumerate(lengths) for _ in range(n)] + [len(lengths) - 1], seq=i)
        for i, lengths in enumerate(stage_lengths)
    ]
    root = tmp_path_factory.mktemp("stores")
    masked = replay_of(root / "mask", episodes, chunk_len=H, stage_end_targets="mask")
    held = replay_of(root / "hold", episodes, chunk_len=H, stage_end_targets="hold")
    masked, held = (replay.gather(np.arange(replay.num_steps)) for replay in (masked, held))
    row = 0
    for episode in episodes:
        T, stage = episode.num_steps, np.argmax(episode.observations[:, METAWORLD_OBS_DIM:], axis=1)
        for t in range(T):
            stage_end = next((u for u in range(t + 1, T + 1) if stage[u] != stage[t]), T)
            in_stage = [t + i < stage_end for i in range(H)]
            np.testing.assert_array_equal(masked.action_mask[row], in_stage)
            np.testing.assert_array_equal(masked.actions[row], episode.actions[[min(t + i, T - 1) for i in range(H)]])
            np.testing.assert_array_equal(held.action_mask[row], [t + i < T for i in range(H)])
            np.testing.assert_array_equal(
                held.actions[row], episode.actions[[min(t + i, stage_end - 1) for i in range(H)]]
            )
            row += 1


def test_an_unknown_stage_end_target_is_refused():
    with pytest.raises(ValueError, match="stage_end_targets"):
        ReplayConfig(stage_end_targets="skip")


def test_sampling_does_not_touch_the_disk(tmp_path):
    replay = replay_of(tmp_path, [make_episode(seq=i, steps=20) for i in range(5)], chunk_len=4)
    for path in (tmp_path / "episodes").rglob("*.safetensors"):
        path.unlink()
    (tmp_path / "catalogue.sqlite").rename(tmp_path / "moved.sqlite")
    batch = replay.sample(256, np.random.default_rng(0))
    assert batch.obs.shape == (256, 39) and batch.actions.shape == (256, 4, 4)


def test_refresh_follows_committed_snapshots(tmp_path):
    store = EpisodeStore(tmp_path)
    replay = ChunkReplay(store, ReplayConfig())
    store.append(make_episode(seq=0, steps=5))
    store.append(make_episode(seq=1, steps=6))
    assert replay.refresh(up_to=1) == 1 and replay.num_steps == 5
    assert replay.refresh() == 1 and replay.num_steps == 11
    assert replay.refresh() == 0


@settings(max_examples=15, deadline=None)
@given(order=st.permutations(range(6)))
def test_the_same_episodes_fill_the_replay_alike_whatever_order_they_were_committed_in(tmp_path_factory, order):
    # Parallel collectors commit in the order they finish; a seed's batches must not depend on it.
    episodes = [
        indexed_episode(3 + k, k % 2 == 0, seq=k, task=("reach-v3", "push-v3")[k % 2], offset=100.0 * k)
        for k in range(6)
    ]
    replays = []
    for commit_order in (range(6), order):
        store = EpisodeStore(tmp_path_factory.mktemp("store"))
        for k in commit_order:
            store.append(episodes[k])  # one commit (snapshot) each, as separate collectors make
        replays.append(ChunkReplay(store, ReplayConfig(chunk_len=2)))
        replays[-1].refresh()
    a, b = (replay.sample(64, np.random.default_rng(7)) for replay in replays)
    np.testing.assert_array_equal(a.obs, b.obs)
    np.testing.assert_array_equal(a.actions, b.actions)
    np.testing.assert_array_equal(a.reward, b.reward)


def test_source_filter_keeps_only_that_source(tmp_path):
    store = EpisodeStore(tmp_path)
    store.append(make_episode(robot_id="d", steps=5, source="demo"))
    store.append(make_episode(robot_id="p", steps=9, source="play", success=False))
    replay = ChunkReplay(store, ReplayConfig(sources=("play",)))
    replay.refresh()
    assert replay.num_steps == 9


def test_mixed_replay_splits_the_batch_by_ratio(tmp_path):
    offline = replay_of(tmp_path / "off", [indexed_episode(50, True, task="reach-v3")], chunk_len=2)
    online = replay_of(tmp_path / "on", [indexed_episode(10, True, task="push-v3", source="rollout")], chunk_len=2)
    batch = MixedReplay([(offline, 1.0), (online, 1.0)]).sample(256, np.random.default_rng(0))
    tasks = np.array(batch.task_vocab)[batch.task_ids]
    assert (tasks == "reach-v3").sum() == 128 and (tasks == "push-v3").sum() == 128
    instructions = np.array(batch.instruction_vocab)[batch.instruction_ids]
    assert set(instructions[tasks == "push-v3"]) == {"Push the puck to the goal."}
    batch = MixedReplay([(offline, 3.0), (online, 1.0)]).sample(100, np.random.default_rng(0))
    assert (np.array(batch.task_vocab)[batch.task_ids] == "reach-v3").sum() == 75


def test_mixed_replay_gives_an_empty_part_share_to_the_rest(tmp_path):
    offline = replay_of(tmp_path / "off", [make_episode(steps=10)], chunk_len=2)
    online = ChunkReplay(EpisodeStore(tmp_path / "on"), ReplayConfig(chunk_len=2))
    assert len(MixedReplay([(offline, 1.0), (online, 1.0)]).sample(64, np.random.default_rng(0))) == 64


def test_task_balanced_sampling_equalises_tasks(tmp_path):
    episodes = [indexed_episode(190, True, seq=0, task="reach-v3"), indexed_episode(10, True, seq=1, task="push-v3")]
    plain = replay_of(tmp_path / "a", episodes).sample(4000, np.random.default_rng(0))
    balanced = replay_of(tmp_path / "b", episodes, task_balanced=True).sample(4000, np.random.default_rng(0))
    push_plain = np.mean(np.array(plain.task_vocab)[plain.task_ids] == "push-v3")
    push_balanced = np.mean(np.array(balanced.task_vocab)[balanced.task_ids] == "push-v3")
    assert push_plain < 0.08 and 0.45 < push_balanced < 0.55


def test_recency_weighting_draws_its_share_from_the_newest_steps(tmp_path):
    episodes = [indexed_episode(100, True, seq=i, offset=1000.0 * i) for i in range(10)]  # 1,000 steps
    batch = replay_of(tmp_path, episodes, recent_fraction=0.5, recent_steps=100).sample(4000, np.random.default_rng(0))
    newest = batch.obs[:, 0] >= 9000.0  # observations of the last episode, the newest 100 steps
    # half drawn from the window, the other half uniformly (a tenth of which lands there too)
    assert 0.5 + 0.5 * 0.1 - 0.03 < newest.mean() < 0.5 + 0.5 * 0.1 + 0.03


@pytest.mark.parametrize("balanced", [True, False])
def test_no_recency_weighting_leaves_batches_and_the_random_stream_as_they_were(tmp_path, balanced):
    # Pinned from the sampler before recency weighting existed (067355c): same store, same seed.
    before = {
        True: ([109, 43, 47, 15, 223, 111, 139, 301], 420),
        False: ([312, 17, 35, 47, 36, 310, 323, 216], 39),
    }
    episodes = [
        indexed_episode(50, True, seq=i, task=("reach-v3", "push-v3")[i % 2], offset=100.0 * i) for i in range(4)
    ]
    rng = np.random.default_rng(3)
    batch = replay_of(tmp_path, episodes, task_balanced=balanced, recent_fraction=0.0).sample(8, rng)
    assert (batch.obs[:, 0].tolist(), int(rng.integers(1000))) == before[balanced]


@pytest.mark.parametrize("fraction, steps", [(-0.1, 10), (1.5, 10), (0.5, 0)])
def test_recency_weighting_refuses_impossible_settings(fraction, steps):
    with pytest.raises(ValueError, match="recent_fraction"):
        ReplayConfig(recent_fraction=fraction, recent_steps=steps)


def _imitation_episodes():
    takeover = np.zeros(10, bool)
    takeover[4:7] = True
    return [
        make_episode(seq=0, steps=10, source="demo", success=False),  # a demo: all imitable
        make_episode(seq=1, steps=10, source="rollout", success=True),  # autonomous success: all imitable
        make_episode(seq=2, steps=10, source="rollout", success=False, intervention=takeover),  # only steps 4-6
        make_episode(seq=3, steps=10, source="rollout", success=True, intervention=takeover),  # only steps 4-6
        make_episode(seq=4, steps=10, source="play", success=False),  # nothing
    ]


def _imitation_store(tmp_path):
    return replay_of(tmp_path, _imitation_episodes(), chunk_len=3, imitation_only=True)


def test_imitation_only_samples_demos_autonomous_successes_and_operator_steps(tmp_path):
    replay = _imitation_store(tmp_path)
    assert replay.num_sampleable == 10 + 10 + 3 + 3
    starts = np.unique(replay._sample_steps(2_000, np.random.default_rng(0)))
    expected = np.concatenate([np.arange(20), 20 + np.arange(4, 7), 30 + np.arange(4, 7)])
    np.testing.assert_array_equal(starts, expected)


def test_completed_corrections_drop_only_operator_steps_of_an_unfinished_stage(tmp_path):
    # One-task episodes: the failure's correction (episode 2, steps 4-6) finishes nothing; the
    # success's (episode 3), the demo and the autonomous success stay imitable.
    episodes = _imitation_episodes()
    every = replay_of(tmp_path / "all", episodes, chunk_len=3, imitation_only=True)
    completed = replay_of(
        tmp_path / "completed", episodes, chunk_len=3, imitation_only=True, imitable_corrections="completed"
    )
    assert every.num_sampleable == 10 + 10 + 3 + 3
    finished = np.concatenate([np.arange(20), 30 + np.arange(4, 7)])
    np.testing.assert_array_equal(np.flatnonzero(completed._imitable.view), finished)
    np.testing.assert_array_equal(np.unique(completed._sample_steps(2_000, np.random.default_rng(0))), finished)
    # A failed chain: the operator drives steps 1-2 in stage 0, which step 2 finishes, and steps 4-5
    # in stage 1, which the chain never finishes.
    chain = replace(
        long_horizon_episode([0, 0, 0, 1, 1, 1, 1]), success=False, intervention=np.array([0, 1, 1, 0, 1, 1], bool)
    )
    chains = replay_of(tmp_path / "chain", [chain], chunk_len=3, imitable_corrections="completed")
    np.testing.assert_array_equal(np.flatnonzero(chains._imitable.view), [1, 2])


def test_unknown_imitable_corrections_are_refused():
    with pytest.raises(ValueError, match="imitable_corrections"):
        ReplayConfig(imitable_corrections="some")


def test_imitation_only_masks_the_policy_actions_after_a_takeover(tmp_path):
    replay = _imitation_store(tmp_path)
    batch = replay.gather(np.array([24, 25, 26, 5]))  # takeover steps 4, 5, 6 of episode 2; a demo step
    np.testing.assert_array_equal(batch.action_mask, [[1, 1, 1], [1, 1, 0], [1, 0, 0], [1, 1, 1]])
    assert batch.intervention[:3, 0].all()


def test_one_imitable_only_batch_from_a_plain_replay_equals_an_imitation_only_replays(tmp_path):
    # The learned prior's own batch (prior_data="hg-dagger") comes from the replay LWD samples anyway.
    imitation = _imitation_store(tmp_path / "a")
    plain = replay_of(tmp_path / "b", _imitation_episodes(), chunk_len=3)
    assert plain.num_sampleable == 50 and plain.num_sampleable_steps(imitable_only=True) == imitation.num_sampleable
    expected = imitation.sample(64, np.random.default_rng(5))
    got = plain.sample(64, np.random.default_rng(5), imitable_only=True)
    np.testing.assert_array_equal(got.obs, expected.obs)
    np.testing.assert_array_equal(got.action_mask, expected.action_mask)
    assert not (got.action_mask & ~got.imitable).any()
    assert plain.sample(64, np.random.default_rng(5)).action_mask.sum() > got.action_mask.sum()  # the usual batch


def test_imitable_only_batches_balance_tasks_over_their_imitable_steps(tmp_path):
    # reach: 100 steps, all imitable; push: 100 steps of which only 10 (one success) are imitable.
    episodes = [
        indexed_episode(100, True, seq=0, task="reach-v3", source="rollout"),
        indexed_episode(90, False, seq=1, task="push-v3", source="rollout"),
        indexed_episode(10, True, seq=2, task="push-v3", source="rollout"),
    ]
    replay = replay_of(tmp_path, episodes, task_balanced=True)
    shared = replay.sample(4000, np.random.default_rng(0))
    own = replay.sample(4000, np.random.default_rng(0), imitable_only=True)

    def imitable_push_share(batch):
        push = np.array(batch.task_vocab)[batch.task_ids] == "push-v3"
        rows = batch.imitable.any(axis=1)
        return np.mean(push[rows])

    assert imitable_push_share(shared) < 0.15  # push's imitable rows, diluted by its failures
    assert 0.45 < imitable_push_share(own) < 0.55


def test_mixed_replay_gives_a_part_without_imitable_steps_share_to_the_rest(tmp_path):
    offline = replay_of(tmp_path / "off", [make_episode(steps=10)], chunk_len=2)  # a demo
    online = replay_of(tmp_path / "on", [make_episode(steps=10, source="rollout", success=False)], chunk_len=2)
    mix = MixedReplay([(offline, 1.0), (online, 3.0)])
    assert mix.sample(64, np.random.default_rng(0), imitable_only=True).imitable[:, 0].all()
    with pytest.raises(ValueError, match="imitable"):
        MixedReplay([(online, 1.0)]).sample(8, np.random.default_rng(0), imitable_only=True)


def test_learner_batches_hold_an_imitable_batch_only_when_wanted_and_there_is_one(tmp_path):
    offline = replay_of(tmp_path / "off", [make_episode(steps=10)], chunk_len=2)  # a demo
    online = replay_of(tmp_path / "on", [make_episode(steps=10, source="rollout", success=False)], chunk_len=2)
    batch, own = sample_learner_batches(
        MixedReplay([(offline, 1.0), (online, 3.0)]), 16, np.random.default_rng(0), True
    )
    assert len(batch) == 16 and own is not None and own.imitable[:, 0].all()
    assert sample_learner_batches(offline, 16, np.random.default_rng(0), False)[1] is None
    # A fleet with no imitable step yet: the prior waits rather than the learner failing.
    batch, own = sample_learner_batches(online, 16, np.random.default_rng(0), True)
    assert len(batch) == 16 and own is None


def test_imitation_only_replay_without_imitable_steps_says_so(tmp_path):
    replay = replay_of(tmp_path, [make_episode(steps=5, source="play", success=False)], imitation_only=True)
    with pytest.raises(ValueError, match="imitable"):
        replay.sample(4, np.random.default_rng(0))
