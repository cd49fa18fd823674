"""The camera benchmarks behind `lwd bench render` and `lwd bench frames` (figures in docs/benchmarks.md).

    render   camera frames/s of one process per image size and camera count, lwd's tuned
             renderer (lwd/envs/cameras.py) vs gymnasium's default `rgb_array` path, and env
             steps/s of a robot with cameras off, one camera and two
    frames   how to store camera frames: bytes per step, encode and decode time per episode
             and pixel error of raw uint8 (safetensors, plain and zlib), per-frame PNG and
             JPEG, and per-episode video (H.264 lossy and lossless, AV1 as LeRobot v3 stores it, FFV1),
             on frames of real scripted-expert episodes

Both run in this one process: rates are per process. Render timings cover the render
calls only (the simulator steps between them are not timed); CPU figures are this
process's CPU time, Mesa's llvmpipe worker threads included.
"""

from __future__ import annotations

import io
import os
import platform
import time
import zlib
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

from lwd.benchmarks import written_report
from lwd.configargs import documented
from lwd.envs import SEEDS, SensorConfig, make_expert, make_robot, suite, task_spec
from lwd.envs.cameras import CAMERA_ALIASES, SceneCameras
from lwd.envs.robot import expert_state

Frames = dict[str, np.ndarray]  # camera -> (T, H, W, 3) uint8


def _machine() -> str:
    return f"{platform.node()} {platform.machine()}"


@dataclass(frozen=True)
class RenderBenchConfig:
    task: str = documented("pick-place-v3", "Meta-World task whose scene is rendered")
    sizes: tuple[int, ...] = documented((64, 96, 128), "square image sides to measure, in pixels")
    frames: int = documented(150, "timed render calls per size and camera count on lwd's tuned path")
    gym_frames: int = documented(30, "timed render calls per size and camera count on gymnasium's default path")
    env_steps: int = documented(300, "timed robot steps per setting (cameras off, 1, 2) at the first size")
    out: str = documented("runs/bench/render.json", "where to write the JSON result")

    def __post_init__(self) -> None:
        if min(self.frames, self.gym_frames, self.env_steps) < 1 or not self.sizes:
            raise ValueError("frames, gym_frames and env_steps must be >= 1 and sizes non-empty")


CAMERA_SETS = (("scene",), ("scene", "gripper"))


def _drive(robot, task: str, steps: int):
    """Steps `robot` with its task's expert, reset on a new training seed whenever an episode ends."""
    expert, episode = make_expert(task), 0
    observation, _ = robot.reset(SEEDS.train(episode))
    for _ in range(steps):
        observation, _, terminated, truncated, _ = robot.step(expert.act(expert_state(observation)))
        if terminated or truncated:
            episode += 1
            observation, _ = robot.reset(SEEDS.train(episode))
        yield


def _tuned(task: str, size: int, cameras: tuple[str, ...], calls: int, warmup: int = 5) -> dict:
    """lwd's SceneCameras on a state-only robot's scene: only the render calls are timed."""
    robot = make_robot(task)
    scene = robot.scenes[0]
    renderer = SceneCameras(scene.model, cameras, size)  # before the first reset, as the robot builds it
    wall = cpu = 0.0
    for i, _ in enumerate(_drive(robot, task, calls + warmup)):
        began, began_cpu = time.perf_counter(), time.process_time()
        renderer.render(scene.data)
        if i >= warmup:
            wall += time.perf_counter() - began
            cpu += time.process_time() - began_cpu
    renderer.close()
    robot.close()
    return {"calls": calls, "wall_s": wall, "cpu_s": cpu}


