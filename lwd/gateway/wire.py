"""The gateway's wire format: every byte that crosses the network between a robot and
the gateway, and how it is checked before anything acts on it.

Nothing here unpickles. A robot's bytes are parsed by two small, bounded parsers —
safetensors for episodes, msgpack with a whitelist of typed arrays for inference — and
refused with a stable error code (`WireError.code`) before the store or the policy sees
them. Clients branch on the code; the detail text is for people and may change.

**Episode upload** (`PUT /v1/episodes/{robot_id}/{seq}`): the body is the store's own
episode file, the bytes `lwd.data.episode.encode` writes: a safetensors file with
exactly the tensors observations (T+1, obs_dim) float32, actions (T, action_dim)
float32, intervention (T,) uint8 in {0, 1}, policy_version (T,) int64, timestamps (T,)
float64, and the episode-level fields as JSON under the metadata key "lwd_episode". The
gateway validates it exactly as `EpisodeStore.append` does (same function), after
stricter checks of the file's framing and of the metadata's JSON types, which a Python
caller of the store cannot get wrong but a remote one can. An episode of a robot with
cameras also holds one tensor "frames.<camera>" per camera (uint8, 1-D: the zlib-compressed
(T+1, H, W, 3) frames, shapes in the metadata); the upload cap (`max_upload_mb`) bounds
the compressed bytes and `decode` refuses a blob that would inflate past its declared
shape or past `MAX_FRAME_BYTES_PER_EPISODE` (256 MiB) decoded.

**Inference** (`POST /v1/act`): a msgpack map, the versioned envelope

    request:  {"wire": 1, "request_id": str, "state": ARRAY (obs_dim,) float32|float64,
               "instruction": str, "frames": {camera: ARRAY (H, W, 3) uint8} (optional),
               "version": int (optional: the version pinned at the episode start)}
    response: {"wire": 1, "request_id": str, "version": int, "actions": ARRAY (H, A) float32,
               "batch_size": int}

where ARRAY = {"dtype": one of DTYPES, "shape": [int, ...], "data": raw little-endian
C-order bytes}. Floats must be finite. Unknown keys, ext types, oversized strings, bins
or containers are refused. Errors of every endpoint are JSON: {"error": code,
"detail": text} (plus "request_id" on /v1/act when it could be read).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

import numpy as np

from lwd.data.episode import (
    FRAME_TENSOR_PREFIX,
    Episode,
    EpisodeValidationError,
    decode,
    encode,
    observation_dim,
    validated,
)
from lwd.envs.tasks import UnknownTaskError, task_spec

WIRE_VERSION = 1
EPISODE_CONTENT_TYPE = "application/vnd.lwd.episode+safetensors"
MSGPACK_CONTENT_TYPE = "application/msgpack"

# Stable error codes and their HTTP statuses: a robot's code branches on these.
ERROR_STATUS: dict[str, int] = {
    "bad_request": 400,  # malformed request outside the body formats (headers, path)
    "truncated": 400,  # the body is shorter than its header or Content-Length says
    "pickle_refused": 400,  # a Python pickle: never unpickled, whatever it holds
    "bad_episode": 400,  # not a readable lwd episode file (safetensors framing, tensors, metadata types)
    "id_mismatch": 400,  # the episode's (robot_id, seq) is not the URL's
    "bad_msgpack": 400,  # not a msgpack map within the decoding limits
    "bad_array": 400,  # a typed array whose dtype, shape or byte length is wrong
    "unsupported_wire_version": 400,
    "unauthorized": 401,  # no token, or an unknown or revoked one
    "forbidden": 403,  # a valid token writing another robot's episode
    "not_found": 404,
    "no_policy": 404,  # nothing published yet
    "no_such_version": 404,  # never published, or pruned
    "timeout": 408,  # the request body did not arrive in time
    "conflict": 409,  # the episode id is committed with different content
    "too_large": 413,
    "invalid_episode": 422,  # fails the store's validation (the detail says how)
    "unknown_task": 422,
    "bad_shape": 422,
    "non_finite": 422,  # NaN or inf in a float array
    "missing_frames": 422,  # the policy reads cameras the request has no frames of
    "internal": 500,  # a bug or a failing policy: retry, and report it
    "overloaded": 503,  # the inference queue is full: retry later
    "store_unavailable": 503,  # the store could not commit (disk full, catalogue locked): retry later
}

# Inference decoding limits (hard: a request over any of them is refused unread).
DTYPES = ("float32", "float64", "uint8", "int32", "int64", "bool")
MAX_ACT_BYTES = 16 * 2**20  # a whole /v1/act request body
MAX_STATE_DIM = 4096
MAX_CAMERAS = 8
MAX_FRAME_SIDE = 1024
MAX_INSTRUCTION_CHARS = 1000
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,64}$")

# The tensors of an episode file and the exact dtypes `encode` writes (safetensors names).
EPISODE_TENSORS: dict[str, str] = {
    "observations": "F32",
    "actions": "F32",
    "intervention": "U8",
    "policy_version": "I64",
    "timestamps": "F64",
}
_DTYPE_BYTES = {"F32": 4, "F64": 8, "U8": 1, "I64": 8}


class WireError(ValueError):
    """Bytes from the network that are refused; `code` is stable, `detail` names the problem."""

    def __init__(self, code: str, detail: str):
        if code not in ERROR_STATUS:
            raise ValueError(f"unknown wire error code {code!r}")
        super().__init__(f"{code}: {detail}")
        self.code, self.detail = code, detail

    @property
    def status(self) -> int:
        return ERROR_STATUS[self.code]

    def body(self, **extra) -> dict:
        return {"error": self.code, "detail": self.detail, **extra}


def looks_like_pickle(data: bytes) -> bool:
    """Pickle protocol 2-5 streams start with PROTO (0x80) and the protocol number."""
    return len(data) >= 2 and data[0] == 0x80 and 2 <= data[1] <= 5


# -- episodes ---------------------------------------------------------------------------


def encode_episode(episode: Episode) -> bytes:
    """The upload body of an episode: the store's own file bytes."""
    return encode(episode)[0]


