"""What a policy needs its robot to sense, and its camera input from observations.

A policy built with `use_images` names its cameras and image size; one whose state is
PROPRIO_DIM numbers was trained without privileged object state (proprio mode). A robot
run for it (collection of its rollouts, the fleet, evaluation) is built with these
sensors, so nobody has to repeat them on the command line.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from lwd.envs.cameras import PROPRIO_DIM, SensorConfig, side_by_side
from lwd.policy.flow_policy import PolicyConfig


def policy_sensors(config: PolicyConfig, bad_frames: str = "raise") -> SensorConfig | None:
    """The sensors a robot needs to run a policy of `config`; None: state only, no cameras."""
    if not config.use_images:
        return None
    return SensorConfig(
        cameras=config.cameras,
        image_size=config.image_size,
        observation="proprio" if config.obs_dim == PROPRIO_DIM else "state",
        bad_frames=bad_frames,
    )


def policy_images(cameras: tuple[str, ...], frames: Sequence[dict[str, np.ndarray]]) -> np.ndarray | None:
    """(B, S, S * cameras, 3) uint8: each observation's frames of a policy's `cameras`
    (`PolicyAdapter.cameras`) side by side, or None for a policy without cameras."""
    if not cameras:
        return None
    return np.stack([side_by_side(f, cameras) for f in frames])
