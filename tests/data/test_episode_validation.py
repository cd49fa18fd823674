"""Every malformed episode is refused with a message naming the problem, and the store
is left exactly as it was."""

from dataclasses import replace

import numpy as np
import pytest

from lwd.data.episode import EpisodeValidationError, decode, encode
from lwd.data.store import EpisodeStore
from lwd.envs.phrasings import task_phrasings
from lwd.envs.tasks import SEEDS
from tests.conftest import make_episode


def _nan_obs():
    ep = make_episode()
    obs = ep.observations.copy()
    obs[2, 5] = np.nan
    return replace(ep, observations=obs)


def _inf_action():
    ep = make_episode()
    act = ep.actions.copy()
    act[1, 0] = np.inf
    return replace(ep, actions=act)


CASES = {
    "wrong observation width": (
        lambda: replace(make_episode(), observations=np.zeros((8, 38), np.float32)),
        "observations has shape",
    ),
    "observations not T+1 long": (
        lambda: replace(make_episode(), observations=np.zeros((7, 39), np.float32)),
        "observations has shape",
    ),
    "wrong action width": (lambda: replace(make_episode(), actions=np.zeros((7, 3), np.float32)), "actions has shape"),
    "NaN observation": (_nan_obs, r"observations contains NaN or inf \(first at index \(2, 5\)\)"),
    "inf action": (_inf_action, "actions contains NaN or inf"),
    "action out of range": (
        lambda: replace(make_episode(), actions=np.full((7, 4), 1.5, np.float32)),
        r"actions must lie in \[-1, 1\]",
    ),
    "unknown task": (
        lambda: replace(make_episode(), task="reach-v4"),
        "unknown task 'reach-v4'; did you mean 'reach-v3'",
    ),
    "missing actions": (lambda: replace(make_episode(), actions=None), "missing field 'actions'"),
    "missing instruction": (lambda: replace(make_episode(), instruction=None), "missing field 'instruction'"),
    "empty episode": (lambda: replace(make_episode(), actions=np.zeros((0, 4), np.float32)), "T >= 1"),
    "unknown source": (lambda: replace(make_episode(), source="teleop"), "source 'teleop' is not one of"),
    "bad robot id": (lambda: replace(make_episode(), robot_id="../etc"), "robot_id"),
    "negative seq": (lambda: replace(make_episode(), seq=-1), "seq must be a non-negative integer"),
    "intervention not bool": (
        lambda: replace(make_episode(), intervention=np.zeros(7, np.int32)),
        "intervention must be bool",
    ),
    "interventions in a demo": (lambda: make_episode(intervention=np.ones(7, bool)), "is a 'rollout', not 'demo'"),
    "successful play": (lambda: make_episode(source="play", success=True), "play data is labelled as a failure"),
    "evaluation seed": (lambda: make_episode(seed=SEEDS.eval(0)), "is an evaluation seed"),
    "validation seed": (lambda: make_episode(seed=SEEDS.validation(0)), "is a validation seed"),
    "held-out phrasing": (
        lambda: replace(make_episode(), instruction="Could you touch the target spot?"),
        "is a held-out phrasing of 'reach-v3'",
    ),
    "another task's phrasing": (
        lambda: replace(make_episode(seed=None), instruction="Open the drawer."),
        "is a phrasing of task 'drawer-open-v3', not of 'reach-v3'",
    ),
    "free text from a simulated robot": (
        lambda: replace(make_episode(), instruction="reach goal pls"),
        "is not a training phrasing of 'reach-v3'",
    ),
    "list instead of array": (
        lambda: replace(make_episode(), timestamps=[0.0] * 7),
        "timestamps must be a numpy array",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_malformed_episode_is_refused_and_store_untouched(tmp_path, case):
    build, message = CASES[case]
    store = EpisodeStore(tmp_path)
    store.append(make_episode(robot_id="good", seq=0))
    before = sorted(p.name for p in tmp_path.rglob("*") if p.is_file() and "catalogue" not in p.name)
    with pytest.raises(EpisodeValidationError, match=message):
        store.append(build())
    assert [r.episode_id for r in store.records()] == ["good/0000000000"]
    assert store.latest_snapshot() == 1
    after = sorted(p.name for p in tmp_path.rglob("*") if p.is_file() and "catalogue" not in p.name)
    assert after == before


def test_any_training_phrasing_is_accepted_and_hardware_robots_may_word_freely(tmp_path):
    store = EpisodeStore(tmp_path)
    for seq, text in enumerate(task_phrasings("reach-v3").train):
        store.append(replace(make_episode(seq=seq), instruction=text))
    # No seed: a real robot, worded by a person; the store keeps it as language to learn from.
    store.append(replace(make_episode(seq=99, seed=None), instruction="Tap the green target with your fingers."))
    assert len(store.records()) == len(task_phrasings("reach-v3").train) + 1


def test_file_without_a_required_tensor_is_refused_with_its_origin():
    from safetensors.numpy import load, save

    data, _ = encode(make_episode())
    tensors = load(data)
    del tensors["actions"]
    header_len = int.from_bytes(data[:8], "little")
    import json

    metadata = json.loads(data[8 : 8 + header_len])["__metadata__"]
    with pytest.raises(EpisodeValidationError, match=r"incoming\.safetensors: episode file lacks 'actions'"):
        decode(save(tensors, metadata=metadata), "incoming.safetensors")


def test_garbage_bytes_are_refused_with_their_origin():
    with pytest.raises(EpisodeValidationError, match="upload-17: not a readable lwd episode file"):
        decode(b"\x00" * 64, "upload-17")


def test_valid_episode_round_trips_through_bytes():
    episode = make_episode(steps=5)
    data, _ = encode(episode)
    back = decode(data, "mem")
    np.testing.assert_array_equal(back.observations, episode.observations)
    assert back.instruction == episode.instruction
