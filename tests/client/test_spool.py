"""The robot's durable spool and RemoteEpisodeSink against a real gateway."""

import os
import time

import pytest

from lwd.client.spool import SPOOLED, EpisodeSpool, RemoteEpisodeSink, UploadPolicy
from lwd.data.episode import content_digest
from lwd.data.lease import RobotLeaseError
from lwd.data.store import EpisodeConflictError, EpisodeValidationError
from lwd.fleet.worker import upload
from lwd.gateway.wire import encode_episode
from tests.conftest import make_episode
from tests.gateway.harness import free_port, gateway_thread, make_site

FAST = UploadPolicy(initial_backoff_s=0.05, max_backoff_s=0.3, idle_poll_s=0.1)


@pytest.fixture
def site(tmp_path):
    return make_site(tmp_path, publish=False)


def sink_for(url, site, tmp_path, robots=("robot-a",), upload_policy=FAST):
    return RemoteEpisodeSink(url, {r: site.tokens[r] for r in robots}, tmp_path / "spool", upload_policy=upload_policy)


def test_a_spooled_episode_is_a_durable_file_before_any_upload(tmp_path):
    spool = EpisodeSpool(tmp_path / "spool")
    episode = make_episode("robot-a", 3)
    receipt = spool.put(episode)
    assert receipt.snapshot == SPOOLED and not receipt.duplicate
    [spooled] = spool.pending()
    assert (spooled.robot_id, spooled.seq) == ("robot-a", 3)
    assert spooled.path.read_bytes() == encode_episode(episode)
    assert spool.put(episode).duplicate
    with pytest.raises(EpisodeConflictError, match="already spooled with different content"):
        spool.put(make_episode("robot-a", 3, rng_seed=9))


def test_the_spool_refuses_what_the_store_would_refuse(tmp_path):
    episode = make_episode("robot-a", 0)
    episode.actions[0, 0] = float("nan")
    with pytest.raises(EpisodeValidationError, match="NaN"):
        EpisodeSpool(tmp_path).put(episode)
    assert EpisodeSpool(tmp_path).pending() == []


def test_torn_writes_of_a_dead_process_are_removed_and_a_torn_ledger_line_ignored(tmp_path):
    (tmp_path / "tmp").mkdir(parents=True)
    torn = tmp_path / "tmp" / "999999999-abc.part"  # no such pid
    torn.write_bytes(b"half an episode")
    (tmp_path / "acknowledged").mkdir()
    ledger = tmp_path / "acknowledged" / "robot-a.jsonl"
    ledger.write_text('{"seq": 0, "digest": "d", "snapshot": 1, "duplicate": false}\n{"seq": 1, "dig')
    spool = EpisodeSpool(tmp_path)
    assert not torn.exists()
    assert set(spool.acknowledged("robot-a")) == {0}
    assert spool.known_ids("robot-a") == {0}


def test_the_sink_delivers_spooled_episodes_and_records_each_receipt(site, tmp_path):
    episodes = [make_episode("robot-a", seq) for seq in range(5)]
    with gateway_thread(site) as gateway:
        sink = sink_for(gateway.url, site, tmp_path)
        receipts = [upload(sink, e) for e in episodes]  # the worker's own upload function
        assert sink.flush(30)
        sink.close()
    assert all(r.snapshot == SPOOLED for r in receipts)
    store = site.store()
    assert sorted(r.seq for r in store.records()) == [0, 1, 2, 3, 4]
    ledger = EpisodeSpool(tmp_path / "spool").acknowledged("robot-a")
    assert {s: e["digest"] for s, e in ledger.items()} == {e.seq: content_digest(e) for e in episodes}
    assert list((tmp_path / "spool" / "pending" / "robot-a").iterdir()) == []


