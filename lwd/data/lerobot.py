"""LeRobot datasets in and out: an episode store as a LeRobotDataset v3.0 directory, and back.

Written from LeRobot's documented v3.0 format (docs "LeRobotDataset v3.0" and the path
templates and info fields in lerobot/datasets/utils.py); LeRobot itself is not a
dependency. The layout, relative to the dataset root:

    meta/info.json                               schema: fps, features (dtype, shape, names), counts, path templates
    meta/stats.json                              per-feature min/max/mean/std/count and quantiles q01..q99
    meta/tasks.parquet                           task string -> task_index (pandas index "task")
    meta/episodes/chunk-000/file-000.parquet     one row per episode: length, tasks, data and video offsets
    data/chunk-XXX/file-XXX.parquet              one row per step, many episodes per file
    videos/observation.images.<camera>/chunk-XXX/file-XXX.mp4    one video per camera per file

How lwd's episode maps onto it. A LeRobot row is an (observation, action) pair, so an
episode of T steps is T rows: `observation.state` = observations[t], `action` =
actions[t], `timestamp` = t / fps (LeRobot's clock starts at 0 in every episode),
`frame_index`, `episode_index`, `index` (global row), `task_index` (the instruction's row
in tasks.parquet), and lwd's own per-step fields as extra features `lwd.intervention`,
`lwd.policy_version` and `lwd.wall_time` (the robot's clock, s since epoch). lwd's
observation T+1 (after the last action) has no action to pair with: its state is the
episode column `lwd/final_observation`, and each camera's video holds T+1 frames per
episode, the last at timestamp T / fps, so `videos/<key>/to_timestamp - from_timestamp`
is (T+1) / fps. LeRobot's loader reads frames at row timestamps only and never sees it.
The episode-level fields (robot_id, seq, task, source, success, stage_score, seed,
started_at, ended_at, extras as JSON) are `lwd/...` columns of the episodes table.

Importing a dataset that lwd did not write (no `lwd/task` column): each episode's task
string is its instruction and names its lwd task when it is one of lwd's phrasings
(lwd/envs/phrasings.py), otherwise `--task` must say which lwd task the episodes are.
Its N rows become N observations and N-1 steps; the last row's action, which no
observation follows, is kept in extras["lerobot"]["final_action"]. The robot is
hardware as far as lwd knows (seed None), the source and success label come from the
import options, and timestamps are seconds from the episode's start.

Frames go through a lossy video codec (H.264 or AV1, yuv420p, as LeRobot records), so
they come back within the codec's tolerance, not bit-exact: docs/benchmarks.md,
"LeRobot export: video tolerance". Everything else round-trips exactly.

pyarrow and PyAV are the optional `lerobot` extra (`pip install -e '.[lerobot]'`); this
module imports them only when a dataset is read or written.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Literal

import numpy as np

from lwd.configargs import documented
from lwd.data.episode import (
    MAX_FRAME_BYTES_PER_EPISODE,
    MAX_FRAME_SIDE,
    NO_POLICY,
    SOURCES,
    Episode,
    EpisodeValidationError,
    validate,
)
from lwd.data.store import EpisodeStore, StoreError
from lwd.envs.cameras import PROPRIO_DIM
from lwd.envs.phrasings import phrasing_owner
from lwd.envs.tasks import UnknownTaskError, task_spec

CODEBASE_VERSION = "v3.0"
INFO_PATH = "meta/info.json"
STATS_PATH = "meta/stats.json"
TASKS_PATH = "meta/tasks.parquet"
EPISODES_DIR = "meta/episodes"
CHUNK_FILE = "chunk-{chunk_index:03d}/file-{file_index:03d}"
EPISODES_PATH = EPISODES_DIR + "/" + CHUNK_FILE + ".parquet"
DATA_PATH = "data/" + CHUNK_FILE + ".parquet"
VIDEO_PATH = "videos/{video_key}/" + CHUNK_FILE + ".mp4"
CHUNKS_SIZE = 1000  # files per chunk directory, LeRobot's default

STATE = "observation.state"
ACTION = "action"
IMAGES = "observation.images."
INTERVENTION = "lwd.intervention"
POLICY_VERSION = "lwd.policy_version"
WALL_TIME = "lwd.wall_time"
# LeRobot's own per-row features (lerobot/utils/constants.py DEFAULT_FEATURES)
DEFAULT_FEATURES = {
    "timestamp": {"dtype": "float32", "shape": [1], "names": None},
    "frame_index": {"dtype": "int64", "shape": [1], "names": None},
    "episode_index": {"dtype": "int64", "shape": [1], "names": None},
    "index": {"dtype": "int64", "shape": [1], "names": None},
    "task_index": {"dtype": "int64", "shape": [1], "names": None},
}
QUANTILES = (0.01, 0.10, 0.50, 0.90, 0.99)  # the q01..q99 LeRobot's stats carry
LWD_TASK = "lwd/task"  # present in the episodes table iff lwd wrote the dataset
METAWORLD_FPS = 80  # Meta-World steps 5 physics steps of 2.5 ms (its render_fps)
CODECS = {"h264": "libx264", "av1": "libsvtav1"}

# Meta-World's 39 state numbers (sawyer_xyz_env._get_obs), named for LeRobot's viewers.
_POSE = ("pos_x", "pos_y", "pos_z", "quat_w", "quat_x", "quat_y", "quat_z")
_NOW = ("hand_x", "hand_y", "hand_z", "gripper") + tuple(f"obj{k}_{p}" for k in (1, 2) for p in _POSE)
METAWORLD_STATE_NAMES = _NOW + tuple(f"prev_{n}" for n in _NOW) + ("goal_x", "goal_y", "goal_z")
ACTION_NAMES = ("delta_x", "delta_y", "delta_z", "gripper")


class LeRobotFormatError(ValueError):
    """A dataset lwd cannot read or write as LeRobot v3; the message names the file and the problem."""


@dataclass(frozen=True)
class VideoConfig:
    """How camera frames are encoded (one mp4 per camera per file, as LeRobot v3 stores them)."""

    codec: Literal["h264", "av1"] = documented("h264", "h264 (libx264) or av1 (libsvtav1, LeRobot's own default)")
    crf: int = documented(
        18,
        "constant rate factor: lower is closer to the frames and bigger (docs/benchmarks.md, 'LeRobot export: "
        "video tolerance', measured 18 against 23 and 30)",
    )
    gop: int = documented(2, "a keyframe every N frames: LeRobot's default, so any frame decodes from <= N frames")
    pix_fmt: Literal["yuv420p", "yuv444p"] = documented(
        "yuv420p",
        "yuv420p (what LeRobot records; colour at half resolution) or yuv444p (h264 only; with --video.crf 0 "
        "frames come back within 2 of 255)",
    )

    def __post_init__(self) -> None:
        if self.codec not in CODECS:
            raise ValueError(f"video codec must be one of {sorted(CODECS)}, got {self.codec!r}")
        if self.pix_fmt not in ("yuv420p", "yuv444p"):
            raise ValueError(f"pix_fmt must be yuv420p or yuv444p, got {self.pix_fmt!r}")
        if self.codec == "av1" and self.pix_fmt != "yuv420p":
            raise ValueError("libsvtav1 encodes yuv420p only; use --video.codec h264 for yuv444p")
        if not 0 <= self.crf <= 63 or self.gop < 1:
            raise ValueError(f"crf must be in [0, 63] and gop >= 1, got crf={self.crf}, gop={self.gop}")


@dataclass(frozen=True)
class ExportConfig:
    store: str = documented("runs/store", "episode store to export from")
    out: str = documented("runs/lerobot", "dataset directory to create (must not exist, or be empty)")
    format: Literal["lerobot"] = documented("lerobot", "output format: lerobot (LeRobotDataset v3.0)")
    tasks: tuple[str, ...] = documented((), "export only these tasks; none given: every task")
    sources: tuple[str, ...] = documented(
        (), "export only these sources (demo, rollout, play); none given: every source"
    )
    fps: int = documented(METAWORLD_FPS, "frames per second written to info.json (Meta-World steps at 80 Hz)")
    robot_type: str = documented("sawyer", "robot_type in info.json (Meta-World's arm is a Sawyer)")
    video: VideoConfig = documented(VideoConfig(), "how camera frames are encoded")
    data_file_mb: int = documented(100, "start a new data parquet file past this size (LeRobot's default)")
    video_file_mb: int = documented(200, "start a new video file past this size (LeRobot's default)")
    progress: bool = documented(True, "show a progress bar")

    def __post_init__(self) -> None:
        if self.fps < 1 or self.data_file_mb < 1 or self.video_file_mb < 1:
            raise ValueError("fps, data_file_mb and video_file_mb must be >= 1")
        unknown = sorted(set(self.sources) - set(SOURCES))
        if unknown:
            raise ValueError(f"unknown sources {unknown}; lwd's sources are {SOURCES}")


@dataclass(frozen=True)
class ImportLimits:
    """What an untrusted dataset may make the importer read and allocate."""

    max_json_bytes: int = documented(16 * 2**20, "largest meta/info.json or meta/stats.json read")
    max_parquet_bytes: int = documented(2 * 2**30, "largest parquet file read (LeRobot writes <= 100 MB)")
    max_video_bytes: int = documented(16 * 2**30, "largest mp4 file opened (LeRobot writes <= 200 MB)")
    max_episodes: int = documented(1_000_000, "most episodes a dataset may declare")
    max_episode_rows: int = documented(100_000, "longest episode, in rows")
    max_feature_width: int = documented(4096, "widest state or action vector")

    def check_file(self, path: Path, limit: int, what: str) -> int:
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            raise LeRobotFormatError(f"{path}: {what} is missing") from None
        if size > limit:
            raise LeRobotFormatError(f"{path}: {what} is {size} bytes, more than the {limit} this import allows")
        return size


@dataclass(frozen=True)
class ImportConfig:
    src: str = documented("runs/lerobot", "LeRobotDataset v3.0 directory to import")
    store: str = documented("runs/store", "episode store to import into (created if missing)")
    task: str = documented(
        "",
        "the lwd task of episodes whose LeRobot task string is not one of lwd's phrasings (e.g. reach-v3); "
        "their task string stays their instruction",
    )
    robot_id: str = documented("", "robot id of imported episodes without lwd metadata (default: lerobot-<dir name>)")
    source: Literal["demo", "rollout", "play"] = documented(
        "demo", "source label of episodes without lwd metadata (recorded demonstrations: demo)"
    )
    success: bool = documented(
        True, "success label of episodes without lwd metadata (LeRobot has none; demonstrations succeed)"
    )
    batch_episodes: int = documented(32, "episodes committed per store snapshot")
    limits: ImportLimits = documented(ImportLimits(), "size limits on the untrusted input")
    progress: bool = documented(True, "show a progress bar")

    def __post_init__(self) -> None:
        if self.batch_episodes < 1:
            raise ValueError("batch_episodes must be >= 1")
        if self.task:
            task_spec(self.task)  # UnknownTaskError names the known tasks


@dataclass(frozen=True)
class ExportResult:
    out: str
    episodes: int
    rows: int  # data rows: steps of every exported episode
    tasks: int  # distinct instructions
    cameras: tuple[str, ...]
    bytes_on_disk: int
    wall_seconds: float


@dataclass(frozen=True)
class ImportResult:
    store: str
    episodes: int  # newly committed
    duplicates: int  # already in the store with the same content
    steps: int
    with_lwd_metadata: bool
    ignored_features: tuple[str, ...]  # LeRobot features lwd has no place for
    wall_seconds: float


def _require(module: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise LeRobotFormatError(
            f"LeRobot datasets need {module.split('.')[0]}: pip install -e '.[lerobot]' (pyarrow and av)"
        ) from None


# -- export -------------------------------------------------------------------------------------------------


def state_names(obs_dim: int) -> list[str]:
    """Names of the state vector's entries for LeRobot's viewers."""
    if obs_dim == PROPRIO_DIM:
        return list(_NOW[:4]) + [f"prev_{n}" for n in _NOW[:4]]
    if obs_dim >= len(METAWORLD_STATE_NAMES):
        extra = obs_dim - len(METAWORLD_STATE_NAMES)  # long-horizon tasks: the stage one-hot
        return list(METAWORLD_STATE_NAMES) + [f"stage_{k}" for k in range(extra)]
    return [f"state_{k}" for k in range(obs_dim)]


@dataclass
class _Schema:
    """What every exported episode must share: LeRobot has one feature set per dataset."""

    obs_dim: int
    action_dim: int
    cameras: dict[str, tuple[int, int]]  # camera -> (height, width)

    @classmethod
    def of(cls, episode: Episode) -> _Schema:
        return cls(
            int(episode.observations.shape[1]),
            int(episode.actions.shape[1]),
            {camera: (int(a.shape[1]), int(a.shape[2])) for camera, a in episode.frames.items()},
        )

    def check(self, episode: Episode, first: str) -> None:
        other = _Schema.of(episode)
        if other != self:
            raise LeRobotFormatError(
                f"episode {episode.episode_id} ({episode.task}) has {other.describe()} but {first} has "
                f"{self.describe()}; a LeRobot dataset has one feature set: export them separately "
                "(--tasks / --sources)"
            )

    def describe(self) -> str:
        cameras = ", ".join(f"{c} {h}x{w}" for c, (h, w) in self.cameras.items()) or "no cameras"
        return f"state {self.obs_dim}, action {self.action_dim}, {cameras}"


class _Stats:
    """Running min/max/mean/std/count and quantiles of one feature, as LeRobot's stats.json has them.

    Vectors keep their values (exact quantiles; a state row is ~160 bytes); uint8 images keep a
    256-bin histogram per channel, which gives exact quantiles of pixel values in [0, 1].
    """

    def __init__(self, image: bool):
        self.image = image
        self.parts: list[np.ndarray] = []
        self.histogram = np.zeros((3, 256), np.int64)
        self.images = 0  # LeRobot counts images, not pixels

    def add(self, values: np.ndarray) -> None:
        if self.image:
            for channel in range(3):
                self.histogram[channel] += np.bincount(values[..., channel].ravel(), minlength=256)
            self.images += len(values)
        else:
            self.parts.append(np.asarray(values, np.float64).reshape(len(values), -1))

    def result(self) -> dict[str, list]:
        if self.image:
            return self._image_result()
        values = np.concatenate(self.parts)
        stats = {
            "min": values.min(0),
            "max": values.max(0),
            "mean": values.mean(0),
            "std": values.std(0),
            "count": np.array([len(values)]),
        }
        for q in QUANTILES:
            stats[f"q{round(q * 100):02d}"] = np.quantile(values, q, axis=0)
        return {key: value.tolist() for key, value in stats.items()}

    def _image_result(self) -> dict[str, list]:
        levels = np.arange(256) / 255.0
        count = self.histogram[0].sum()
        mean = self.histogram @ levels / count
        std = np.sqrt(np.maximum(self.histogram @ levels**2 / count - mean**2, 0.0))
        cumulative = np.cumsum(self.histogram, axis=1)
        stats = {
            "min": [levels[np.nonzero(h)[0][0]] for h in self.histogram],
            "max": [levels[np.nonzero(h)[0][-1]] for h in self.histogram],
            "mean": mean,
            "std": std,
        }
        for q in QUANTILES:
            stats[f"q{round(q * 100):02d}"] = [levels[np.searchsorted(c, q * count)] for c in cumulative]
        # LeRobot keeps image stats per channel as (3, 1, 1), pixels scaled to [0, 1]
        shaped = {key: [[[float(v)]] for v in value] for key, value in stats.items()}
        shaped["count"] = [self.images]
        return shaped


class _VideoWriter:
    """One mp4 of one camera: frames appended episode after episode at 1/fps apart."""

    def __init__(self, path: Path, fps: int, height: int, width: int, video: VideoConfig):
        av = _require("av")
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.fps = fps
        self.container = av.open(str(path), "w")
        options = {"crf": str(video.crf), "g": str(video.gop)}
        if video.codec == "av1":
            options["preset"] = "8"  # svt-av1's middle; LeRobot picks 12 (faster, larger files)
        self.stream = self.container.add_stream(CODECS[video.codec], rate=fps, options=options)
        self.stream.width, self.stream.height, self.stream.pix_fmt = width, height, video.pix_fmt
        self.frames = 0
        self._av = av

    def write(self, frames: np.ndarray) -> tuple[float, float]:
        """Append frames; returns the (from, to) timestamps in seconds they occupy in the file."""
        start = self.frames
        for image in frames:
            frame = self._av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
            frame.pts = self.frames
            frame.time_base = Fraction(1, self.fps)
            self.frames += 1
            self.container.mux(self.stream.encode(frame))
        return start / self.fps, self.frames / self.fps

    def bytes_written(self) -> int:
        return self.path.stat().st_size if self.path.exists() else 0

    def close(self) -> None:
        self.container.mux(self.stream.encode(None))
        self.container.close()


class _Shard:
    """The files one group of consecutive episodes goes to: a data parquet and a video per camera."""

    def __init__(self, root: Path, number: int, schema: _Schema, config: ExportConfig):
        self.chunk, self.file = divmod(number, CHUNKS_SIZE)
        self.root, self.config = root, config
        self.columns: dict[str, list[np.ndarray]] = {}
        self.rows = 0
        self.videos = {
            camera: _VideoWriter(root / self.video_path(camera), config.fps, height, width, config.video)
            for camera, (height, width) in schema.cameras.items()
        }

    @property
    def data_path(self) -> str:
        return DATA_PATH.format(chunk_index=self.chunk, file_index=self.file)

    def video_path(self, camera: str) -> str:
        return VIDEO_PATH.format(video_key=IMAGES + camera, chunk_index=self.chunk, file_index=self.file)

    def full(self) -> bool:
        data_bytes = sum(part.nbytes for parts in self.columns.values() for part in parts)
        if data_bytes >= self.config.data_file_mb * 2**20:
            return True
        return any(v.bytes_written() >= self.config.video_file_mb * 2**20 for v in self.videos.values())

    def add_rows(self, columns: dict[str, np.ndarray]) -> None:
        for name, values in columns.items():
            self.columns.setdefault(name, []).append(values)
        self.rows += len(columns["index"])

    def close(self) -> None:
        pa = _require("pyarrow")
        pq = _require("pyarrow.parquet")
        for writer in self.videos.values():
            writer.close()
        arrays, names = [], []
        for name, parts in self.columns.items():
            values = np.concatenate(parts)
            if values.ndim == 2:  # a vector feature: LeRobot's Sequence(length=n) is a fixed-size list
                arrays.append(pa.FixedSizeListArray.from_arrays(pa.array(values.ravel()), values.shape[1]))
            else:
                arrays.append(pa.array(values))
            names.append(name)
        path = self.root / self.data_path
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_arrays(arrays, names=names), path, compression="snappy")


def _features(schema: _Schema, config: ExportConfig, video_info: dict[str, dict]) -> dict:
    features: dict[str, dict] = {
        STATE: {"dtype": "float32", "shape": [schema.obs_dim], "names": state_names(schema.obs_dim)},
        ACTION: {
            "dtype": "float32",
            "shape": [schema.action_dim],
            "names": list(ACTION_NAMES) if schema.action_dim == len(ACTION_NAMES) else None,
        },
    }
    for camera, (height, width) in schema.cameras.items():
        features[IMAGES + camera] = {
            "dtype": "video",
            "shape": [height, width, 3],
            "names": ["height", "width", "channels"],
            "info": video_info[camera],
        }
    features[INTERVENTION] = {"dtype": "bool", "shape": [1], "names": None}
    features[POLICY_VERSION] = {"dtype": "int64", "shape": [1], "names": None}
    features[WALL_TIME] = {"dtype": "float64", "shape": [1], "names": None}
    features.update(json.loads(json.dumps(DEFAULT_FEATURES)))
    return features


def _video_info(path: Path, config: ExportConfig) -> dict:
    """The `info` LeRobot keeps on a video feature, read back from the file as its writer does."""
    av = _require("av")
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return {
            "video.height": stream.height,
            "video.width": stream.width,
            "video.codec": stream.codec_context.codec.canonical_name,
            "video.pix_fmt": stream.pix_fmt,
            "is_depth_map": False,  # LeRobot's canonical key (older datasets: video.is_depth_map)
            "video.fps": config.fps,
            "video.channels": 3,
            "video.g": config.video.gop,
            "video.crf": config.video.crf,
            "has_audio": False,
        }


def _write_tasks(path: Path, tasks: list[str]) -> None:
    """tasks.parquet as LeRobot's pandas writer leaves it: column task_index, index "task".

    The pandas metadata in the schema is what makes `pandas.read_parquet` give back "task"
    as the index, which LeRobot looks task strings up in.
    """
    pa = _require("pyarrow")
    pq = _require("pyarrow.parquet")
    pandas_meta = {
        "index_columns": ["task"],
        "column_indexes": [
            {"name": None, "field_name": None, "pandas_type": "unicode", "numpy_type": "object", "metadata": None}
        ],
        "columns": [
            {
                "name": "task_index",
                "field_name": "task_index",
                "pandas_type": "int64",
                "numpy_type": "int64",
                "metadata": None,
            },
            {"name": "task", "field_name": "task", "pandas_type": "unicode", "numpy_type": "object", "metadata": None},
        ],
        "creator": {"library": "pyarrow", "version": pa.__version__},
        "pandas_version": "2.2.3",
    }
    table = pa.table({"task_index": pa.array(range(len(tasks)), pa.int64()), "task": pa.array(tasks, pa.string())})
    table = table.replace_schema_metadata({b"pandas": json.dumps(pandas_meta).encode()})
    pq.write_table(table, path)


def _episode_columns(episode: Episode, index0: int, episode_index: int, task_index: int, fps: int) -> dict:
    steps = episode.num_steps
    frame_index = np.arange(steps, dtype=np.int64)
    return {
        STATE: np.asarray(episode.observations[:steps], np.float32),
        ACTION: np.asarray(episode.actions, np.float32),
        "timestamp": (frame_index / fps).astype(np.float32),
        "frame_index": frame_index,
        "episode_index": np.full(steps, episode_index, np.int64),
        "index": index0 + frame_index,
        "task_index": np.full(steps, task_index, np.int64),
        INTERVENTION: np.asarray(episode.intervention, bool),
        POLICY_VERSION: np.asarray(episode.policy_version, np.int64),
        WALL_TIME: np.asarray(episode.timestamps, np.float64),
    }


def _lwd_episode_row(episode: Episode) -> dict:
    return {
        "lwd/robot_id": episode.robot_id,
        "lwd/seq": int(episode.seq),
        LWD_TASK: episode.task,
        "lwd/source": episode.source,
        "lwd/success": bool(episode.success),
        "lwd/stage_score": float(episode.stage_score),
        "lwd/seed": None if episode.seed is None else int(episode.seed),
        "lwd/started_at": float(episode.started_at),
        "lwd/ended_at": float(episode.ended_at),
        "lwd/extras": json.dumps(episode.extras, sort_keys=True),
        "lwd/final_observation": np.asarray(episode.observations[-1], np.float32).tolist(),
    }


def _progress(total: int, enabled: bool, unit: str):
    from tqdm import tqdm

    return tqdm(total=total, disable=not enabled, unit=unit, dynamic_ncols=True)


def export_lerobot(config: ExportConfig) -> ExportResult:
    """Write the store's episodes (those of `config.tasks` / `config.sources`) as a LeRobot v3.0 dataset.

    Everything is written under `<out>.partial-<pid>` and renamed to `out` only when complete,
    so `out` either does not exist or holds a whole dataset. The store is only read.
    """
    pa = _require("pyarrow")
    pq = _require("pyarrow.parquet")
    began = time.perf_counter()
    out = Path(config.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise LeRobotFormatError(f"{out} exists and is not an empty directory; choose another --out")
    if not Path(config.store).is_dir():
        raise StoreError(f"{config.store}: no episode store there")
    store = EpisodeStore(config.store, create=False)
    records = store.records(tasks=config.tasks or None, sources=config.sources or None)
    if not records:
        raise LeRobotFormatError(
            f"{config.store}: no episodes to export"
            + (f" for tasks {list(config.tasks)}" if config.tasks else "")
            + (f" from sources {list(config.sources)}" if config.sources else "")
        )
    partial = out.parent / f"{out.name}.partial-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        result = _export_into(partial, store, records, config, pa, pq)
        if out.exists():
            out.rmdir()  # empty, checked above
        os.replace(partial, out)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    return ExportResult(str(out), *result, size, time.perf_counter() - began)


def _export_into(root: Path, store: EpisodeStore, records: list, config: ExportConfig, pa, pq):
    schema: _Schema | None = None
    first = ""
    tasks: dict[str, int] = {}
    episode_rows: list[dict] = []
    stats: dict[str, _Stats] = {}
    shard: _Shard | None = None
    shards = 0
    rows = 0
    video_info: dict[str, dict] = {}
    skipped: list = []
    with _progress(len(records), config.progress, "episode") as bar:
        for episode in store.load_many(records, skipped):
            if schema is None:
                schema, first = _Schema.of(episode), episode.episode_id
                for camera, (height, width) in schema.cameras.items():
                    if (height % 2 or width % 2) and config.video.pix_fmt == "yuv420p":
                        raise LeRobotFormatError(
                            f"camera {camera!r} frames are {height}x{width}; yuv420p video (what LeRobot "
                            "records) needs even sides; --video.pix-fmt yuv444p takes any"
                        )
            schema.check(episode, first)
            if shard is not None and shard.full():
                shard.close()
                shard = None
            if shard is None:
                shard = _Shard(root, shards, schema, config)
                shards += 1
            episode_index = len(episode_rows)
            task_index = tasks.setdefault(episode.instruction, len(tasks))
            columns = _episode_columns(episode, rows, episode_index, task_index, config.fps)
            shard.add_rows(columns)
            row = {
                "episode_index": episode_index,
                "tasks": [episode.instruction],
                "length": episode.num_steps,
                "data/chunk_index": shard.chunk,
                "data/file_index": shard.file,
                "dataset_from_index": rows,
                "dataset_to_index": rows + episode.num_steps,
            }
            for camera, writer in shard.videos.items():
                start, end = writer.write(episode.frames[camera])
                key = "videos/" + IMAGES + camera
                row |= {
                    f"{key}/chunk_index": shard.chunk,
                    f"{key}/file_index": shard.file,
                    f"{key}/from_timestamp": start,
                    f"{key}/to_timestamp": end,
                }
                stats.setdefault(IMAGES + camera, _Stats(image=True)).add(episode.frames[camera][: episode.num_steps])
            row |= {"meta/episodes/chunk_index": 0, "meta/episodes/file_index": 0}
            row |= _lwd_episode_row(episode)
            episode_rows.append(row)
            for name in (STATE, ACTION, INTERVENTION, POLICY_VERSION, WALL_TIME, *DEFAULT_FEATURES):
                stats.setdefault(name, _Stats(image=False)).add(columns[name])
            rows += episode.num_steps
            bar.update(1)
    if skipped:
        raise LeRobotFormatError(
            f"{len(skipped)} episodes of the store are damaged ({skipped[0].reason}); "
            f"`lwd store check --store {config.store} --repair` quarantines them, then export again"
        )
    shard.close()
    for camera in schema.cameras:
        video_info[camera] = _video_info(
            root / VIDEO_PATH.format(video_key=IMAGES + camera, chunk_index=0, file_index=0), config
        )

    episodes_path = root / EPISODES_PATH.format(chunk_index=0, file_index=0)
    episodes_path.parent.mkdir(parents=True, exist_ok=True)
    columns = {name: [row[name] for row in episode_rows] for name in episode_rows[0]}
    types = {"tasks": pa.list_(pa.string()), "lwd/seed": pa.int64(), "lwd/final_observation": pa.list_(pa.float32())}
    table = pa.table({name: pa.array(values, types.get(name)) for name, values in columns.items()})
    pq.write_table(table, episodes_path, compression="snappy")
    _write_tasks(root / TASKS_PATH, list(tasks))
    _write_json(root / STATS_PATH, {name: s.result() for name, s in stats.items()})
    info = {
        "codebase_version": CODEBASE_VERSION,
        "robot_type": config.robot_type,
        "total_episodes": len(episode_rows),
        "total_frames": rows,
        "total_tasks": len(tasks),
        "chunks_size": CHUNKS_SIZE,
        "data_files_size_in_mb": config.data_file_mb,
        "video_files_size_in_mb": config.video_file_mb,
        "fps": config.fps,
        "splits": {"train": f"0:{len(episode_rows)}"},
        "data_path": DATA_PATH,
        "video_path": VIDEO_PATH if schema.cameras else None,
        "features": _features(schema, config, video_info),
    }
    _write_json(root / INFO_PATH, info)  # last: a directory with info.json is a whole dataset
    return len(episode_rows), rows, len(tasks), tuple(schema.cameras)


def _write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=4) + "\n")


# -- import -------------------------------------------------------------------------------------------------


@dataclass
class _EpisodeRef:
    """One row of the episodes table, checked."""

    index: int
    length: int
    instruction: str
    task: str
    data_file: Path
    videos: dict[str, tuple[Path, float]]  # LeRobot video key -> (file, from_timestamp)
    lwd: dict | None  # the lwd/... columns, None for a dataset lwd did not write


@dataclass
class _Dataset:
    root: Path
    fps: int
    state_width: int
    action_width: int
    cameras: dict[str, str]  # LeRobot video key -> lwd camera name
    frame_shapes: dict[str, tuple[int, int]]  # LeRobot video key -> (height, width)
    episodes: list[_EpisodeRef]
    ignored: tuple[str, ...]
    has_lwd: bool


_VIDEO_KEY = re.compile(r"^[A-Za-z][A-Za-z0-9_.\-]{0,127}$")  # a path part: never "..", never "/"


def camera_name(video_key: str) -> str:
    """An lwd camera name for a LeRobot video feature: `observation.images.front` -> `front`."""
    name = video_key[len(IMAGES) :] if video_key.startswith(IMAGES) else video_key.rsplit(".", 1)[-1]
    name = re.sub(r"[^A-Za-z0-9_]", "_", name)
    if not name or not name[0].isalpha():
        name = "camera_" + name
    return name[:64]


def _read_json(path: Path, limits: ImportLimits, what: str) -> dict:
    limits.check_file(path, limits.max_json_bytes, what)
    try:
        data = json.loads(path.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError, OSError) as err:
        raise LeRobotFormatError(f"{path}: {what} is not valid JSON ({err})") from None
    if not isinstance(data, dict):
        raise LeRobotFormatError(f"{path}: {what} must be a JSON object")
    return data


def _read_parquet(path: Path, limits: ImportLimits, what: str, columns: list[str] | None = None):
    pq = _require("pyarrow.parquet")
    pa = _require("pyarrow")
    limits.check_file(path, limits.max_parquet_bytes, what)
    try:
        return pq.read_table(path, columns=columns)
    except (pa.ArrowException, OSError) as err:
        raise LeRobotFormatError(f"{path}: {what} is not a readable parquet file ({err})") from None


def _vector_feature(features: dict, key: str, limits: ImportLimits, info_path: Path) -> int:
    feature = features.get(key)
    if not isinstance(feature, dict):
        raise LeRobotFormatError(
            f"{info_path}: no {key!r} feature; lwd needs {STATE!r} (the robot's state) and {ACTION!r}"
        )
    shape = feature.get("shape")
    if (
        feature.get("dtype") not in ("float32", "float64")
        or not isinstance(shape, list)
        or len(shape) != 1
        or not isinstance(shape[0], int)
        or not 1 <= shape[0] <= limits.max_feature_width
    ):
        raise LeRobotFormatError(
            f"{info_path}: feature {key!r} is {feature.get('dtype')} of shape {shape}; lwd reads float32/float64 "
            f"vectors of 1..{limits.max_feature_width} numbers"
        )
    return shape[0]


def _int_field(info: dict, key: str, info_path: Path, low: int = 0) -> int:
    value = info.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise LeRobotFormatError(f"{info_path}: {key!r} must be an integer >= {low}, got {value!r}")
    return value


def read_dataset(root: Path, config: ImportConfig) -> _Dataset:
    """Check a LeRobot v3 directory's metadata and resolve every episode's lwd task, reading no
    step data: everything that can be refused is refused before anything is imported."""
    limits = config.limits
    info_path = root / INFO_PATH
    if not root.is_dir():
        raise LeRobotFormatError(f"{root}: no such directory")
    info = _read_json(info_path, limits, "LeRobot info")
    version = str(info.get("codebase_version", ""))
    if not version.startswith("v3."):
        raise LeRobotFormatError(
            f"{info_path}: codebase_version {version!r}; lwd reads LeRobotDataset v3.x (convert a v2.1 dataset "
            "with LeRobot's convert_dataset_v21_to_v30 first)"
        )
    fps = _int_field(info, "fps", info_path, low=1)
    total_episodes = _int_field(info, "total_episodes", info_path)
    if total_episodes > limits.max_episodes:
        raise LeRobotFormatError(f"{info_path}: {total_episodes} episodes, more than the {limits.max_episodes} allowed")
    if info.get("data_path", DATA_PATH) != DATA_PATH or info.get("video_path") not in (None, VIDEO_PATH):
        raise LeRobotFormatError(
            f"{info_path}: data_path {info.get('data_path')!r} / video_path {info.get('video_path')!r} are not "
            f"LeRobot v3's {DATA_PATH!r} / {VIDEO_PATH!r}; lwd reads the standard layout only"
        )
    features = info.get("features")
    if not isinstance(features, dict):
        raise LeRobotFormatError(f"{info_path}: 'features' must be an object")
    state_width = _vector_feature(features, STATE, limits, info_path)
    action_width = _vector_feature(features, ACTION, limits, info_path)
    cameras, shapes, ignored = {}, {}, []
    for key, feature in features.items():
        dtype = feature.get("dtype") if isinstance(feature, dict) else None
        if dtype == "image":
            raise LeRobotFormatError(
                f"{info_path}: feature {key!r} stores images in parquet (dtype 'image'); lwd imports camera "
                "frames from video features only (LeRobot's default)"
            )
        if dtype == "video":
            shape = feature.get("shape")
            if not _VIDEO_KEY.match(str(key)) or not (
                isinstance(shape, list)
                and len(shape) == 3
                and all(isinstance(n, int) and 1 <= n for n in shape)
                and shape[2] == 3
                and max(shape[0], shape[1]) <= MAX_FRAME_SIDE
            ):
                raise LeRobotFormatError(
                    f"{info_path}: video feature {key!r} of shape {shape}; lwd reads RGB [height, width, 3] "
                    f"videos of sides <= {MAX_FRAME_SIDE} named by {_VIDEO_KEY.pattern}"
                )
            cameras[key] = camera_name(key)
            shapes[key] = (shape[0], shape[1])
        elif key not in (STATE, ACTION, INTERVENTION, POLICY_VERSION, WALL_TIME, *DEFAULT_FEATURES):
            ignored.append(key)
    if len(set(cameras.values())) != len(cameras):
        raise LeRobotFormatError(f"{info_path}: video features {sorted(cameras)} map to clashing camera names")
    if info.get("video_path") is None and cameras:
        raise LeRobotFormatError(f"{info_path}: video features {sorted(cameras)} but no video_path")
    tasks = _read_tasks(root, limits)
    episodes, has_lwd = _read_episodes(root, config, tasks, list(cameras), limits)
    if len(episodes) != total_episodes:
        raise LeRobotFormatError(
            f"{root / EPISODES_DIR}: {len(episodes)} episode rows but info.json says total_episodes={total_episodes}"
        )
    dataset = _Dataset(root, fps, state_width, action_width, cameras, shapes, episodes, tuple(ignored), has_lwd)
    _check_dimensions(dataset, info_path)
    return dataset


def _read_tasks(root: Path, limits: ImportLimits) -> dict[int, str]:
    path = root / TASKS_PATH
    table = _read_parquet(path, limits, "tasks table")
    names = table.column_names
    text_column = "task" if "task" in names else "__index_level_0__" if "__index_level_0__" in names else None
    if text_column is None or "task_index" not in names:
        raise LeRobotFormatError(f"{path}: needs a 'task_index' column and the task strings ('task'), has {names}")
    texts = table.column(text_column).to_pylist()
    indices = table.column("task_index").to_pylist()
    tasks = {}
    for index, text in zip(indices, texts):
        if not isinstance(index, int) or not isinstance(text, str) or not text.strip():
            raise LeRobotFormatError(f"{path}: task {index!r} -> {text!r} is not an integer index and a task string")
        tasks[index] = text
    return tasks


_EPISODE_COLUMNS = ("episode_index", "tasks", "length", "data/chunk_index", "data/file_index")


def _read_episodes(
    root: Path, config: ImportConfig, tasks: dict[int, str], video_keys: list[str], limits: ImportLimits
) -> tuple[list[_EpisodeRef], bool]:
    pa = _require("pyarrow")
    files = sorted((root / EPISODES_DIR).glob("chunk-*/file-*.parquet"))
    if not files:
        raise LeRobotFormatError(f"{root / EPISODES_DIR}: no episodes table (chunk-XXX/file-XXX.parquet)")
    tables = []
    for path in files:
        table = _read_parquet(path, limits, "episodes table")
        table = table.select([c for c in table.column_names if not c.startswith("stats/")])
        required = list(_EPISODE_COLUMNS) + [
            f"videos/{key}/{part}" for key in video_keys for part in ("chunk_index", "file_index", "from_timestamp")
        ]
        missing = [c for c in required if c not in table.column_names]
        if missing:
            raise LeRobotFormatError(f"{path}: episodes table lacks columns {missing}")
        tables.append(table)
    try:
        table = pa.concat_tables(tables, promote_options="default")
    except pa.ArrowException as err:
        raise LeRobotFormatError(f"{root / EPISODES_DIR}: episode tables do not agree ({err})") from None
    if table.num_rows > limits.max_episodes:
        raise LeRobotFormatError(f"{root / EPISODES_DIR}: more than {limits.max_episodes} episodes")
    has_lwd = LWD_TASK in table.column_names
    rows = table.to_pylist()
    rows.sort(key=lambda r: r["episode_index"] if isinstance(r["episode_index"], int) else -1)
    episodes = []
    for position, row in enumerate(rows):
        where = f"{root / EPISODES_DIR}: episode {row.get('episode_index')!r}"
        if row["episode_index"] != position:
            raise LeRobotFormatError(f"{where}: episode indices must be 0..N-1, found {row['episode_index']!r}")
        length = row["length"]
        if not isinstance(length, int) or not 1 <= length <= limits.max_episode_rows:
            raise LeRobotFormatError(f"{where}: length {length!r} outside 1..{limits.max_episode_rows}")
        texts = row["tasks"]
        if not isinstance(texts, list) or len(texts) != 1 or not isinstance(texts[0], str):
            raise LeRobotFormatError(
                f"{where}: tasks {texts!r}; an lwd episode has exactly one instruction, so one task string"
            )
        if texts[0] not in tasks.values():
            raise LeRobotFormatError(f"{where}: task {texts[0]!r} is not in {root / TASKS_PATH}")
        lwd = _lwd_fields(row, where) if has_lwd else None
        task = lwd["task"] if lwd else _lwd_task(texts[0], config.task, where)
        episodes.append(
            _EpisodeRef(
                index=position,
                length=length,
                instruction=texts[0],
                task=task,
                data_file=root
                / DATA_PATH.format(
                    chunk_index=_index(row, "data/chunk_index", where), file_index=_index(row, "data/file_index", where)
                ),
                videos={
                    key: (
                        root
                        / VIDEO_PATH.format(
                            video_key=key,
                            chunk_index=_index(row, f"videos/{key}/chunk_index", where),
                            file_index=_index(row, f"videos/{key}/file_index", where),
                        ),
                        _timestamp(row, f"videos/{key}/from_timestamp", where),
                    )
                    for key in video_keys
                },
                lwd=lwd,
            )
        )
    return episodes, has_lwd


_LWD_TYPES = {
    "robot_id": (str,),
    "seq": (int,),
    "task": (str,),
    "source": (str,),
    "success": (bool,),
    "stage_score": (int, float),
    "seed": (int, type(None)),
    "started_at": (int, float),
    "ended_at": (int, float),
    "extras": (str,),
    "final_observation": (list,),
}


def _lwd_fields(row: dict, where: str) -> dict:
    """The episode's lwd/... columns, each of the type lwd wrote (the Episode checks the values)."""
    fields = {name: row.get("lwd/" + name) for name in _LWD_TYPES}
    for name, types in _LWD_TYPES.items():
        value = fields[name]
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            raise LeRobotFormatError(
                f"{where}: lwd/{name} is {value!r}, expected {' or '.join(t.__name__ for t in types)}"
            )
    return fields