def decode_episode(data: bytes) -> Episode:
    """Parse and validate an upload body; WireError (never anything else) on bad bytes."""
    if looks_like_pickle(data):
        raise WireError("pickle_refused", "the body is a Python pickle; episodes are uploaded as safetensors files")
    header = _episode_header(data)
    try:
        episode = decode(data, "uploaded episode", check=False)
    except EpisodeValidationError as err:
        raise WireError("bad_episode", str(err)) from None
    except Exception as err:  # metadata of the wrong JSON shape (a list, a string) fails in many ways
        raise WireError("bad_episode", f"uploaded episode: unreadable metadata ({type(err).__name__}: {err})") from None
    _check_metadata_types(episode)
    _check_intervention_flags(data, header)
    try:
        return validated(episode, "uploaded episode")
    except EpisodeValidationError as err:
        raise WireError(_validation_code(episode), str(err)) from None
    except (TypeError, ValueError) as err:
        raise WireError("invalid_episode", f"uploaded episode: {err}") from None


def _episode_header(data: bytes) -> dict:
    """The safetensors header, checked: exactly the episode tensors, their dtypes, and a
    body exactly as long as the header says (shorter = truncated, longer = trailing bytes)."""
    if len(data) < 8:
        raise WireError("truncated", f"the body has {len(data)} bytes; a safetensors file starts with an 8-byte length")
    header_len = int.from_bytes(data[:8], "little")
    if header_len > len(data) - 8:
        raise WireError(
            "truncated", f"the safetensors header claims {header_len} bytes but only {len(data) - 8} follow"
        )
    try:
        header = json.loads(data[8 : 8 + header_len])
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise WireError("bad_episode", f"the safetensors header is not JSON ({err})") from None
    if not isinstance(header, dict):
        raise WireError("bad_episode", "the safetensors header is not a JSON object")
    names = set(header) - {"__metadata__"}
    frame_names = {name for name in names if name.startswith(FRAME_TENSOR_PREFIX)}
    if names - frame_names != set(EPISODE_TENSORS) or len(frame_names) > MAX_CAMERAS:
        raise WireError(
            "bad_episode",
            f"an episode file holds exactly the tensors {sorted(EPISODE_TENSORS)} and up to {MAX_CAMERAS} "
            f"'{FRAME_TENSOR_PREFIX}<camera>' tensors; this one has {sorted(names)}",
        )
    end = 0
    for name, dtype in {**EPISODE_TENSORS, **dict.fromkeys(sorted(frame_names), "U8")}.items():
        info = header[name]
        if not isinstance(info, dict) or info.get("dtype") != dtype:
            got = info.get("dtype") if isinstance(info, dict) else info
            raise WireError("bad_episode", f"tensor {name} must have dtype {dtype}, got {got!r}")
        offsets = info.get("data_offsets")
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(o, int) for o in offsets)):
            raise WireError("bad_episode", f"tensor {name} has malformed data_offsets {offsets!r}")
        end = max(end, offsets[1])
    body = len(data) - 8 - header_len
    if end > body:
        raise WireError("truncated", f"the tensors need {end} data bytes but only {body} follow the header")
    if end < body:
        raise WireError("bad_episode", f"{body - end} unexpected bytes after the last tensor")
    return {"header_len": header_len, **header}


