"""How many rows per task the learned prior imitates in a batch (issue 18): in LWD's shared batch
(rule `successes`: operator-driven chunks and chunks of episodes that succeeded) and in a batch of
its own sampled as HG-DAgger's (`prior_data = "hg-dagger"`), from the replays a finished `lwd
deploy` run trained on (its online store and the offline store it names), mixed as it mixed them.

    .venv/bin/python tools/prior_rows_by_task.py RUN_DIR [BATCHES]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lwd.data.replay import ChunkReplay, MixedReplay, ReplayConfig  # noqa: E402
from lwd.data.store import EpisodeStore  # noqa: E402


def main(run: Path, batches: int = 40) -> None:
    config = json.loads((run / "config.json").read_text())
    replay_config = ReplayConfig(chunk_len=5, n_step=config["n_step"] or 4, task_balanced=config["task_balanced"])
    offline = ChunkReplay(EpisodeStore(config["offline_store"], create=False), replay_config)
    online = ChunkReplay(EpisodeStore(run / "online_store", create=False), replay_config)
    offline.refresh()
    online.refresh()
    share = config["online_fraction"] or 0.75
    mix = MixedReplay([(offline, 1.0 - share), (online, share)])
    rng = np.random.default_rng(0)
    counts: dict[str, np.ndarray] = {}
    for _ in range(batches):
        for column, imitable_only in ((0, False), (1, True)):
            batch = mix.sample(config["batch_size"], rng, imitable_only=imitable_only)
            tasks = np.array(batch.task_vocab)[batch.task_ids]
            if imitable_only:
                imitated = batch.action_mask.any(axis=1)
            else:
                imitated = batch.intervention.any(axis=1) | (batch.return_to_go > 0)
            for task in np.unique(tasks):
                counts.setdefault(task, np.zeros(2))[column] += imitated[tasks == task].sum()
    print(f"{run}: imitated rows per batch of {config['batch_size']} ({batches} batches each)")
    print("| task | shared batch (successes) | own batch (hg-dagger) |\n|---|---|---|")
    for task, (shared, own) in sorted(counts.items()):
        print(f"| {task} | {shared / batches:.1f} | {own / batches:.1f} |")
    total = sum(counts.values())
    print(f"| all | {total[0] / batches:.1f} | {total[1] / batches:.1f} |")


if __name__ == "__main__":
    main(Path(sys.argv[1]), *(int(a) for a in sys.argv[2:3]))
