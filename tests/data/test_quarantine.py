"""Damaged episodes: readers skip them, `check(repair=True)` quarantines them, nothing is deleted."""

import logging
import sqlite3

import numpy as np
import pytest

from lwd.data.replay import ChunkReplay, ReplayConfig
from lwd.data.store import EpisodeConflictError, EpisodeStore
from tests.conftest import make_episode

TRUNCATED, FLIPPED, DELETED = 1, 2, 3  # seqs damaged by `damaged_store`; 0 and 4 stay intact


@pytest.fixture
def damaged_store(tmp_path):
    """A store of five episodes of robot-0: seq 1 truncated, seq 2 with a flipped byte, seq 3's file deleted.
    Returns (store, {seq: relative path})."""
    store = EpisodeStore(tmp_path / "store")
    store.append_many([make_episode(seq=seq, steps=6 + seq) for seq in range(5)])
    paths = {record.seq: record.path for record in store.records()}
    truncated = store.root / paths[TRUNCATED]
    truncated.write_bytes(truncated.read_bytes()[:40])
    flipped = store.root / paths[FLIPPED]
    data = bytearray(flipped.read_bytes())
    data[-5] ^= 0xFF  # inside the tensor payload: the file still parses, its digest no longer matches
    flipped.write_bytes(bytes(data))
    (store.root / paths[DELETED]).unlink()
    return store, paths


def test_repair_quarantines_exactly_the_damaged_episodes_with_their_reasons(damaged_store):
    store, paths = damaged_store
    report = store.check(repair=True)
    assert report.missing == [paths[DELETED]]
    assert report.corrupt == sorted([paths[TRUNCATED], paths[FLIPPED]])
    assert sorted(report.quarantined_now) == sorted(paths[seq] for seq in (TRUNCATED, FLIPPED, DELETED))
    assert report.quarantined == 3 and report.unresolved == [] and report.episodes == 2
    reasons = {entry.record.seq: entry.reason for entry in store.quarantined()}
    assert reasons[DELETED] == "missing file"
    assert "not a readable lwd episode file" in reasons[TRUNCATED]
    assert "does not match the catalogue digest" in reasons[FLIPPED]


def test_repair_moves_damaged_files_to_quarantine_instead_of_deleting_them(damaged_store):
    store, paths = damaged_store
    damaged_bytes = {seq: (store.root / paths[seq]).read_bytes() for seq in (TRUNCATED, FLIPPED)}
    store.check(repair=True)
    moved_to = {entry.record.seq: entry.moved_to for entry in store.quarantined()}
    assert moved_to[DELETED] is None  # nothing to move
    for seq, data in damaged_bytes.items():
        assert moved_to[seq] == f"quarantine/{paths[seq]}"
        assert (store.root / moved_to[seq]).read_bytes() == data
        assert not (store.root / paths[seq]).exists()


def test_quarantined_episodes_are_hidden_from_readers(damaged_store):
    store, _ = damaged_store
    store.check(repair=True)
    assert [record.seq for record in store.records()] == [0, 4]
    assert [row.episodes for row in store.summary()] == [2]
    assert store.get("robot-0", FLIPPED) is None and store.get("robot-0", 4) is not None


def test_quarantined_seqs_stay_taken_so_a_resuming_robot_does_not_reuse_them(damaged_store):
    store, _ = damaged_store
    store.check(repair=True)
    assert store.committed_ids("robot-0") == {0, 1, 2, 3, 4}


def test_a_quarantined_id_is_not_recommitted(damaged_store):
    store, _ = damaged_store
    store.check(repair=True)
    original = make_episode(seq=FLIPPED, steps=6 + FLIPPED)
    receipt = store.append(original)
    assert receipt.duplicate and receipt.snapshot == 1
    assert store.get("robot-0", FLIPPED) is None  # acknowledged, but it stays quarantined
    with pytest.raises(EpisodeConflictError, match="already committed with different content"):
        store.append(make_episode(seq=FLIPPED, steps=6 + FLIPPED, rng_seed=99))


def test_a_second_check_after_repair_is_clean(damaged_store):
    store, _ = damaged_store
    store.check(repair=True)
    report = store.check()
    assert (report.missing, report.corrupt, report.unexpected, report.orphans) == ([], [], [], [])
    assert report.episodes == 2 and report.quarantined == 3 and report.unresolved == []


def test_check_without_repair_reports_but_changes_nothing(damaged_store):
    store, paths = damaged_store
    report = store.check()
    assert len(report.unresolved) == 3 and report.quarantined_now == [] and report.quarantined == 0
    assert len(store.records()) == 5 and (store.root / paths[FLIPPED]).exists()


def test_replay_skips_damaged_episodes_with_one_warning_and_samples_the_rest(damaged_store, caplog):
    store, _ = damaged_store
    replay = ChunkReplay(store, ReplayConfig(chunk_len=2))
    with caplog.at_level(logging.WARNING, logger="lwd.data.store"):
        assert replay.refresh() == 2
    [warning] = caplog.records
    assert "skipped 3 damaged episodes" in warning.getMessage() and "--repair" in warning.getMessage()
    assert (replay.skipped_episodes, replay.num_episodes, replay.snapshot) == (3, 2, 1)
    intact = [make_episode(seq=seq, steps=6 + seq) for seq in (0, 4)]
    assert replay.num_steps == sum(episode.num_steps for episode in intact)
    batch = replay.sample(64, np.random.default_rng(0))
    intact_obs = np.concatenate([episode.observations for episode in intact])
    assert all(any(np.array_equal(obs, row) for row in intact_obs) for obs in batch.obs)


def test_a_planted_non_episode_file_is_reported_and_moved_by_repair(damaged_store):
    store, _ = damaged_store
    planted = store.root / "episodes" / "robot-0" / "evil.pkl"
    planted.write_bytes(b"\x80\x04not an episode")
    assert store.check().unexpected == ["episodes/robot-0/evil.pkl"]
    assert planted.exists()  # a plain check only reports
    report = store.check(repair=True)
    assert "episodes/robot-0/evil.pkl" in report.quarantined_now
    assert not planted.exists()
    assert (store.root / "quarantine/episodes/robot-0/evil.pkl").read_bytes() == b"\x80\x04not an episode"
    assert store.check().unexpected == []


def test_a_repair_killed_before_moving_files_is_finished_by_the_next(damaged_store, monkeypatch):
    store, paths = damaged_store

    def killed(*_):
        raise KeyboardInterrupt

    monkeypatch.setattr(EpisodeStore, "_move", killed)
    with pytest.raises(KeyboardInterrupt):
        store.check(repair=True)
    monkeypatch.undo()
    stranded = store.root / paths[FLIPPED]
    assert stranded.exists() and store.check().orphans == []  # hidden, not an orphan to delete
    store.check(repair=True)
    assert not stranded.exists() and (store.root / "quarantine" / paths[FLIPPED]).exists()


def test_a_store_from_before_quarantine_existed_is_migrated_on_open(tmp_path):
    with EpisodeStore(tmp_path) as old:
        old.append_many([make_episode(seq=0), make_episode(seq=1)])
    db = sqlite3.connect(tmp_path / "catalogue.sqlite")
    db.execute("DROP TABLE quarantine")  # the catalogue as stores were made before
    db.commit()
    db.close()
    store = EpisodeStore(tmp_path)
    (store.root / store.records()[0].path).unlink()
    assert store.check(repair=True).quarantined == 1
    assert [record.seq for record in store.records()] == [1]
