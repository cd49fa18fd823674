"""Episode upload through a real gateway (uvicorn + httpx on 127.0.0.1): receipts,
idempotent retries, conflicts, resume points, metrics."""

import httpx
import numpy as np
import pytest

from lwd.gateway.wire import encode_episode
from tests.conftest import make_episode
from tests.gateway.harness import gateway_thread, make_site


@pytest.fixture
def site(tmp_path):
    return make_site(tmp_path, publish=False)


def client(url, token):
    return httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30)


def test_an_uploaded_episode_is_committed_and_its_receipt_returned(site):
    episode = make_episode("robot-a", 0, steps=9, source="rollout", intervention=np.arange(9) % 4 == 0, version=2)
    with gateway_thread(site) as gateway, client(gateway.url, site.tokens["robot-a"]) as http:
        response = http.put("/v1/episodes/robot-a/0", content=encode_episode(episode))
    assert response.status_code == 200
    assert response.json() == {"episode_id": "robot-a/0000000000", "snapshot": 1, "duplicate": False}
    store = site.store()
    [record] = store.records()
    loaded = store.load(record)
    np.testing.assert_array_equal(loaded.observations, episode.observations)
    np.testing.assert_array_equal(loaded.intervention, episode.intervention)
    assert record.num_interventions == 3 and record.snapshot == 1


def test_a_retried_upload_is_acknowledged_as_a_duplicate_and_stored_once(site):
    body = encode_episode(make_episode("robot-a", 4))
    with gateway_thread(site) as gateway, client(gateway.url, site.tokens["robot-a"]) as http:
        first = http.put("/v1/episodes/robot-a/4", content=body).json()
        second = http.put("/v1/episodes/robot-a/4", content=body)
    assert second.status_code == 200
    assert second.json() == {**first, "duplicate": True}
    assert len(site.store().records()) == 1
    assert len(list((site.root / "store" / "episodes").rglob("*.safetensors"))) == 1


def test_different_content_under_a_committed_id_is_a_409_and_the_original_stays(site):
    original = make_episode("robot-a", 1, rng_seed=1)
    with gateway_thread(site) as gateway, client(gateway.url, site.tokens["robot-a"]) as http:
        http.put("/v1/episodes/robot-a/1", content=encode_episode(original))
        response = http.put("/v1/episodes/robot-a/1", content=encode_episode(make_episode("robot-a", 1, rng_seed=2)))
    assert response.status_code == 409
    assert response.json()["error"] == "conflict" and "different content" in response.json()["detail"]
    store = site.store()
    np.testing.assert_array_equal(store.load(store.records()[0]).actions, original.actions)


def test_committed_lists_the_robots_seqs_and_only_to_that_robot(site):
    with gateway_thread(site) as gateway, client(gateway.url, site.tokens["robot-a"]) as http:
        for seq in (0, 1, 5):
            http.put(f"/v1/episodes/robot-a/{seq}", content=encode_episode(make_episode("robot-a", seq)))
        mine = http.get("/v1/robots/robot-a/committed")
        theirs = http.get("/v1/robots/robot-b/committed")
    assert mine.json() == {"robot_id": "robot-a", "seqs": [0, 1, 5]}
    assert theirs.status_code == 403 and theirs.json()["error"] == "forbidden"


def test_concurrent_uploads_of_many_robots_are_group_committed(site):
    """Uploads waiting while the store commits join one transaction (fewer commits than uploads)."""
    from concurrent.futures import ThreadPoolExecutor

    bodies = [
        (robot, seq, encode_episode(make_episode(robot, seq))) for robot in ("robot-a", "robot-b") for seq in range(12)
    ]
    with gateway_thread(site) as gateway:
        clients = {r: client(gateway.url, site.tokens[r]) for r in ("robot-a", "robot-b")}
        with ThreadPoolExecutor(12) as pool:
            statuses = list(
                pool.map(lambda b: clients[b[0]].put(f"/v1/episodes/{b[0]}/{b[1]}", content=b[2]).status_code, bodies)
            )
        metrics = clients["robot-a"].get("/metrics").json()
        for c in clients.values():
            c.close()
    assert statuses == [200] * 24
    assert metrics["upload/committed"] == 24 and metrics["upload/store_commits"] < 24
    assert metrics["gateway/connected_robots"] == 2
    assert metrics["latency/upload_p99_ms"] >= metrics["latency/upload_p50_ms"] > 0
    assert len(site.store().records()) == 24 and site.store().check().unresolved == []


def test_healthz_needs_no_token_and_reports_the_upload_cap(site):
    with gateway_thread(site, max_upload_mb=2.0) as gateway:
        health = httpx.get(gateway.url + "/healthz").json()
    assert health == {"ok": True, "wire": 1, "max_upload_bytes": 2 * 2**20, "latest_version": None}


def test_with_a_certificate_the_gateway_speaks_tls_only(site, tmp_path):
    import shutil
    import ssl
    import subprocess

    from lwd.client.http import GatewayClient, GatewayError

    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command to make a self-signed certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
         "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    with gateway_thread(site, ssl_certfile=str(cert), ssl_keyfile=str(key)) as gateway:
        assert gateway.url.startswith("https://")
        trusted = GatewayClient(
            gateway.url, site.tokens["robot-a"], verify=ssl.create_default_context(cafile=str(cert))
        )
        receipt = trusted.upload("robot-a", 0, encode_episode(make_episode("robot-a", 0)))
        trusted.close()
        untrusting = GatewayClient(gateway.url, site.tokens["robot-a"])
        with pytest.raises(GatewayError, match="unreachable"):
            untrusting.committed("robot-a")  # a certificate nobody vouches for: no request is sent
        untrusting.close()
        with pytest.raises(httpx.TransportError):  # plain HTTP: the connection is dropped
            httpx.get(gateway.url.replace("https://", "http://") + "/healthz", timeout=10)
    assert receipt.snapshot == 1


def test_an_episode_with_camera_frames_is_committed_with_its_frames(site):
    from lwd.envs.cameras import PROPRIO_DIM

    episode = make_episode("robot-a", 0, cameras=("scene", "gripper"), obs_dim=PROPRIO_DIM)
    with gateway_thread(site) as gateway, client(gateway.url, site.tokens["robot-a"]) as http:
        response = http.put("/v1/episodes/robot-a/0", content=encode_episode(episode))
    assert response.status_code == 200
    store = site.store()
    loaded = store.load(store.records()[0])
    for camera in ("scene", "gripper"):
        np.testing.assert_array_equal(loaded.frames[camera], episode.frames[camera])
