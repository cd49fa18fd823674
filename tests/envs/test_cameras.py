"""Camera frames, frame checks and the proprio-only observation of the simulated robots."""

from __future__ import annotations

import numpy as np
import pytest

from lwd.envs import SEEDS, SensorConfig, make_expert, make_robot
from lwd.envs.cameras import PROPRIO_DIM, BadFrameError, FrameMonitor, is_black
from lwd.envs.operator import NoisyExpertActor
from lwd.envs.robot import expert_state
from lwd.envs.tasks import METAWORLD_OBS_DIM

SIZE = 48  # not the default, so a renderer that ignores the configured size fails


@pytest.fixture(scope="module")
def seeing_robot():
    robot = make_robot("pick-place-v3", sensors=SensorConfig(cameras=("scene", "gripper"), image_size=SIZE))
    yield robot
    robot.close()


@pytest.fixture(scope="module")
def proprio_robot():
    robot = make_robot("pick-place-v3", sensors=SensorConfig(cameras=("scene",), observation="proprio"))
    yield robot
    robot.close()


def test_frames_have_the_configured_cameras_shape_and_dtype_and_are_not_black(seeing_robot):
    observation, info = seeing_robot.reset(SEEDS.validation(0))
    assert list(observation.images) == ["scene", "gripper"]
    for frame in observation.images.values():
        assert frame.shape == (SIZE, SIZE, 3) and frame.dtype == np.uint8
        assert not is_black(frame)
    assert "bad_frames" not in info.extras
    assert observation.state.shape == (METAWORLD_OBS_DIM,)  # state mode keeps the full state


def test_different_states_give_different_frames(seeing_robot):
    first, _ = seeing_robot.reset(SEEDS.validation(0))
    other_objects, _ = seeing_robot.reset(SEEDS.validation(1))  # same hand, objects elsewhere
    assert not np.array_equal(first.images["scene"], other_objects.images["scene"])
    moved = other_objects
    for _ in range(5):
        moved, *_ = seeing_robot.step(np.array([1.0, 0.0, 0.0, 0.0], dtype=np.float32))
    assert not np.array_equal(moved.images["gripper"], other_objects.images["gripper"])


def test_state_only_robot_renders_nothing():
    robot = make_robot("reach-v3")
    observation, _ = robot.reset(SEEDS.validation(0))
    robot.close()
    assert observation.images == {} and observation.privileged_state is None
    assert observation.state.shape == (METAWORLD_OBS_DIM,)


def test_proprio_observation_holds_hand_and_gripper_only(proprio_robot):
    one, _ = proprio_robot.reset(SEEDS.validation(0))
    other, _ = proprio_robot.reset(SEEDS.validation(1))
    assert one.state.shape == (PROPRIO_DIM,) == (8,)
    objects = slice(4, 7)  # the first object's position in Meta-World's state
    assert not np.allclose(one.privileged_state[objects], other.privileged_state[objects])
    # Objects moved between the two episodes; the hand starts in the same place: nothing of
    # the objects may show in what the policy reads.
    np.testing.assert_allclose(one.state, other.state, atol=1e-6)
    np.testing.assert_array_equal(one.state[:4], one.privileged_state[:4])  # hand xyz, gripper
    assert list(one.images) == ["scene"]


def test_scripted_expert_drives_a_proprio_robot_from_the_privileged_state(proprio_robot):
    expert = make_expert("pick-place-v3")
    observation, _ = proprio_robot.reset(SEEDS.validation(2))
    with pytest.raises(ValueError, match="full 39-number state"):
        expert.act(observation.state)
    actor = NoisyExpertActor(expert, noise=0.0, rng=np.random.default_rng(0))
    np.testing.assert_array_equal(actor.act(observation), expert.act(expert_state(observation)))


def test_black_frame_detection_triggers_on_an_all_zero_frame():
    bad = FrameMonitor(frozen_motion_m=0.02).check({"scene": np.zeros((64, 64, 3), np.uint8)}, np.zeros((3, 3)))
    assert bad["scene"].startswith("black")


def test_frozen_frame_is_flagged_only_when_the_scene_moved(seeing_robot):
    observation, _ = seeing_robot.reset(SEEDS.validation(0))
    frame, still = observation.images["scene"], np.zeros((5, 3))
    monitor = FrameMonitor(frozen_motion_m=0.02)
    assert monitor.check({"scene": frame}, still) == {}
    assert monitor.check({"scene": frame.copy()}, still + 0.005) == {}  # barely moved: a still picture is fine
    assert monitor.check({"scene": frame.copy()}, still + 0.05)["scene"].startswith("frozen")


def _darkened(bad_frames: str):
    """A robot whose wrist camera sees nothing: every light, colour and emission of the scene off."""
    robot = make_robot("reach-v3", sensors=SensorConfig(cameras=("gripper",), bad_frames=bad_frames))
    model = robot.scenes[0].model
    model.light_active[:] = 0
    model.vis.headlight.active = 0
    model.vis.headlight.ambient[:] = model.vis.headlight.diffuse[:] = 0
    model.geom_rgba[:, :3] = model.mat_rgba[:, :3] = model.site_rgba[:, :3] = 0
    model.mat_emission[:] = 0
    return robot


def test_a_black_camera_stops_the_robot_with_the_camera_named():
    robot = _darkened("raise")
    with pytest.raises(BadFrameError, match="camera 'gripper': black"):
        robot.reset(SEEDS.validation(0))
    robot.close()


def test_a_black_camera_is_flagged_in_the_step_info_when_asked():
    robot = _darkened("flag")
    _, info = robot.reset(SEEDS.validation(0))
    robot.close()
    assert info.extras["bad_frames"]["gripper"].startswith("black")


def test_sensor_config_refuses_bad_input():
    with pytest.raises(ValueError, match="blind"):
        SensorConfig(observation="proprio")
    with pytest.raises(ValueError, match="observation must be one of"):
        SensorConfig(observation="pixels")
    with pytest.raises(ValueError, match="unknown camera 'wrist'"):
        make_robot("reach-v3", sensors=SensorConfig(cameras=("wrist",)))
