"""LeRobot v3 datasets in and out, on real Meta-World episodes: the round trip, the layout
LeRobot's loader expects, datasets recorded elsewhere, and bad input."""

import importlib.util
import json
import shutil
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest

from lwd.cli import main
from lwd.data.store import EpisodeStore
from lwd.envs import SensorConfig, make_expert, make_robot
from lwd.envs.operator import NoisyExpertActor, OperatorConfig, ScriptedOperator
from lwd.fleet.collect import CollectConfig, collect
from lwd.fleet.rollout import run_episode

HAS_LEROBOT_EXTRA = importlib.util.find_spec("pyarrow") is not None and importlib.util.find_spec("av") is not None
needs_extra = pytest.mark.skipif(
    not HAS_LEROBOT_EXTRA, reason="pyarrow/av missing: pip install -e '.[lerobot]' (make test installs it)"
)
TASKS = ("reach-v3", "drawer-close-v3")
CAMERAS = ("scene", "gripper")
# The stated tolerance of the default video settings (H.264, crf 18, yuv420p) on 64x64
# Meta-World frames: docs/benchmarks.md, "LeRobot export: video tolerance" (measured mean
# 4.5, 99th percentile 38 of 255). Single pixels at sharp colour edges can be off by far
# more: yuv420p keeps colour at half resolution, as LeRobot's own recordings do.
MEAN_ABS_TOLERANCE = 6.0
P99_ABS_TOLERANCE = 48


def _intervened_rollout(sensors: SensorConfig):
    """A real rollout the operator corrects: a very noisy expert as the policy, version 7."""
    task = "reach-v3"
    expert = make_expert(task)
    rng = np.random.default_rng(0)
    operator = ScriptedOperator(expert, OperatorConfig(deviation_steps=3, takeover_steps=10), rng)
    episode = run_episode(
        make_robot(task, sensors=sensors),
        NoisyExpertActor(expert, 1.0, rng),
        robot_id="robot-7",
        seq=0,
        source="rollout",
        seed=11,
        operator=operator,
        policy_version=7,
    )
    assert episode.intervention.any() and not episode.intervention.all()
    return episode


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    """(store with camera frames, state-only store): scripted-expert demos on two MT10 tasks
    plus one operator-corrected rollout each."""
    root = tmp_path_factory.mktemp("lerobot")
    sensors = SensorConfig(cameras=CAMERAS)
    made = {}
    for name, sensor in (("frames", sensors), ("state", SensorConfig())):
        store = root / name
        collect(
            CollectConfig(store=str(store), tasks=TASKS, episodes_per_task=1, workers=1, progress=False, sensors=sensor)
        )
        EpisodeStore(store).append(_intervened_rollout(sensor))
        made[name] = store
    return made["frames"], made["state"]


def _export(store, out, **options):
    from lwd.data.lerobot import ExportConfig, export_lerobot

    return export_lerobot(ExportConfig(store=str(store), out=str(out), progress=False, **options))


def _import(src, store, **options):
    from lwd.data.lerobot import ImportConfig, import_lerobot

    return import_lerobot(ImportConfig(src=str(src), store=str(store), progress=False, **options))


def _episodes(store):
    store = EpisodeStore(store, create=False)
    return {record.episode_id: store.load(record) for record in store.records()}


def _assert_same_except_frames(a, b):
    for name in ("observations", "actions", "intervention", "policy_version", "timestamps"):
        left, right = getattr(a, name), getattr(b, name)
        assert left.dtype == right.dtype, name
        np.testing.assert_array_equal(left, right, err_msg=name)
    for name in ("robot_id", "seq", "task", "instruction", "source", "success", "stage_score", "seed"):
        assert getattr(a, name) == getattr(b, name), name
    for name in ("started_at", "ended_at", "extras"):
        assert getattr(a, name) == getattr(b, name), name


@needs_extra
def test_export_then_import_gives_identical_episodes_and_frames_within_the_codec_tolerance(stores, tmp_path):
    frames_store, _ = stores
    result = _export(frames_store, tmp_path / "dataset")
    imported = _import(tmp_path / "dataset", tmp_path / "back")
    before, after = _episodes(frames_store), _episodes(tmp_path / "back")
    assert sorted(before) == sorted(after) and imported.episodes == result.episodes == len(before) == 3
    assert any(e.intervention.any() for e in before.values())
    for episode_id, original in before.items():
        back = after[episode_id]
        _assert_same_except_frames(original, back)
        assert sorted(back.frames) == sorted(CAMERAS)
        for camera in CAMERAS:
            assert back.frames[camera].shape == original.frames[camera].shape  # T+1 frames: the last one too
            error = np.abs(back.frames[camera].astype(int) - original.frames[camera].astype(int))
            assert error.mean() <= MEAN_ABS_TOLERANCE, (episode_id, camera, error.mean())
            assert np.percentile(error, 99) <= P99_ABS_TOLERANCE, (episode_id, camera)


