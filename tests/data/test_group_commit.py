"""`StoreWriter`: uploads queued while it commits join the next transaction; a caller's
batch is never split between two transactions, so one robot's episodes land in order."""

import asyncio

from lwd.data.group_commit import NotCommittedError, StoreWriter
from lwd.data.store import EpisodeConflictError, Receipt
from tests.conftest import make_episode


def test_a_batch_larger_than_the_group_limit_still_commits_in_one_transaction(tmp_path):
    async def scenario():
        writer = StoreWriter(str(tmp_path / "store"), max_batch=2)
        await writer.start()
        batch = [make_episode("robot-000", k, source="rollout") for k in range(3)]
        single = make_episode("robot-001", 0, source="rollout")
        results, receipt = await asyncio.gather(writer.append_many(batch), writer.append(single))
        await writer.close()
        return results, receipt

    results, receipt = asyncio.run(scenario())
    assert [r.episode_id for r in results] == [
        e.episode_id for e in (make_episode("robot-000", k, source="rollout") for k in range(3))
    ]
    assert len({r.snapshot for r in results}) == 1
    assert receipt.episode_id.startswith("robot-001/")


def _conflicting(robot_id, seq):
    return make_episode(robot_id, seq, source="rollout", rng_seed=99)  # same id, other content


def test_after_a_conflict_nothing_later_of_the_same_batch_commits_and_other_batches_do(tmp_path):
    async def scenario():
        writer = StoreWriter(str(tmp_path / "store"))
        await writer.start()
        await writer.append(make_episode("robot-000", 0, source="rollout"))
        mine, others = await asyncio.gather(
            writer.append_many([_conflicting("robot-000", 0), make_episode("robot-000", 1, source="rollout")]),
            writer.append_many([make_episode("robot-001", k, source="rollout") for k in range(2)]),
        )
        committed = await writer.committed_ids("robot-000"), await writer.committed_ids("robot-001")
        await writer.close()
        return mine, others, committed

    mine, others, committed = asyncio.run(scenario())
    assert isinstance(mine[0], EpisodeConflictError) and isinstance(mine[1], NotCommittedError)
    assert all(isinstance(r, Receipt) for r in others)  # another caller's conflict refuses none of these
    assert committed == ({0}, {0, 1})
