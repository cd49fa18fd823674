"""Spawned worker processes that fail loudly.

`multiprocessing.Pool` replaces a worker that dies (killed, or out of memory) and loses the
task it held, so `map` waits for that task forever. `WorkerPool` runs on
`concurrent.futures.ProcessPoolExecutor` instead, which notices the death: the caller gets
`WorkerDied` with what to check, and the pool cancels what had not started. A worker whose
initializer raises stays up and fails every task it takes with `WorkerSetupFailed`, which
carries the initializer's traceback, so the caller sees why rather than a bare death.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import traceback
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from typing import Any

# Set in a worker whose initializer raised: its formatted traceback.
_setup_error: str | None = None


class WorkerDied(RuntimeError):
    """A worker process ended without finishing its task."""


class WorkerSetupFailed(RuntimeError):
    """A worker's initializer raised; the message holds its traceback from the worker."""


def _process_id(_: int) -> int:
    return os.getpid()


def _run_initializer(initializer: Callable, initargs: tuple) -> None:
    # ProcessPoolExecutor would only log the exception and break the pool with a message that
    # names no cause; keeping the worker up lets its first task report the cause instead.
    global _setup_error
    try:
        initializer(*initargs)
    except Exception:
        _setup_error = traceback.format_exc()


def _call(fn: Callable, item: Any) -> Any:
    if _setup_error is not None:
        raise WorkerSetupFailed(f"a worker process failed to set up:\n{_setup_error}")
    return fn(item)


class WorkerPool:
    """`workers` spawned processes, each running `initializer(*initargs)` first."""

    def __init__(self, workers: int, initializer: Callable | None = None, initargs: tuple = ()):
        self._executor = ProcessPoolExecutor(
            workers,
            mp_context=mp.get_context("spawn"),
            initializer=None if initializer is None else _run_initializer,
            initargs=() if initializer is None else (initializer, initargs),
        )
        # Start every worker now. The executor spawns them on demand, and its manager thread
        # watches a worker's exit only from its next wake-up on: a worker spawned during a long
        # wait could die unnoticed until some other task finished. A failed setup fails here.
        try:
            self.map(_process_id, range(workers))
        except BaseException:
            self.close()
            raise

    def map(self, fn: Callable, items: Iterable) -> list:
        """fn(item) for every item, in order."""
        futures = [self._executor.submit(_call, fn, item) for item in items]
        with self._translated():
            return [future.result() for future in futures]

    def imap_unordered(self, fn: Callable, items: Iterable) -> Iterator[Any]:
        """fn(item) for every item, each as soon as it is done."""
        futures = [self._executor.submit(_call, fn, item) for item in items]
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