@needs_extra
def test_a_frameless_round_trip_is_bit_exact_down_to_the_store_digest(stores, tmp_path):
    _, state_store = stores
    _export(state_store, tmp_path / "dataset")
    copy = tmp_path / "copy"
    shutil.copytree(state_store, copy)
    result = _import(tmp_path / "dataset", copy)
    # Same ids with the same content digest: the store acknowledges every one as already there.
    assert (result.episodes, result.duplicates) == (0, 3)


@needs_extra
def test_the_exported_directory_has_the_v3_layout_and_what_lerobots_loader_reads(stores, tmp_path):
    import av
    import pyarrow as pa
    import pyarrow.parquet as pq

    frames_store, _ = stores
    out = tmp_path / "dataset"
    _export(frames_store, out)
    episodes = _episodes(frames_store)
    steps = sum(e.num_steps for e in episodes.values())

    info = json.loads((out / "meta/info.json").read_text())
    assert info["codebase_version"] == "v3.0"
    assert info["fps"] == 80 and isinstance(info["fps"], int)
    assert (info["total_episodes"], info["total_frames"]) == (3, steps)
    assert info["total_tasks"] == len({e.instruction for e in episodes.values()})
    assert info["data_path"] == "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
    assert info["video_path"] == "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
    assert info["splits"] == {"train": "0:3"} and info["chunks_size"] == 1000
    features = info["features"]
    for name, dtype in (("timestamp", "float32"), ("frame_index", "int64"), ("episode_index", "int64")):
        assert features[name] == {"dtype": dtype, "shape": [1], "names": None}
    assert features["observation.state"]["shape"] == [39] and len(features["observation.state"]["names"]) == 39
    assert features["action"] == {
        "dtype": "float32",
        "shape": [4],
        "names": ["delta_x", "delta_y", "delta_z", "gripper"],
    }
    scene = features["observation.images.scene"]
    assert (scene["dtype"], scene["shape"], scene["names"]) == ("video", [64, 64, 3], ["height", "width", "channels"])
    assert scene["info"]["video.codec"] == "h264" and scene["info"]["video.pix_fmt"] == "yuv420p"

    data = pq.read_table(out / "data/chunk-000/file-000.parquet")
    assert data.schema.field("observation.state").type == pa.list_(pa.float32(), 39)
    assert data.schema.field("action").type == pa.list_(pa.float32(), 4)
    assert data.schema.field("timestamp").type == pa.float32()
    for name in ("frame_index", "episode_index", "index", "task_index"):
        assert data.schema.field(name).type == pa.int64()
    assert set(data.column_names) == {name for name, f in features.items() if f["dtype"] != "video"}
    np.testing.assert_array_equal(data.column("index").to_numpy(), np.arange(steps))
    np.testing.assert_allclose(
        data.column("timestamp").to_numpy(), data.column("frame_index").to_numpy() / 80, rtol=0, atol=1e-6
    )

    table = pq.read_table(out / "meta/episodes/chunk-000/file-000.parquet").to_pylist()
    assert [row["episode_index"] for row in table] == [0, 1, 2]
    assert table[0]["dataset_from_index"] == 0 and table[-1]["dataset_to_index"] == steps
    for row, following in zip(table, table[1:]):
        assert row["dataset_to_index"] == following["dataset_from_index"]
        assert row["videos/observation.images.scene/to_timestamp"] == pytest.approx(
            following["videos/observation.images.scene/from_timestamp"], abs=1e-9
        )
    for row in table:
        assert row["length"] == row["dataset_to_index"] - row["dataset_from_index"]
        span = (
            row["videos/observation.images.gripper/to_timestamp"]
            - row["videos/observation.images.gripper/from_timestamp"]
        )
        assert span == pytest.approx((row["length"] + 1) / 80, abs=1e-9)  # T rows, T+1 frames

    tasks = pq.read_table(out / "meta/tasks.parquet")
    assert json.loads(tasks.schema.metadata[b"pandas"])["index_columns"] == ["task"]
    assert sorted(tasks.column("task").to_pylist()) == sorted({e.instruction for e in episodes.values()})

    with av.open(str(out / "videos/observation.images.scene/chunk-000/file-000.mp4")) as video:
        decoded = list(video.decode(video=0))
    assert len(decoded) == steps + 3
    np.testing.assert_allclose([f.time for f in decoded], np.arange(steps + 3) / 80, rtol=0, atol=1e-6)

    stats = json.loads((out / "meta/stats.json").read_text())
    assert set(stats) == {name for name in features}
    assert len(stats["observation.state"]["mean"]) == 39 and stats["action"]["count"] == [steps]
    assert np.array(stats["observation.images.scene"]["std"]).shape == (3, 1, 1)
    assert {"min", "max", "mean", "std", "count", "q01", "q50", "q99"} <= set(stats["action"])