def _check_metadata_types(episode: Episode) -> None:
    """JSON types of the episode-level fields (a bool must be a bool, not "false")."""
    real = (int, float)
    expected = {
        "robot_id": (str,),
        "seq": (int,),
        "task": (str,),
        "instruction": (str,),
        "source": (str,),
        "success": (bool,),
        "stage_score": real,
        "started_at": real,
        "ended_at": real,
        "extras": (dict,),
    }
    for name, types in expected.items():
        value = getattr(episode, name)
        if not isinstance(value, types) or (bool not in types and isinstance(value, bool)):
            raise WireError("bad_episode", f"metadata field {name!r} has JSON type {type(value).__name__}")
    if episode.seed is not None and (not isinstance(episode.seed, int) or isinstance(episode.seed, bool)):
        raise WireError("bad_episode", f"metadata field 'seed' must be an integer or null, got {episode.seed!r}")


def _check_intervention_flags(data: bytes, header: dict) -> None:
    """The uint8 intervention flags are 0 or 1: `decode` would read 7 as True."""
    start, end = header["intervention"]["data_offsets"]
    base = 8 + header["header_len"]
    flags = np.frombuffer(data[base + start : base + end], dtype=np.uint8)
    if flags.size and flags.max() > 1:
        raise WireError("bad_episode", f"intervention flags must be 0 or 1, found {int(flags.max())}")


def _validation_code(episode: Episode) -> str:
    """The code of a validation failure, checked in the order `validate` checks."""
    try:
        spec = task_spec(episode.task)
    except UnknownTaskError:
        return "unknown_task"
    steps = episode.actions.shape[0] if episode.actions.ndim == 2 else -1
    shapes = {
        "observations": (steps + 1, observation_dim(episode, spec)),
        "actions": (steps, spec.action_dim),
        "intervention": (steps,),
        "policy_version": (steps,),
        "timestamps": (steps,),
    }
    if steps < 1 or any(getattr(episode, name).shape != shape for name, shape in shapes.items()):
        return "bad_shape"
    if not all(np.isfinite(getattr(episode, n)).all() for n in ("observations", "actions", "timestamps")):
        return "non_finite"
    return "invalid_episode"


# -- typed arrays and inference messages ---------------------------------------------------


def pack_array(array: np.ndarray) -> dict:
    """A numpy array as a typed-array map (little-endian, C order)."""
    array = np.asarray(array)
    if array.dtype.name not in DTYPES:
        raise ValueError(f"dtype {array.dtype} is not carried on the wire; one of {DTYPES}")
    little = array.astype(array.dtype.newbyteorder("<"), copy=False)
    return {"dtype": array.dtype.name, "shape": list(array.shape), "data": np.ascontiguousarray(little).tobytes()}