def _index(row: dict, column: str, where: str) -> int:
    value = row.get(column)
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 10**6:
        raise LeRobotFormatError(f"{where}: {column} must be an integer in [0, 10^6), got {value!r}")
    return value


def _timestamp(row: dict, column: str, where: str) -> float:
    value = row.get(column)
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value < 0:
        raise LeRobotFormatError(f"{where}: {column} must be a finite number >= 0, got {value!r}")
    return float(value)


def _lwd_task(text: str, fallback: str, where: str) -> str:
    """The lwd task a LeRobot task string belongs to: the task whose phrasing it is, else --task."""
    owner = phrasing_owner(text)
    if owner is not None:
        return owner
    if fallback:
        return fallback
    raise LeRobotFormatError(
        f"{where}: task string {text!r} is not a phrasing of any lwd task (lwd/envs/phrasings.py); pass "
        "--task NAME to import these episodes as that lwd task, with their task string as instruction"
    )


def _check_dimensions(dataset: _Dataset, info_path: Path) -> None:
    for task in sorted({e.task for e in dataset.episodes}):
        try:
            spec = task_spec(task)
        except UnknownTaskError as err:
            raise LeRobotFormatError(f"{info_path}: {err}") from None
        widths = {spec.obs_dim} | ({PROPRIO_DIM} if dataset.cameras else set())
        if dataset.state_width not in widths:
            raise LeRobotFormatError(
                f"{info_path}: {STATE!r} has {dataset.state_width} numbers, but lwd task {task!r} observes "
                f"{spec.obs_dim}" + (f" (or {PROPRIO_DIM} proprio numbers with cameras)" if dataset.cameras else "")
            )
        if dataset.action_width != spec.action_dim:
            raise LeRobotFormatError(
                f"{info_path}: {ACTION!r} has {dataset.action_width} numbers, but lwd task {task!r} takes "
                f"{spec.action_dim} in [-1, 1]"
            )


