"""Policy distribution and server-side inference through a real gateway."""

import hashlib
import io
import tarfile
import threading

import httpx
import numpy as np
import pytest
import torch

from lwd.client.http import GatewayClient, GatewayError
from lwd.client.policy import RemotePolicy, RemotePolicySource, _unpack
from lwd.envs.robot import Observation
from lwd.fleet.registry import PolicyRegistry
from lwd.gateway.wire import ActRequest
from tests.gateway.harness import free_port, gateway_thread, make_site, publish_tiny

INSTRUCTION = "Move your hand to the goal position."


@pytest.fixture
def site(tmp_path):
    return make_site(tmp_path)


def test_latest_announces_the_version_and_the_checksum_of_its_weights(site):
    with gateway_thread(site) as gateway:
        headers = {"Authorization": f"Bearer {site.tokens['robot-a']}"}
        latest = httpx.get(gateway.url + "/v1/policy/latest", headers=headers).json()
        weights = httpx.get(gateway.url + "/v1/policy/1/weights", headers=headers)
    assert latest["version"] == 1 and latest["policy"]["obs_dim"] == 39 and latest["policy"]["chunk_len"] == 5
    assert weights.headers["x-content-sha256"] == latest["sha256"] == hashlib.sha256(weights.content).hexdigest()
    with tarfile.open(fileobj=io.BytesIO(weights.content)) as tar:
        assert sorted(tar.getnames()) == ["manifest.json", "policy.safetensors"]


def test_remote_source_loads_the_published_weights_and_caches_them(site, tmp_path):
    with gateway_thread(site) as gateway:
        source = RemotePolicySource(gateway.url, site.tokens["robot-a"], tmp_path / "cache")
        published = source.rollout().version_for("robot-a")
        policy, encoder = source.load(published.version)
        source.close()
    expected, _ = PolicyRegistry(site.root / "registry").load(1)
    assert published == PolicyRegistry(site.root / "registry").latest()
    for (name, got), want in zip(policy.state_dict().items(), expected.state_dict().values()):
        assert torch.equal(got, want), name
    assert INSTRUCTION in encoder.table
    offline = RemotePolicySource(f"http://127.0.0.1:{free_port()}", site.tokens["robot-a"], tmp_path / "cache")
    cached, _ = offline.load(1)  # no gateway: served from the verified cache
    assert torch.equal(next(cached.parameters()), next(policy.parameters()))


def test_a_download_that_does_not_match_its_checksum_is_refused_and_not_cached(site, tmp_path):
    with gateway_thread(site) as gateway:
        client = GatewayClient(gateway.url, site.tokens["robot-a"])
        with pytest.raises(GatewayError, match="checksum_mismatch") as err:
            client.download_weights(1, tmp_path / "bundle.tar", expect_sha256="0" * 64)
        client.close()
    assert err.value.retryable and not (tmp_path / "bundle.tar").exists()


@pytest.mark.parametrize(
    "members", [{"manifest.json": b"{}"}, {"manifest.json": b"{}", "policy.safetensors": b"", "../escape": b"x"}]
)
def test_a_bundle_with_other_members_is_refused_before_anything_is_written(tmp_path, members):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    (tmp_path / "b.tar").write_bytes(buffer.getvalue())
    (tmp_path / "out").mkdir()
    with pytest.raises(GatewayError, match="bad_bundle"):
        _unpack(tmp_path / "b.tar", tmp_path / "out")
    assert list((tmp_path / "out").iterdir()) == [] and not (tmp_path / "escape").exists()


def test_the_rollout_is_none_before_anything_is_published(tmp_path):
    site = make_site(tmp_path, publish=False)
    with gateway_thread(site) as gateway:
        assert RemotePolicySource(gateway.url, site.tokens["robot-a"], tmp_path / "c").rollout() is None


def test_the_rollout_stays_the_last_one_seen_while_the_gateway_is_down(site, tmp_path):
    with gateway_thread(site) as gateway:
        source = RemotePolicySource(gateway.url, site.tokens["robot-a"], tmp_path / "cache", timeout=2)
        seen = source.rollout()
    assert source.rollout() == seen and seen.deployed.version == 1  # the gateway is gone: the robot keeps its version


