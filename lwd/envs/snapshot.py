"""Snapshot and restore of a Meta-World scene: everything its next `step` depends on.

Used to try several futures from one state (best-of-N with an oracle, `lwd bench
ceiling`): snapshot, roll a candidate out, restore, roll the next one out. A snapshot of
one simulator may be restored into another simulator of the same scene (e.g. a scratch
copy), because it carries the model fields that Meta-World's reset moves as well.

What a scene's next step depends on, and so what a snapshot holds:
- MuJoCo's full integration state (`mjSTATE_INTEGRATION`: time, qpos, qvel, actuator
  activations, the constraint solver's warm start, controls, applied forces, mocap
  pose, equality activations). The warm start matters: without it, replay drifts.
- The model fields Meta-World's `reset` rewrites per episode: body and site poses
  (object, goal and fixture placement) and the mocap weld's equality data.
- The env's plain Python attributes (numbers, booleans, arrays, None): path length,
  the previous and last stable observation used for frame stacking, goal and initial
  object positions, reward-shaping constants. Objects (spaces, RNGs, renderers) are not
  touched: they do not change while stepping.
- Which attributes are views into the simulator's own arrays. Meta-World keeps some
  (`init_left_pad` is `data.body("leftpad").xpos`, so it follows the live pad, and the
  grasp reward reads it); a copy would freeze them and change the reward, so a view is
  re-pointed at the same place in the target env's arrays instead.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np

# Model fields that Meta-World envs assign in `reset_model` / `reset_mocap_welds`.
_MODEL_FIELDS = ("body_pos", "body_quat", "site_pos", "site_quat", "eq_data", "eq_active0")
_PLAIN_TYPES = (bool, int, float, str, np.ndarray, np.generic, type(None))


@dataclass(frozen=True)
class SceneState:
    """One Meta-World env's state; arrays are private copies."""

    scene: str  # the env class name, so a snapshot is never restored into another scene
    physics: np.ndarray  # mj_getState(mjSTATE_INTEGRATION)
    model: dict[str, np.ndarray]
    attributes: dict[str, object]
    # attribute -> (owner "data" or "model", array name, element offset, shape, strides)
    views: dict[str, tuple[str, str, int, tuple[int, ...], tuple[int, ...]]]


def _integration_spec():
    import mujoco

    return mujoco.mjtState.mjSTATE_INTEGRATION


def capture_scene(env) -> SceneState:
    """A copy of everything the env's next `step` reads (see the module docstring)."""
    import mujoco

    spec = _integration_spec()
    physics = np.empty(mujoco.mj_stateSize(env.model, spec))
    mujoco.mj_getState(env.model, env.data, physics, spec)
    model = {name: getattr(env.model, name).copy() for name in _MODEL_FIELDS if hasattr(env.model, name)}
    attributes, views = {}, {}
    for name, value in vars(env).items():
        if not isinstance(value, _PLAIN_TYPES):
            continue
        view = _simulator_view(env, value) if isinstance(value, np.ndarray) and value.base is not None else None
        if view is not None:
            views[name] = view
        else:
            attributes[name] = copy.deepcopy(value)
    return SceneState(type(env).__name__, physics, model, attributes, views)


def _array_names(struct) -> list[str]:
    """The names of a MuJoCo struct's (MjData's, MjModel's) numpy arrays."""
    names = []
    for name in dir(struct):
        if not name.startswith("_"):
            try:
                if isinstance(getattr(struct, name), np.ndarray):
                    names.append(name)
            except Exception:  # some attributes raise when read on this model
                continue
    return names


_ARRAY_NAMES: dict[str, list[str]] = {}


def _simulator_view(env, value: np.ndarray) -> tuple[str, str, int, tuple[int, ...], tuple[int, ...]] | None:
    """Where `value` lies inside env.data's or env.model's arrays, if it is a view of one."""
    for owner in ("data", "model"):
        struct = getattr(env, owner)
        key = f"{owner}:{type(struct).__name__}"
        if key not in _ARRAY_NAMES:
            _ARRAY_NAMES[key] = _array_names(struct)
        for name in _ARRAY_NAMES[key]:
            array = getattr(struct, name)
            if np.shares_memory(value, array):
                offset = value.__array_interface__["data"][0] - array.__array_interface__["data"][0]
                return owner, name, offset // array.itemsize, value.shape, value.strides
    return None


def restore_scene(env, state: SceneState) -> None:
    """Put `env` (the same scene, any instance) back into `state`; `state` stays reusable."""
    import mujoco

    if type(env).__name__ != state.scene:
        raise ValueError(f"cannot restore a {state.scene} snapshot into a {type(env).__name__} env")
    for name, value in state.model.items():
        getattr(env.model, name)[...] = value
    for name, value in state.attributes.items():
        setattr(env, name, copy.deepcopy(value))
    for name, (owner, array_name, offset, shape, strides) in state.views.items():
        flat = getattr(getattr(env, owner), array_name).reshape(-1)  # a view: MuJoCo's arrays are contiguous
        setattr(env, name, np.lib.stride_tricks.as_strided(flat[offset:], shape, strides))
    spec = _integration_spec()
    mujoco.mj_setState(env.model, env.data, state.physics, spec)
    # Positions and contacts from the restored state, for anyone reading them before the
    # next step. mj_forward also moves the solver's warm start, which would change the
    # next step in the last bits, so the state is set once more afterwards.
    mujoco.mj_forward(env.model, env.data)
    mujoco.mj_setState(env.model, env.data, state.physics, spec)