class _VideoCursor:
    """Frames of one mp4 at increasing timestamps, decoded once, front to back."""

    def __init__(self, path: Path, shape: tuple[int, int], fps: int, limits: ImportLimits):
        self.path, self.shape, self.limits = path, shape, limits
        # Frames are 1/fps apart, so a quarter frame picks exactly one frame and tolerates rounding
        self.tolerance = max(1e-4, 0.25 / fps)
        self._open()

    def _open(self) -> None:
        av = _require("av")
        self.limits.check_file(self.path, self.limits.max_video_bytes, "video file")
        try:
            self.container = av.open(str(self.path))
            self.frames = self.container.decode(video=0)
        except (av.FFmpegError, IndexError, ValueError) as err:
            raise LeRobotFormatError(f"{self.path}: not a readable video ({err})") from None
        self.current: tuple[float, np.ndarray] | None = None
        self._av = av

    def _advance(self) -> bool:
        try:
            frame = next(self.frames)
        except StopIteration:
            return False
        except self._av.FFmpegError as err:
            raise LeRobotFormatError(f"{self.path}: video does not decode ({err})") from None
        if (frame.height, frame.width) != self.shape:
            raise LeRobotFormatError(
                f"{self.path}: frames are {frame.height}x{frame.width}, info.json says {self.shape[0]}x{self.shape[1]}"
            )
        self.current = (float(frame.time), frame.to_ndarray(format="rgb24"))
        return True

    def at(self, times: np.ndarray) -> np.ndarray:
        """(len(times), H, W, 3) uint8: the frame shown at each time (seconds into the file)."""
        out = np.empty((len(times), *self.shape, 3), np.uint8)
        for k, t in enumerate(times):
            if self.current is not None and self.current[0] > t + self.tolerance:
                self.container.close()  # asked to go back: start over
                self._open()
            while self.current is None or self.current[0] < t - self.tolerance:
                if not self._advance():
                    raise LeRobotFormatError(f"{self.path}: video ends before {t:.4f} s, where a frame is needed")
            if abs(self.current[0] - t) > self.tolerance:
                raise LeRobotFormatError(
                    f"{self.path}: no frame within {self.tolerance:.4f} s of {t:.4f} s "
                    f"(next at {self.current[0]:.4f} s)"
                )
            out[k] = self.current[1]
        return out

    def close(self) -> None:
        self.container.close()


