"""Uploads off the robot loop (`RobotWorker(upload_sink=...)`): episodes commit in the order
they finished, a clean stop returns only when every finished episode is in the store, and
after a failed upload nothing later commits (so every robot's episodes stay 0..n-1)."""

import threading
import time

import pytest

from lwd.data.store import EpisodeConflictError, EpisodeStore, Receipt
from lwd.fleet.registry import PolicyRegistry
from lwd.fleet.worker import FleetConfig, RobotWorker, _BackgroundUploads, robot_specs, upload, upload_batch
from tests.conftest import make_episode


class RecordingSink:
    """Appends from the thread that opened it only (like a store's SQLite connection);
    refuses the ids in `refuse`."""

    def __init__(self, refuse=()):
        self.thread = threading.get_ident()
        self.appended, self.refuse = [], set(refuse)

    def append(self, episode):
        assert threading.get_ident() == self.thread, "a sink used from another thread"
        if episode.episode_id in self.refuse:
            raise EpisodeConflictError(f"{episode.episode_id} conflicts")
        self.appended.append(episode.episode_id)
        return Receipt(episode.episode_id, len(self.appended), duplicate=False)


class BatchRecordingSink(RecordingSink):
    """Also takes several episodes per call, as the Ray fleet's sink does; records each call."""

    def __init__(self, refuse=()):
        super().__init__(refuse)
        self.calls = []

    def append_batch(self, episodes):
        self.calls.append([e.episode_id for e in episodes])
        results = []
        for episode in episodes:
            try:
                results.append(self.append(episode))
            except EpisodeConflictError as err:
                results.append(err)
        return results


def _one_by_one(sink, episodes):
    for episode in episodes:
        upload(sink, episode)


def _uploads(sink_holder: dict, refuse=(), max_pending=8) -> _BackgroundUploads:
    def open_sink():
        sink_holder["sink"] = RecordingSink(refuse)
        return sink_holder["sink"]

    return _BackgroundUploads(open_sink, _one_by_one, max_pending)


def _batch_uploads(sink_holder: dict, max_pending: int, interval_s: float) -> _BackgroundUploads:
    def open_sink():
        sink_holder["sink"] = BatchRecordingSink()
        return sink_holder["sink"]

    return _BackgroundUploads(open_sink, upload_batch, max_pending, interval_s=interval_s)


def test_with_an_interval_an_upload_takes_every_episode_finished_since_the_last_one():
    held: dict = {}
    uploads = _batch_uploads(held, max_pending=16, interval_s=60.0)
    first = make_episode("robot-000", 0, source="rollout")
    uploads.submit(first)
    deadline = time.monotonic() + 30
    while not held["sink"].calls and time.monotonic() < deadline:
        time.sleep(0.01)  # the first upload leaves at once: nothing was uploaded before it
    later = [make_episode(f"robot-00{r}", k, source="rollout") for k in (1, 2) for r in (0, 1)]
    for episode in later:
        uploads.submit(episode)  # within the interval: they wait for the next upload
    began = time.monotonic()
    uploads.drain()  # a stopping worker does not wait out the interval
    uploads.close()
    assert time.monotonic() - began < 30
    assert held["sink"].calls == [[first.episode_id], [e.episode_id for e in later]]  # in the order they finished


def test_episodes_upload_in_the_order_they_finished_on_the_sinks_own_thread():
    held: dict = {}
    uploads = _uploads(held)
    episodes = [make_episode(f"robot-00{r}", k, source="rollout") for k in range(3) for r in range(2)]
    for episode in episodes:
        uploads.submit(episode)
    uploads.drain()
    uploads.close()
    assert held["sink"].appended == [e.episode_id for e in episodes]


def test_after_a_failed_upload_nothing_later_commits_and_the_loop_sees_the_failure():
    held: dict = {}
    first, refused, later = (make_episode("robot-000", k, source="rollout") for k in range(3))
    uploads = _uploads(held, refuse={refused.episode_id})
    uploads.submit(first)
    uploads.submit(refused)
    uploads.submit(later)  # queued behind the failure: must not commit, or robot-000 would have a gap
    with pytest.raises(EpisodeConflictError):
        uploads.drain()
    with pytest.raises(EpisodeConflictError):
        uploads.submit(make_episode("robot-001", 0, source="rollout"))
    uploads.close()
    assert held["sink"].appended == [first.episode_id]


def test_a_worker_uploading_in_the_background_stops_with_every_finished_episode_committed(tmp_path, tiny_pipeline):
    registry = PolicyRegistry(tmp_path / "reg")
    registry.publish_checkpoint(tiny_pipeline[2], learner_step=0)
    config = FleetConfig(tasks=("reach-v3",), robots_per_worker=2)
    store = EpisodeStore(tmp_path / "store")
    worker = RobotWorker(
        0,
        robot_specs(config),
        config,
        store,
        registry,
        log_dir=str(tmp_path),
        upload_sink=lambda: EpisodeStore(tmp_path / "store"),
    )
    finished = {"n": 0}
    original = worker._finish

    def counting_finish(robot):
        finished["n"] += 1
        original(robot)

    worker._finish = counting_finish
    worker.run(lambda: finished["n"] >= 4)
    records = store.records()
    assert len(records) == finished["n"] == worker.uploaded >= 4  # nothing finished is left behind
    for robot in ("robot-000", "robot-001"):
        seqs = sorted(r.seq for r in records if r.robot_id == robot)
        assert seqs == list(range(len(seqs)))
    acknowledged = (tmp_path / "acknowledged_episodes.tsv").read_text().splitlines()
    assert sorted(line.split("\t")[0] for line in acknowledged) == sorted(r.episode_id for r in records)


def test_episodes_an_upload_carried_free_their_place_at_once_not_an_interval_later():
    # Back-pressure counts submitted episodes not yet uploaded. Each submit queues a run; a
    # run whose episode an earlier upload carried must end at once, or the robots block.
    held: dict = {}
    uploads = _batch_uploads(held, max_pending=3, interval_s=2.0)
    episodes = [make_episode("robot-000", k, source="rollout") for k in range(6)]
    uploads.submit(episodes[0])
    for episode in episodes[1:4]:
        uploads.submit(episode)  # the third waits for the first upload's place (max_pending 3)
    deadline = time.monotonic() + 30
    while len(held["sink"].calls) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    began = time.monotonic()
    for episode in episodes[4:]:
        uploads.submit(episode)  # places free since the second upload carried episodes 1-3
    assert time.monotonic() - began < 1.0
    uploads.drain()
    uploads.close()
    assert [e for call in held["sink"].calls for e in call] == [e.episode_id for e in episodes]