def unpack_array(obj: object, name: str, *, dtypes: tuple[str, ...] = DTYPES, max_elements: int) -> np.ndarray:
    """A typed-array map back to numpy, refusing any dtype, shape or length that does not add up."""
    if not isinstance(obj, dict) or set(obj) != {"dtype", "shape", "data"}:
        raise WireError("bad_array", f"{name} must be a map with exactly the keys dtype, shape, data")
    dtype, shape, data = obj["dtype"], obj["shape"], obj["data"]
    if dtype not in dtypes:
        raise WireError("bad_array", f"{name} has dtype {dtype!r}; allowed here: {', '.join(dtypes)}")
    if not (
        isinstance(shape, list)
        and len(shape) <= 4
        and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)
    ):
        raise WireError("bad_array", f"{name} has malformed shape {shape!r} (a list of at most 4 sizes)")
    if not isinstance(data, bytes):
        raise WireError("bad_array", f"{name}.data must be msgpack bin, got {type(data).__name__}")
    elements = int(np.prod(shape, dtype=np.int64)) if shape else 1
    if elements > max_elements:
        raise WireError("bad_array", f"{name} has {elements} elements; at most {max_elements}")
    wire_dtype = np.dtype(dtype).newbyteorder("<")
    if len(data) != elements * wire_dtype.itemsize:
        raise WireError(
            "bad_array",
            f"{name} has {len(data)} data bytes; shape {shape} of {dtype} needs {elements * wire_dtype.itemsize}",
        )
    array = np.frombuffer(data, dtype=wire_dtype).reshape(shape).astype(np.dtype(dtype))
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        where = tuple(int(i) for i in np.argwhere(~np.isfinite(array))[0])
        raise WireError("non_finite", f"{name} contains NaN or inf (first at index {where})")
    return array


def unpack_message(data: bytes, max_bytes: int = MAX_ACT_BYTES) -> dict:
    """A msgpack map within hard limits: no ext types, bounded strings, bins and containers."""
    import msgpack

    if len(data) > max_bytes:
        raise WireError("too_large", f"the message has {len(data)} bytes; at most {max_bytes}")
    if looks_like_pickle(data):
        raise WireError("pickle_refused", "the body is a Python pickle; requests are msgpack maps")
    try:
        message = msgpack.unpackb(
            data,
            raw=False,
            strict_map_key=True,
            max_bin_len=max_bytes,
            max_str_len=64 * 1024,
            max_array_len=1024,
            max_map_len=64,
            max_ext_len=0,
        )
    except Exception as err:  # msgpack raises ValueError, ExtraData, StackError, FormatError ...
        raise WireError("bad_msgpack", f"not a valid msgpack message ({type(err).__name__}: {err})") from None
    if not isinstance(message, dict):
        raise WireError("bad_msgpack", f"the message must be a msgpack map, got {type(message).__name__}")
    if message.get("wire") != WIRE_VERSION:
        raise WireError(
            "unsupported_wire_version", f"wire version {message.get('wire')!r}; this gateway speaks {WIRE_VERSION}"
        )
    return message


def pack_message(message: dict) -> bytes:
    import msgpack

    return msgpack.packb({"wire": WIRE_VERSION, **message}, use_bin_type=True)


@dataclass(frozen=True)
class ActRequest:
    """One robot's observation, asking for an action chunk."""

    request_id: str
    state: np.ndarray  # (obs_dim,) float32
    instruction: str
    frames: dict[str, np.ndarray] = field(default_factory=dict)  # camera -> (H, W, 3) uint8
    version: int | None = None  # the version pinned at the episode start; None = newest


@dataclass(frozen=True)
class ActResponse:
    request_id: str
    version: int  # the policy version that produced the chunk
    actions: np.ndarray  # (H, A) float32
    batch_size: int  # how many requests the server's policy call served together