def _is_list(pa, arrow_type) -> bool:
    return pa.types.is_list(arrow_type) or pa.types.is_large_list(arrow_type) or pa.types.is_fixed_size_list(arrow_type)


def _column(table, name: str, path: Path, width: int | None = None) -> np.ndarray:
    pa = _require("pyarrow")
    if name not in table.column_names:
        raise LeRobotFormatError(f"{path}: data has no column {name!r}")
    column = table.column(name).combine_chunks()
    try:
        if width is None:
            if _is_list(pa, column.type):  # a (1,)-shaped feature written as a list
                column = column.flatten()
            return column.to_numpy(zero_copy_only=False)
        if not _is_list(pa, column.type):
            raise LeRobotFormatError(f"{path}: column {name!r} is {column.type}, expected a list of {width} numbers")
        if column.null_count:
            raise LeRobotFormatError(f"{path}: column {name!r} has missing rows")
        values = column.flatten().to_numpy(zero_copy_only=False)
    except pa.ArrowException as err:
        raise LeRobotFormatError(f"{path}: column {name!r} does not convert ({err})") from None
    if values.size != len(column) * width:
        raise LeRobotFormatError(f"{path}: column {name!r} rows are not {width} numbers each")
    return values.reshape(len(column), width)


class _DataFiles:
    """The data parquet files, read one at a time, split by episode."""

    def __init__(self, dataset: _Dataset, limits: ImportLimits):
        self.dataset, self.limits = dataset, limits
        self.path: Path | None = None
        self.by_episode: dict[int, dict[str, np.ndarray]] = {}

    def rows(self, ref: _EpisodeRef) -> dict[str, np.ndarray]:
        if ref.data_file != self.path:
            self._load(ref.data_file)
        rows = self.by_episode.get(ref.index)
        if rows is None or len(rows["frame_index"]) != ref.length:
            found = 0 if rows is None else len(rows["frame_index"])
            raise LeRobotFormatError(
                f"{ref.data_file}: episode {ref.index} has {found} rows, its length is {ref.length}"
            )
        if not np.array_equal(rows["frame_index"], np.arange(ref.length)):
            raise LeRobotFormatError(f"{ref.data_file}: episode {ref.index}'s frame_index is not 0..{ref.length - 1}")
        return rows

    def _load(self, path: Path) -> None:
        table = _read_parquet(path, self.limits, "data file")
        dataset = self.dataset
        columns = {
            STATE: _column(table, STATE, path, dataset.state_width),
            ACTION: _column(table, ACTION, path, dataset.action_width),
            "timestamp": _column(table, "timestamp", path),
            "frame_index": _column(table, "frame_index", path),
            "episode_index": _column(table, "episode_index", path),
        }
        if dataset.has_lwd:
            for name in (INTERVENTION, POLICY_VERSION, WALL_TIME):
                columns[name] = _column(table, name, path)
        if any(np.asarray(c).dtype == object for c in columns.values()):
            raise LeRobotFormatError(f"{path}: data has missing values")
        order = np.lexsort((columns["frame_index"], columns["episode_index"]))
        columns = {name: values[order] for name, values in columns.items()}
        episode_index = columns["episode_index"]
        starts = np.flatnonzero(np.r_[True, episode_index[1:] != episode_index[:-1]])
        ends = np.r_[starts[1:], len(episode_index)]
        self.by_episode = {
            int(episode_index[s]): {name: values[s:e] for name, values in columns.items()} for s, e in zip(starts, ends)
        }
        self.path = path


