"""Replays that hold camera frames: batches carry the frames of s_t and of next_obs, side by
side per camera, from memory, within the configured memory budget."""

from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lwd.data.replay import ChunkReplay, MixedReplay, ReplayConfig
from lwd.data.store import EpisodeStore
from lwd.envs.cameras import PROPRIO_DIM
from tests.conftest import make_episode


def framed_episode(seq: int, steps: int, side: int = 4):
    """Observation i holds 1000 * seq + i; every pixel of frame i of camera c holds (seq * 50 + i + c) % 256."""
    episode = make_episode(seq=seq, steps=steps, cameras=("scene", "gripper"), image_size=side, obs_dim=PROPRIO_DIM)
    obs = np.repeat(1000.0 * seq + np.arange(steps + 1, dtype=np.float32)[:, None], PROPRIO_DIM, axis=1)
    frames = {
        name: np.broadcast_to(
            ((seq * 50 + np.arange(steps + 1) + c) % 256).astype(np.uint8)[:, None, None, None],
            (steps + 1, side, side, 3),
        ).copy()
        for c, name in enumerate(("scene", "gripper"))
    }
    return replace(episode, observations=obs, frames=frames)


def image_replay(path, episodes, **config):
    store = EpisodeStore(path)
    store.append_many(episodes)
    replay = ChunkReplay(store, ReplayConfig(image_cameras=("scene", "gripper"), **config))
    replay.refresh()
    return replay


@settings(max_examples=15, deadline=None)
@given(
    lengths=st.lists(st.integers(1, 15), min_size=1, max_size=4),
    chunk_len=st.integers(1, 4),
    n_step=st.integers(1, 3),
    seed=st.integers(0, 1000),
)
def test_batch_images_are_the_frames_of_obs_and_next_obs(tmp_path_factory, lengths, chunk_len, n_step, seed):
    episodes = [framed_episode(seq, steps) for seq, steps in enumerate(lengths)]
    replay = image_replay(tmp_path_factory.mktemp("store"), episodes, chunk_len=chunk_len, n_step=n_step)
    batch = replay.sample(64, np.random.default_rng(seed))
    assert batch.images.shape == (64, 4, 8, 3) and batch.images.dtype == np.uint8
    for name, rows, images in (("obs", batch.obs, batch.images), ("next", batch.next_obs, batch.next_images)):
        seq, step = np.divmod(rows[:, 0].astype(np.int64), 1000)
        scene = (seq * 50 + step) % 256
        np.testing.assert_array_equal(images[:, 0, 0, 0], scene, err_msg=name)  # left half: scene
        np.testing.assert_array_equal(images[:, 0, 4, 0], (scene + 1) % 256, err_msg=name)  # right half: gripper


def test_image_batches_come_from_memory(tmp_path):
    replay = image_replay(tmp_path, [framed_episode(i, 20) for i in range(3)], chunk_len=4)
    for path in (tmp_path / "episodes").rglob("*.safetensors"):
        path.unlink()
    (tmp_path / "catalogue.sqlite").rename(tmp_path / "moved.sqlite")
    batch = replay.sample(32, np.random.default_rng(0))
    assert batch.images.shape == (32, 4, 8, 3)


ROW_BYTES = 64 * 128 * 3  # one step of two 64x64 cameras side by side


def test_a_full_image_budget_evicts_the_oldest_episodes_whole(tmp_path):
    # 51 rows of 24 KiB each (1.2 MiB) per episode; 2.5 MiB hold 106 rows: the third episode
    # overwrites the first one's frames, so the first one is no longer sampled at all.
    episodes = [framed_episode(i, 50, side=64) for i in range(3)]
    replay = image_replay(tmp_path, episodes, image_memory_mb=2.5, chunk_len=3, n_step=2)
    assert replay.image_bytes <= 2.5 * 2**20
    assert replay.evicted_episodes == 1 and replay.num_sampleable == 100
    batch = replay.sample(512, np.random.default_rng(0))
    seq, step = np.divmod(batch.obs[:, 0].astype(np.int64), 1000)
    assert set(seq.tolist()) == {1, 2}
    next_seq, next_step = np.divmod(batch.next_obs[:, 0].astype(np.int64), 1000)
    np.testing.assert_array_equal(batch.images[:, 0, 0, 0], (seq * 50 + step) % 256)
    np.testing.assert_array_equal(batch.next_images[:, 0, 64, 0], (next_seq * 50 + next_step + 1) % 256)


