"""The episode record (SPEC §2), its validation, and its on-disk encoding.

An episode file is a safetensors file: the per-step arrays below as tensors, and the
episode-level fields as JSON under the metadata key "lwd_episode". Anything that can
read safetensors can read our data; nothing is pickled.

Camera frames (when the robot has cameras) are one uint8 tensor per camera,
"frames.<camera>", holding the zlib-compressed (level 1) bytes of the raw (T+1, H, W, 3)
uint8 frames; the metadata's "frames" entry gives the codec and each camera's shape.
Lossless zlib level 1 was the smallest and fastest lossless format measured
(docs/benchmarks.md, "Storing camera frames": 3.9x smaller than raw, ~13 ms to decode an
80-step episode of two 64x64 cameras); lossy video damages the 1-2 pixel features a
policy must see at 64x64. Frame-less episodes are written exactly as before the field
existed (same bytes, same digest), so old files and catalogues stay valid.
"""

from __future__ import annotations

import hashlib
import json
import re
import zlib
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from lwd.envs.cameras import PROPRIO_DIM
from lwd.envs.phrasings import phrasing_owner, task_phrasings
from lwd.envs.tasks import SEEDS, TaskSpec, UnknownTaskError, task_spec

Source = Literal["demo", "rollout", "play"]
SOURCES: tuple[str, ...] = ("demo", "rollout", "play")
FORMAT_VERSION = 1
NO_POLICY = -1  # policy_version of steps no learned policy produced (demos, play)

_ROBOT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")

CAMERA_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}$")
MAX_CAMERAS = 8
MAX_FRAME_SIDE = 1024
# Decoded frame bytes one episode may hold: 500 steps of four 128x128 cameras are 98 MiB.
# A decompressed blob is never allowed to grow past its declared size, so this also bounds
# what a hostile file can make a reader allocate.
MAX_FRAME_BYTES_PER_EPISODE = 256 * 2**20
FRAME_CODEC = "zlib"
FRAME_COMPRESSION_LEVEL = 1  # docs/benchmarks.md, "Storing camera frames"
FRAME_TENSOR_PREFIX = "frames."


class EpisodeValidationError(ValueError):
    """An episode that must not enter the store; the message names the problem."""


@dataclass(frozen=True)
class Episode:
    """One episode of one robot on one task. T = number of executed steps."""

    robot_id: str
    seq: int  # robot-local sequence number; (robot_id, seq) is the stable episode id
    task: str
    instruction: str
    source: Source
    observations: np.ndarray  # (T+1, obs_dim) float32: s_0 .. s_T (s_T after the last action)
    actions: np.ndarray  # (T, action_dim) float32: executed actions
    intervention: np.ndarray  # (T,) bool: True where the operator, not the policy, acted
    policy_version: np.ndarray  # (T,) int64: deployed policy version, NO_POLICY if none
    timestamps: np.ndarray  # (T,) float64: wall time (s since epoch) of each step
    success: bool  # terminal label; play data is labelled a failure
    stage_score: float = 0.0  # fraction of stages completed, in [0, 1]
    seed: int | None = None  # initial-state seed of a simulated robot, None on hardware
    started_at: float = 0.0
    ended_at: float = 0.0
    extras: dict = field(default_factory=dict)  # JSON-serialisable notes (noise level, ...)
    # camera -> (T+1, H, W, 3) uint8, aligned with observations; empty without cameras
    frames: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def episode_id(self) -> str:
        return episode_id(self.robot_id, self.seq)

    @property
    def num_steps(self) -> int:
        return int(self.actions.shape[0])

    @property
    def num_interventions(self) -> int:
        return int(np.count_nonzero(self.intervention))


def episode_id(robot_id: str, seq: int) -> str:
    return f"{robot_id}/{seq:010d}"


def _fail(episode_hint: str, problem: str) -> None:
    raise EpisodeValidationError(f"episode {episode_hint}: {problem}")