def _episode(dataset: _Dataset, ref: _EpisodeRef, rows: dict, frames: dict, config: ImportConfig) -> Episode:
    where = f"{dataset.root}: episode {ref.index}"
    if ref.lwd is not None:
        lwd = ref.lwd
        try:
            extras = json.loads(lwd["extras"])
            final = np.asarray(lwd["final_observation"], np.float32)
        except (TypeError, ValueError, KeyError) as err:
            raise LeRobotFormatError(f"{where}: lwd/extras or lwd/final_observation unreadable ({err})") from None
        if final.shape != (dataset.state_width,):
            raise LeRobotFormatError(f"{where}: lwd/final_observation has shape {final.shape}")
        return Episode(
            robot_id=lwd["robot_id"],
            seq=lwd["seq"],
            task=lwd["task"],
            instruction=ref.instruction,
            source=lwd["source"],
            observations=np.concatenate([rows[STATE].astype(np.float32), final[None]]),
            actions=rows[ACTION].astype(np.float32),
            intervention=rows[INTERVENTION].astype(bool),
            policy_version=rows[POLICY_VERSION].astype(np.int64),
            timestamps=rows[WALL_TIME].astype(np.float64),
            success=lwd["success"],
            stage_score=lwd["stage_score"],
            seed=lwd["seed"],
            started_at=lwd["started_at"],
            ended_at=lwd["ended_at"],
            extras=extras,
            frames=frames,
        )
    # A dataset recorded elsewhere: N rows are N observations and N-1 steps.
    if ref.length < 2:
        raise LeRobotFormatError(f"{where}: one row is one observation and no step; lwd needs at least 2 rows")
    steps = ref.length - 1
    timestamps = rows["timestamp"].astype(np.float64)
    return Episode(
        robot_id=config.robot_id or default_robot_id(dataset.root),
        seq=ref.index,
        task=ref.task,
        instruction=ref.instruction,
        source=config.source,
        observations=rows[STATE].astype(np.float32),
        actions=rows[ACTION][:steps].astype(np.float32),
        intervention=np.zeros(steps, bool),
        policy_version=np.full(steps, NO_POLICY, np.int64),
        timestamps=timestamps[:steps],
        success=config.success and config.source != "play",
        stage_score=1.0 if config.success and config.source != "play" else 0.0,
        seed=None,
        started_at=float(timestamps[0]),
        ended_at=float(timestamps[-1]),
        extras={
            "lerobot": {
                "dataset": dataset.root.name,
                "episode_index": ref.index,
                "final_action": rows[ACTION][-1].astype(np.float64).tolist(),
            }
        },
        frames=frames,
    )


