"""The main job from pixels (`lwd demo --preset smoke-image`): two cameras, proprio-only
state, and every stage — collection, SFT, offline data, offline RL, the fleet with the
online learner, evaluation — runs with the frames."""

import json

import pytest

from lwd.data.store import EpisodeStore
from lwd.envs.cameras import PROPRIO_DIM
from lwd.policy.checkpoint import load_checkpoint, read_manifest
from lwd.recipes.demo import DemoConfig, run_demo
from lwd.recipes.presets import DEMO_PRESETS

pytestmark = pytest.mark.slow  # a real pipeline: `make test-fast` skips it

CAMERAS = DEMO_PRESETS["smoke-image"].cameras


def _frame_cameras(store_path) -> set[tuple[str, ...]]:
    store = EpisodeStore(store_path, create=False)
    return {tuple(sorted(store.load(record).frames)) for record in store.records()}


def test_the_smoke_image_demo_runs_every_stage_from_pixels(tmp_path):
    work = tmp_path / "demo"
    report = run_demo(DemoConfig(preset="smoke-image", workdir=str(work), workers=1))
    summary = json.loads((report.parent / "summary.json").read_text())
    assert set(summary["average_success"]) == {"SFT", "LWD offline", "LWD online"}

    # Every episode of the offline store (demos, SFT rollouts, play) and of the fleet has the frames.
    sources = {record.source for record in EpisodeStore(work / "store", create=False).records()}
    assert sources == {"demo", "rollout", "play"}
    assert _frame_cameras(work / "store") == {tuple(sorted(CAMERAS))}
    assert _frame_cameras(work / "deploy" / "online_store") == {tuple(sorted(CAMERAS))}

    for checkpoint in (work / "sft" / "final", work / "offline" / "final", summary["deploy"]["final"]):
        policy, _, _ = load_checkpoint(checkpoint)
        assert policy.config.use_images and policy.config.cameras == CAMERAS
        assert policy.config.obs_dim == PROPRIO_DIM  # no privileged object state
    critic = read_manifest(work / "offline" / "final").extras["offline"]["critic"]
    assert tuple(critic["cameras"]) == CAMERAS  # the critic and value have their own CNN
    assert summary["deploy"]["learner_steps"] > 0