def _gym_default(task: str, size: int, cameras: tuple[str, ...], calls: int) -> dict:
    """gymnasium's `render_mode="rgb_array"` on the Meta-World env, all of the model's visual defaults."""
    import mujoco
    from metaworld.env_dict import ALL_V3_ENVIRONMENTS_GOAL_OBSERVABLE

    scene = task_spec(task).stages[0]
    # Meta-World's goal-observable constructors take only render_mode; the renderer's size is
    # read when its viewer is first made, so setting it before the first render is gymnasium's
    # own path at that size (MSAA x4, shadows, reflections, 640x480 offscreen buffer).
    env = ALL_V3_ENVIRONMENTS_GOAL_OBSERVABLE[f"{scene}-goal-observable"](render_mode="rgb_array")
    env.mujoco_renderer.width = env.mujoco_renderer.height = size
    expert, seed = make_expert(task), SEEDS.train(0)
    env._freeze_rand_vec, env.seeded_rand_vec = False, True  # as lwd's robots (metaworld_robot._make_scene)
    env.seed(seed)
    raw, _ = env.reset()
    ids = [mujoco.mj_name2id(env.model, mujoco.mjtObj.mjOBJ_CAMERA, CAMERA_ALIASES[c]) for c in cameras]
    wall = cpu = 0.0
    for i in range(calls + 3):
        raw, _, _, truncated, _ = env.step(expert.act(raw))
        if truncated:
            raw, _ = env.reset()
        began, began_cpu = time.perf_counter(), time.process_time()
        for camera_id in ids:
            env.mujoco_renderer.camera_id = camera_id
            env.render()
        if i >= 3:
            wall += time.perf_counter() - began
            cpu += time.process_time() - began_cpu
    env.close()
    return {"calls": calls, "wall_s": wall, "cpu_s": cpu}


def _env_steps(task: str, sensors: SensorConfig | None, steps: int) -> dict:
    robot = make_robot(task, sensors=sensors)
    began, began_cpu = time.perf_counter(), time.process_time()
    for _ in _drive(robot, task, steps):
        pass
    wall, cpu = time.perf_counter() - began, time.process_time() - began_cpu
    robot.close()
    return {"steps": steps, "steps_per_s": steps / wall, "cpu_ms_per_step": 1000 * cpu / steps}


def run_render_bench(config: RenderBenchConfig) -> dict:
    rows = []
    for size in config.sizes:
        for cameras in CAMERA_SETS:
            for path, run, calls in (
                ("tuned", _tuned, config.frames),
                ("gym_default", _gym_default, config.gym_frames),
            ):
                timing = run(config.task, size, cameras, calls)
                frames = calls * len(cameras)
                rows.append(
                    {
                        "path": path,
                        "size": size,
                        "cameras": list(cameras),
                        "frames_per_s": frames / timing["wall_s"],
                        "cpu_ms_per_frame": 1000 * timing["cpu_s"] / frames,
                        **timing,
                    }
                )
    size = config.sizes[0]
    steps = {
        "off": _env_steps(config.task, None, config.env_steps),
        **{
            "+".join(cameras): _env_steps(config.task, SensorConfig(cameras=cameras, image_size=size), config.env_steps)
            for cameras in CAMERA_SETS
        },
    }
    report = {
        "config": asdict(config),
        "render": rows,
        "env_steps": {"size": size, **steps},
        "machine": _machine(),
        "date": time.strftime("%Y-%m-%d"),
    }
    return written_report(report, config.out)


# --- frame storage ---------------------------------------------------------------------------


@dataclass(frozen=True)
class FrameStorageBenchConfig:
    suite: str = documented("mt10", "task suite; episode i runs task i mod the suite's size")
    episodes: int = documented(10, "scripted-expert episodes to record (training seeds 0..episodes-1)")
    cameras: tuple[str, ...] = documented(("scene", "gripper"), "cameras recorded each step")
    image_size: int = documented(64, "square image side in pixels")
    noise: float = documented(0.1, "expert action noise (as in demonstrations)")
    repeats: int = documented(3, "encode/decode rounds per format; each episode's time is its fastest")
    out: str = documented("runs/bench/frames.json", "where to write the JSON result")


