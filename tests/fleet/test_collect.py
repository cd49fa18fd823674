import dataclasses
import sqlite3

import numpy as np
import pytest

from lwd.data.store import EpisodeStore
from lwd.envs import SEEDS
from lwd.fleet.collect import CollectConfig, StaleStoreError, collect


@pytest.mark.slow
def test_mt10_expert_success_at_zero_noise_reaches_97_percent(tmp_path):
    config = CollectConfig(
        store=str(tmp_path), suite="mt10", episodes_per_task=10, noise=0.0, workers=2, progress=False
    )
    result = collect(config)
    assert len(result.stats) == 100
    assert np.mean([s.success for s in result.stats]) >= 0.97
    summary = EpisodeStore(tmp_path).summary()
    assert sum(row.episodes for row in summary) == 100 and {row.source for row in summary} == {"demo"}


def test_collect_resumes_instead_of_repeating(tmp_path):
    config = CollectConfig(store=str(tmp_path), tasks=("reach-v3",), episodes_per_task=3, workers=1, progress=False)
    assert len(collect(config).stats) == 3
    more = CollectConfig(store=str(tmp_path), tasks=("reach-v3",), episodes_per_task=5, workers=1, progress=False)
    again = collect(more)
    assert again.skipped == 3 and sorted(s.seq for s in again.stats) == [3, 4]
    records = EpisodeStore(tmp_path).records()
    assert len(records) == 5 and all(not SEEDS.is_eval(r.seed) for r in records)


def test_play_data_is_exploratory_and_labelled_failure(tmp_path):
    config = CollectConfig(
        store=str(tmp_path),
        tasks=("push-v3",),
        episodes_per_task=2,
        source="play",
        noise=0.3,
        workers=1,
        progress=False,
    )
    collect(config)
    store = EpisodeStore(tmp_path)
    for record in store.records():
        episode = store.load(record)
        assert record.source == "play" and not record.success
        assert episode.num_steps == episode_max_steps("push-v3")
        assert "reached_success" in episode.extras


def episode_max_steps(task):
    from lwd.envs import task_spec

    return task_spec(task).max_steps


def test_collect_refuses_a_store_written_under_an_earlier_task_definition(tmp_path):
    config = CollectConfig(store=str(tmp_path), tasks=("reach-v3",), episodes_per_task=1, workers=1, progress=False)
    collect(config)
    # The episode as an earlier lwd catalogued it: simulated, worded as the task no longer is.
    with sqlite3.connect(tmp_path / "catalogue.sqlite") as db:
        db.execute("UPDATE episodes SET instruction = ?", ("Reach the goal the old way.",))
    with pytest.raises(StaleStoreError, match="Reach the goal the old way"):
        collect(dataclasses.replace(config, episodes_per_task=2))
    assert len(EpisodeStore(tmp_path).records()) == 1


def test_collect_resumes_past_canonical_wording_and_hardware_free_text(tmp_path):
    canonical = CollectConfig(
        store=str(tmp_path), tasks=("reach-v3",), episodes_per_task=1, phrasings="canonical", workers=1, progress=False
    )
    collect(canonical)
    store = EpisodeStore(tmp_path)
    episode = store.load(store.records()[0])
    store.append(
        dataclasses.replace(episode, robot_id="hardware-arm", seed=None, instruction="Tap the target, please.")
    )
    resumed = collect(dataclasses.replace(canonical, phrasings="train", episodes_per_task=2))
    assert resumed.skipped == 1 and [s.seq for s in resumed.stats] == [1]
