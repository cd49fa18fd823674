"""Camera frames for simulated robots: MuJoCo's offscreen renderer tuned for CPU, and frame checks.

Speed on a CPU (Mesa llvmpipe through EGL) comes from three settings of the model's
visual options, all of which only change pixels, never physics: no multisampling
(`offsamples = 0`), no shadows and no reflections (the two passes that cost most), and
an offscreen buffer exactly the size of the image instead of Meta-World's 640x480.
Measured in docs/benchmarks.md ("Camera rendering"): `lwd bench render`.

Two checks catch a renderer that silently stops working: a *black* frame (every pixel
at most `BLACK_LEVEL`, which no lit Meta-World scene produces) and a *frozen* frame (byte
for byte the camera's last different frame although some body of the scene moved by
more than `SensorConfig.frozen_motion_m` since).

MuJoCo picks its OpenGL backend when it is first imported, from `MUJOCO_GL`; importing
`lwd.envs` sets it to `egl` on Linux when it is unset and libEGL is present, so nobody has to.
"""

from __future__ import annotations

import atexit
import ctypes
import os
import sys
import weakref
from dataclasses import dataclass

import numpy as np

from lwd.configargs import documented


def _has_egl() -> bool:
    try:
        ctypes.CDLL("libEGL.so.1")  # ~2 ms; ctypes.util.find_library spawns ldconfig (~30 ms)
    except OSError:
        return False
    return True


# MuJoCo chooses its OpenGL backend once, at its first import: unset means GLFW, which
# needs a display. EGL (Mesa's llvmpipe on a CPU) renders headless; it is the only backend
# that worked on our CPU VM (no OSMesa there; docs/benchmarks.md, "Camera rendering").
# `lwd.envs` imports this module, and every module that imports MuJoCo sits below it.
if sys.platform.startswith("linux") and "MUJOCO_GL" not in os.environ and _has_egl():
    os.environ["MUJOCO_GL"] = "egl"

# Short camera names lwd uses, mapped to the cameras every Meta-World v3 scene defines
# (metaworld/assets/objects/assets/xyz_base.xml). Any Meta-World camera name also works.
CAMERA_ALIASES: dict[str, str] = {
    "scene": "corner",  # the whole workspace from the front corner (turned upright, see below)
    "gripper": "gripperPOV",  # on the wrist, looking past the fingers
    "behind_gripper": "behindGripper",  # tracks the hand from above and behind
    "top": "topview",  # straight down on the table
}

OBSERVATION_MODES = ("state", "proprio")
BAD_FRAME_POLICIES = ("raise", "flag")

# The proprioceptive part of Meta-World's 39-number state (sawyer_xyz_env._get_obs):
# [0:3] hand xyz, [3] gripper opening in [0, 1], [4:18] two object poses, [18:36] the
# previous step's copy of those 18 numbers, [36:39] the goal. A real robot knows its hand
# and gripper (now and one step ago, hence its velocity), not where objects or goals are.
PROPRIO_INDICES = np.array([0, 1, 2, 3, 18, 19, 20, 21])
PROPRIO_DIM = len(PROPRIO_INDICES)  # 8

# A frame whose brightest pixel is at most this is black: the darkest frames Meta-World
# scenes gave on validation seeds are far brighter (docs/benchmarks.md, "Camera rendering").
BLACK_LEVEL = 10