def _record_episodes(config: FrameStorageBenchConfig) -> list[Frames]:
    tasks = suite(config.suite).task_names
    sensors = SensorConfig(cameras=config.cameras, image_size=config.image_size)
    episodes = []
    for i in range(config.episodes):
        task = tasks[i % len(tasks)]
        robot, expert = make_robot(task, sensors=sensors), make_expert(task)
        rng = np.random.default_rng(i)
        observation, _ = robot.reset(SEEDS.train(i))
        frames = {c: [observation.images[c]] for c in config.cameras}
        done = False
        while not done:
            action = expert.act(observation.state) + rng.normal(0.0, config.noise, size=4)
            observation, _, terminated, truncated, _ = robot.step(np.clip(action, -1.0, 1.0))
            done = terminated or truncated
            for c in config.cameras:
                frames[c].append(observation.images[c])
        robot.close()
        episodes.append({c: np.stack(f) for c, f in frames.items()})  # (T+1, H, W, 3)
    return episodes


def _raw_codec(level: int | None) -> tuple[Callable, Callable]:
    """All cameras of an episode in one safetensors blob, zlib-compressed at `level` if given."""
    from safetensors.numpy import load, save

    def encode(frames: Frames) -> list[bytes]:
        blob = save(frames)
        return [blob if level is None else zlib.compress(blob, level)]

    def decode(blobs: list[bytes], like: Frames) -> Frames:
        return load(blobs[0] if level is None else zlib.decompress(blobs[0]))

    return encode, decode


def _image_codec(fmt: str, **options) -> tuple[Callable, Callable]:
    from PIL import Image

    def encode(frames: Frames) -> list[bytes]:
        blobs = []
        for stream in frames.values():
            for frame in stream:
                buffer = io.BytesIO()
                Image.fromarray(frame).save(buffer, format=fmt, **options)
                blobs.append(buffer.getvalue())
        return blobs

    def decode(blobs: list[bytes], like: Frames) -> Frames:
        out, i = {}, 0
        for camera, stream in like.items():
            out[camera] = np.stack(
                [np.asarray(Image.open(io.BytesIO(b)).convert("RGB")) for b in blobs[i : i + len(stream)]]
            )
            i += len(stream)
        return out

    return encode, decode


def _video_codec(codec: str, pix_fmt: str, container: str, options: dict[str, str]) -> tuple[Callable, Callable]:
    import av

    os.environ.setdefault("SVT_LOG", "1")  # SVT-AV1 prints its whole configuration per video otherwise

    def encode(frames: Frames) -> list[bytes]:
        blobs = []
        for stream_frames in frames.values():  # one video per camera, as LeRobot stores them
            buffer = io.BytesIO()
            with av.open(buffer, mode="w", format=container) as out:
                stream = out.add_stream(codec, rate=30, options=options)
                stream.width, stream.height = stream_frames.shape[2], stream_frames.shape[1]
                stream.pix_fmt = pix_fmt
                for frame in stream_frames:
                    out.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
                out.mux(stream.encode(None))
            blobs.append(buffer.getvalue())
        return blobs

    def decode(blobs: list[bytes], like: Frames) -> Frames:
        out = {}
        for camera, blob in zip(like, blobs, strict=True):
            with av.open(io.BytesIO(blob)) as video:
                out[camera] = np.stack([f.to_ndarray(format="rgb24") for f in video.decode(video=0)])
        return out

    return encode, decode


