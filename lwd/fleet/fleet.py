"""The embedded fleet: robot worker processes on this machine, supervised.

`LocalFleet` starts one process per worker, restarts a worker that dies (its robots
resume after their last committed episode, so nothing is lost or uploaded twice), holds
new episodes while the learner catches up (pacing), and stops them cleanly. A worker
never outlives the process that supervises it (it dies with it, committing nothing
more), and holds a lease on each of its robot ids, so no two processes ever drive one
robot. A fleet on Ray or behind a network gateway implements the same four calls.
"""

from __future__ import annotations

import ctypes
import multiprocessing as mp
import os
import time
from functools import partial
from pathlib import Path
from typing import Protocol

from lwd.data.store import EpisodeStore
from lwd.fleet.registry import PolicyRegistry
from lwd.fleet.worker import EXIT_LEASE_REFUSED, FleetConfig, robot_specs, worker_main


class Fleet(Protocol):
    """What the online loop controls of its robots, whatever runs them."""

    restarts: int  # worker restarts so far, for fleet/worker_restarts

    @property
    def alive(self) -> int:
        """Workers running now, for fleet/workers_alive."""

    def start(self) -> None: ...

    def supervise(self) -> list[int]:
        """Restart dead workers; returns the indices restarted."""

    def hold(self, holding: bool) -> None:
        """While holding, robots finish the episode they are in and start no new one."""

    def stop(self, timeout: float = 60.0) -> None: ...


class LocalFleet:
    def __init__(
        self,
        config: FleetConfig,
        store: str | Path,
        registry: str | Path,
        log_dir: str | Path | None = None,
        max_restarts: int = 20,
        lease_wait_seconds: float = 10.0,
        seed: int = 0,
    ):
        self.config, self.seed = config, seed
        self.store, self.registry = str(store), str(registry)
        self.log_dir = str(log_dir) if log_dir else None
        specs = robot_specs(config)
        self.assignments = [specs[i :: config.workers] for i in range(config.workers)]
        self._context = mp.get_context("spawn")
        # Flags in shared memory without a lock: a worker killed while reading an mp.Event
        # would take the Event's lock with it, and the next set() here would block forever.
        self._stop = self._context.RawValue(ctypes.c_bool, False)
        self._hold = self._context.RawValue(ctypes.c_bool, False)
        self.processes: list = [None] * config.workers
        self.restarts = 0
        self.max_restarts = max_restarts
        # How long a starting worker waits for a robot that another process still drives:
        # an orphan of a killed run dies within a second, anything longer is a real conflict.
        self.lease_wait_seconds = lease_wait_seconds

    def _spawn(self, index: int) -> None:
        process = self._context.Process(
            target=worker_main,
            name=f"lwd-robot-worker-{index}",
            daemon=True,
            args=(
                index,
                self.assignments[index],
                self.config,
                partial(EpisodeStore, self.store),
                partial(PolicyRegistry, self.registry),
                self._stop,
                self.log_dir,
                self._hold,
                os.getpid(),
                self.lease_wait_seconds,
                self.seed,
            ),
        )
        process.start()
        self.processes[index] = process

    def start(self) -> None:
        for index in range(self.config.workers):
            self._spawn(index)

    def supervise(self) -> list[int]:
        restarted = []
        if self._stop.value:
            return restarted
        for index, process in enumerate(self.processes):
            if process is not None and not process.is_alive():
                process.join()
                if process.exitcode == EXIT_LEASE_REFUSED:
                    robots = ", ".join(spec.robot_id for spec in self.assignments[index])
                    raise RuntimeError(
                        f"robot worker {index} was refused its robots ({robots}): another process "
                        f"still drives them (its log line above names it); stop that process or use "
                        f"another run directory"
                    )
                if self.restarts >= self.max_restarts:
                    raise RuntimeError(
                        f"robot worker {index} died (exit code {process.exitcode}) after "
                        f"{self.restarts} restarts; giving up"
                    )
                self._spawn(index)
                self.restarts += 1
                restarted.append(index)
        return restarted

    def hold(self, holding: bool) -> None:
        self._hold.value = holding

    @property
    def holding(self) -> bool:
        return self._hold.value

    def stop(self, timeout: float = 60.0) -> None:
        """Let robots finish their current episodes and upload them; terminate stragglers."""
        self._stop.value = True
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
