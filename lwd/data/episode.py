"""The episode record (SPEC §2), its validation, and its on-disk encoding.

An episode file is a safetensors file: the per-step arrays below as tensors, and the
episode-level fields as JSON under the metadata key "lwd_episode". Anything that can
read safetensors can read our data; nothing is pickled.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from lwd.envs.phrasings import phrasing_owner, task_phrasings
from lwd.envs.tasks import SEEDS, TaskSpec, UnknownTaskError, task_spec

Source = Literal["demo", "rollout", "play"]
SOURCES: tuple[str, ...] = ("demo", "rollout", "play")
FORMAT_VERSION = 1
NO_POLICY = -1  # policy_version of steps no learned policy produced (demos, play)

_ROBOT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")


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
        "observations": (steps + 1, spec.obs_dim),
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
    return {
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


def episode_tensors(episode: Episode) -> dict[str, np.ndarray]:
    return {
        "observations": np.ascontiguousarray(episode.observations, dtype=np.float32),
        "actions": np.ascontiguousarray(episode.actions, dtype=np.float32),
        "intervention": np.ascontiguousarray(episode.intervention, dtype=np.uint8),
        "policy_version": np.ascontiguousarray(episode.policy_version, dtype=np.int64),
        "timestamps": np.ascontiguousarray(episode.timestamps, dtype=np.float64),
    }


def encode(episode: Episode) -> tuple[bytes, str]:
    """The safetensors bytes of an episode and a content digest independent of byte layout."""
    from safetensors.numpy import save

    tensors = episode_tensors(episode)
    meta_json = json.dumps(episode_metadata(episode), sort_keys=True)
    return save(tensors, metadata={"lwd_episode": meta_json}), _digest(tensors, meta_json)


def content_digest(episode: Episode) -> str:
    """sha256 over the canonical content: equal for a retried upload of the same episode."""
    return _digest(episode_tensors(episode), json.dumps(episode_metadata(episode), sort_keys=True))


def _digest(tensors: dict[str, np.ndarray], meta_json: str) -> str:
    digest = hashlib.sha256(meta_json.encode())
    for name in sorted(tensors):
        digest.update(name.encode())
        digest.update(tensors[name].tobytes())
    return digest.hexdigest()


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
