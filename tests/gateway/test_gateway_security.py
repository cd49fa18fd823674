"""Hostile and broken requests: each gets a clear 4xx JSON error naming the problem,
nothing reaches the store, nothing is unpickled, and the gateway keeps serving."""

import json
import pickle
from dataclasses import replace
from pathlib import Path

import httpx
import msgpack
import numpy as np
import pytest
from safetensors.numpy import save

from lwd.data.episode import episode_metadata, episode_tensors
from lwd.gateway.wire import ActRequest, encode_act_request, encode_episode, pack_array
from tests.conftest import make_episode
from tests.gateway.harness import gateway_thread, make_site

CAP_MB = 0.25


class Planted:
    """Unpickling this touches a file: proof that nobody unpickled it."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    site = make_site(tmp_path_factory.mktemp("security"))
    with gateway_thread(site, max_upload_mb=CAP_MB) as running:
        yield site, running.url


def put(url, token, path, body, **kwargs):
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    return httpx.put(url + path, content=body, headers={**headers, **kwargs.pop("headers", {})}, timeout=30, **kwargs)


def episode_file(episode, *, tensors=None, metadata=None) -> bytes:
    """An episode file with tensors or metadata tampered with."""
    meta = {**episode_metadata(episode), **(metadata or {})}
    return save({**episode_tensors(episode), **(tensors or {})}, metadata={"lwd_episode": json.dumps(meta)})


def nan_observations():
    episode = make_episode("robot-a", 0)
    episode.observations[2, 5] = np.nan
    return encode_episode(episode)


def inf_actions():
    episode = make_episode("robot-a", 0)
    return episode_file(episode, tensors={"actions": np.where(np.eye(7, 4, dtype=bool), np.inf, 0).astype(np.float32)})


def too_big():
    return encode_episode(make_episode("robot-a", 0, steps=2000))  # ~330 KB > 0.25 MiB


def chunked_too_big():
    data = too_big()
    return (data[i : i + 4096] for i in range(0, len(data), 4096))  # no Content-Length: capped while streaming


def good(robot: str = "robot-a", **changes) -> bytes:
    """An upload body of seq 0 (of `robot`), with dataclass fields replaced."""
    return encode_episode(replace(make_episode(robot, 0), **changes))


def tampered(**parts) -> bytes:
    """An upload body of robot-a's seq 0 with tensors or metadata tampered with."""
    return episode_file(make_episode("robot-a", 0), **parts)


