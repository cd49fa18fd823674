"""Frames through the loop: env steps/s with and without cameras, bytes per episode on disk,
SFT updates/s with and without images (docs/benchmarks.md, "Frames through the loop").

    python tools/frames_loop_bench.py                 # everything
    python tools/frames_loop_bench.py learner policy  # LWD learner updates/s; policy-driven env steps/s
"""

import copy
import sys
import time

import numpy as np
import torch

from lwd.algorithms.flow_matching import flow_matching_update
from lwd.data.episode import encode
from lwd.envs import SensorConfig, make_expert, make_robot
from lwd.envs.operator import NoisyExpertActor
from lwd.envs.tasks import SEEDS
from lwd.fleet.rollout import run_episode
from lwd.policy.flow_policy import FlowChunkPolicy, PolicyConfig

TASKS = ("reach-v3", "push-v3", "pick-place-v3", "door-open-v3", "drawer-open-v3")
SEEING = SensorConfig(cameras=("scene", "gripper"), image_size=64, observation="proprio")


def env_and_bytes(label: str, sensors: SensorConfig | None) -> None:
    steps, sizes, per_step = 0, [], []
    wall, cpu = time.perf_counter(), time.process_time()
    for task in TASKS:
        robot, expert = make_robot(task, sensors=sensors), make_expert(task)
        for seq in range(2):
            actor = NoisyExpertActor(expert, 0.1, np.random.default_rng(seq))
            episode = run_episode(robot, actor, robot_id="m", seq=seq, source="demo", seed=SEEDS.train(seq))
            steps += episode.num_steps
            data, _ = encode(episode)
            sizes.append(len(data))
            per_step.append(len(data) / episode.num_steps)
        robot.close()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    print(
        f"{label}: {steps} steps, {steps / wall:.1f} steps/s wall ({steps / cpu:.1f} per CPU s); "
        f"bytes/episode mean {np.mean(sizes):,.0f}, bytes/step {np.mean(per_step):,.0f}"
    )


def sft_updates(use_images: bool, batch: int = 256, repeats: int = 10) -> None:
    torch.manual_seed(0)
    config = PolicyConfig(
        obs_dim=8 if use_images else 39, use_images=use_images, cameras=("scene", "gripper") if use_images else ()
    )
    policy = FlowChunkPolicy(config)
    optimizer = torch.optim.Adam(policy.parameters(), 3e-4)
    generator = torch.Generator().manual_seed(0)
    obs, text = torch.randn(batch, config.obs_dim), torch.randn(batch, config.text_dim)
    actions, mask = torch.rand(batch, 5, 4) * 2 - 1, torch.ones(batch, 5, dtype=torch.bool)
    images = torch.randint(0, 256, (batch, 64, 128, 3), dtype=torch.uint8) if use_images else None
    args = (policy, optimizer, list(policy.parameters()), 10.0, obs, text, actions, mask, generator, images)
    for threads in (1, 2):
        torch.set_num_threads(threads)
        for _ in range(2):
            flow_matching_update(*args)
        began = time.perf_counter()
        for _ in range(repeats):
            flow_matching_update(*args)
        rate = repeats / (time.perf_counter() - began)
        print(f"SFT updates/s batch {batch}, images={use_images}, threads={threads}: {rate:.2f}")