def default_robot_id(root: Path) -> str:
    name = re.sub(r"[^A-Za-z0-9_.\-]", "_", root.resolve().name) or "dataset"
    return f"lerobot-{name}"[:128]


def _episodes(dataset: _Dataset, config: ImportConfig) -> Iterator[Episode]:
    data = _DataFiles(dataset, config.limits)
    cursors: dict[Path, _VideoCursor] = {}
    try:
        for ref in dataset.episodes:
            rows = data.rows(ref)
            observations = ref.length + 1 if ref.lwd is not None else ref.length
            frame_bytes = observations * sum(h * w * 3 for h, w in dataset.frame_shapes.values())
            if frame_bytes > MAX_FRAME_BYTES_PER_EPISODE:
                raise LeRobotFormatError(
                    f"{dataset.root}: episode {ref.index} would decode to {frame_bytes / 2**20:.0f} MiB of "
                    f"frames, more than the {MAX_FRAME_BYTES_PER_EPISODE // 2**20} MiB an lwd episode may hold"
                )
            times = rows["timestamp"].astype(np.float64)
            if ref.lwd is not None:  # the final observation's frame follows the last row's
                times = np.r_[times, times[-1] + 1.0 / dataset.fps]
            frames = {}
            for key, (path, start) in ref.videos.items():
                if path not in cursors:
                    cursors[path] = _VideoCursor(path, dataset.frame_shapes[key], dataset.fps, config.limits)
                frames[dataset.cameras[key]] = cursors[path].at(start + times)
            yield _episode(dataset, ref, rows, frames, config)
    finally:
        for cursor in cursors.values():
            cursor.close()


