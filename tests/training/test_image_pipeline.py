"""The loop with cameras and no privileged object state: robots record frames into the
store, SFT trains a policy with a CNN over them, evaluation runs it with rendered frames."""

import numpy as np

from lwd.data.store import EpisodeStore
from lwd.envs import make_robot
from lwd.envs.cameras import PROPRIO_DIM, BadFrameError
from lwd.fleet.collect import CollectConfig, collect
from tests.conftest import IMAGE_SENSORS

SENSORS = IMAGE_SENSORS


def test_collected_episodes_carry_the_frames_the_robot_rendered(tmp_path):
    store = str(tmp_path / "store")
    collect(
        CollectConfig(store=store, tasks=("reach-v3",), episodes_per_task=1, workers=1, progress=False, sensors=SENSORS)
    )
    opened = EpisodeStore(store)
    (record,) = opened.records()
    episode = opened.load(record)
    assert episode.observations.shape[1] == PROPRIO_DIM
    assert set(episode.frames) == {"scene", "gripper"}
    assert episode.frames["scene"].shape == (episode.num_steps + 1, 32, 32, 3)
    # The first frame is what a fresh robot renders at the same seed.
    robot = make_robot("reach-v3", sensors=SENSORS)
    first, _ = robot.reset(episode.seed)
    np.testing.assert_array_equal(episode.frames["gripper"][0], first.images["gripper"])
    robot.close()


def test_a_camera_going_black_mid_episode_stops_the_recording_with_the_camera_named():
    import pytest

    from lwd.envs import make_expert
    from lwd.envs.operator import NoisyExpertActor
    from lwd.fleet.rollout import EpisodeRun

    robot = make_robot("reach-v3", sensors=SENSORS)
    actor = NoisyExpertActor(make_expert("reach-v3"), 0.1, np.random.default_rng(0))
    run = EpisodeRun(robot, actor, robot_id="cam-0", seq=0, source="demo", seed=3)
    run.step()
    model = robot.scenes[0].model  # every light, colour and emission off: the cameras see black
    model.light_active[:] = 0
    model.vis.headlight.active = 0
    model.vis.headlight.ambient[:] = model.vis.headlight.diffuse[:] = 0
    model.geom_rgba[:, :3] = model.mat_rgba[:, :3] = model.site_rgba[:, :3] = 0
    model.mat_emission[:] = 0
    with pytest.raises(BadFrameError, match=r"step 2: camera '(scene|gripper)': black"):
        run.step()
    robot.close()


def test_sft_evaluation_and_offline_rl_run_with_images(tiny_image_sft, tmp_path):
    from lwd.evaluation.evaluate import EvalConfig, evaluate
    from lwd.policy.checkpoint import load_checkpoint

    store, sft = tiny_image_sft
    policy, _, _ = load_checkpoint(sft)
    assert policy.config.use_images and policy.config.cameras == ("scene", "gripper")
    assert policy.config.obs_dim == PROPRIO_DIM and policy.config.image_size == 32
    summary = evaluate(
        EvalConfig(checkpoint=str(sft), tasks=("reach-v3",), episodes_per_task=1, workers=1, out=str(tmp_path / "eval"))
    )
    assert summary["per_task"]["reach-v3"]["episodes"] == 1

    # Offline RL from it: QAM's policy and reference encode the images (policy_warmup 2 < 4 steps).
    from lwd.training.offline import train_offline
    from tests.conftest import tiny_offline_config

    offline = train_offline(tiny_offline_config(store, sft, tmp_path / "offline", steps=4))
    after, _, _ = load_checkpoint(offline)
    before = dict(policy.image_encoder.named_parameters())
    moved = [n for n, p in after.image_encoder.named_parameters() if not np.allclose(p.detach(), before[n].detach())]
    assert moved, "QAM's update never reached the image encoder"