def validate(episode: Episode) -> None:
    """Raise EpisodeValidationError naming the first problem; return None if valid."""
    hint = f"{getattr(episode, 'robot_id', '?')}/{getattr(episode, 'seq', '?')}"
    spec = _validate_identity(episode, hint)
    _validate_arrays(episode, hint, spec)
    _validate_frames(episode, hint)
    _validate_labels(episode, hint)


def _validate_identity(episode: Episode, hint: str) -> TaskSpec:
    """Every field present; robot, seq, task, source and instruction well-formed."""
    for name in Episode.__dataclass_fields__:
        if not hasattr(episode, name):
            _fail(hint, f"missing field {name!r}")
    required = (
        "robot_id",
        "seq",
        "task",
        "instruction",
        "source",
        "observations",
        "actions",
        "intervention",
        "policy_version",
        "timestamps",
        "success",
    )
    for name in required:
        if getattr(episode, name) is None:
            _fail(hint, f"missing field {name!r}")
    if not isinstance(episode.robot_id, str) or not _ROBOT_ID.match(episode.robot_id):
        _fail(hint, f"robot_id {episode.robot_id!r} must match {_ROBOT_ID.pattern}")
    if not isinstance(episode.seq, (int, np.integer)) or isinstance(episode.seq, bool) or episode.seq < 0:
        _fail(hint, f"seq must be a non-negative integer, got {episode.seq!r}")
    try:
        spec = task_spec(episode.task)
    except UnknownTaskError as err:
        _fail(hint, str(err))
    if episode.source not in SOURCES:
        _fail(hint, f"source {episode.source!r} is not one of {SOURCES}")
    if not isinstance(episode.instruction, str) or not episode.instruction.strip():
        _fail(hint, "instruction must be a non-empty string")
    _validate_instruction(episode, hint)
    return spec


def _validate_instruction(episode: Episode, hint: str) -> None:
    """A training phrasing of the episode's task (lwd/envs/phrasings.py); free text only from hardware.

    Held-out phrasings never enter training data, like held-out seeds. A simulated robot
    (one with a seed) draws its wording from the table, so anything else is a bug. A
    hardware robot (no seed) carries what a person asked for: any wording is accepted as
    language to learn from, except a phrasing that belongs to another task (a mislabel).
    """
    phrasings = task_phrasings(episode.task)
    if episode.instruction in phrasings.train:
        return
    if episode.instruction in phrasings.held_out:
        _fail(
            hint,
            f"instruction {episode.instruction!r} is a held-out phrasing of {episode.task!r}; "
            "held-out phrasings never enter training data",
        )
    owner = phrasing_owner(episode.instruction)
    if owner is not None:
        _fail(hint, f"instruction {episode.instruction!r} is a phrasing of task {owner!r}, not of {episode.task!r}")
    if episode.seed is not None:
        _fail(
            hint,
            f"instruction {episode.instruction!r} is not a training phrasing of {episode.task!r}; a simulated "
            f"robot draws one of its {len(phrasings.train)} (lwd/envs/phrasings.py), e.g. {phrasings.train[0]!r}",
        )


def _validate_arrays(episode: Episode, hint: str, spec: TaskSpec) -> None:
    """Array types, the shapes the task implies, finite values, actions in range."""
    arrays = {
        "observations": episode.observations,
        "actions": episode.actions,
        "intervention": episode.intervention,
        "policy_version": episode.policy_version,
        "timestamps": episode.timestamps,
    }
    for name, value in arrays.items():
        if not isinstance(value, np.ndarray):
            _fail(hint, f"{name} must be a numpy array, got {type(value).__name__}")
    steps = episode.actions.shape[0] if episode.actions.ndim == 2 else -1
    expected = {
        "observations": (steps + 1, observation_dim(episode, spec)),
        "actions": (steps, spec.action_dim),
        "intervention": (steps,),
        "policy_version": (steps,),
        "timestamps": (steps,),
    }
    if steps < 1:
        _fail(hint, f"actions must have shape (T >= 1, {spec.action_dim}), got {episode.actions.shape}")
    for name, shape in expected.items():
        if arrays[name].shape != shape:
            _fail(
                hint,
                f"{name} has shape {arrays[name].shape}, expected {shape} for task {episode.task!r} with T={steps}",
            )
    for name in ("observations", "actions", "timestamps"):
        value = arrays[name]
        if not np.issubdtype(value.dtype, np.floating):
            _fail(hint, f"{name} must be floating point, got {value.dtype}")
        bad = ~np.isfinite(value)
        if bad.any():
            where = tuple(int(i) for i in np.argwhere(bad)[0])
            _fail(hint, f"{name} contains NaN or inf (first at index {where})")
    if np.abs(episode.actions).max() > 1.0 + 1e-6:
        _fail(hint, f"actions must lie in [-1, 1], max |a| = {np.abs(episode.actions).max():.3g}")
    if episode.intervention.dtype != np.bool_:
        _fail(hint, f"intervention must be bool, got {episode.intervention.dtype}")
    if not np.issubdtype(episode.policy_version.dtype, np.integer) or episode.policy_version.min() < NO_POLICY:
        _fail(hint, "policy_version must be integers >= -1")


