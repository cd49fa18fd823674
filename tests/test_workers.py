import multiprocessing as mp
import os
import signal
import threading
import time

import pytest

from lwd.workers import WorkerDied, WorkerPool, WorkerSetupFailed


def square(x: int) -> int:
    return x * x


def sleep_then_square(x: int) -> int:
    time.sleep(60)
    return x * x


def test_map_keeps_order_and_imap_unordered_yields_everything():
    with WorkerPool(2) as pool:
        assert pool.map(square, range(6)) == [0, 1, 4, 9, 16, 25]
        assert sorted(pool.imap_unordered(square, range(6))) == [0, 1, 4, 9, 16, 25]


def test_a_killed_worker_raises_worker_died_instead_of_waiting_forever():
    pool = WorkerPool(2)
    killer = threading.Timer(5.0, lambda: [os.kill(child.pid, signal.SIGKILL) for child in mp.active_children()[:1]])
    began = time.monotonic()
    killer.start()
    try:
        with pytest.raises(WorkerDied, match="out of memory"):
            pool.map(sleep_then_square, range(2))
    finally:
        killer.cancel()
    assert time.monotonic() - began < 30  # not the 60 s the tasks sleep
    pool.close()
    deadline = time.monotonic() + 10
    while mp.active_children() and time.monotonic() < deadline:  # the survivor is terminated, not awaited
        time.sleep(0.1)
    assert not mp.active_children()


def fail_to_set_up(reason: str) -> None:
    raise ValueError(reason)


def test_a_failing_initializer_reports_its_own_error_and_leaves_no_process():
    with pytest.raises(WorkerSetupFailed, match="ValueError: no simulator here"):
        WorkerPool(2, fail_to_set_up, ("no simulator here",))
    assert not mp.active_children()
