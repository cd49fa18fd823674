"""Leases: one process at a time drives a robot identity, or writes a run directory.

A robot's episodes are numbered 0, 1, 2, ... and a process that drives it continues after
its last committed episode. Two processes driving the same robot id (an orphaned worker
of a learner that was killed, a duplicated worker, later two network clients claiming one
robot) would interleave that sequence and collide on episode ids. A lease prevents it:
an exclusive `flock` on `<store>/leases/<robot_id>.lock`, held for as long as the process
drives the robot. The kernel releases it when the holder's file descriptor closes, which
includes every way a process can die (kill -9, OOM kill), so a dead holder never blocks
its successor. The file's content names the holder, for the refusal message only.

The same lock guards a run directory (`RunLease`): two learners resuming one run would
each train from its checkpoint and publish into its registry.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path


class LeaseError(RuntimeError):
    """What the lease guards is held by another live process."""


class RobotLeaseError(LeaseError):
    """The robot id is driven by another live process."""


class RunLeaseError(LeaseError):
    """The run directory is in use by another live process."""


class FileLease:
    """An exclusive `flock` on one file, held until `release()` or the holder's death. The file
    names the holder (pid, host, since) for refusal messages; `refusal(holder)` builds the
    error a refused claim raises."""

    def __init__(self, path: str | os.PathLike, refusal: Callable[[str], LeaseError], *, wait_seconds: float = 0.0):
        self.path = Path(path)
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
                    holder = self.holder()
                    os.close(self._fd)
                    self._fd = None
                    raise refusal(holder) from None
                time.sleep(0.1)
        os.ftruncate(self._fd, 0)
        os.write(
            self._fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}).encode()
        )

    def holder(self) -> str:
        """Who holds the lease, as its file says ("holder unknown" when unreadable)."""
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

    def __enter__(self) -> FileLease:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


class RobotLease(FileLease):
    """An exclusive claim on one robot id: `<directory>/<robot_id>.lock`."""

    def __init__(self, directory: str | os.PathLike, robot_id: str, *, wait_seconds: float = 0.0):
        self.robot_id = robot_id
        super().__init__(
            Path(directory) / f"{robot_id}.lock",
            lambda holder: RobotLeaseError(
                f"robot {robot_id} is already driven by another process ({holder}); a robot id runs in one "
                f"process at a time: stop that process, or give this robot another id"
            ),
            wait_seconds=wait_seconds,
        )


class RunLease(FileLease):
    """An exclusive claim on a run directory (`<out>/run.lock`): a second `lwd deploy` (or
    training stage) on a directory another process is still writing is refused before it
    resumes from that process's checkpoints, publishes versions or appends to its logs."""

    def __init__(self, out: str | os.PathLike, *, wait_seconds: float = 0.0):
        super().__init__(
            Path(out) / "run.lock",
            lambda holder: RunLeaseError(
                f"run directory {out} is in use by another process ({holder}); a run directory takes one "
                f"process at a time: wait for it to finish, stop it, or choose another --out"
            ),
            wait_seconds=wait_seconds,
        )


def pid_alive(pid: int) -> bool:
    """Whether process `pid` exists (one we may not signal counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
