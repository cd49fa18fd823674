"""`lwd bench render` and `lwd bench frames`: camera speed and frame storage formats."""

import pytest

from lwd.benchmarks.cameras import (
    FrameStorageBenchConfig,
    RenderBenchConfig,
    run_frame_storage_bench,
    run_render_bench,
    storage_formats,
)

pytestmark = pytest.mark.slow  # seconds of rendering and video encoding


def test_every_storage_format_gives_back_the_frames_and_lossless_ones_exactly(tmp_path):
    report = run_frame_storage_bench(
        FrameStorageBenchConfig(suite="mt10", episodes=1, image_size=32, repeats=1, out=str(tmp_path / "f.json"))
    )
    rows = {row["format"]: row for row in report["formats"]}
    assert set(rows) == set(storage_formats())
    assert rows["raw uint8, safetensors"]["bytes_per_step"] >= report["raw_bytes_per_step"]
    for row in rows.values():
        assert row["bytes_per_step"] > 0 and row["encode_ms_per_episode"] > 0
        if not row["lossy"]:
            assert row["max_pixel_error"] == 0  # the bench itself refuses a lossless format that is not
        assert row["mean_pixel_error"] <= row["p99_pixel_error"] + 1 <= row["max_pixel_error"] + 1


def test_render_bench_measures_both_paths_for_every_size_and_camera_count(tmp_path):
    report = run_render_bench(
        RenderBenchConfig(sizes=(32,), frames=3, gym_frames=1, env_steps=5, out=str(tmp_path / "r.json"))
    )
    cells = {(row["path"], row["size"], tuple(row["cameras"])) for row in report["render"]}
    assert cells == {(p, 32, c) for p in ("tuned", "gym_default") for c in (("scene",), ("scene", "gripper"))}
    assert all(row["frames_per_s"] > 0 for row in report["render"])
    assert set(report["env_steps"]) == {"size", "off", "scene", "scene+gripper"}


def test_a_render_bench_without_frames_is_refused():
    with pytest.raises(ValueError, match="frames"):
        RenderBenchConfig(frames=0)
