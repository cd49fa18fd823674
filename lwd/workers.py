"""Spawned worker processes that fail loudly.

`multiprocessing.Pool` replaces a worker that dies (killed, or out of memory) and loses the
task it held, so `map` waits for that task forever. `WorkerPool` runs on
`concurrent.futures.ProcessPoolExecutor` instead, which notices the death: the caller gets
`WorkerDied` with what to check, and the pool cancels what had not started.
"""

from __future__ import annotations

import multiprocessing as mp
import os
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from typing import Any


def _process_id(_: int) -> int:
    return os.getpid()


class WorkerDied(RuntimeError):
    """A worker process ended without finishing its task."""


class WorkerPool:
    """`workers` spawned processes, each running `initializer(*initargs)` first."""

    def __init__(self, workers: int, initializer: Callable | None = None, initargs: tuple = ()):
        self._executor = ProcessPoolExecutor(
            workers, mp_context=mp.get_context("spawn"), initializer=initializer, initargs=initargs
        )
        # Start every worker now. The executor spawns them on demand, and its manager thread
        # watches a worker's exit only from its next wake-up on: a worker spawned during a long
        # wait could die unnoticed until some other task finished.
        self.map(_process_id, range(workers))

    def map(self, fn: Callable, items: Iterable) -> list:
        """fn(item) for every item, in order."""
        futures = [self._executor.submit(fn, item) for item in items]
        with self._translated():
            return [future.result() for future in futures]

    def imap_unordered(self, fn: Callable, items: Iterable) -> Iterator[Any]:
        """fn(item) for every item, each as soon as it is done."""
        futures = [self._executor.submit(fn, item) for item in items]
        with self._translated():
            for future in as_completed(futures):
                yield future.result()

    def close(self) -> None:
        """Wait for running tasks and stop the workers."""
        self._executor.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @contextmanager
    def _translated(self) -> Iterator[None]:
        try:
            yield
        except BrokenProcessPool as error:
            self._executor.shutdown(wait=False, cancel_futures=True)
            raise WorkerDied(
                "a worker process died before finishing its task (killed, or out of memory: fewer "
                "--workers or smaller batches use less); what had finished is kept where the command "
                "keeps it (stores, run directories), so a rerun resumes where it can"
            ) from error