def observation_dim(episode: Episode, spec: TaskSpec) -> int:
    """The observation width an episode must have: the task's state, or PROPRIO_DIM for a
    robot that sees (frames) and observes only its own hand in numbers (proprio mode)."""
    frames = getattr(episode, "frames", None)
    observations = getattr(episode, "observations", None)
    if frames and isinstance(observations, np.ndarray) and observations.ndim == 2:
        if observations.shape[1] == PROPRIO_DIM:
            return PROPRIO_DIM
    return spec.obs_dim


def _validate_frames(episode: Episode, hint: str) -> None:
    """camera -> (T+1, H, W, 3) uint8, well-named cameras, within the per-episode size limit."""
    frames = episode.frames
    if not isinstance(frames, dict):
        _fail(hint, f"frames must be a dict camera -> array, got {type(frames).__name__}")
    if len(frames) > MAX_CAMERAS:
        _fail(hint, f"frames has {len(frames)} cameras, at most {MAX_CAMERAS} are accepted")
    rows = episode.observations.shape[0]
    total = 0
    for camera, array in frames.items():
        if not isinstance(camera, str) or not CAMERA_NAME.match(camera):
            _fail(hint, f"camera name {camera!r} must match {CAMERA_NAME.pattern}")
        if not isinstance(array, np.ndarray):
            _fail(hint, f"frames[{camera!r}] must be a numpy array, got {type(array).__name__}")
        if array.dtype != np.uint8:
            _fail(hint, f"frames[{camera!r}] must be uint8, got {array.dtype}")
        if array.ndim != 4 or array.shape[3] != 3 or array.shape[0] != rows:
            _fail(
                hint,
                f"frames[{camera!r}] has shape {array.shape}, expected ({rows}, H, W, 3): a frame per observation",
            )
        if not (1 <= array.shape[1] <= MAX_FRAME_SIDE and 1 <= array.shape[2] <= MAX_FRAME_SIDE):
            _fail(
                hint,
                f"frames[{camera!r}] has {array.shape[1]}x{array.shape[2]} pixels; sides must be 1..{MAX_FRAME_SIDE}",
            )
        total += array.nbytes
    if total > MAX_FRAME_BYTES_PER_EPISODE:
        _fail(
            hint,
            f"frames hold {total / 2**20:.1f} MiB decoded, more than the {MAX_FRAME_BYTES_PER_EPISODE // 2**20} MiB "
            "an episode may hold; split the episode or use fewer or smaller cameras",
        )


def _validate_labels(episode: Episode, hint: str) -> None:
    """Source, success and stage score consistent; no held-out seed; JSON extras."""
    if episode.intervention.any() and episode.source != "rollout":
        _fail(hint, f"an episode with intervened steps is a 'rollout', not {episode.source!r}")
    if episode.source == "play" and episode.success:
        _fail(hint, "play data is labelled as a failure (success=False)")
    if not 0.0 <= float(episode.stage_score) <= 1.0:
        _fail(hint, f"stage_score must be in [0, 1], got {episode.stage_score}")
    if episode.seed is not None and SEEDS.is_eval(int(episode.seed)):
        _fail(hint, f"seed {episode.seed} is an evaluation seed; evaluation states never enter training data")
    if episode.seed is not None and SEEDS.is_validation(int(episode.seed)):
        _fail(hint, f"seed {episode.seed} is a validation seed; held-out validation states never enter training data")
    try:
        json.dumps(episode.extras)
    except (TypeError, ValueError) as err:
        _fail(hint, f"extras must be JSON-serialisable: {err}")


