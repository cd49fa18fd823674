"""The embedded fleet: robot worker processes on this machine, supervised.

`LocalFleet` starts one process per worker, restarts a worker that dies (its robots
resume after their last committed episode, so nothing is lost or uploaded twice), holds
new episodes while the learner catches up (pacing), and stops them cleanly. A fleet on
Ray or behind a network gateway implements the same four calls.
"""

from __future__ import annotations

import multiprocessing as mp
import time
from pathlib import Path
from typing import Protocol

from lwd.fleet.worker import FleetConfig, robot_specs, worker_main


class Fleet(Protocol):
    def start(self) -> None: ...

    def supervise(self) -> list[int]:
        """Restart dead workers; returns the indices restarted."""

    def hold(self, holding: bool) -> None:
        """While holding, robots finish the episode they are in and start no new one."""

    def stop(self, timeout: float = 60.0) -> None: ...


class LocalFleet:
    def __init__(self, config: FleetConfig, store: str | Path, registry: str | Path, log_dir: str | Path | None = None,
                 max_restarts: int = 20):
        self.config = config
        self.store, self.registry = str(store), str(registry)
        self.rejected_log = str(Path(log_dir) / "rejected_episodes.tsv") if log_dir else None
        specs = robot_specs(config)
        self.assignments = [specs[i::config.workers] for i in range(config.workers)]
        self._context = mp.get_context("spawn")
        self._stop = self._context.Event()
        self._hold = self._context.Event()
        self.processes: list = [None] * config.workers
        self.restarts = 0
        self.max_restarts = max_restarts

    def _spawn(self, index: int) -> None:
        process = self._context.Process(
            target=worker_main, name=f"lwd-robot-worker-{index}", daemon=True,
            args=(index, self.assignments[index], self.config, self.store, self.registry, self._stop, self.rejected_log,
                  self._hold))
        process.start()
        self.processes[index] = process

    def start(self) -> None:
        for index in range(self.config.workers):
            self._spawn(index)

    def supervise(self) -> list[int]:
        restarted = []
        if self._stop.is_set():
            return restarted
        for index, process in enumerate(self.processes):
            if process is not None and not process.is_alive():
                process.join()
                if self.restarts >= self.max_restarts:
                    raise RuntimeError(f"robot worker {index} died (exit code {process.exitcode}) after "
                                       f"{self.restarts} restarts; giving up")
                self._spawn(index)
                self.restarts += 1
                restarted.append(index)
        return restarted

    def hold(self, holding: bool) -> None:
        if holding != self._hold.is_set():
            self._hold.set() if holding else self._hold.clear()

    @property
    def holding(self) -> bool:
        return self._hold.is_set()

    def stop(self, timeout: float = 60.0) -> None:
        """Let robots finish their current episodes and upload them; terminate stragglers."""
        self._stop.set()
        deadline = time.monotonic() + timeout
        for process in self.processes:
            if process is not None:
                process.join(max(0.0, deadline - time.monotonic()))
        for process in self.processes:
            if process is not None and process.is_alive():
                process.terminate()
                process.join()

    @property
    def alive(self) -> int:
        return sum(p is not None and p.is_alive() for p in self.processes)