def test_a_gated_fleet_runs_the_deployed_version_and_canaries_the_candidate(site, tmp_path):
    registry = PolicyRegistry(site.root / "registry")
    registry.decide(1, "promoted", by="test")
    publish_tiny(site.root / "registry", version=2)  # newest, but only a candidate
    registry.decide(2, "canary", by="test", canary_robots=("robot-b",))
    observation = ActRequest("r", np.zeros(39, np.float32), INSTRUCTION)
    with gateway_thread(site) as gateway:
        rollout = RemotePolicySource(gateway.url, site.tokens["robot-a"], tmp_path / "cache").rollout()
        acts = {r: GatewayClient(gateway.url, site.tokens[r]).act(observation).version for r in ("robot-a", "robot-b")}
    assert rollout.version_for("robot-a").version == 1 and rollout.version_for("robot-b").version == 2
    assert acts == {"robot-a": 1, "robot-b": 2}  # server-side inference follows the rollout too


def test_act_returns_an_action_chunk_and_its_version(site):
    with gateway_thread(site) as gateway:
        client = GatewayClient(gateway.url, site.tokens["robot-a"])
        frames = {"wrist": np.zeros((48, 64, 3), np.uint8)}
        response = client.act(ActRequest("req-1", np.zeros(39, np.float32), INSTRUCTION, frames))
        metrics = client.metrics()
        client.close()
    assert response.request_id == "req-1" and response.version == 1
    assert response.actions.shape == (5, 4) and response.actions.dtype == np.float32
    assert np.all(np.abs(response.actions) <= 1.0)
    assert metrics["act/frames"] == 1 and metrics["act/requests"] == 1


def test_concurrent_act_requests_are_batched_into_fewer_policy_calls(site):
    with gateway_thread(site, act_max_wait_ms=100.0) as gateway:
        client = GatewayClient(gateway.url, site.tokens["robot-a"])
        versions, barrier = [], threading.Barrier(16)

        def robot(i: int) -> None:
            barrier.wait()
            versions.append(client.act(ActRequest(f"r{i}", np.full(39, i, np.float32), INSTRUCTION)).version)

        threads = [threading.Thread(target=robot, args=(i,)) for i in range(16)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        metrics = client.metrics()
        client.close()
    assert versions == [1] * 16
    assert metrics["act/requests"] == 16 and metrics["act/policy_calls"] < 16 and metrics["act/mean_batch"] > 1


def test_remote_policy_keeps_its_version_for_the_whole_episode(site):
    observation = Observation(np.zeros(39, np.float32), INSTRUCTION)
    with gateway_thread(site) as gateway:
        actor = RemotePolicy(GatewayClient(gateway.url, site.tokens["robot-a"]), execute_steps=2)
        actor.start_episode()
        actor.act(observation)
        publish_tiny(site.root / "registry", version=2)
        actor.act(observation)
        actor.act(observation)  # a new chunk, mid-episode: still version 1
        mid_episode = actor.version
        actor.start_episode()
        actor.act(observation)
        next_episode = actor.version
    assert (mid_episode, next_episode) == (1, 2)


def test_served_chunks_follow_the_gateways_sampling_temperature(tmp_path):
    from lwd.gateway.services import PolicyServer

    publish_tiny(tmp_path / "registry")
    registry = PolicyRegistry(tmp_path / "registry")
    state = np.random.default_rng(0).normal(size=39).astype(np.float32)
    twice = [("robot-a", ActRequest("r1", state, INSTRUCTION)), ("robot-b", ActRequest("r2", state, INSTRUCTION))]

    def chunks(scale: float) -> list[np.ndarray]:
        return [response.actions for response in PolicyServer(registry, noise_scale=scale).serve(twice)]

    deterministic, sampled = chunks(0.0), chunks(1.0)
    np.testing.assert_allclose(deterministic[0], deterministic[1], atol=1e-6)  # one chunk per state at s = 0
    assert not np.allclose(sampled[0], sampled[1])  # the policy's own spread at s = 1