def episode_metadata(episode: Episode) -> dict:
    meta = {
        "format_version": FORMAT_VERSION,
        "robot_id": episode.robot_id,
        "seq": int(episode.seq),
        "task": episode.task,
        "instruction": episode.instruction,
        "source": episode.source,
        "success": bool(episode.success),
        "stage_score": float(episode.stage_score),
        "seed": None if episode.seed is None else int(episode.seed),
        "started_at": float(episode.started_at),
        "ended_at": float(episode.ended_at),
        "extras": episode.extras,
    }
    if episode.frames:  # absent for frame-less episodes: their files and digests stay as they were
        meta["frames"] = {
            "codec": FRAME_CODEC,
            "shapes": {camera: [int(n) for n in array.shape] for camera, array in episode.frames.items()},
        }
    return meta


def episode_tensors(episode: Episode) -> dict[str, np.ndarray]:
    """The per-step numeric arrays as written (frames are encoded separately, compressed)."""
    return {
        "observations": np.ascontiguousarray(episode.observations, dtype=np.float32),
        "actions": np.ascontiguousarray(episode.actions, dtype=np.float32),
        "intervention": np.ascontiguousarray(episode.intervention, dtype=np.uint8),
        "policy_version": np.ascontiguousarray(episode.policy_version, dtype=np.int64),
        "timestamps": np.ascontiguousarray(episode.timestamps, dtype=np.float64),
    }


def _frame_arrays(episode: Episode) -> dict[str, np.ndarray]:
    return {FRAME_TENSOR_PREFIX + camera: np.ascontiguousarray(array) for camera, array in episode.frames.items()}


def encode(episode: Episode) -> tuple[bytes, str]:
    """The safetensors bytes of an episode and a content digest independent of byte layout
    (the digest covers the decoded frames, not their compressed bytes)."""
    from safetensors.numpy import save

    tensors = episode_tensors(episode)
    meta_json = json.dumps(episode_metadata(episode), sort_keys=True)
    frames = _frame_arrays(episode)
    written = dict(tensors)
    for name, array in frames.items():
        written[name] = np.frombuffer(zlib.compress(array.data, FRAME_COMPRESSION_LEVEL), dtype=np.uint8)
    return save(written, metadata={"lwd_episode": meta_json}), _digest({**tensors, **frames}, meta_json)


def content_digest(episode: Episode) -> str:
    """sha256 over the canonical content: equal for a retried upload of the same episode."""
    tensors = {**episode_tensors(episode), **_frame_arrays(episode)}
    return _digest(tensors, json.dumps(episode_metadata(episode), sort_keys=True))


def _digest(tensors: dict[str, np.ndarray], meta_json: str) -> str:
    digest = hashlib.sha256(meta_json.encode())
    for name in sorted(tensors):
        digest.update(name.encode())
        digest.update(memoryview(tensors[name]).cast("B"))
    return digest.hexdigest()