def encode_act_request(request: ActRequest) -> bytes:
    message = {
        "request_id": request.request_id,
        "state": pack_array(np.asarray(request.state, np.float32)),
        "instruction": request.instruction,
    }
    if request.frames:
        message["frames"] = {name: pack_array(np.asarray(f, np.uint8)) for name, f in request.frames.items()}
    if request.version is not None:
        message["version"] = int(request.version)
    return pack_message(message)


def request_id_of(message: dict) -> str | None:
    """The request id, if the message carries a well-formed one (for error replies)."""
    rid = message.get("request_id")
    return rid if isinstance(rid, str) and _REQUEST_ID.match(rid) else None


def decode_act_request(data: bytes) -> ActRequest:
    message = unpack_message(data)
    unknown = set(message) - {"wire", "request_id", "state", "instruction", "frames", "version"}
    if unknown:
        raise WireError("bad_request", f"unknown keys {sorted(unknown)}")
    if request_id_of(message) is None:
        raise WireError("bad_request", f"request_id must match {_REQUEST_ID.pattern}")
    state = unpack_array(message.get("state"), "state", dtypes=("float32", "float64"), max_elements=MAX_STATE_DIM)
    if state.ndim != 1 or state.size == 0:
        raise WireError("bad_shape", f"state must be a vector (obs_dim,), got shape {state.shape}")
    instruction = message.get("instruction")
    if not isinstance(instruction, str) or not instruction.strip() or len(instruction) > MAX_INSTRUCTION_CHARS:
        raise WireError(
            "bad_request", f"instruction must be a non-empty string of at most {MAX_INSTRUCTION_CHARS} chars"
        )
    version = message.get("version")
    if version is not None and (not isinstance(version, int) or isinstance(version, bool) or version < 0):
        raise WireError("bad_request", f"version must be a non-negative integer, got {version!r}")
    return ActRequest(
        message["request_id"], state.astype(np.float32), instruction, _frames(message.get("frames")), version
    )


def _frames(raw: object) -> dict[str, np.ndarray]:
    if raw is None:
        return {}
    if not isinstance(raw, dict) or len(raw) > MAX_CAMERAS:
        raise WireError("bad_request", f"frames must be a map of at most {MAX_CAMERAS} cameras")
    frames = {}
    for camera, obj in raw.items():
        if not isinstance(camera, str) or not 0 < len(camera) <= 64:
            raise WireError("bad_request", "camera names must be strings of 1-64 chars")
        frame = unpack_array(obj, f"frames[{camera!r}]", dtypes=("uint8",), max_elements=MAX_FRAME_SIDE**2 * 3)
        if frame.ndim != 3 or frame.shape[2] != 3 or max(frame.shape[:2]) > MAX_FRAME_SIDE or 0 in frame.shape:
            raise WireError(
                "bad_shape",
                f"frames[{camera!r}] must be (H, W, 3) uint8 with H, W <= {MAX_FRAME_SIDE}, got {frame.shape}",
            )
        frames[camera] = frame
    return frames


def encode_act_response(response: ActResponse) -> bytes:
    return pack_message(
        {
            "request_id": response.request_id,
            "version": int(response.version),
            "actions": pack_array(np.asarray(response.actions, np.float32)),
            "batch_size": int(response.batch_size),
        }
    )


def decode_act_response(data: bytes) -> ActResponse:
    """The robot's side: the same limits hold for what the server sends back."""
    message = unpack_message(data)
    actions = unpack_array(message.get("actions"), "actions", dtypes=("float32",), max_elements=MAX_STATE_DIM * 16)
    if actions.ndim != 2:
        raise WireError("bad_shape", f"actions must be (H, A), got {actions.shape}")
    version, batch = message.get("version"), message.get("batch_size")
    if not isinstance(version, int) or not isinstance(batch, int) or request_id_of(message) is None:
        raise WireError("bad_request", "the response lacks request_id, version or batch_size")
    return ActResponse(message["request_id"], version, actions, batch)
