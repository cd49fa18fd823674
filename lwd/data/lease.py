"""Robot leases: one process at a time drives a robot identity.

A robot's episodes are numbered 0, 1, 2, ... and a process that drives it continues after
its last committed episode. Two processes driving the same robot id (an orphaned worker
of a learner that was killed, a duplicated worker, later two network clients claiming one
robot) would interleave that sequence and collide on episode ids. A lease prevents it:
an exclusive `flock` on `<store>/leases/<robot_id>.lock`, held for as long as the process
drives the robot. The kernel releases it when the holder's file descriptor closes, which
includes every way a process can die (kill -9, OOM kill), so a dead holder never blocks
its successor. The file's content names the holder, for the refusal message only.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from pathlib import Path


class RobotLeaseError(RuntimeError):
    """The robot id is driven by another live process."""


class RobotLease:
    """An exclusive claim on one robot id; `release()` (or the holder's death) ends it."""

    def __init__(self, directory: str | os.PathLike, robot_id: str, *, wait_seconds: float = 0.0):
        self.robot_id = robot_id
        self.path = Path(directory) / f"{robot_id}.lock"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Not O_TRUNC: the current holder's description must survive a refused attempt.
        self._fd: int | None = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + wait_seconds
        while True:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = self._holder()
                    os.close(self._fd)
                    self._fd = None
                    raise RobotLeaseError(
                        f"robot {robot_id} is already driven by another process ({holder}); a robot id runs in one "
                        f"process at a time: stop that process, or give this robot another id"
                    ) from None
                time.sleep(0.1)
        os.ftruncate(self._fd, 0)
        os.write(
            self._fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}).encode()
        )

    def _holder(self) -> str:
        try:
            holder = json.loads(self.path.read_text() or "{}")
        except (OSError, json.JSONDecodeError):
            return "holder unknown"
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.get("since", 0)))
        return f"pid {holder.get('pid', '?')} on {holder.get('host', '?')} since {since}"

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock
            self._fd = None

    def __enter__(self) -> RobotLease:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def pid_alive(pid: int) -> bool:
    """Whether process `pid` exists (one we may not signal counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
