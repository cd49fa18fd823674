"""The wire format on its own: round trips, and the decoders' hard limits."""

import msgpack
import numpy as np
import pytest

from lwd.data.episode import content_digest
from lwd.gateway.wire import (
    MAX_STATE_DIM,
    ActRequest,
    ActResponse,
    WireError,
    decode_act_request,
    decode_act_response,
    decode_episode,
    encode_act_request,
    encode_act_response,
    encode_episode,
    pack_array,
    unpack_array,
)
from tests.conftest import make_episode


def test_an_episode_round_trips_through_its_upload_body():
    episode = make_episode("robot-a", 3, steps=12, source="rollout", intervention=np.arange(12) == 4, version=7)
    assert content_digest(decode_episode(encode_episode(episode))) == content_digest(episode)


def test_an_episode_with_frames_round_trips_through_its_upload_body():
    from lwd.envs.cameras import PROPRIO_DIM

    episode = make_episode("robot-a", 3, cameras=("scene", "gripper"), obs_dim=PROPRIO_DIM)
    back = decode_episode(encode_episode(episode))
    assert content_digest(back) == content_digest(episode)
    np.testing.assert_array_equal(back.frames["gripper"], episode.frames["gripper"])


def _with_tensor(body: bytes, name: str, array: np.ndarray) -> bytes:
    import json

    from safetensors.numpy import load, save

    header_len = int.from_bytes(body[:8], "little")
    metadata = json.loads(body[8 : 8 + header_len])["__metadata__"]
    return save({**load(body), name: array}, metadata=metadata)


def test_frame_tensors_of_the_wrong_dtype_or_undescribed_are_bad_episodes():
    body = encode_episode(make_episode("robot-a", 3, cameras=("scene",)))
    with pytest.raises(WireError, match="tensor frames.scene must have dtype U8") as err:
        decode_episode(_with_tensor(body, "frames.scene", np.zeros(10, np.float32)))
    assert err.value.code == "bad_episode"
    with pytest.raises(WireError, match="without a 'frames' description") as err:
        decode_episode(_with_tensor(encode_episode(make_episode("robot-a", 3)), "frames.top", np.zeros(10, np.uint8)))
    assert err.value.code == "bad_episode"


def test_a_frame_blob_that_inflates_past_its_shape_is_refused():
    import zlib

    body = encode_episode(make_episode("robot-a", 3, cameras=("scene",)))
    bomb = np.frombuffer(zlib.compress(bytes(32 * 2**20), 9), np.uint8)
    with pytest.raises(WireError, match="do not inflate to exactly their declared shape") as err:
        decode_episode(_with_tensor(body, "frames.scene", bomb))
    assert err.value.code == "bad_episode"


def test_act_messages_round_trip_with_frames_and_a_pinned_version():
    frames = {"wrist": np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)}
    request = decode_act_request(encode_act_request(ActRequest("id-1", np.arange(39.0), "do it", frames, version=4)))
    assert request.state.dtype == np.float32 and np.array_equal(request.state, np.arange(39.0))
    assert np.array_equal(request.frames["wrist"], frames["wrist"]) and request.version == 4
    actions = np.linspace(-1, 1, 20, dtype=np.float32).reshape(5, 4)
    response = decode_act_response(encode_act_response(ActResponse("id-1", 4, actions, 3)))
    assert np.array_equal(response.actions, actions) and (response.version, response.batch_size) == (4, 3)


@pytest.mark.parametrize("dtype", ["float32", "float64", "uint8", "int32", "int64", "bool"])
def test_every_whitelisted_dtype_round_trips(dtype):
    array = (np.arange(6) % 2).astype(dtype).reshape(2, 3)
    back = unpack_array(pack_array(array), "x", max_elements=10)
    assert back.dtype == array.dtype and np.array_equal(back, array)


def test_arrays_over_the_element_limit_are_refused_before_they_are_read():
    huge = {"dtype": "float32", "shape": [MAX_STATE_DIM + 1], "data": b""}
    with pytest.raises(WireError, match="elements") as err:
        unpack_array(huge, "state", max_elements=MAX_STATE_DIM)
    assert err.value.code == "bad_array"


def test_an_oversized_container_is_refused_by_the_msgpack_limits():
    body = msgpack.packb({"wire": 1, "request_id": "r", "pad": list(range(5000))})
    with pytest.raises(WireError) as err:
        decode_act_request(body)
    assert err.value.code == "bad_msgpack"
