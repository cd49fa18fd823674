"""`lwd experiment --preset smoke`: every method on both suites through the real pipeline
(tiny networks, two evaluation episodes), and every cell of every table filled."""

import json
import re
from dataclasses import fields, replace
from pathlib import Path

import pytest

from lwd.envs.operator import OperatorConfig
from lwd.recipes.experiment import (
    ABLATIONS,
    EXPERIMENT_PRESETS,
    METHODS,
    ONLINE_METHODS,
    ExperimentConfig,
    finished_starts,
    run_experiment,
)
from lwd.recipes.presets import DEPLOY_ONLY_FIELDS
from lwd.recipes.stages import online_learner

pytestmark = pytest.mark.slow  # a real pipeline: `make test-fast` skips it

VERSUS_ROWS = [m for m in METHODS if m != "LWD online"] + ["**best baseline**"]  # rows of LWD online's paired tables


@pytest.fixture(scope="module")
def smoke_experiment(tmp_path_factory):
    work = tmp_path_factory.mktemp("experiment")
    path = run_experiment(ExperimentConfig(preset="smoke", seeds=(0,), workdir=str(work), workers=1))
    return work, path.read_text()


def _row(table_text: str, first_cell: str) -> list[str]:
    for line in table_text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells[0] == first_cell:
            return cells[1:]
    raise AssertionError(f"no table row {first_cell!r}")


def test_every_method_and_ablation_has_a_number_for_every_suite(smoke_experiment):
    _, text = smoke_experiment
    comparison = text.split("## Comparison")[1].split("###")[0]
    ablations = text.split("## Ablations")[1].split("## Online")[0]
    number = re.compile(r"^\*?\*?\d\.\d{3}")
    for table, names in ((comparison, METHODS), (ablations, ABLATIONS)):
        for name in names:
            cells = _row(table, name)
            assert len(cells) == 3 and all(number.match(c) for c in cells), (name, cells)


def test_lwd_online_is_compared_paired_with_every_method_and_the_best_baseline_of_each_suite(smoke_experiment):
    _, text = smoke_experiment
    paired = text.split("### LWD online against each method, paired")[1].split("###")[0]
    interval = re.compile(r"[+-]\d\.\d{3} \([+-]\d\.\d{3} … [+-]\d\.\d{3}\)")
    for name in VERSUS_ROWS:
        cells = _row(paired, name)
        assert len(cells) == 3 and all(interval.search(c) for c in cells), (name, cells)
    assert all(re.match(r"vs (SFT|HG-DAgger|RECAP): ", c) for c in _row(paired, "**best baseline**")[:2])


def test_the_paired_differences_are_also_given_with_training_seeds_as_the_unit(smoke_experiment):
    _, text = smoke_experiment
    seed_level = text.split("with the training seed as the unit")[1].split("###")[0]
    per_seed = re.compile(r"[+-]\d\.\d{3} \([+-]\d\.\d{3} … [+-]\d\.\d{3}\); per seed [+-]\d\.\d{3}$")
    for name in VERSUS_ROWS:
        cells = _row(seed_level, name)
        assert len(cells) == 3 and all(per_seed.search(c) for c in cells[:2]), (name, cells)


def test_per_task_tables_cover_every_task_and_the_long_horizon_stage_scores(smoke_experiment):
    work, text = smoke_experiment
    for task in ("reach", "drawer-close", "lh-stock-drawer"):
        assert len(_row(text, task)) == len(METHODS)
    stage_table = text.split("### lh: stage score")[1].split("##")[0]
    assert all(re.match(r"^\d\.\d{3}$", c) for c in _row(stage_table, "lh-stock-drawer"))
    for plot in ("methods.png", "ablations.png", "online.png"):
        assert (work / plot).stat().st_size > 0


def test_long_horizon_failures_are_counted_by_the_stage_they_stopped_in(smoke_experiment):
    work, text = smoke_experiment
    table = text.split("### lh: failed episodes by stage")[1].split("##")[0]
    runs = json.loads((work / "results.json").read_text())["suites"]["lh"]["runs"]
    assert "### mt10: failed episodes by stage" not in text
    for name in METHODS:
        outcomes = [o for path in runs[name] for o in json.loads(Path(path).read_text())["outcomes"]]
        cells = [int(c) for c in _row(table, name)]
        assert cells[0] == sum(not o["success"] for o in outcomes) == sum(cells[1:]), (name, cells)


def test_every_method_is_evaluated_on_evaluation_seeds_only(smoke_experiment):
    work, _ = smoke_experiment
    results = json.loads((work / "results.json").read_text())
    for suite_results in results["suites"].values():
        assert set(suite_results["runs"]) == set(METHODS) | set(ABLATIONS)
        for paths in suite_results["runs"].values():
            report = json.loads(Path(paths[0]).read_text())
            assert report["split"] == "eval" and report["eval_seeds"][0] >= 1_000_000_000