def lwd_updates(use_images: bool, batch: int = 256, repeats: int = 5) -> None:
    """Offline LWD learner steps (V, Q, EMA, QAM at the default qam_batch 128), PolicyConfig and
    CriticConfig defaults, random tensors; per CPU second of this process and per wall second."""
    from lwd.algorithms.batch import LearnerBatch
    from lwd.algorithms.learner import LearnerConfig, LWDLearner
    from lwd.policy.critic import ChunkCritic, CriticConfig, StateValue

    torch.manual_seed(0)
    cameras = ("scene", "gripper") if use_images else ()
    config = PolicyConfig(obs_dim=8 if use_images else 39, use_images=use_images, cameras=cameras)
    policy = FlowChunkPolicy(config)
    critic_config = CriticConfig.for_policy(config)
    learner = LWDLearner(
        policy,
        copy.deepcopy(policy),
        ChunkCritic(critic_config),
        StateValue(critic_config),
        LearnerConfig(policy_warmup=0),
    )
    images = {}
    if use_images:
        g = torch.Generator().manual_seed(1)
        images = {
            name: torch.randint(0, 256, (batch, 64, 128, 3), dtype=torch.uint8, generator=g)
            for name in ("images", "next_images")
        }
    g = torch.Generator().manual_seed(0)
    data = LearnerBatch(
        obs=torch.randn(batch, config.obs_dim, generator=g),
        instruction=torch.randn(batch, config.text_dim, generator=g),
        actions=torch.rand(batch, 5, 4, generator=g) * 2 - 1,
        action_mask=torch.ones(batch, 5, dtype=torch.bool),
        intervention=torch.zeros(batch, 5, dtype=torch.bool),
        reward=(torch.rand(batch, generator=g) > 0.7).float(),
        discount=torch.full((batch,), 0.95),
        done=(torch.rand(batch, generator=g) > 0.8).float(),
        next_obs=torch.randn(batch, config.obs_dim, generator=g),
        return_to_go=torch.rand(batch, generator=g),
        **images,
    )
    generator = torch.Generator().manual_seed(0)
    for threads in (1, 2):
        torch.set_num_threads(threads)
        learner.step(data, generator)
        wall, cpu = time.perf_counter(), time.process_time()
        for _ in range(repeats):
            learner.step(data, generator)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        print(
            f"LWD offline step batch {batch}, images={use_images}, threads={threads}: "
            f"{repeats / cpu:.3f} per CPU s, {repeats / wall:.3f} per wall s"
        )


def policy_env_steps(label: str, sensors: SensorConfig | None, episodes: int = 2) -> None:
    """A robot driven by an (untrained, full-length episodes) policy of the default size, batch 1,
    as a robot of the online fleet without batching: env steps/s wall and per CPU s."""
    from lwd.fleet.policy_actor import PolicyActor
    from lwd.policy.instructions import InstructionEncoder

    torch.manual_seed(0)
    seeing = sensors is not None
    config = PolicyConfig(obs_dim=8 if seeing else 39, use_images=seeing, cameras=sensors.cameras if seeing else ())
    policy = FlowChunkPolicy(config).eval()
    steps = 0
    wall, cpu = time.perf_counter(), time.process_time()
    for task in TASKS[:episodes]:
        robot = make_robot(task, sensors=sensors)
        first, _ = robot.reset(SEEDS.train(0))
        table = {first.instruction: np.random.default_rng(0).normal(size=config.text_dim).astype(np.float32)}
        actor = PolicyActor(policy, InstructionEncoder(table), torch.Generator().manual_seed(0), version=1)
        episode = run_episode(robot, actor, robot_id="m", seq=0, source="rollout", seed=SEEDS.train(0))
        steps += episode.num_steps
        robot.close()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    print(f"{label}, policy-driven: {steps} steps, {steps / wall:.1f} steps/s wall ({steps / cpu:.1f} per CPU s)")


if __name__ == "__main__":
    torch.set_num_threads(1)
    parts = set(sys.argv[1:]) or {"env", "sft", "learner", "policy"}
    if "env" in parts:
        env_and_bytes("state, no cameras", None)
        env_and_bytes("proprio + scene + gripper 64x64", SEEING)
    if "sft" in parts:
        sft_updates(False)
        sft_updates(True)
    if "learner" in parts:
        lwd_updates(False)
        lwd_updates(True)
    if "policy" in parts:
        torch.set_num_threads(1)
        policy_env_steps("state, no cameras", None)
        policy_env_steps("proprio + scene + gripper 64x64", SEEING)