def test_appends_survive_a_gateway_that_is_down_and_drain_when_it_comes_up(site, tmp_path):
    port = free_port()
    sink = sink_for(f"http://127.0.0.1:{port}", site, tmp_path)
    for seq in range(3):
        sink.append(make_episode("robot-a", seq))
    time.sleep(0.3)
    assert sink.pending() == 3 and sink.uploader.failures > 0
    assert sink.committed_ids("robot-a") == {0, 1, 2}  # resumable from the spool alone
    with gateway_thread(site, port=port):
        assert sink.flush(30)
    sink.close()
    assert sorted(r.seq for r in site.store().records()) == [0, 1, 2]


def test_a_flush_does_not_wait_out_a_backoff_grown_while_the_gateway_was_down(site, tmp_path):
    port = free_port()
    patient = UploadPolicy(initial_backoff_s=10_000.0, max_backoff_s=10_000.0, flush_retry_s=0.2)
    sink = sink_for(f"http://127.0.0.1:{port}", site, tmp_path, upload_policy=patient)
    sink.append(make_episode("robot-a", 0))
    deadline = time.monotonic() + 10
    while sink.uploader.failures == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sink.uploader.failures > 0  # now in a backoff of up to 10,000 s
    with gateway_thread(site, port=port):
        assert sink.flush(20)  # the stopping robot retries at once, not after its backoff
    sink.close()
    assert [r.seq for r in site.store().records()] == [0]


def test_an_upload_policy_that_would_spin_is_refused():
    with pytest.raises(ValueError, match="positive"):
        UploadPolicy(flush_retry_s=0.0)


def test_committed_ids_is_the_union_of_gateway_ledger_and_spool(site, tmp_path):
    import httpx

    with gateway_thread(site) as gateway:
        # an episode committed from another machine of the same robot
        httpx.put(
            gateway.url + "/v1/episodes/robot-a/7",
            content=encode_episode(make_episode("robot-a", 7)),
            headers={"Authorization": f"Bearer {site.tokens['robot-a']}"},
        )
        sink = sink_for(gateway.url, site, tmp_path)
        sink.append(make_episode("robot-a", 0))
        assert sink.flush(30)
        sink.uploader.stop()  # from now on appends stay in the spool
        sink.append(make_episode("robot-a", 1))
        assert sink.committed_ids("robot-a") == {0, 1, 7}
        sink.close()


def test_an_episode_the_gateway_refuses_for_good_is_set_aside_and_the_rest_delivered(site, tmp_path):
    import httpx

    with gateway_thread(site) as gateway:
        httpx.put(
            gateway.url + "/v1/episodes/robot-a/0",
            content=encode_episode(make_episode("robot-a", 0, rng_seed=1)),
            headers={"Authorization": f"Bearer {site.tokens['robot-a']}"},
        )
        sink = sink_for(gateway.url, site, tmp_path)
        sink.append(make_episode("robot-a", 0, rng_seed=2))  # the same id, other content: 409
        sink.append(make_episode("robot-a", 1))
        assert sink.flush(30)
        sink.close()
    [rejected] = sink.spool.rejected()
    assert rejected.name == "0000000000.safetensors"
    assert "conflict" in rejected.with_suffix(".reason.txt").read_text()
    assert sorted(r.seq for r in site.store().records()) == [0, 1]


def test_an_acknowledged_episode_appended_again_is_a_duplicate_or_a_conflict(site, tmp_path):
    with gateway_thread(site) as gateway:
        sink = sink_for(gateway.url, site, tmp_path)
        episode = make_episode("robot-a", 0)
        sink.append(episode)
        assert sink.flush(30)
        again = sink.append(episode)
        with pytest.raises(EpisodeConflictError, match="already delivered"):
            sink.append(make_episode("robot-a", 0, rng_seed=5))
        sink.close()
    assert again.duplicate and again.snapshot == 1


def test_a_robot_id_is_leased_to_one_process_on_the_robot_machine(site, tmp_path):
    sink = sink_for(f"http://127.0.0.1:{free_port()}", site, tmp_path)
    held = sink.lease("robot-a")
    with pytest.raises(RobotLeaseError, match=str(os.getpid())):
        sink.lease("robot-a")
    held.release()
    sink.lease("robot-a").release()
    sink.close()
