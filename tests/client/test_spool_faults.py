"""Faults between a robot and the gateway, on loopback: a robot killed mid-upload, the
gateway killed and restarted, a link that drops a fifth of what it carries. Each ends
with every acknowledged episode in the store exactly once and `store check` clean."""

import os
import signal
import subprocess
import sys
import time

import pytest

from lwd.client.spool import EpisodeSpool, RemoteEpisodeSink, UploadPolicy
from lwd.data.episode import content_digest
from lwd.gateway.launch import GatewayProcess
from tests.conftest import make_episode
from tests.gateway.harness import ROOT, FaultProxy, gateway_thread, make_site

pytestmark = pytest.mark.slow  # real processes and seconds of retries: `make test-fast` skips these

FAST = UploadPolicy(initial_backoff_s=0.05, max_backoff_s=0.5, idle_poll_s=0.1)

ROBOT = r"""
import os, random, sys, time
from lwd.client.spool import RemoteEpisodeSink, UploadPolicy
from lwd.data.episode import content_digest
from tests.conftest import make_episode
url, token, spool, total, acks = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
sink = RemoteEpisodeSink(url, {"robot-a": token}, spool, upload_policy=UploadPolicy(0.05, 0.5, 0.1))
lease = sink.lease("robot-a", wait_seconds=10)
start = max(sink.committed_ids("robot-a"), default=-1) + 1
print("ready", start, flush=True)
for seq in range(start, total):
    episode = make_episode("robot-a", seq, steps=30, rng_seed=random.randrange(2**31))  # new content every run
    sink.append(episode)
    with open(acks, "a") as handle:  # the robot's side: what append acknowledged
        handle.write(f"{seq} {content_digest(episode)}\n")
        handle.flush()
        os.fsync(handle.fileno())
    time.sleep(0.02)
print("flushed", sink.flush(120), flush=True)
"""


def audit(site, expected: int, acks: dict[int, str] | None = None) -> dict:
    """Every seq 0..expected-1 committed once, acknowledged content intact, store check clean."""
    store = site.store()
    records = store.records()
    seqs = sorted(r.seq for r in records)
    assert seqs == list(range(expected)), f"committed {seqs}"
    for seq, digest in (acks or {}).items():
        assert store.get("robot-a", seq).digest == digest, f"acknowledged episode {seq} was replaced"
    report = store.check()
    assert report.unresolved == [] and report.orphans == [] and report.missing == [] and report.corrupt == []
    return {"committed": len(records)}


def read_acks(path) -> dict[int, str]:
    acks: dict[int, str] = {}
    for line in path.read_text().splitlines():
        seq, digest = line.split()
        assert int(seq) not in acks, f"episode {seq} acknowledged twice: a restarted robot redid it"
        acks[int(seq)] = digest
    return acks


def start_robot(url, token, spool, total, acks):
    return subprocess.Popen(
        [sys.executable, "-c", ROBOT, url, token, str(spool), str(total), str(acks)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def test_a_robot_killed_mid_upload_resumes_and_nothing_is_lost_or_duplicated(tmp_path):
    site = make_site(tmp_path, publish=False)
    spool, acks, total = tmp_path / "spool", tmp_path / "acks.txt", 24
    with gateway_thread(site) as gateway, FaultProxy(gateway.port, delay=0.15) as proxy:
        url = f"http://127.0.0.1:{proxy.port}"
        robot = start_robot(url, site.tokens["robot-a"], spool, total, acks)
        try:
            deadline = time.monotonic() + 60
            while not (acks.exists() and len(acks.read_text().splitlines()) >= 10):
                assert time.monotonic() < deadline and robot.poll() is None
                time.sleep(0.01)
            in_flight = len(EpisodeSpool(spool).pending())
            os.kill(robot.pid, signal.SIGKILL)  # the uploader is mid-request: answers take 150 ms
        finally:
            robot.kill()
            robot.wait(30)
        assert in_flight > 0  # episodes were spooled, not yet delivered, when the robot died
        restarted = start_robot(url, site.tokens["robot-a"], spool, total, acks)
        out, _ = restarted.communicate(timeout=180)
    assert restarted.returncode == 0 and "flushed True" in out, out
    resumed_at = int(out.split()[1])
    assert resumed_at >= 10  # it continued after what it had spooled, not from what the gateway had
    audit(site, total, read_acks(acks))
    assert EpisodeSpool(spool).pending() == [] and EpisodeSpool(spool).rejected() == []


def test_the_gateway_killed_and_restarted_mid_run_loses_nothing(tmp_path):
    site = make_site(tmp_path, publish=False)
    gateway = GatewayProcess(site.config())
    url = gateway.start()
    port = int(url.rsplit(":", 1)[1])
    sink = RemoteEpisodeSink(url, {"robot-a": site.tokens["robot-a"]}, tmp_path / "spool", upload_policy=FAST)
    acks = {}
    try:
        for seq in range(30):
            if seq == 10:
                gateway.kill()  # kill -9 while uploads are in flight
            if seq == 20:
                spooled_while_down = sink.pending()
                assert sink.committed_ids("robot-a") == set(range(20))  # resumable during the outage
                gateway = GatewayProcess(site.config(port=port))
                gateway.start()
            episode = make_episode("robot-a", seq, steps=30)
            sink.append(episode)
            acks[seq] = content_digest(episode)
            time.sleep(0.03)
        assert sink.flush(120)
    finally:
        sink.close()
        gateway.stop()
    assert spooled_while_down >= 9  # the episodes of the outage waited in the spool
    counts = audit(site, 30, acks)
    assert counts["committed"] == 30 and sink.uploader.failures == 0


def test_a_link_dropping_a_fifth_of_uploads_delivers_every_episode_exactly_once(tmp_path):
    site = make_site(tmp_path, publish=False)
    acks = {}
    with gateway_thread(site) as gateway, FaultProxy(gateway.port, drop=0.2, seed=7) as proxy:
        sink = RemoteEpisodeSink(
            f"http://127.0.0.1:{proxy.port}",
            {"robot-a": site.tokens["robot-a"]},
            tmp_path / "spool",
            upload_policy=FAST,
        )
        for seq in range(40):
            episode = make_episode("robot-a", seq, steps=30)
            sink.append(episode)
            acks[seq] = content_digest(episode)
        assert sink.flush(180)
        sink.close()
        resets = proxy.resets
    assert resets >= 5  # the link did break, repeatedly
    audit(site, 40, acks)
    ledger = EpisodeSpool(tmp_path / "spool").acknowledged("robot-a")
    assert sorted(ledger) == list(range(40))
    assert any(entry["duplicate"] for entry in ledger.values())  # some uploads landed unheard and were retried