def test_online_methods_share_the_budget_and_start_checkpoints(smoke_experiment):
    work, _ = smoke_experiment
    run = work / "mt10" / "seed0"
    configs = {m: json.loads((run / m / "config.json").read_text()) for m in ("lwd", "hg-dagger", "recap")}
    assert len({c["env_steps"] for c in configs.values()}) == 1
    assert configs["hg-dagger"]["checkpoint"] == configs["recap"]["checkpoint"] == str(run / "sft" / "final")
    assert configs["lwd"]["checkpoint"] == str(run / "offline" / "final")
    summaries = [json.loads((run / m / "summary.json").read_text()) for m in configs]
    assert all(s["env_steps"] >= configs["lwd"]["env_steps"] for s in summaries)


def test_a_rerun_reuses_every_stage_and_keeps_the_times_measured_when_they_ran(smoke_experiment):
    work, _ = smoke_experiment
    timings = work / "mt10" / "seed0" / "stage_seconds.json"
    measured = json.loads(timings.read_text())
    assert {"SFT", "offline RL", "deploy LWD online", "eval LWD online"} <= set(measured)
    run_experiment(ExperimentConfig(preset="smoke", seeds=(0,), workdir=str(work), workers=1))
    after = json.loads(timings.read_text())
    assert set(after) == set(measured)
    for stage, seconds in measured.items():  # reusing a finished stage adds next to nothing
        assert seconds <= after[stage] < seconds + 2.0, stage
    results = json.loads((work / "results.json").read_text())
    assert results["suites"]["mt10"]["seconds"]["0"]["total"] == pytest.approx(sum(after.values()))


def test_an_interrupted_stage_keeps_the_time_it_ran():
    from lwd.recipes.stages import timed

    stages = {"SFT": 1.0}

    def interrupted():
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        timed(stages, "SFT", interrupted)
    assert stages["SFT"] > 1.0
    timed(stages, "offline RL", lambda: None)
    assert 0.0 <= stages["offline RL"] < 1.0


def test_a_paced_suite_gives_every_online_method_the_updates_its_env_steps_are_worth(smoke_experiment):
    work, text = smoke_experiment
    pace = EXPERIMENT_PRESETS["smoke"]["lh"].updates_per_1k_env_steps
    assert pace > 0
    for method in ONLINE_METHODS.values():
        summary = json.loads((work / "lh" / "seed0" / method / "summary.json").read_text())
        online_updates = summary["learner_updates_per_1k_env_steps"] * summary["env_steps"] / 1000
        if method == "recap":  # its offline stage comes before the robots start
            online_updates = summary["learner_steps"] - EXPERIMENT_PRESETS["smoke"]["lh"].offline_steps
        assert 2_500 * pace / 1000 - 1e-6 <= online_updates <= summary["env_steps"] * pace / 1000 + 1 + 1e-6
    online_table = text.split("## Online runs")[1].split("## Wall time")[0]
    for name in ONLINE_METHODS:
        assert any(line.startswith(f"| lh | {name} |") for line in online_table.splitlines())


def test_lwd_online_tracks_the_reference_as_every_preset_says(smoke_experiment):
    work, _ = smoke_experiment
    for suite, preset in EXPERIMENT_PRESETS["smoke"].items():
        config = json.loads((work / suite / "seed0" / "lwd" / "config.json").read_text())
        assert config["lwd"]["policy_tracks_reference"] is preset.online_policy_tracks_reference
    assert all(p.online_policy_tracks_reference for ps in EXPERIMENT_PRESETS.values() for p in ps.values())
    alone = replace(EXPERIMENT_PRESETS["smoke"]["mt10"], online_policy_tracks_reference=False)
    assert online_learner(alone).policy_tracks_reference is False  # the preset's field decides


@pytest.fixture(scope="module")
def second_seed(tmp_path_factory):
    """Training seed 1 on `lh` alone, as a later run into its own workdir would add it."""
    work = tmp_path_factory.mktemp("experiment_seed1")
    run_experiment(ExperimentConfig(preset="smoke", suites=("lh",), seeds=(1,), workdir=str(work), workers=1))
    return work


