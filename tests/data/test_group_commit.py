"""`StoreWriter`: uploads queued while it commits join the next transaction; a caller's
batch is never split between two transactions, so one robot's episodes land in order."""

import asyncio

from lwd.data.group_commit import StoreWriter
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
