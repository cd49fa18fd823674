import multiprocessing as mp
import time
from dataclasses import replace

import numpy as np
import pytest

from lwd.data.store import EpisodeConflictError, EpisodeStore, StoreError
from tests.conftest import make_episode


def test_committed_episode_reads_back_identically(tmp_path):
    store = EpisodeStore(tmp_path)
    episode = make_episode(steps=11, source="rollout", intervention=np.arange(11) % 3 == 0, version=4)
    receipt = store.append(episode)
    [record] = store.records()
    loaded = store.load(record)
    assert receipt.snapshot == 1 and not receipt.duplicate
    for name in ("observations", "actions", "intervention", "policy_version", "timestamps"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(episode, name))
    assert (loaded.task, loaded.source, loaded.success, loaded.seed) == ("reach-v3", "rollout", True, 3)
    assert record.num_interventions == 4 and record.num_steps == 11


def test_resending_a_committed_episode_is_a_no_op(tmp_path):
    store = EpisodeStore(tmp_path)
    episode = make_episode()
    first = store.append(episode)
    second = store.append(episode)
    assert second.duplicate and second.snapshot == first.snapshot
    assert len(store.records()) == 1 and store.latest_snapshot() == 1
    assert len(list((tmp_path / "episodes").rglob("*.safetensors"))) == 1


def test_same_id_with_different_content_is_refused_and_original_kept(tmp_path):
    store = EpisodeStore(tmp_path)
    original = make_episode(rng_seed=1)
    store.append(original)
    with pytest.raises(EpisodeConflictError, match="already committed with different content"):
        store.append(make_episode(rng_seed=2))
    np.testing.assert_array_equal(store.load(store.records()[0]).actions, original.actions)


def test_snapshots_increase_and_readers_can_pin_one(tmp_path):
    store = EpisodeStore(tmp_path)
    snapshots = [store.append(make_episode(seq=i)).snapshot for i in range(4)]
    assert snapshots == [1, 2, 3, 4]
    assert [r.seq for r in store.records(up_to=2)] == [0, 1]
    assert [r.seq for r in store.records(after=2)] == [2, 3]
    assert store.summary(up_to=1)[0].episodes == 1


def test_a_batch_commits_as_one_snapshot_or_not_at_all(tmp_path):
    store = EpisodeStore(tmp_path)
    receipts = store.append_many([make_episode(seq=0), make_episode(seq=1)])
    assert {r.snapshot for r in receipts} == {1}
    bad = replace(make_episode(seq=3), task="no-such-task-v3")
    with pytest.raises(ValueError):
        store.append_many([make_episode(seq=2), bad])
    assert len(store.records()) == 2 and store.latest_snapshot() == 1


def test_opening_a_missing_store_without_create_fails_clearly(tmp_path):
    with pytest.raises(StoreError, match="no episode store"):
        EpisodeStore(tmp_path / "absent", create=False)


def test_corrupt_episode_file_is_reported_with_its_path(tmp_path):
    store = EpisodeStore(tmp_path)
    store.append(make_episode())
    [record] = store.records()
    path = tmp_path / record.path
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF  # flip bits inside the tensor payload
    path.write_bytes(bytes(data))
    with pytest.raises(StoreError, match=str(path)):
        store.load(record)
    assert store.check().corrupt == [record.path]


def test_truncated_episode_file_is_reported_with_its_path(tmp_path):
    store = EpisodeStore(tmp_path)
    store.append(make_episode())
    [record] = store.records()
    path = tmp_path / record.path
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(ValueError, match="not a readable lwd episode file"):
        store.load(record)


def test_missing_episode_file_is_reported(tmp_path):
    store = EpisodeStore(tmp_path)
    store.append(make_episode())
    [record] = store.records()
    (tmp_path / record.path).unlink()
    with pytest.raises(StoreError, match="file is missing"):
        store.load(record)
    assert store.check().missing == [record.path]


def _write_many(root: str, robot: str, count: int) -> None:
    store = EpisodeStore(root)
    for seq in range(count):
        store.append(make_episode(robot_id=robot, seq=seq))


def test_concurrent_writer_processes_lose_nothing(tmp_path):
    ctx = mp.get_context("spawn")
    writers = [ctx.Process(target=_write_many, args=(str(tmp_path), f"robot-{i}", 15)) for i in range(3)]
    for w in writers:
        w.start()
    for w in writers:
        w.join(timeout=120)
        assert w.exitcode == 0
    store = EpisodeStore(tmp_path)
    records = store.records()
    assert len(records) == 45
    assert sorted(r.snapshot for r in records) == list(range(1, 46))
    for record in records:
        store.load(record)


def _open_and_append(roots: list[str], robot_index: int, start) -> None:
    try:
        for root in roots:
            start.wait(timeout=30)  # every process opens this fresh store at the same moment
            with EpisodeStore(root) as store:
                store.append(make_episode(robot_id=f"robot-{robot_index}", seq=0))
    except BaseException:
        start.abort()  # release the others at once instead of letting them wait out the timeout
        raise


def test_many_processes_opening_a_fresh_store_at_once_all_succeed(tmp_path):
    # One round loses the race only now and then; a few fresh stores make a regression show.
    roots, openers = [str(tmp_path / f"store-{k}") for k in range(4)], 16
    ctx = mp.get_context("spawn")
    start = ctx.Barrier(openers)
    processes = [ctx.Process(target=_open_and_append, args=(roots, i, start)) for i in range(openers)]
    try:
        for process in processes:
            process.start()
        deadline = time.monotonic() + 60
        for process in processes:
            process.join(timeout=max(0.0, deadline - time.monotonic()))
        assert [process.exitcode for process in processes] == [0] * openers
    finally:
        for process in processes:
            if process.is_alive():
                process.kill()
                process.join()
    for root in roots:
        assert sorted(r.robot_id for r in EpisodeStore(root).records()) == sorted(f"robot-{i}" for i in range(openers))