def storage_formats() -> dict[str, tuple[Callable, Callable, bool]]:
    """name -> (encode, decode, lossy); video formats only where PyAV (`pip install -e '.[video]'`) is installed."""
    formats: dict[str, tuple[Callable, Callable, bool]] = {}
    formats["raw uint8, safetensors"] = (*_raw_codec(None), False)
    formats["raw uint8, safetensors + zlib level 1"] = (*_raw_codec(1), False)
    formats["PNG per frame (Pillow)"] = (*_image_codec("PNG"), False)
    formats["JPEG q90 per frame (Pillow)"] = (*_image_codec("JPEG", quality=90), True)
    try:
        import av  # noqa: F401
    except ImportError:
        return formats
    formats["H.264 crf 23, yuv420p (libx264)"] = (*_video_codec("libx264", "yuv420p", "mp4", {"crf": "23"}), True)
    formats["AV1 crf 30, g 2, yuv420p (libsvtav1; LeRobot v3)"] = (
        *_video_codec("libsvtav1", "yuv420p", "mp4", {"crf": "30", "g": "2"}),
        True,
    )
    formats["H.264 lossless RGB, crf 0 (libx264rgb)"] = (
        *_video_codec("libx264rgb", "rgb24", "mp4", {"crf": "0"}),
        False,
    )
    formats["FFV1 lossless, bgr0 (Matroska)"] = (*_video_codec("ffv1", "bgr0", "matroska", {}), False)
    return formats


def run_frame_storage_bench(config: FrameStorageBenchConfig) -> dict:
    episodes = _record_episodes(config)
    steps = sum(len(next(iter(e.values()))) for e in episodes)
    raw_bytes = sum(sum(s.nbytes for s in e.values()) for e in episodes)
    rows = []
    for name, (encode, decode, lossy) in storage_formats().items():
        # (repeat, episode, clock): wall and this process's CPU seconds (encoder threads included)
        encode_s = np.full((config.repeats, len(episodes), 2), np.inf)
        decode_s = np.full_like(encode_s, np.inf)
        encoded_bytes, error_counts = 0, np.zeros(256, dtype=np.int64)  # pixels (channels) per |error|
        for r in range(config.repeats):
            for i, frames in enumerate(episodes):
                began = (time.perf_counter(), time.process_time())
                blobs = encode(frames)
                encode_s[r, i] = (time.perf_counter() - began[0], time.process_time() - began[1])
                began = (time.perf_counter(), time.process_time())
                decoded = decode(blobs, frames)
                decode_s[r, i] = (time.perf_counter() - began[0], time.process_time() - began[1])
                if r == 0:
                    encoded_bytes += sum(len(b) for b in blobs)
                    for camera, stream in frames.items():
                        if decoded[camera].shape != stream.shape:
                            raise RuntimeError(f"{name}: decoded {decoded[camera].shape}, stored {stream.shape}")
                        error = np.abs(decoded[camera].astype(np.int16) - stream.astype(np.int16))
                        error_counts += np.bincount(error.ravel(), minlength=256)
        max_error = int(np.flatnonzero(error_counts).max())
        if not lossy and max_error:
            raise RuntimeError(f"{name} is meant to be lossless but changed pixels by up to {max_error}")
        rows.append(
            {
                "format": name,
                "lossy": lossy,
                "bytes_per_step": encoded_bytes / steps,
                "ratio_to_raw": raw_bytes / encoded_bytes,
                "encode_ms_per_episode": 1000 * float(encode_s[..., 0].min(axis=0).mean()),
                "decode_ms_per_episode": 1000 * float(decode_s[..., 0].min(axis=0).mean()),
                "encode_cpu_ms_per_episode": 1000 * float(encode_s[..., 1].min(axis=0).mean()),
                "decode_cpu_ms_per_episode": 1000 * float(decode_s[..., 1].min(axis=0).mean()),
                "max_pixel_error": max_error,
                "p99_pixel_error": int(np.searchsorted(np.cumsum(error_counts), 0.99 * error_counts.sum())),
                "mean_pixel_error": float(np.arange(256) @ error_counts) / error_counts.sum(),
            }
        )
    report = {
        "config": asdict(config),
        "episodes": len(episodes),
        "steps": steps,
        "mean_episode_steps": steps / len(episodes),
        "raw_bytes_per_step": raw_bytes / steps,
        "formats": rows,
        "machine": _machine(),
        "date": time.strftime("%Y-%m-%d"),
    }
    return written_report(report, config.out)
