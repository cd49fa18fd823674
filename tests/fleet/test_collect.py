import dataclasses

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
    config = CollectConfig(
        store=str(tmp_path / "old"), tasks=("reach-v3",), episodes_per_task=1, workers=1, progress=False
    )
    collect(config)
    old = EpisodeStore(tmp_path / "old")
    episode = old.load(old.records()[0])
    # The same robot's episode worded as the task no longer is, as an earlier lwd wrote it. Today's
    # store accepts free wording only from hardware (no seed), so the stand-in drops its seed.
    stale = EpisodeStore(tmp_path / "stale")
    stale.append(dataclasses.replace(episode, instruction="Reach the goal the old way.", seed=None))
    resumed = dataclasses.replace(config, store=str(tmp_path / "stale"), episodes_per_task=2)
    with pytest.raises(StaleStoreError, match="Reach the goal the old way"):
        collect(resumed)
    assert len(stale.records()) == 1