def import_lerobot(config: ImportConfig) -> ImportResult:
    """Commit a LeRobot v3 dataset's episodes to an episode store.

    The metadata of every episode is checked first (task, dimensions, files), so most bad
    input is refused before anything is committed. Episodes are then committed in batches;
    an error part-way (a corrupt data or video file) leaves the batches before it committed
    and names the file. Importing again is safe: episodes already committed with the same
    content are acknowledged as duplicates.
    """
    began = time.perf_counter()
    dataset = read_dataset(Path(config.src), config)
    store = EpisodeStore(config.store)
    committed = duplicates = steps = 0
    batch: list[Episode] = []

    def commit() -> None:
        nonlocal committed, duplicates
        receipts = store.append_many(batch)
        duplicates += sum(r.duplicate for r in receipts)
        committed += sum(not r.duplicate for r in receipts)
        batch.clear()

    with _progress(len(dataset.episodes), config.progress, "episode") as bar:
        try:
            for episode in _episodes(dataset, config):
                try:
                    validate(episode)
                except EpisodeValidationError as err:
                    raise LeRobotFormatError(
                        f"{dataset.root}: episode {episode.seq} is not a valid lwd episode: {err}"
                    ) from None
                batch.append(episode)
                steps += episode.num_steps
                if len(batch) >= config.batch_episodes:
                    commit()
                bar.update(1)
            if batch:
                commit()
        except LeRobotFormatError as err:
            if committed or duplicates:
                raise LeRobotFormatError(
                    f"{err} ({committed + duplicates} episodes before it are in {config.store}; importing again "
                    "after a fix skips them as duplicates)"
                ) from None
            raise
    return ImportResult(
        config.store, committed, duplicates, steps, dataset.has_lwd, dataset.ignored, time.perf_counter() - began
    )


