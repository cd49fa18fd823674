"""Server-side inference for a policy that reads cameras, through a real gateway: robots send
their frames with the observation, the server feeds them to the policy side by side."""

import numpy as np
import pytest
import torch

from lwd.client.http import GatewayClient, GatewayError
from lwd.client.policy import RemotePolicy
from lwd.envs import make_robot
from lwd.envs.cameras import PROPRIO_DIM, side_by_side
from lwd.fleet.policy_actor import sample_chunks
from lwd.fleet.registry import PolicyRegistry
from lwd.fleet.sensing import policy_sensors
from lwd.gateway.bench import publish_random_policy
from lwd.gateway.wire import ActRequest
from tests.gateway.harness import gateway_thread, make_site, tiny_policy_config

INSTRUCTION = "Move your hand to the goal position."
CAMERAS, SIDE = ("scene", "gripper"), 32


@pytest.fixture
def site(tmp_path):
    site = make_site(tmp_path, publish=False)
    config = tiny_policy_config()
    image_config = type(config)(
        **{**config.to_dict(), "obs_dim": PROPRIO_DIM, "use_images": True, "image_size": SIDE, "cameras": CAMERAS}
    )
    publish_random_policy(site.root / "registry", policy_config=image_config)
    return site


def _frames(seed: int, side: int = SIDE) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {camera: rng.integers(0, 256, (side, side, 3), dtype=np.uint8) for camera in CAMERAS}


def test_an_image_policy_is_served_from_the_requests_frames(site):
    state, frames = np.linspace(-1, 1, PROPRIO_DIM).astype(np.float32), _frames(0)
    with gateway_thread(site) as gateway:
        client = GatewayClient(gateway.url, site.tokens["robot-a"])
        response = client.act(ActRequest("req-1", state, INSTRUCTION, frames))
        client.close()
    policy, encoder = PolicyRegistry(site.root / "registry").load(1)
    images = side_by_side(frames, CAMERAS)[None]
    # The server's first call draws its noise from a generator seeded 0, as here.
    generator = torch.Generator().manual_seed(0)
    expected = sample_chunks(policy, encoder, state[None], [INSTRUCTION], generator, None, images)
    np.testing.assert_allclose(response.actions, expected[0], atol=1e-5)  # same math, same machine


def test_a_request_without_the_policys_cameras_is_refused_by_name(site):
    with gateway_thread(site) as gateway:
        client = GatewayClient(gateway.url, site.tokens["robot-a"])
        state = np.zeros(PROPRIO_DIM, np.float32)
        with pytest.raises(GatewayError, match=r"missing_frames.*no frames of \['gripper'\]") as missing:
            client.act(ActRequest("r1", state, INSTRUCTION, {"scene": _frames(0)["scene"]}))
        with pytest.raises(GatewayError, match=r"bad_shape.*has shape \(48, 48, 3\)") as wrong:
            client.act(ActRequest("r2", state, INSTRUCTION, _frames(0, side=48)))
        client.close()
    assert missing.value.status == wrong.value.status == 422 and not missing.value.retryable


def test_a_robot_with_the_policys_sensors_drives_an_episode_through_the_gateway(site):
    policy, _ = PolicyRegistry(site.root / "registry").load(1)
    robot = make_robot("reach-v3", sensors=policy_sensors(policy.config))
    with gateway_thread(site) as gateway:
        client = GatewayClient(gateway.url, site.tokens["robot-a"])
        actor = RemotePolicy(client)
        actor.start_episode()
        observation, _ = robot.reset(0)
        for _ in range(12):  # past two chunks of 5: two requests with the rendered frames
            observation, *_ = robot.step(actor.act(observation))
        metrics = client.metrics()
        client.close()
    robot.close()
    assert metrics["act/requests"] == 3 and metrics["act/frames"] == 3 * len(CAMERAS)
