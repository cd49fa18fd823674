"""Kill -9 a writer process at random moments; nothing acknowledged may be lost."""

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lwd.data.store import EpisodeStore

pytestmark = pytest.mark.slow  # kills real writer processes for seconds: `make test-fast` skips it

WRITER = r"""
import sys
from lwd.data.store import EpisodeStore
from tests.conftest import make_episode
store = EpisodeStore(sys.argv[1])
start = int(sys.argv[2])
print("ready", flush=True)
for seq in range(start, start + 10_000):
    receipt = store.append(make_episode(robot_id="victim", seq=seq, steps=20 + seq % 50))
    sys.stdout.write(f"{receipt.episode_id} {receipt.snapshot}\n")
    sys.stdout.flush()
"""

ROOT = Path(__file__).resolve().parents[2]


def test_writer_killed_at_random_points_loses_no_acknowledged_episode(tmp_path):
    rng = random.Random(1234)
    acknowledged: dict[str, int] = {}
    last_snapshot = 0
    next_seq = 0
    kills = 25
    for _ in range(kills):
        proc = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(tmp_path), str(next_seq)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0.0, 0.25))
        os.kill(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        # A kill can cut the last acknowledgement short; only complete lines were acknowledged.
        for line in out.split("\n")[:-1]:
            episode_id, snapshot = line.split()
            acknowledged[episode_id] = int(snapshot)

        store = EpisodeStore(tmp_path)  # recovery = simply reopening
        records = store.records()
        visible = {r.episode_id: r for r in records}
        assert set(acknowledged) <= set(visible), "an acknowledged episode was lost"
        for record in records:  # every visible episode is whole and matches its digest
            episode = store.load(record)
            assert episode.num_steps == record.num_steps
        snapshots = [r.snapshot for r in records]
        assert snapshots == sorted(snapshots) and len(set(snapshots)) == len(snapshots)
        assert store.latest_snapshot() >= last_snapshot
        last_snapshot = store.latest_snapshot()
        next_seq = max((r.seq for r in records), default=-1) + 1
        store.close()
    assert len(acknowledged) > kills  # the writer made real progress between kills
    report = EpisodeStore(tmp_path).check()
    assert not report.missing and not report.corrupt
