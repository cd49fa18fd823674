"""How far camera frames move through a LeRobot export and import, per video setting.

    .venv/bin/python tools/lerobot_tolerance.py --workdir runs/lerobot_tolerance

Collects one noisy (σ = 0.3) scripted-expert demo per MT10 task with two 64x64 cameras
(scene, gripper) into WORKDIR/store (once), then for each video setting exports the store
as a LeRobot v3.0 dataset, imports it into a fresh store and compares: every non-frame
field must come back exactly (the script stops otherwise); for frames it prints the
absolute error per pixel channel (of 255): mean, 99th and 99.9th percentile, maximum,
the share of values off by more than 16, dataset size and export / import wall time.
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

import numpy as np

from lwd.data.lerobot import ExportConfig, ImportConfig, VideoConfig, export_lerobot, import_lerobot
from lwd.data.store import EpisodeStore
from lwd.envs import SensorConfig
from lwd.fleet.collect import CollectConfig, collect

SETTINGS = (
    VideoConfig(codec="h264", crf=18),
    VideoConfig(codec="h264", crf=23),
    VideoConfig(codec="h264", crf=30),
    VideoConfig(codec="h264", crf=0),  # yuv420p's own loss: colour at half resolution
    VideoConfig(codec="av1", crf=18),
    VideoConfig(codec="av1", crf=30),
    VideoConfig(codec="h264", crf=18, pix_fmt="yuv444p"),
    VideoConfig(codec="h264", crf=0, pix_fmt="yuv444p"),
)
EXACT = ("observations", "actions", "intervention", "policy_version", "timestamps")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", default="runs/lerobot_tolerance")
    args = parser.parse_args()
    work = Path(args.workdir)
    store = work / "store"
    collect(
        CollectConfig(
            store=str(store),
            episodes_per_task=1,
            workers=1,
            progress=False,
            sensors=SensorConfig(cameras=("scene", "gripper")),
        )
    )
    originals = EpisodeStore(store)
    episodes = {r.episode_id: originals.load(r) for r in originals.records()}
    steps = sum(e.num_steps for e in episodes.values())
    print(f"{len(episodes)} episodes, {steps} steps, {steps + len(episodes)} frames per camera")
    print("| codec | pix_fmt | crf | mean | p99 | p99.9 | max | share > 16 | MiB | export s | import s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for video in SETTINGS:
        out, back = work / "dataset", work / "back"
        shutil.rmtree(out, ignore_errors=True)
        shutil.rmtree(back, ignore_errors=True)
        began = time.perf_counter()
        exported = export_lerobot(ExportConfig(store=str(store), out=str(out), video=video, progress=False))
        exported_s = time.perf_counter() - began
        began = time.perf_counter()
        import_lerobot(ImportConfig(src=str(out), store=str(back), progress=False))
        imported_s = time.perf_counter() - began
        returned = EpisodeStore(back)
        errors = []
        for record in returned.records():
            episode, original = returned.load(record), episodes[record.episode_id]
            for name in EXACT:
                assert np.array_equal(getattr(episode, name), getattr(original, name)), (record.episode_id, name)
            for camera, frames in original.frames.items():
                errors.append(np.abs(episode.frames[camera].astype(np.int16) - frames.astype(np.int16)).ravel())
        error = np.concatenate(errors)
        print(
            f"| {video.codec} | {video.pix_fmt} | {video.crf} | {error.mean():.2f} | {np.percentile(error, 99):.0f} "
            f"| {np.percentile(error, 99.9):.0f} | {error.max()} | {(error > 16).mean():.4f} "
            f"| {exported.bytes_on_disk / 2**20:.2f} | {exported_s:.2f} | {imported_s:.2f} |"
        )


if __name__ == "__main__":
    main()