def decode_frames(meta: dict, tensors: dict[str, np.ndarray], origin: str) -> dict[str, np.ndarray]:
    """camera -> (T+1, H, W, 3) uint8 from an episode file's compressed frame tensors.

    Every blob must inflate to exactly its declared shape: decompression stops at the
    declared size, so a blob that would grow further (a zip bomb) costs no more memory.
    """
    described = meta.get("frames")
    blobs = {name[len(FRAME_TENSOR_PREFIX) :]: t for name, t in tensors.items() if name.startswith(FRAME_TENSOR_PREFIX)}
    if described is None:
        if blobs:
            raise EpisodeValidationError(f"{origin}: frame tensors {sorted(blobs)} without a 'frames' description")
        return {}
    if not isinstance(described, dict) or described.get("codec") != FRAME_CODEC:
        raise EpisodeValidationError(
            f"{origin}: frames must be described as {{'codec': {FRAME_CODEC!r}, 'shapes': ...}}"
        )
    shapes = described.get("shapes")
    if not isinstance(shapes, dict) or set(shapes) != set(blobs) or len(shapes) > MAX_CAMERAS:
        raise EpisodeValidationError(
            f"{origin}: frame shapes for {sorted(shapes) if isinstance(shapes, dict) else shapes!r} but frame tensors "
            f"for {sorted(blobs)} (at most {MAX_CAMERAS} cameras)"
        )
    frames: dict[str, np.ndarray] = {}
    total = 0
    for camera, shape in shapes.items():
        if not (
            isinstance(shape, list)
            and len(shape) == 4
            and all(isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in shape)
            and shape[3] == 3
            and max(shape[1], shape[2]) <= MAX_FRAME_SIDE
        ):
            raise EpisodeValidationError(f"{origin}: camera {camera!r} has frame shape {shape!r}, not [T+1, H, W, 3]")
        size = int(np.prod(shape))
        total += size
        if total > MAX_FRAME_BYTES_PER_EPISODE:
            raise EpisodeValidationError(
                f"{origin}: frames declare more than the {MAX_FRAME_BYTES_PER_EPISODE // 2**20} MiB an episode may hold"
            )
        blob = blobs[camera]
        if blob.dtype != np.uint8 or blob.ndim != 1:
            raise EpisodeValidationError(f"{origin}: frame tensor of {camera!r} must be 1-D uint8 (compressed bytes)")
        inflater = zlib.decompressobj()
        try:
            raw = inflater.decompress(blob.tobytes(), size)
        except zlib.error as err:
            raise EpisodeValidationError(f"{origin}: frames of camera {camera!r} do not decompress ({err})") from None
        if len(raw) != size or inflater.unconsumed_tail or not inflater.eof or inflater.unused_data:
            raise EpisodeValidationError(
                f"{origin}: frames of camera {camera!r} do not inflate to exactly their declared shape {shape}"
            )
        frames[camera] = np.frombuffer(raw, dtype=np.uint8).reshape(shape)
    return frames


def decode(data: bytes, origin: str, *, check: bool = True) -> Episode:
    """Parse episode bytes; `origin` (a path) is named in any error. With `check`, also validate."""
    from safetensors.numpy import load

    try:
        tensors = load(data)
        header_len = int.from_bytes(data[:8], "little")
        meta = json.loads(json.loads(data[8 : 8 + header_len])["__metadata__"]["lwd_episode"])
    except Exception as err:  # safetensors raises several exception types for bad bytes
        raise EpisodeValidationError(f"{origin}: not a readable lwd episode file ({err})") from err
    if meta.get("format_version") != FORMAT_VERSION:
        raise EpisodeValidationError(f"{origin}: episode format {meta.get('format_version')} is not {FORMAT_VERSION}")
    try:
        episode = Episode(
            robot_id=meta["robot_id"],
            seq=meta["seq"],
            task=meta["task"],
            instruction=meta["instruction"],
            source=meta["source"],
            observations=tensors["observations"],
            actions=tensors["actions"],
            intervention=tensors["intervention"].astype(bool),
            policy_version=tensors["policy_version"],
            timestamps=tensors["timestamps"],
            success=meta["success"],
            stage_score=meta["stage_score"],
            seed=meta["seed"],
            started_at=meta["started_at"],
            ended_at=meta["ended_at"],
            extras=meta["extras"],
            frames=decode_frames(meta, tensors, origin),
        )
    except KeyError as err:
        raise EpisodeValidationError(f"{origin}: episode file lacks {err}") from err
    return validated(episode, origin) if check else episode


def validated(episode: Episode, origin: str) -> Episode:
    """The episode itself if valid; otherwise an error that names `origin` too."""
    try:
        validate(episode)
    except EpisodeValidationError as err:
        raise EpisodeValidationError(f"{origin}: {err}") from err
    return episode
