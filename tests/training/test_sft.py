import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from lwd.data.lease import RunLeaseError
from lwd.envs.phrasings import episode_instruction, task_phrasings
from lwd.fleet.collect import CollectConfig, collect
from lwd.policy.checkpoint import load_checkpoint
from lwd.training.sft import PretrainConfig, pretrain
from tests.conftest import lease_held_by_another_process


def _config(tmp_path, steps):
    return PretrainConfig(
        store=str(tmp_path / "store"),
        out=str(tmp_path / "sft"),
        steps=steps,
        batch_size=32,
        chunk_len=4,
        hidden_dim=64,
        num_layers=2,
        log_every=5,
        checkpoint_every=10,
        progress=False,
        tensorboard=True,
    )


def test_sft_logs_metrics_and_resumes_where_it_stopped(tmp_path):
    collect(
        CollectConfig(
            store=str(tmp_path / "store"),
            tasks=("reach-v3", "drawer-close-v3"),
            episodes_per_task=2,
            workers=1,
            progress=False,
        )
    )
    first = pretrain(_config(tmp_path, 20))
    _, _, manifest = load_checkpoint(first)
    assert manifest.training_step == 20 and manifest.data_snapshot == 4
    # The table holds every training phrasing of the store's tasks (robots word episodes from
    # them), which includes those the demonstrations were given; no held-out phrasing.
    tasks = ("reach-v3", "drawer-close-v3")
    worded = {episode_instruction(task, seed) for task in tasks for seed in (0, 1)}
    training = {text for task in tasks for text in task_phrasings(task).train}
    assert worded <= set(manifest.instructions) == training and len(worded) > 2
    assert not {text for task in tasks for text in task_phrasings(task).held_out} & set(manifest.instructions)
    resumed = pretrain(_config(tmp_path, 30))
    _, _, manifest = load_checkpoint(resumed)
    assert manifest.training_step == 30
    steps = [json.loads(line)["step"] for line in (tmp_path / "sft" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [5, 10, 15, 20, 25, 30]  # the resumed run continued, it did not start over
    assert list((tmp_path / "sft" / "tensorboard").iterdir())


def test_sft_normalisation_comes_from_the_data(tmp_path):
    collect(
        CollectConfig(
            store=str(tmp_path / "store"), tasks=("reach-v3",), episodes_per_task=2, workers=1, progress=False
        )
    )
    policy, _, _ = load_checkpoint(pretrain(_config(tmp_path, 2)))
    from lwd.data.replay import ChunkReplay
    from lwd.data.store import EpisodeStore

    replay = ChunkReplay(EpisodeStore(tmp_path / "store"))
    replay.refresh()
    np.testing.assert_allclose(policy.obs_mean.numpy(), replay.observation_array.mean(0), rtol=1e-4, atol=1e-5)
    assert torch.all(policy.action_std > 0)


def test_sft_takes_state_and_action_sizes_from_the_data(tmp_path):
    # Long-horizon demos carry the stage one-hot: 39 + 5 numbers per state.
    collect(
        CollectConfig(
            store=str(tmp_path / "store"),
            suite="lh",
            tasks=("lh-stock-drawer",),
            episodes_per_task=1,
            noise=0.0,
            workers=1,
            progress=False,
        )
    )
    policy, _, _ = load_checkpoint(pretrain(_config(tmp_path, 2)))
    assert (policy.config.obs_dim, policy.config.action_dim) == (44, 4)
    assert policy.obs_mean.shape == (44,)


def test_sft_trains_on_the_intact_episodes_of_a_damaged_store(tmp_path):
    from lwd.data.store import EpisodeStore
    from tests.conftest import make_episode

    store = EpisodeStore(tmp_path / "store")
    store.append_many([make_episode(seq=seq, steps=12) for seq in range(4)])
    missing, truncated = (store.root / record.path for record in store.records()[:2])
    missing.unlink()
    truncated.write_bytes(truncated.read_bytes()[:40])
    config = replace(_config(tmp_path, 4), hidden_dim=32, num_layers=1, log_every=2, tensorboard=False)
    policy, _, manifest = load_checkpoint(pretrain(config))
    assert manifest.training_step == 4 and manifest.data_snapshot == 1
    intact_obs = np.concatenate([make_episode(seq=seq, steps=12).observations for seq in (2, 3)])
    np.testing.assert_allclose(policy.obs_mean.numpy(), intact_obs.mean(0), rtol=1e-4, atol=1e-5)


def test_the_same_seed_trains_the_same_policy_whatever_order_the_demonstrations_were_committed_in(tmp_path):
    # Parallel collectors commit in the order they finish; a rerun of a seed must not change SFT.
    from lwd.data.store import EpisodeStore

    collect(
        CollectConfig(
            store=str(tmp_path / "a" / "store"),
            tasks=("reach-v3", "drawer-close-v3"),
            episodes_per_task=2,
            workers=1,
            progress=False,
        )
    )
    source = EpisodeStore(tmp_path / "a" / "store")
    reordered = EpisodeStore(tmp_path / "b" / "store")
    for record in reversed(source.records()):
        reordered.append(source.load(record))
    policies = []
    for run in ("a", "b"):
        config = replace(_config(tmp_path / run, 12), hidden_dim=32, num_layers=1, tensorboard=False)
        policies.append(load_checkpoint(pretrain(config))[0].state_dict())
    assert policies[0].keys() == policies[1].keys()
    for name, tensor in policies[0].items():
        torch.testing.assert_close(tensor, policies[1][name], rtol=0, atol=1e-6, msg=name)


def test_sft_refuses_a_run_directory_another_process_is_training_into(tmp_path):
    config = _config(tmp_path, 10)
    with lease_held_by_another_process("run", config.out) as process:
        with pytest.raises(RunLeaseError, match=f"pid {process.pid} "):
            pretrain(config)
    assert sorted(p.name for p in (tmp_path / "sft").iterdir()) == ["run.lock"]  # refused before it wrote anything