@dataclass(frozen=True)
class SensorConfig:
    """What a simulated robot observes: state or proprioception, and which cameras."""

    cameras: tuple[str, ...] = documented(
        (),
        "cameras to render each step, in order: scene, gripper, behind_gripper, top, or any Meta-World "
        "camera name; empty renders nothing (state-only runs pay nothing)",
    )
    image_size: int = documented(64, "side of the square camera images in pixels")
    observation: str = documented(
        "state",
        "state: Meta-World's full state (object and goal positions included); proprio: only hand "
        "position and gripper opening, now and one step ago (8 numbers), as a real robot has",
    )
    bad_frames: str = documented(
        "raise",
        "on a black or frozen frame: raise stops with an error naming the camera and why; flag "
        "keeps going and lists it in the step's info extras['bad_frames']",
    )
    frozen_motion_m: float = documented(
        0.02, "a camera's frame is frozen if it repeats byte for byte while a body moved more than this (m)"
    )

    def __post_init__(self) -> None:
        if self.observation not in OBSERVATION_MODES:
            raise ValueError(f"observation must be one of {OBSERVATION_MODES}, got {self.observation!r}")
        if self.bad_frames not in BAD_FRAME_POLICIES:
            raise ValueError(f"bad_frames must be one of {BAD_FRAME_POLICIES}, got {self.bad_frames!r}")
        if not 8 <= self.image_size <= 1024:
            raise ValueError(f"image_size must be in [8, 1024] pixels, got {self.image_size}")
        if len(set(self.cameras)) != len(self.cameras):
            raise ValueError(f"cameras must not repeat, got {self.cameras}")
        if self.frozen_motion_m <= 0:
            raise ValueError(f"frozen_motion_m must be positive, got {self.frozen_motion_m}")
        if self.observation == "proprio" and not self.cameras:
            raise ValueError("observation='proprio' without cameras leaves the robot blind; add --cameras scene")


class BadFrameError(RuntimeError):
    """A camera produced a black or frozen frame."""


def proprio_state(state: np.ndarray) -> np.ndarray:
    """(PROPRIO_DIM,) float32: hand xyz and gripper opening, now and one step ago, of a Meta-World state."""
    return np.asarray(state, dtype=np.float32)[PROPRIO_INDICES]


def side_by_side(frames: dict[str, np.ndarray], cameras: tuple[str, ...]) -> np.ndarray:
    """The cameras' frames as one image, left to right in `cameras` order: (..., H, W, 3) each ->
    (..., H, W * len(cameras), 3) uint8. What a policy with images sees (its CNN pools over
    the whole width), for one frame or a batch; a missing camera is named."""
    missing = [name for name in cameras if name not in frames]
    if missing:
        raise ValueError(f"the policy sees cameras {list(cameras)} but {missing} sent no frame (got {sorted(frames)})")
    if len(cameras) == 1:
        return np.asarray(frames[cameras[0]], dtype=np.uint8)
    return np.concatenate([np.asarray(frames[name], dtype=np.uint8) for name in cameras], axis=-2)


def is_black(frame: np.ndarray) -> bool:
    """True if no pixel of the (H, W, 3) uint8 frame is brighter than BLACK_LEVEL."""
    return int(frame.max()) <= BLACK_LEVEL


def _follow_mujoco_gl() -> None:
    """Use EGL if MUJOCO_GL asks for it although MuJoCo was imported (and chose GLFW) before it was set.

    That happens when a program imports mujoco before lwd.envs; mujoco.Renderer looks the
    context class up in mujoco.gl_context at every construction, so pointing it at EGL's
    honours the variable from here on.
    """
    from mujoco import gl_context

    if os.environ.get("MUJOCO_GL", "").lower() == "egl" and gl_context.GLContext.__module__ != "mujoco.egl":
        from mujoco.egl import GLContext

        gl_context.GLContext = GLContext


def _upright(model, camera_id: int) -> None:
    """Turn a world-fixed camera whose image comes out upside down by half a turn about its view axis.

    Meta-World's corner cameras are declared with their up axis pointing at the floor
    (xyaxes "... -0.2 -0.2 -1"), so their images show the table on top; same viewpoint,
    upright image, no per-frame flip.
    """
    import mujoco

    if model.cam_bodyid[camera_id] != 0 or model.cam_mode[camera_id] != mujoco.mjtCamLight.mjCAMLIGHT_FIXED:
        return
    rotation = np.zeros(9)
    mujoco.mju_quat2Mat(rotation, model.cam_quat[camera_id])
    if rotation.reshape(3, 3)[2, 1] < 0:  # the image's up axis (camera y) points downward
        turned = np.zeros(4)
        mujoco.mju_mulQuat(turned, model.cam_quat[camera_id].copy(), np.array([0.0, 0.0, 0.0, 1.0]))
        model.cam_quat[camera_id] = turned