# -- command line -------------------------------------------------------------------------------------------


def cmd_dataset_export(config: ExportConfig) -> int:
    result = export_lerobot(config)
    cameras = ", ".join(result.cameras) or "none"
    print(
        f"exported {result.episodes} episodes ({result.rows} steps, {result.tasks} task strings, cameras: {cameras}) "
        f"to {result.out} as LeRobotDataset {CODEBASE_VERSION}: {result.bytes_on_disk / 2**20:.1f} MiB "
        f"in {result.wall_seconds:.1f}s"
    )
    return 0


def cmd_dataset_import(config: ImportConfig) -> int:
    result = import_lerobot(config)
    origin = "lwd's metadata" if result.with_lwd_metadata else "no lwd metadata (a dataset recorded elsewhere)"
    print(
        f"imported {result.episodes} episodes ({result.duplicates} already in the store, {result.steps} steps) "
        f"into {result.store} from {config.src} ({origin}) in {result.wall_seconds:.1f}s"
    )
    if result.ignored_features:
        print(f"  features lwd has no place for, not imported: {', '.join(result.ignored_features)}")
    return 0


__all__ = [
    "CODEBASE_VERSION",
    "ExportConfig",
    "ExportResult",
    "ImportConfig",
    "ImportLimits",
    "ImportResult",
    "LeRobotFormatError",
    "VideoConfig",
    "camera_name",
    "cmd_dataset_export",
    "cmd_dataset_import",
    "default_robot_id",
    "export_lerobot",
    "import_lerobot",
    "read_dataset",
    "state_names",
]