def test_merging_two_workdirs_pools_their_seeds_into_one_table(smoke_experiment, second_seed, tmp_path):
    first, _ = smoke_experiment
    out = tmp_path / "merged"
    text = run_experiment(
        ExperimentConfig(preset="smoke", merge=(str(first), str(second_seed)), workdir=str(out))
    ).read_text()
    assert "Training seeds with results: mt10 0; lh 0, 1" in text
    assert f"- merged: training seeds 1 from `{second_seed}`" in text
    seed_level = text.split("with the training seed as the unit")[1].split("###")[0]
    lh_cell, mt10_cell = _row(seed_level, "SFT")[1], _row(seed_level, "SFT")[0]
    assert lh_cell.count("/") == 1 and "/" not in mt10_cell.split("per seed")[1]  # two lh seeds, one mt10 seed
    assert _row(seed_level, "SFT")[2].endswith("over the 1 seed every suite ran")  # seed 0, not lh's seed 1
    merged = json.loads((out / "results.json").read_text())
    for method in METHODS:
        assert len(merged["suites"]["lh"]["runs"][method]) == 2
    assert merged["suites"]["lh"]["runs"]["SFT"][1].startswith(str(second_seed))
    online_table = text.split("## Online runs")[1].split("## Wall time")[0]
    assert any(line.startswith("| lh | LWD online |") for line in online_table.splitlines())
    assert (out / "online.png").exists() and not (out / "lh").exists()  # the runs stay where they ran


def test_a_merge_refuses_a_seed_twice_and_sources_run_with_other_settings(smoke_experiment, tmp_path):
    first, _ = smoke_experiment
    with pytest.raises(ValueError, match="seed.*0 of mt10 appear in two sources"):
        run_experiment(ExperimentConfig(preset="smoke", merge=(str(first), str(first)), workdir=str(tmp_path / "a")))
    other = tmp_path / "other"
    other.mkdir()
    recorded = json.loads((first / "experiment_config.json").read_text())
    recorded["presets"]["mt10"]["online_env_steps"] += 1
    (other / "experiment_config.json").write_text(json.dumps(recorded))
    results = json.loads((first / "results.json").read_text())
    results["suites"] = {"mt10": {**results["suites"]["mt10"], "seconds": {"7": {"total": 1.0}}}}
    (other / "results.json").write_text(json.dumps(results))
    with pytest.raises(ValueError, match=r"mt10 with other settings \(online_env_steps\)"):
        run_experiment(ExperimentConfig(preset="smoke", merge=(str(first), str(other)), workdir=str(tmp_path / "b")))
    with pytest.raises(FileNotFoundError, match="not a finished experiment workdir"):
        run_experiment(ExperimentConfig(preset="smoke", merge=(str(first), str(tmp_path)), workdir=str(tmp_path / "c")))


@pytest.fixture(scope="module")
def redeployed(smoke_experiment, tmp_path_factory):
    """MT10 seed 0 deployed again from the smoke experiment's starts, with another operator."""
    source, _ = smoke_experiment
    work = tmp_path_factory.mktemp("redeployed")
    evaluations = sorted((source / "mt10" / "seed0" / "eval").glob("*/eval.json"))
    before = {p: p.read_bytes() for p in evaluations}
    config = ExperimentConfig(
        preset="smoke",
        suites=("mt10",),
        seeds=(0,),
        workdir=str(work),
        workers=1,
        starts_from=(str(source),),
        operator=OperatorConfig(takeover_steps=7),
    )
    text = run_experiment(config).read_text()
    return source, work, text, before


def test_starts_from_deploys_every_online_method_from_the_source_starts_with_the_given_operator(redeployed):
    source, work, _, _ = redeployed
    run, start = work / "mt10" / "seed0", source / "mt10" / "seed0"
    for method in ONLINE_METHODS.values():
        config = json.loads((run / method / "config.json").read_text())
        assert config["robots"]["operator"]["takeover_steps"] == 7
        assert config["offline_store"] == str(start / "store")
        assert config["checkpoint"] == str(start / ("offline" if method == "lwd" else "sft") / "final")
    assert not any((run / d).exists() for d in ("store", "sft", "offline", "offline_expectile"))


def test_starts_from_reads_the_source_evaluations_without_rewriting_them(redeployed):
    source, work, text, before = redeployed
    runs = json.loads((work / "results.json").read_text())["suites"]["mt10"]["runs"]
    assert set(runs) == set(METHODS) | set(ABLATIONS)
    assert runs["SFT"] == [str(source / "mt10" / "seed0" / "eval" / "sft" / "eval.json")]
    assert runs["LWD online"] == [str(work / "mt10" / "seed0" / "eval" / "lwd_online" / "eval.json")]
    assert {p: p.read_bytes() for p in before} == before
    assert f"from `{source}`" in text and "operator of every fleet: " in text and "takeover_steps 7" in text
    online_table = text.split("## Online runs")[1].split("## Wall time")[0]
    assert any(line.startswith("| mt10 | RECAP |") for line in online_table.splitlines())


