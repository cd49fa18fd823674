"""Group commit: one thread owns the episode store, and every upload queued while it
commits joins the next transaction (one fsync'd snapshot for many robots).

The store's SQLite connection may not cross threads, so the store lives on this writer's
single thread; callers on an asyncio loop `await append(...)` and get the store's receipt.
Both network ingest paths (the gateway and the Ray ingest actor) stand on it.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

from lwd.data.episode import Episode, EpisodeValidationError
from lwd.data.store import EpisodeConflictError, EpisodeStore, Receipt, StoreError


class NotCommittedError(StoreError):
    """An episode of a caller's batch left out because an earlier one of the batch failed:
    committing it would put a robot's episode k+1 in the store without its episode k."""


class StoreWriter:
    """The one thread that owns the episode store; uploads are committed in groups."""

    def __init__(self, path: str, *, durable: bool = True, max_batch: int = 64):
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="lwd-store")
        self._store: EpisodeStore = self._executor.submit(EpisodeStore, path, durable=durable).result()
        self.max_batch = max_batch
        self._queue: asyncio.Queue | None = None
        self._task: asyncio.Task | None = None
        self.commits = 0  # transactions, for the metrics (uploads / commits = group size)

    async def start(self) -> None:
        self._queue = asyncio.Queue()
        self._task = asyncio.create_task(self._run())

    async def append(self, episode: Episode) -> Receipt:
        result = (await self.append_many([episode]))[0]
        if isinstance(result, BaseException):
            raise result
        return result

    async def append_many(self, episodes: list[Episode]) -> list[Receipt | BaseException]:
        """Commit `episodes` in one transaction (never split between two, so a robot's
        episodes land in order), possibly with other callers' uploads; each one's receipt
        or error."""
        future = asyncio.get_running_loop().create_future()
        await self._queue.put((episodes, future))
        return await future

    async def committed_ids(self, robot_id: str) -> set[int]:
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._store.committed_ids, robot_id)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._queue.get()]
            size = len(batch[0][0])
            while size < self.max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
                size += len(batch[-1][0])
            results = await loop.run_in_executor(self._executor, self._commit, [group for group, _ in batch])
            for (_, future), mine in zip(batch, results):
                if not future.done():  # else the uploader went away; the commit stands
                    future.set_result(mine)

    def _commit(self, groups: list[list[Episode]]) -> list[list[Receipt | BaseException]]:
        """One transaction for all callers' batches; if any id conflicts, each caller's batch
        on its own, so one robot's conflict does not refuse the others."""
        try:
            receipts = self._store.append_many([e for group in groups for e in group])
            self.commits += 1
        except EpisodeConflictError:
            return [self._commit_in_order(group) for group in groups]
        except Exception as err:  # a full disk, an unreadable catalogue: every upload is told
            return [[err] * len(group) for group in groups]
        out = []
        for group in groups:
            out.append(receipts[: len(group)])
            receipts = receipts[len(group) :]
        return out

    def _commit_in_order(self, group: list[Episode]) -> list[Receipt | BaseException]:
        """A caller's batch, episode by episode in its order; after the first failure nothing
        more of it is committed, so a robot's episodes stay 0..n-1 in the store (an invalid
        episode is refused for good, as on its own, and does not hold back the rest)."""
        results: list[Receipt | BaseException] = []
        for i, episode in enumerate(group):
            try:
                results.append(self._store.append(episode))
                self.commits += 1
            except EpisodeValidationError as err:
                results.append(err)
            except Exception as err:
                left = f"not committed: episode {group[i].episode_id} before it in the batch failed ({err})"
                return results + [err] + [NotCommittedError(left) for _ in group[i + 1 :]]
        return results

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        await asyncio.get_running_loop().run_in_executor(self._executor, self._store.close)
        self._executor.shutdown(wait=True)