def test_image_memory_stays_within_the_budget_as_episodes_keep_coming(tmp_path):
    store = EpisodeStore(tmp_path)
    replay = ChunkReplay(store, ReplayConfig(image_cameras=("scene", "gripper"), image_memory_mb=1.0))
    for seq in range(12):  # 12 x 21 rows; the budget holds 42 rows: the newest two episodes
        store.append(framed_episode(seq, 20, side=64))
        replay.refresh()
        assert replay.image_bytes <= 2**20
    assert replay.evicted_episodes == 10 and replay.num_episodes == 12
    seq = replay.sample(256, np.random.default_rng(1)).obs[:, 0] // 1000
    assert set(seq.astype(int).tolist()) == {10, 11}


def test_evicted_steps_leave_the_imitable_and_task_balanced_sampling(tmp_path):
    episodes = [framed_episode(i, 50, side=64) for i in range(3)]  # make_episode: demos, all imitable
    for config in ({"imitation_only": True}, {"task_balanced": True}, {}):
        replay = image_replay(tmp_path / str(config), episodes, image_memory_mb=2.5, **config)
        assert replay.num_sampleable == 100 and replay.num_sampleable_steps(imitable_only=True) == 100
        for imitable_only in (False, True):  # the learned prior's own batch too (prior_data="hg-dagger")
            batch = replay.sample(256, np.random.default_rng(2), imitable_only=imitable_only)
            seq = batch.obs[:, 0] // 1000
            assert 0 not in seq.astype(int).tolist()
            np.testing.assert_array_equal(batch.images[:, 0, 0, 0], (seq * 50 + batch.obs[:, 0] % 1000) % 256)


def test_recency_weighting_never_draws_an_evicted_step(tmp_path):
    # A window (1,000 steps) larger than what the budget keeps live (the newest 100 steps).
    episodes = [framed_episode(i, 50, side=64) for i in range(3)]
    replay = image_replay(tmp_path, episodes, image_memory_mb=2.5, recent_fraction=1.0, recent_steps=1_000)
    assert replay.evicted_episodes == 1
    seq = replay.sample(512, np.random.default_rng(0)).obs[:, 0] // 1000
    assert set(seq.astype(int).tolist()) == {1, 2}


def test_gathering_an_evicted_step_is_refused(tmp_path):
    replay = image_replay(tmp_path, [framed_episode(i, 50, side=64) for i in range(3)], image_memory_mb=2.5)
    with pytest.raises(ValueError, match="evicted by the image budget"):
        replay.gather(np.array([0, 60]))


def test_an_episode_larger_than_the_whole_budget_is_refused_with_the_numbers(tmp_path):
    with pytest.raises(ValueError, match=r"alone has 1.2 MiB of frames, over the replay's image_memory_mb=1"):
        image_replay(tmp_path, [framed_episode(0, 50, side=64)], image_memory_mb=1.0)


def test_a_refresh_retried_after_failing_part_way_adds_each_episode_once(tmp_path):
    store = EpisodeStore(tmp_path)
    store.append_many([framed_episode(i, 5) for i in range(3)])
    replay = ChunkReplay(store, ReplayConfig(image_cameras=("scene", "gripper")))
    seen = []

    def fail_once(episode):
        seen.append(episode.episode_id)
        if len(seen) == 1:
            raise RuntimeError("metrics sink down")

    with pytest.raises(RuntimeError, match="metrics sink down"):
        replay.refresh(on_episode=fail_once)
    assert replay.num_episodes == 1
    assert replay.refresh(on_episode=fail_once) == 2
    assert replay.num_episodes == 3 and replay.num_steps == 15 and len(set(seen)) == 3 == len(seen)
    assert replay.refresh() == 0


def test_an_episode_without_the_cameras_is_refused_by_name(tmp_path):
    with pytest.raises(ValueError, match="has frames of \\[\\] but this replay needs cameras"):
        image_replay(tmp_path, [make_episode()])


def test_a_replay_without_image_cameras_carries_no_images(tmp_path):
    store = EpisodeStore(tmp_path)
    store.append(framed_episode(0, 10))
    replay = ChunkReplay(store, ReplayConfig())
    replay.refresh()
    batch = replay.sample(8, np.random.default_rng(0))
    assert batch.images is None and batch.next_images is None and replay.image_bytes == 0


def test_mixed_replays_concatenate_their_images(tmp_path):
    first = image_replay(tmp_path / "a", [framed_episode(0, 10)])
    second = image_replay(tmp_path / "b", [framed_episode(1, 10)])
    batch = MixedReplay([(first, 1.0), (second, 1.0)]).sample(10, np.random.default_rng(0))
    assert batch.images.shape == (10, 4, 8, 3) and batch.next_images.shape == (10, 4, 8, 3)
