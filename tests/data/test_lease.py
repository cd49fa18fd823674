"""Leases: one process at a time drives a robot id or writes a run directory, and a dead
holder frees it."""

import os
import signal
import time

import pytest

from lwd.data.lease import RobotLease, RobotLeaseError, RunLease, RunLeaseError
from lwd.data.store import EpisodeStore
from tests.conftest import lease_held_by_another_process


@pytest.fixture
def holder(tmp_path):
    """Another process that holds robot-006's lease until it ends."""
    with lease_held_by_another_process("robot", tmp_path / "leases", "robot-006") as process:
        yield process


def test_a_second_process_claiming_a_held_robot_is_refused_with_the_holders_pid(tmp_path, holder):
    process = holder
    with pytest.raises(
        RobotLeaseError,
        match=rf"robot robot-006 is already driven by another process \(pid "
        rf"{process.pid} on ",
    ):
        RobotLease(tmp_path / "leases", "robot-006")
    RobotLease(tmp_path / "leases", "robot-007").release()  # other robots are free


def test_a_killed_holder_frees_the_robot_at_once(tmp_path, holder):
    os.kill(holder.pid, signal.SIGKILL)
    holder.join(10)
    with RobotLease(tmp_path / "leases", "robot-006") as lease:
        assert lease.held
        assert f'"pid": {os.getpid()}' in lease.path.read_text()


def test_a_waiting_claim_gets_the_robot_when_the_holder_ends(tmp_path, holder):
    started = time.monotonic()
    holder.terminate()  # a clean exit, unlike the kill above
    with RobotLease(tmp_path / "leases", "robot-006", wait_seconds=20) as lease:
        assert lease.held and time.monotonic() - started < 20


def test_the_store_hands_out_leases_in_its_own_directory(tmp_path):
    store = EpisodeStore(tmp_path / "store")
    with store.lease("robot-000"):
        with pytest.raises(RobotLeaseError, match="robot-000"):
            store.lease("robot-000")  # even in the same process: the lease is per claim, not per process
    store.lease("robot-000").release()
    assert (tmp_path / "store" / "leases" / "robot-000.lock").exists()


def test_a_run_directory_is_written_by_one_process_and_its_killed_holder_frees_it(tmp_path):
    with lease_held_by_another_process("run", tmp_path / "run") as process:
        refusal = rf"run directory .*run is in use by another process \(pid {process.pid} on "
        with pytest.raises(RunLeaseError, match=refusal):
            RunLease(tmp_path / "run")
        RunLease(tmp_path / "other").release()  # other runs are free
        os.kill(process.pid, signal.SIGKILL)
        process.join(10)
        with RunLease(tmp_path / "run") as lease:
            assert lease.held and f'"pid": {os.getpid()}' in lease.path.read_text()