UPLOAD_CASES = {
    # name: (token robot, url robot/seq, body, status, code, words the detail must contain)
    "no token": (None, "robot-a/0", good, 401, "unauthorized", "missing"),
    "wrong token": ("bogus", "robot-a/0", good, 401, "unauthorized", "unknown"),
    "A writes B's url": ("robot-a", "robot-b/0", lambda: good("robot-b"), 403, "forbidden", "robot-b"),
    "A writes B's episode": ("robot-a", "robot-a/0", lambda: good("robot-b"), 403, "forbidden", "robot-b"),
    "seq differs from url": ("robot-a", "robot-a/3", good, 400, "id_mismatch", "seq 0"),
    "seq not a number": ("robot-a", "robot-a/x1", good, 400, "bad_request", "seq"),
    "oversized": ("robot-a", "robot-a/0", too_big, 413, "too_large", "at most"),
    "oversized, streamed": ("robot-a", "robot-a/0", chunked_too_big, 413, "too_large", "exceeds"),
    "truncated": ("robot-a", "robot-a/0", lambda: good()[:-100], 400, "truncated", "only"),
    "empty": ("robot-a", "robot-a/0", lambda: b"", 400, "truncated", "8-byte"),
    "not safetensors": (
        "robot-a", "robot-a/0", lambda: (9).to_bytes(8, "little") + b"{not json", 400, "bad_episode", "JSON",
    ),
    "extra tensor": (
        "robot-a", "robot-a/0", lambda: tampered(tensors={"x": np.zeros(3, np.float32)}),
        400, "bad_episode", "exactly the tensors",
    ),
    "wrong dtype": (
        "robot-a", "robot-a/0", lambda: tampered(tensors={"policy_version": np.zeros(7, np.int32)}),
        400, "bad_episode", "I64",
    ),
    "string for a bool": (
        "robot-a", "robot-a/0", lambda: tampered(metadata={"success": "false"}), 400, "bad_episode", "success",
    ),
    "intervention flag 7": (
        "robot-a", "robot-a/0", lambda: tampered(tensors={"intervention": np.full(7, 7, np.uint8)}),
        400, "bad_episode", "0 or 1",
    ),
    "NaN": ("robot-a", "robot-a/0", nan_observations, 422, "non_finite", "NaN"),
    "Inf": ("robot-a", "robot-a/0", inf_actions, 422, "non_finite", "inf"),
    "wrong shapes": (
        "robot-a", "robot-a/0", lambda: tampered(tensors={"observations": np.zeros((8, 38), np.float32)}),
        422, "bad_shape", "(8, 39)",
    ),
    "unknown task": ("robot-a", "robot-a/0", lambda: good(task="fly-v3"), 422, "unknown_task", "fly-v3"),
    "evaluation seed": (
        "robot-a", "robot-a/0", lambda: good(seed=10**9 + 1), 422, "invalid_episode", "evaluation seed",
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", list(UPLOAD_CASES))
def test_a_bad_upload_is_refused_by_name_and_nothing_is_written(gateway, case):
    site, url = gateway
    robot, path, body, status, code, words = UPLOAD_CASES[case]
    token = site.tokens.get(robot, robot)
    before = site.store().latest_snapshot()
    response = put(url, token, f"/v1/episodes/{path}", body())
    assert response.status_code == status, response.text
    assert response.json()["error"] == code and words in response.json()["detail"]
    assert site.store().latest_snapshot() == before
    assert site.store().get("robot-a", 0) is None
    assert not list((site.root / "store" / "episodes").rglob("*0000000000-*"))
    good = put(
        url,
        site.tokens["robot-b"],
        f"/v1/episodes/robot-b/{len(case)}",
        encode_episode(make_episode("robot-b", len(case))),
    )
    assert good.status_code == 200  # and the gateway still serves others


def test_a_pickle_upload_is_refused_and_never_unpickled(gateway, tmp_path):
    site, url = gateway
    marker = tmp_path / "unpickled"
    response = put(url, site.tokens["robot-a"], "/v1/episodes/robot-a/0", pickle.dumps(Planted(marker)))
    assert response.status_code == 400 and response.json()["error"] == "pickle_refused"
    assert not marker.exists() and site.store().get("robot-a", 0) is None


def act_body(**overrides) -> bytes:
    message = msgpack.unpackb(
        encode_act_request(ActRequest("r1", np.zeros(39), "Move your hand to the goal position."))
    )
    message.update(overrides)
    return msgpack.packb({k: v for k, v in message.items() if v is not None}, use_bin_type=True)


ACT_CASES = {
    "malformed msgpack": (lambda: b"\xc1\xc1 not msgpack", 400, "bad_msgpack", "msgpack"),
    "not a map": (lambda: msgpack.packb([1, 2, 3]), 400, "bad_msgpack", "map"),
    "ext type": (lambda: msgpack.packb({"wire": 1, "x": msgpack.ExtType(5, b"zz")}), 400, "bad_msgpack", "msgpack"),
    "wire version 2": (lambda: act_body(wire=2), 400, "unsupported_wire_version", "2"),
    "unknown key": (lambda: act_body(python_object=b"..."), 400, "bad_request", "python_object"),
    "bad request id": (lambda: act_body(request_id="a b/c"), 400, "bad_request", "request_id"),
    "dtype not whitelisted": (
        lambda: act_body(state={"dtype": "object", "shape": [39], "data": b"\0" * 312}),
        400,
        "bad_array",
        "object",
    ),
    "bytes do not fit shape": (
        lambda: act_body(state={"dtype": "float32", "shape": [39], "data": b"\0" * 100}),
        400,
        "bad_array",
        "needs 156",
    ),
    "NaN state": (lambda: act_body(state=pack_array(np.full(39, np.nan, np.float32))), 422, "non_finite", "NaN"),
    "state for another robot": (
        lambda: act_body(state=pack_array(np.zeros(38, np.float32))),
        422,
        "bad_shape",
        "(39,)",
    ),
    "state a matrix": (lambda: act_body(state=pack_array(np.zeros((3, 13), np.float32))), 422, "bad_shape", "vector"),
    "frame not uint8": (
        lambda: act_body(frames={"wrist": pack_array(np.zeros((8, 8, 3), np.float32))}),
        400,
        "bad_array",
        "uint8",
    ),
    "frame without channels": (
        lambda: act_body(frames={"wrist": pack_array(np.zeros((8, 8), np.uint8))}),
        422,
        "bad_shape",
        "(H, W, 3)",
    ),
    "no such version": (lambda: act_body(version=99), 404, "no_such_version", "99"),
}


@pytest.mark.parametrize("case", list(ACT_CASES))
def test_a_bad_act_request_is_refused_by_name_and_the_gateway_keeps_serving(gateway, case):
    site, url = gateway
    body, status, code, words = ACT_CASES[case]
    headers = {"Authorization": f"Bearer {site.tokens['robot-a']}"}
    response = httpx.post(url + "/v1/act", content=body(), headers=headers, timeout=30)
    assert response.status_code == status, response.text
    assert response.json()["error"] == code and words in response.json()["detail"]
    good = httpx.post(url + "/v1/act", content=act_body(), headers=headers, timeout=30)
    assert good.status_code == 200


def test_a_pickle_act_request_is_refused_and_never_unpickled(gateway, tmp_path):
    site, url = gateway
    marker = tmp_path / "unpickled"
    headers = {"Authorization": f"Bearer {site.tokens['robot-a']}"}
    response = httpx.post(url + "/v1/act", content=pickle.dumps(Planted(marker)), headers=headers, timeout=30)
    assert response.status_code == 400 and response.json()["error"] == "pickle_refused"
    assert not marker.exists()


@pytest.mark.parametrize(
    "endpoint",
    ["/v1/act", "/v1/policy/latest", "/v1/policy/rollout", "/v1/policy/1/weights", "/v1/robots/robot-a/committed"],
)
def test_every_robot_endpoint_needs_a_valid_token(gateway, endpoint):
    _, url = gateway
    method = httpx.post if endpoint == "/v1/act" else httpx.get
    for headers in ({}, {"Authorization": "Bearer lwd1.0000000000000000.guess"}, {"Authorization": "Basic abc"}):
        response = method(url + endpoint, headers=headers, timeout=30)
        assert response.status_code == 401 and response.json()["error"] == "unauthorized"


def test_a_revoked_token_is_refused_without_a_restart(tmp_path):
    from lwd.gateway.tokens import TokenBook

    site = make_site(tmp_path, publish=False)
    with gateway_thread(site) as running:
        headers = {"Authorization": f"Bearer {site.tokens['robot-a']}"}
        assert httpx.get(running.url + "/v1/robots/robot-a/committed", headers=headers).status_code == 200
        TokenBook(site.root / "gateway").revoke("robot-a")
        import time

        time.sleep(1.1)  # the gateway re-reads tokens.json at most once a second
        response = httpx.get(running.url + "/v1/robots/robot-a/committed", headers=headers)
    assert response.status_code == 401 and "revoked" in response.json()["detail"]


def test_rejects_are_counted_by_reason(gateway):
    _, url = gateway
    metrics = httpx.get(url + "/metrics").json()
    assert metrics["rejects/total"] > 0 and metrics.get("rejects/unauthorized", 0) > 0


def test_tokens_are_stored_hashed(gateway):
    site, _ = gateway
    text = (site.root / "gateway" / "tokens.json").read_text()
    for token in site.tokens.values():
        assert token.split(".")[2] not in text
    assert oct((site.root / "gateway" / "tokens.json").stat().st_mode & 0o777) == "0o600"


def test_a_body_that_stalls_is_cut_off_with_408_and_the_gateway_keeps_serving(tmp_path):
    import socket

    site = make_site(tmp_path, publish=False)
    with gateway_thread(site, body_timeout_s=0.5) as running:
        with socket.create_connection(("127.0.0.1", running.port), timeout=10) as sock:
            sock.sendall(
                b"PUT /v1/episodes/robot-a/0 HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n"
                + f"Authorization: Bearer {site.tokens['robot-a']}\r\n\r\n".encode()
                + b"0123456789"
            )
            answer = b""
            while b'"error"' not in answer:  # headers and body may arrive in separate packets
                chunk = sock.recv(4096)
                if not chunk:
                    break
                answer += chunk
            answer = answer.decode()
        good = put(running.url, site.tokens["robot-a"], "/v1/episodes/robot-a/0", good_body())
    assert answer.startswith("HTTP/1.1 408") and '"error":"timeout"' in answer
    assert good.status_code == 200


def good_body() -> bytes:
    return encode_episode(make_episode("robot-a", 0))
