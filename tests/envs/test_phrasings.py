"""Every task has several training phrasings and a disjoint held-out set; episodes draw one by seed."""

from collections import Counter

import pytest

from lwd.envs import make_robot, suite, suite_names, task_spec
from lwd.envs.phrasings import (
    LONG_HORIZON_PHRASINGS,
    METAWORLD_PHRASINGS,
    episode_instruction,
    phrasing_owner,
    task_phrasings,
)

ALL_TASKS = sorted({name for s in suite_names() for name in suite(s).task_names})


@pytest.mark.parametrize("task", ALL_TASKS)
def test_every_task_has_training_and_disjoint_held_out_phrasings(task):
    phrasings = task_phrasings(task)
    assert phrasings.train[0] == phrasings.of("canonical")[0] == task_spec(task).instruction
    assert len(set(phrasings.train)) == len(phrasings.train) >= 6
    assert len(set(phrasings.held_out)) == len(phrasings.held_out) >= 3
    assert not set(phrasings.train) & set(phrasings.held_out)
    assert all(text.strip() == text and text for text in (*phrasings.train, *phrasings.held_out))


def test_no_phrasing_is_shared_between_tasks_and_every_table_entry_is_a_task():
    assert set(METAWORLD_PHRASINGS) | set(LONG_HORIZON_PHRASINGS) <= set(ALL_TASKS)  # no stale chain names
    sets = [task_phrasings(task) for task in ALL_TASKS]
    texts = Counter(text for phrasings in sets for text in (*phrasings.train, *phrasings.held_out))
    assert [text for text, n in texts.items() if n > 1] == []
    assert phrasing_owner("Could you open that drawer?") == "drawer-open-v3"
    assert phrasing_owner("grab the red cup") is None


def test_an_episodes_phrasing_is_a_function_of_its_seed_and_covers_the_set():
    task = "drawer-open-v3"
    train, held_out = task_phrasings(task).train, task_phrasings(task).held_out
    drawn = [episode_instruction(task, seed) for seed in range(2 * len(train))]
    assert drawn == [episode_instruction(task, seed) for seed in range(2 * len(train))]
    assert Counter(drawn) == Counter({text: 2 for text in train})  # consecutive seeds deal every phrasing
    assert {episode_instruction(task, 900_000_000 + k, "heldout") for k in range(30)} == set(held_out)
    assert episode_instruction(task, 123, "canonical") == episode_instruction(task, None) == train[0]
    with pytest.raises(ValueError, match="unknown phrasing set 'paraphrase'"):
        episode_instruction(task, 0, "paraphrase")


def test_a_robot_words_each_episode_from_its_phrasing_set():
    robot = make_robot("reach-v3", "heldout")
    worded = {robot.reset(seed)[0].instruction for seed in range(12)}
    assert worded == set(task_phrasings("reach-v3").held_out)
    with pytest.raises(ValueError, match="unknown phrasing set"):
        make_robot("reach-v3", "heldin")
