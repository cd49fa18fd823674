"""Camera frames in episodes: validated, stored losslessly and compressed, covered by the
content digest; frame-less episodes are written exactly as before frames existed."""

import json
import zlib
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lwd.data.episode import (
    MAX_FRAME_BYTES_PER_EPISODE,
    EpisodeValidationError,
    content_digest,
    decode,
    encode,
    validate,
)
from lwd.data.store import EpisodeStore
from lwd.envs.cameras import PROPRIO_DIM
from tests.conftest import make_episode


@settings(max_examples=25, deadline=None)
@given(
    steps=st.integers(1, 12),
    cameras=st.lists(st.sampled_from(["scene", "gripper", "top", "wrist_2"]), min_size=1, max_size=3, unique=True),
    side=st.integers(1, 16),
    rng_seed=st.integers(0, 2**16),
)
def test_frames_round_trip_bit_exact_through_the_file(steps, cameras, side, rng_seed):
    episode = make_episode(steps=steps, cameras=tuple(cameras), image_size=side, rng_seed=rng_seed)
    data, digest = encode(episode)
    back = decode(data, "mem")
    assert sorted(back.frames) == sorted(cameras)
    for camera in cameras:
        assert back.frames[camera].dtype == np.uint8
        np.testing.assert_array_equal(back.frames[camera], episode.frames[camera])
    assert content_digest(back) == digest == content_digest(episode)


@settings(max_examples=25, deadline=None)
@given(rng_seed=st.integers(0, 2**16), step=st.integers(0, 5), channel=st.integers(0, 2))
def test_the_digest_changes_when_any_pixel_changes(rng_seed, step, channel):
    episode = make_episode(steps=5, cameras=("scene",), rng_seed=rng_seed)
    frames = episode.frames["scene"].copy()
    frames[step, 3, 4, channel] ^= 1
    assert content_digest(replace(episode, frames={"scene": frames})) != content_digest(episode)


def test_a_frameless_episode_is_written_exactly_as_before_frames_existed():
    """Old catalogues hold digests of files written without a frames field: both must not move."""
    from safetensors.numpy import save

    from lwd.data.episode import episode_metadata, episode_tensors

    episode = make_episode()
    data, digest = encode(episode)
    meta = episode_metadata(episode)
    assert "frames" not in meta
    assert data == save(episode_tensors(episode), metadata={"lwd_episode": json.dumps(meta, sort_keys=True)})
    assert decode(data, "old file").frames == {}
    # The digest as it was computed before frames existed.
    import hashlib

    before = hashlib.sha256(json.dumps(meta, sort_keys=True).encode())
    for name, array in sorted(episode_tensors(episode).items()):
        before.update(name.encode())
        before.update(array.tobytes())
    assert digest == before.hexdigest()


def test_frames_are_compressed_in_the_file():
    # Smooth frames like a camera's (not random noise) compress; the file is far below raw size.
    episode = make_episode(steps=20, cameras=("scene",), image_size=32)
    ramp = np.broadcast_to(np.arange(32, dtype=np.uint8)[None, None, :, None] * 8, (21, 32, 32, 3))
    episode = replace(episode, frames={"scene": np.ascontiguousarray(ramp)})
    data, _ = encode(episode)
    assert len(data) < ramp.nbytes / 4


FRAME_CASES = {
    "float frames": (lambda e: {"scene": e.frames["scene"].astype(np.float32)}, "must be uint8"),
    "grey frames": (lambda e: {"scene": e.frames["scene"][..., 0]}, r"expected \(8, H, W, 3\)"),
    "one frame short": (lambda e: {"scene": e.frames["scene"][:-1]}, r"expected \(8, H, W, 3\)"),
    "bad camera name": (lambda e: {"../scene": e.frames["scene"]}, "camera name '../scene' must match"),
    "not an array": (lambda e: {"scene": e.frames["scene"].tolist()}, "must be a numpy array"),
    "too many cameras": (lambda e: {f"cam{i}": e.frames["scene"] for i in range(9)}, "at most 8 are accepted"),
}


@pytest.mark.parametrize("case", sorted(FRAME_CASES))
def test_malformed_frames_are_refused_and_the_store_is_untouched(tmp_path, case):
    build, message = FRAME_CASES[case]
    store = EpisodeStore(tmp_path)
    store.append(make_episode(robot_id="good", cameras=("scene",)))
    episode = make_episode(seq=1, cameras=("scene",))
    with pytest.raises(EpisodeValidationError, match=message):
        store.append(replace(episode, frames=build(episode)))
    assert [r.episode_id for r in store.records()] == ["good/0000000000"]


def test_an_episode_over_the_frame_size_limit_is_refused():
    side = 1024
    rows = MAX_FRAME_BYTES_PER_EPISODE // (side * side * 3) + 1
    frames = np.broadcast_to(np.zeros((1, side, side, 3), np.uint8), (rows, side, side, 3))
    episode = make_episode(steps=rows - 1, cameras=())
    with pytest.raises(EpisodeValidationError, match="MiB an episode may hold"):
        validate(replace(episode, frames={"scene": frames}))


def test_proprio_observations_are_accepted_only_with_frames():
    validate(make_episode(cameras=("scene",), obs_dim=PROPRIO_DIM))
    with pytest.raises(EpisodeValidationError, match="observations has shape"):
        validate(make_episode(obs_dim=PROPRIO_DIM))


def _rewrite(data: bytes, change) -> bytes:
    from safetensors.numpy import load, save

    tensors = load(data)
    header_len = int.from_bytes(data[:8], "little")
    meta = json.loads(json.loads(data[8 : 8 + header_len])["__metadata__"]["lwd_episode"])
    change(tensors, meta)
    return save(tensors, metadata={"lwd_episode": json.dumps(meta)})


def test_a_frame_blob_that_inflates_past_its_declared_shape_is_refused_without_inflating_it():
    episode = make_episode(cameras=("scene",))
    bomb = np.frombuffer(zlib.compress(bytes(64 * 2**20), 9), np.uint8)  # 64 MiB of zeros in ~64 KB

    def swap(tensors, meta):
        tensors["frames.scene"] = bomb

    with pytest.raises(EpisodeValidationError, match="do not inflate to exactly their declared shape"):
        decode(_rewrite(encode(episode)[0], swap), "upload-3")


def test_frame_tensors_and_their_description_must_agree():
    data = encode(make_episode(cameras=("scene",)))[0]

    def drop_description(tensors, meta):
        del meta["frames"]

    def wrong_shape(tensors, meta):
        meta["frames"]["shapes"]["scene"] = [8, 8, 8, 4]

    with pytest.raises(EpisodeValidationError, match="without a 'frames' description"):
        decode(_rewrite(data, drop_description), "f")
    with pytest.raises(EpisodeValidationError, match="not \\[T\\+1, H, W, 3\\]"):
        decode(_rewrite(data, wrong_shape), "f")


def test_a_corrupt_frame_blob_in_the_store_is_skipped_as_damaged(tmp_path):
    store = EpisodeStore(tmp_path)
    store.append(make_episode(cameras=("scene",)))
    (record,) = store.records()
    path = tmp_path / record.path
    raw = bytearray(path.read_bytes())
    header_len = int.from_bytes(raw[:8], "little")
    start, end = json.loads(raw[8 : 8 + header_len])["frames.scene"]["data_offsets"]
    raw[8 + header_len + (start + end) // 2] ^= 0xFF  # inside the compressed frames
    path.write_bytes(bytes(raw))
    skipped = []
    assert list(store.load_many([record], skipped)) == []
    assert len(skipped) == 1