def test_starts_from_refuses_a_source_without_the_seed_or_with_other_settings(smoke_experiment, tmp_path):
    source, _ = smoke_experiment
    with pytest.raises(FileNotFoundError, match="no mt10 seed 5 in --starts-from"):
        run_experiment(
            ExperimentConfig(
                preset="smoke", suites=("mt10",), seeds=(5,), workdir=str(tmp_path / "a"), starts_from=(str(source),)
            )
        )
    other = tmp_path / "other"
    (other / "mt10").mkdir(parents=True)
    (other / "mt10" / "seed0").symlink_to(source / "mt10" / "seed0")
    recorded = json.loads((source / "experiment_config.json").read_text())
    recorded["presets"]["mt10"]["offline_steps"] += 1
    (other / "experiment_config.json").write_text(json.dumps(recorded))
    with pytest.raises(ValueError, match=r"ran mt10 with other settings \(offline_steps\)"):
        run_experiment(
            ExperimentConfig(
                preset="smoke", suites=("mt10",), seeds=(0,), workdir=str(tmp_path / "b"), starts_from=(str(other),)
            )
        )


def test_starts_from_accepts_a_source_that_differs_only_in_online_settings(smoke_experiment, tmp_path):
    source, _ = smoke_experiment
    other = tmp_path / "other"
    (other / "mt10").mkdir(parents=True)
    (other / "mt10" / "seed0").symlink_to(source / "mt10" / "seed0")
    recorded = json.loads((source / "experiment_config.json").read_text())
    recorded["presets"]["mt10"]["online_env_steps"] += 1
    del recorded["presets"]["mt10"]["online_policy_tracks_reference"]  # as a workdir from before the field
    (other / "experiment_config.json").write_text(json.dumps(recorded))
    preset = EXPERIMENT_PRESETS["smoke"]["mt10"]
    assert DEPLOY_ONLY_FIELDS <= {f.name for f in fields(preset)}
    assert finished_starts((other,), "mt10", 0, preset) == other / "mt10" / "seed0"


def test_a_merge_refuses_sources_deployed_with_other_operators(smoke_experiment, redeployed, tmp_path):
    source, work, _, _ = redeployed
    with pytest.raises(ValueError, match="another operator"):
        run_experiment(ExperimentConfig(preset="smoke", merge=(str(source), str(work)), workdir=str(tmp_path / "m")))


def test_a_merge_pools_a_workdir_that_read_its_starts_from_another(smoke_experiment, second_seed, tmp_path):
    first, _ = smoke_experiment
    redeployed = tmp_path / "seed1_again"
    run_experiment(
        ExperimentConfig(
            preset="smoke",
            suites=("lh",),
            seeds=(1,),
            workdir=str(redeployed),
            workers=1,
            starts_from=(str(second_seed),),
        )
    )
    run_experiment(ExperimentConfig(preset="smoke", merge=(str(first), str(redeployed)), workdir=str(tmp_path / "m")))
    merged = json.loads((tmp_path / "m" / "results.json").read_text())["suites"]["lh"]["runs"]
    assert merged["SFT"][1] == str(second_seed / "lh" / "seed1" / "eval" / "sft" / "eval.json")
    assert merged["LWD online"][1] == str(redeployed / "lh" / "seed1" / "eval" / "lwd_online" / "eval.json")


def test_the_evaluation_size_can_be_set_for_every_suite_and_defaults_to_the_presets():
    assert ExperimentConfig(preset="small").presets() == EXPERIMENT_PRESETS["small"]
    larger = ExperimentConfig(preset="small", eval_episodes_per_task=120).presets()
    for suite, preset in EXPERIMENT_PRESETS["small"].items():
        assert larger[suite] == replace(preset, eval_episodes_per_task=120)


def test_a_negative_evaluation_size_or_one_given_to_a_merge_is_refused():
    with pytest.raises(ValueError, match="eval_episodes_per_task must be >= 0"):
        ExperimentConfig(eval_episodes_per_task=-1)
    with pytest.raises(ValueError, match="cannot change --eval-episodes-per-task"):
        ExperimentConfig(merge=("a", "b"), eval_episodes_per_task=120)


def test_starts_from_refuses_a_source_evaluated_on_another_number_of_episodes(smoke_experiment):
    # the starts' evaluations are read from the source, so they must pair with the deploys' episodes
    source, _ = smoke_experiment
    larger = ExperimentConfig(preset="smoke", eval_episodes_per_task=3).presets()["mt10"]
    with pytest.raises(ValueError, match=r"other settings \(eval_episodes_per_task\)"):
        finished_starts((source,), "mt10", 0, larger)
