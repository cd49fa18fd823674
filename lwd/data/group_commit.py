"""Group commit: one thread owns the episode store, and every upload queued while it
commits joins the next transaction (one fsync'd snapshot for many robots).

The store's SQLite connection may not cross threads, so the store lives on this writer's
single thread; callers on an asyncio loop `await append(...)` and get the store's receipt.
Both network ingest paths (the gateway and the Ray ingest actor) stand on it.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

from lwd.data.episode import Episode
from lwd.data.store import EpisodeConflictError, EpisodeStore, Receipt


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
            results = await loop.run_in_executor(self._executor, self._commit, [e for group, _ in batch for e in group])
            for group, future in batch:
                mine, results = results[: len(group)], results[len(group) :]
                if not future.done():  # else the uploader went away; the commit stands
                    future.set_result(mine)

    def _commit(self, episodes: list[Episode]) -> list[Receipt | BaseException]:
        """One transaction for the group; if any id conflicts, each episode on its own, so
        one robot's conflict does not refuse the others."""
        try:
            receipts = self._store.append_many(episodes)
            self.commits += 1
            return receipts
        except EpisodeConflictError:
            pass
        except Exception as err:  # a full disk, an unreadable catalogue: every upload is told
            return [err] * len(episodes)
        results: list[Receipt | BaseException] = []
        for episode in episodes:
            try:
                results.append(self._store.append(episode))
                self.commits += 1
            except Exception as err:
                results.append(err)
        return results

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        await asyncio.get_running_loop().run_in_executor(self._executor, self._store.close)
        self._executor.shutdown(wait=True)