class SceneCameras:
    """Renders a fixed list of cameras of one MuJoCo model into (size, size, 3) uint8 frames.

    Build it before the scene's first reset: it turns upside-down fixed cameras upright
    in the model, which takes effect at the next forward pass.
    """

    def __init__(self, model, cameras: tuple[str, ...], size: int):
        import mujoco

        _follow_mujoco_gl()
        self.names = tuple(cameras)
        known = [model.camera(i).name for i in range(model.ncam)]
        self._ids = []
        for name in self.names:
            resolved = CAMERA_ALIASES.get(name, name)
            if resolved not in known:
                raise ValueError(
                    f"unknown camera {name!r}: use one of {sorted(CAMERA_ALIASES)} or a camera of the scene {known}"
                )
            self._ids.append(known.index(resolved))
            _upright(model, known.index(resolved))
        # Visual options only change pixels, never physics.
        model.vis.quality.offsamples = 0
        model.vis.global_.offwidth = max(size, 1)
        model.vis.global_.offheight = max(size, 1)
        try:
            self._renderer = mujoco.Renderer(model, size, size)
        except Exception as err:  # noqa: BLE001 - the backend's own errors do not say what to do
            raise RuntimeError(
                "MuJoCo could not open an offscreen OpenGL context. Headless Linux needs "
                "MUJOCO_GL=egl (Mesa's libEGL, e.g. apt install libegl1) or MUJOCO_GL=osmesa, set before "
                f"mujoco is first imported (lwd.envs sets egl when libEGL is found); got: {err!r}"
            ) from err
        self._renderer.scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = False
        self._renderer.scene.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = False
        # Free the GL context before mujoco.egl terminates its display at exit (its atexit
        # hook was registered first, so runs last); a renderer freed by the garbage collector
        # after that prints EGL errors on every exit.
        atexit.register(_close_if_alive, weakref.ref(self))

    def render(self, data) -> dict[str, np.ndarray]:
        """camera -> (size, size, 3) uint8 frame of the state in `data`."""
        frames = {}
        for name, camera_id in zip(self.names, self._ids, strict=True):
            self._renderer.update_scene(data, camera=camera_id)
            frames[name] = self._renderer.render()  # a fresh array each call
        return frames

    def close(self) -> None:
        self._renderer.close()


def _close_if_alive(cameras: weakref.ref) -> None:
    alive = cameras()
    if alive is not None:
        alive.close()


class FrameMonitor:
    """Finds black and frozen frames in one camera stream per name; `reset` at each new scene."""

    def __init__(self, frozen_motion_m: float):
        self.frozen_motion_m = frozen_motion_m
        self.reset()

    def reset(self) -> None:
        self._previous: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # camera -> (frame, body positions)

    def check(self, frames: dict[str, np.ndarray], body_positions: np.ndarray) -> dict[str, str]:
        """camera -> why its frame is bad ("black" or "frozen"), for the bad ones only."""
        bad = {}
        for name, frame in frames.items():
            previous = self._previous.get(name)
            if is_black(frame):
                bad[name] = f"black (brightest pixel {int(frame.max())} <= {BLACK_LEVEL})"
            elif previous is not None and np.array_equal(frame, previous[0]):
                moved = float(np.abs(body_positions - previous[1]).max())
                if moved > self.frozen_motion_m:
                    bad[name] = f"frozen (identical to the previous frame while a body moved {moved:.3f} m)"
            if previous is None or not np.array_equal(frame, previous[0]):
                # Compare against the last *different* frame, so a slow drift adds up.
                self._previous[name] = (frame, body_positions.copy())
        return bad