def _strip_lwd(dataset, out, task_strings: dict[str, str] | None = None):
    """The dataset as LeRobot would have it without lwd: no lwd.* features or lwd/* columns,
    optionally with other task strings."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    shutil.copytree(dataset, out)
    info = json.loads((out / "meta/info.json").read_text())
    info["features"] = {k: v for k, v in info["features"].items() if not k.startswith("lwd.")}
    (out / "meta/info.json").write_text(json.dumps(info))
    for path in (out / "data").rglob("*.parquet"):
        table = pq.read_table(path)
        pq.write_table(table.select([c for c in table.column_names if not c.startswith("lwd.")]), path)
    path = out / "meta/episodes/chunk-000/file-000.parquet"
    table = pq.read_table(path)
    table = table.select([c for c in table.column_names if not c.startswith("lwd/")])
    if task_strings:
        renamed = [[task_strings.get(t, t) for t in tasks] for tasks in table.column("tasks").to_pylist()]
        table = table.set_column(table.column_names.index("tasks"), "tasks", pa.array(renamed))
        tasks = pq.read_table(out / "meta/tasks.parquet")
        texts = [task_strings.get(t, t) for t in tasks.column("task").to_pylist()]
        tasks = tasks.set_column(tasks.column_names.index("task"), "task", pa.array(texts))
        pq.write_table(tasks, out / "meta/tasks.parquet")
    pq.write_table(table, path)
    return out


@needs_extra
def test_a_dataset_recorded_elsewhere_becomes_episodes_of_the_task_its_strings_name(stores, tmp_path):
    frames_store, _ = stores
    _export(frames_store, tmp_path / "dataset")
    foreign = _strip_lwd(tmp_path / "dataset", tmp_path / "foreign")
    result = _import(foreign, tmp_path / "store", robot_id="so100-lab")
    assert not result.with_lwd_metadata and result.episodes == 3
    originals = sorted(_episodes(frames_store).values(), key=lambda e: (e.robot_id, e.seq))
    imported = [EpisodeStore(tmp_path / "store").load(r) for r in EpisodeStore(tmp_path / "store").records()]
    imported.sort(key=lambda e: e.seq)
    # LeRobot keeps T (observation, action) rows; without lwd's final observation the last row
    # becomes the final observation and its action is kept in extras.
    for original, episode in zip(originals, imported):
        assert (episode.robot_id, episode.seed, episode.source) == ("so100-lab", None, "demo")
        assert (episode.task, episode.instruction) == (original.task, original.instruction)
        np.testing.assert_array_equal(episode.observations, original.observations[:-1])
        np.testing.assert_array_equal(episode.actions, original.actions[:-1])
        assert episode.extras["lerobot"]["final_action"] == original.actions[-1].astype(np.float64).tolist()
        assert episode.frames["scene"].shape == original.frames["scene"][:-1].shape


@needs_extra
def test_task_strings_lwd_does_not_know_need_a_task_and_then_keep_their_wording(stores, tmp_path):
    from lwd.data.lerobot import LeRobotFormatError

    frames_store, _ = stores
    _export(frames_store, tmp_path / "dataset", tasks=("reach-v3",))
    instructions = {e.instruction for e in _episodes(frames_store).values() if e.task == "reach-v3"}
    foreign = _strip_lwd(tmp_path / "dataset", tmp_path / "foreign", {t: "Grab the black cube" for t in instructions})
    with pytest.raises(LeRobotFormatError, match="'Grab the black cube' is not a phrasing of any lwd task.*--task"):
        _import(foreign, tmp_path / "store")
    assert not (tmp_path / "store").exists()  # refused before the store was even created
    result = _import(foreign, tmp_path / "store", task="reach-v3")
    episodes = _episodes(tmp_path / "store").values()
    assert result.episodes == 2 and {(e.task, e.instruction) for e in episodes} == {("reach-v3", "Grab the black cube")}


@needs_extra
def test_bad_input_gets_a_clear_error(stores, tmp_path):
    import pyarrow.parquet as pq

    from lwd.data.lerobot import ImportLimits, LeRobotFormatError

    _, state_store = stores
    good = tmp_path / "dataset"
    _export(state_store, good)

    def broken(name, change):
        path = tmp_path / name
        shutil.copytree(good, path)
        change(path)
        return path

    def edit_info(edit):
        def change(path):
            info = json.loads((path / "meta/info.json").read_text())
            edit(info)
            (path / "meta/info.json").write_text(json.dumps(info))

        return change

    cases = {
        "missing": (lambda p: (p / "meta/info.json").unlink(), "info is missing"),
        "v21": (edit_info(lambda i: i.update(codebase_version="v2.1")), "v2.1.*convert_dataset_v21_to_v30"),
        "width": (
            edit_info(lambda i: i["features"]["observation.state"].update(shape=[6])),
            "6 numbers, but lwd task 'drawer-close-v3' observes 39",
        ),
        "paths": (edit_info(lambda i: i.update(data_path="../../{chunk_index}.parquet")), "standard layout only"),
        "corrupt": (
            lambda p: (p / "data/chunk-000/file-000.parquet").write_bytes(b"PAR1 not really parquet"),
            "file-000.parquet: data file is not a readable parquet file",
        ),
    }
    for name, (change, message) in cases.items():
        with pytest.raises(LeRobotFormatError, match=message):
            _import(broken(name, change), tmp_path / f"store-{name}")
        assert not EpisodeStore(tmp_path / f"store-{name}").records(), name
    with pytest.raises(LeRobotFormatError, match="more than the 1000 this import allows"):
        _import(good, tmp_path / "store-limit", limits=ImportLimits(max_parquet_bytes=1000))

    lwd_task = broken("task", lambda p: None)
    table = pq.read_table(lwd_task / "meta/episodes/chunk-000/file-000.parquet")
    table = table.set_column(table.column_names.index("lwd/task"), "lwd/task", [["no-such-task-v3"] * 3])
    pq.write_table(table, lwd_task / "meta/episodes/chunk-000/file-000.parquet")
    with pytest.raises(LeRobotFormatError, match="no-such-task-v3"):
        _import(lwd_task, tmp_path / "store-task")


@needs_extra
def test_an_error_part_way_keeps_what_was_imported_and_a_rerun_finishes(stores, tmp_path):
    import pyarrow.parquet as pq

    from lwd.data.lerobot import LeRobotFormatError

    _, state_store = stores
    good = tmp_path / "dataset"
    _export(state_store, good)
    damaged = tmp_path / "damaged"
    shutil.copytree(good, damaged)
    path = damaged / "data/chunk-000/file-000.parquet"
    pq.write_table(pq.read_table(path).slice(0, pq.read_metadata(path).num_rows - 1), path)  # last episode short
    with pytest.raises(LeRobotFormatError, match=r"episode 2 has \d+ rows.*2 episodes before it are in"):
        _import(damaged, tmp_path / "store", batch_episodes=1)
    assert len(EpisodeStore(tmp_path / "store").records()) == 2
    result = _import(good, tmp_path / "store", batch_episodes=1)
    assert (result.episodes, result.duplicates) == (1, 2)


@needs_extra
def test_export_refuses_what_one_lerobot_dataset_cannot_hold(stores, tmp_path):
    from lwd.data.lerobot import LeRobotFormatError

    frames_store, state_store = stores
    mixed = tmp_path / "mixed"
    shutil.copytree(state_store, mixed)
    frames_episode = next(iter(_episodes(frames_store).values()))
    EpisodeStore(mixed).append(replace(frames_episode, robot_id="camera-robot"))
    with pytest.raises(LeRobotFormatError, match="one feature set.*--tasks / --sources"):
        _export(mixed, tmp_path / "out")
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob("out.partial-*"))
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "file").write_text("x")
    with pytest.raises(LeRobotFormatError, match="not an empty directory"):
        _export(state_store, tmp_path / "taken")
    with pytest.raises(LeRobotFormatError, match="no episodes to export for tasks"):
        _export(state_store, tmp_path / "none", tasks=("pick-place-v3",))


@needs_extra
def test_the_commands_export_and_import(stores, tmp_path, capsys):
    _, state_store = stores
    out = tmp_path / "dataset"
    assert main(["dataset", "export", "--store", str(state_store), "--out", str(out), "--no-progress"]) == 0
    assert "exported 3 episodes" in capsys.readouterr().out
    assert main(["dataset", "import", "--src", str(out), "--store", str(tmp_path / "s"), "--no-progress"]) == 0
    assert "imported 3 episodes (0 already in the store" in capsys.readouterr().out
    assert main(["dataset", "import", "--src", str(tmp_path / "nothing"), "--store", str(tmp_path / "s")]) == 2
    assert "lwd: error:" in capsys.readouterr().err


def test_the_embedded_default_never_imports_pyarrow():
    code = (
        "import sys, lwd.cli, lwd.data.lerobot; lwd.cli.build_parser(); "
        "assert 'pyarrow' not in sys.modules and 'av' not in sys.modules, 'imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
