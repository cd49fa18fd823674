import json

import pytest

from lwd.benchmarks.sim import SimBenchConfig, run_sim_bench
from lwd.cli import main


def test_collect_then_store_info_reports_counts(tmp_path, capsys):
    store = str(tmp_path / "store")
    assert (
        main(
            [
                "collect",
                "--store",
                store,
                "--tasks",
                "reach-v3",
                "button-press-topdown-v3",
                "--episodes-per-task",
                "2",
                "--workers",
                "1",
                "--no-progress",
            ]
        )
        == 0
    )
    capsys.readouterr()
    assert main(["store", "info", "--store", store, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["latest_snapshot"] == 4
    assert {(r["task"], r["episodes"]) for r in data["rows"]} == {("reach-v3", 2), ("button-press-topdown-v3", 2)}
    assert main(["store", "info", "--store", store]) == 0
    assert "TOTAL" in capsys.readouterr().out
    assert main(["store", "check", "--store", store]) == 0


def test_unknown_suite_is_a_clear_error(tmp_path, capsys):
    assert main(["collect", "--store", str(tmp_path), "--suite", "mt100"]) == 2
    assert "unknown suite 'mt100'" in capsys.readouterr().err


def test_missing_store_is_a_clear_error(tmp_path, capsys):
    assert main(["store", "info", "--store", str(tmp_path / "nowhere")]) == 2
    assert "no episode store" in capsys.readouterr().err


def test_help_documents_every_option(capsys):
    with pytest.raises(SystemExit):
        main(["collect", "--help"])
    text = capsys.readouterr().out
    for option in ("--episodes-per-task", "--noise", "--source", "--seed-start", "--workers"):
        assert option in text


def test_sim_bench_replays_exactly_the_collected_workload(tmp_path):
    report = run_sim_bench(SimBenchConfig(episodes_per_task=1, workers=1, repeats=1, out=str(tmp_path / "b.json")))
    assert report["bare_steps_per_s"] > 0 and report["collect_steps_per_s"] > 0
    assert json.loads((tmp_path / "b.json").read_text())["steps_per_phase"] == report["steps_per_phase"] > 0


def test_policy_bench_reports_latency_and_update_rate(tmp_path):
    from lwd.benchmarks.policy import PolicyBenchConfig, run_policy_bench

    report = run_policy_bench(
        PolicyBenchConfig(
            hidden_dim=32,
            num_layers=1,
            repeats=3,
            sft_steps=2,
            learner_steps=1,
            learner_rounds=1,
            out=str(tmp_path / "p.json"),
        )
    )
    assert report["latency_ms_batch1"]["p50"] > 0 and report["latency_ms_batch16"]["p99"] > 0
    assert report["sft_updates_per_s_batch256"] > 0
    assert set(report["learner_updates_per_s_batch256"]) == {
        "reference_implementation_qam128_every_step_default",
        "qam128_every_step_default",
        "value_and_critic_only",
        "bfloat16_qam128_every_step",
        "qam32_every_step",
        "qam64_every_step",
        "qam256_every_step",
        "qam64_every_4th_step",
        "bfloat16_qam64_every_2nd_step",
        "half_width_expert_qam128_every_step",
        "online_learned_prior_qam64_every_step",
        "online_learned_prior_qam64_every_4th_step",
        "online_learned_prior_shared_batch_qam64_every_4th_step",
        "online_learned_prior_qam64_every_4th_step_prior_every_2nd",
        "online_learned_prior_qam64_and_prior_every_4th_step",
        "online_learned_prior_bfloat16_qam64_every_4th_step",
        "online_learned_prior_bfloat16_qam64_every_4th_step_prior_every_2nd",
    }
    assert all(rate > 0 for rate in report["learner_updates_per_s_batch256"].values())
    assert all(len(rates) == 1 for rates in report["learner_rounds_updates_per_s"].values())
    assert report["learner_speedup_default"] > 0


def test_policy_bench_times_only_the_chosen_variants_next_to_the_defaults(tmp_path):
    from lwd.benchmarks.policy import PolicyBenchConfig, run_policy_bench

    config = PolicyBenchConfig(
        hidden_dim=32,
        num_layers=1,
        repeats=3,
        sft_steps=2,
        learner_steps=1,
        learner_rounds=1,
        variants=("qam64_every_4th_step",),
        out=str(tmp_path / "p.json"),
    )
    assert set(run_policy_bench(config)["learner_updates_per_s_batch256"]) == {
        "reference_implementation_qam128_every_step_default",
        "qam128_every_step_default",
        "qam64_every_4th_step",
    }
    with pytest.raises(ValueError, match="unknown learner variants"):
        PolicyBenchConfig(variants=("qam65",))
    with pytest.raises(ValueError, match="tuple of names"):
        PolicyBenchConfig(variants="qam64_every_4th_step")


def test_simulator_benchmarks_refuse_multi_stage_suites_they_cannot_replay():
    from lwd.benchmarks.sim import single_stage_tasks

    assert "reach-v3" in single_stage_tasks("mt10")
    with pytest.raises(ValueError, match="multi-stage"):
        single_stage_tasks("lh")


def test_store_check_reports_damage_and_repair_quarantines_it(tmp_path, capsys):
    from lwd.data.store import EpisodeStore
    from tests.conftest import make_episode

    store = EpisodeStore(tmp_path / "store")
    store.append_many([make_episode(seq=seq) for seq in range(3)])
    (store.root / store.records()[0].path).unlink()
    (store.root / "episodes" / "evil.pkl").write_bytes(b"not an episode")
    root = str(store.root)
    assert main(["store", "check", "--store", root]) == 1  # problems remain
    out = capsys.readouterr().out
    assert "1 missing files; 0 corrupt files; 1 unexpected files; 0 quarantined episodes" in out
    assert "  unexpected: episodes/evil.pkl" in out and "--repair" in out
    assert main(["store", "check", "--store", root, "--repair"]) == 0  # all moved out of the visible store
    assert capsys.readouterr().out.startswith("2 committed episodes;")
    assert main(["store", "check", "--store", root]) == 0
    assert "0 unexpected files; 1 quarantined episodes" in capsys.readouterr().out
    assert main(["store", "info", "--store", root, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["quarantined"] == 1


def _option_names(config_cls: type, prefix: str = "") -> list[str]:
    """What tyro should show for every field, nested configs included: `--group.field`, or
    the field's metavar when it is positional."""
    import dataclasses
    import typing

    import tyro

    names = []
    for field in dataclasses.fields(config_cls):
        name = prefix + field.name.replace("_", "-")
        hints = typing.get_type_hints(config_cls, include_extras=True)
        metadata = typing.get_args(hints[field.name])[1:]
        if tyro.conf.Positional in metadata:
            names.append(next(m.metavar for m in metadata if getattr(m, "metavar", None)))
        elif dataclasses.is_dataclass(field.default):
            names += _option_names(type(field.default), name + ".")
        else:
            names.append("--" + name)
    return names


def _leaf_commands(path: tuple[str, ...], config_cls) -> list[tuple[tuple[str, ...], type]]:
    """(command path, config class) of a command, or of each tyro subcommand of a Union of them."""
    import typing

    if typing.get_origin(config_cls) is not typing.Union:
        return [(path, config_cls)]
    leaves = []
    for member in typing.get_args(config_cls):
        cls, *metadata = typing.get_args(member)
        name = next(m.name for m in metadata if getattr(m, "name", None))
        leaves.append(((*path, name), cls))
    return leaves


def test_every_field_of_every_command_is_an_option(capsys):
    from lwd.cli import all_commands

    for command, _, config, _ in all_commands():
        for path, config_cls in _leaf_commands(command, config):
            with pytest.raises(SystemExit):
                main([*path, "--help"])
            text = capsys.readouterr().out
            missing = [name for name in _option_names(config_cls) if name not in text]
            assert not missing, f"lwd {' '.join(path)} --help lacks {missing}"


def test_nested_options_reach_each_components_config():
    from lwd.cli import parse_config
    from lwd.fleet.online import DeployConfig

    config = parse_config(
        DeployConfig,
        [
            "--robots.workers",
            "3",
            "--robots.operator.takeover-steps",
            "7",
            "--robots.operator.action-noise",
            "0.2",
            "--lwd.lam",
            "0.1",
            "--hg-dagger.lr",
            "0.001",
            "--recap.threshold-rate",
            "0.1",
            "--recap.value-hidden",
            "64",
        ],
        prog="lwd deploy",
        description="",
    )
    assert config.robots.workers == 3
    assert (config.robots.operator.takeover_steps, config.robots.operator.action_noise) == (7, 0.2)
    assert config.lwd.lam == 0.1 and config.hg_dagger.lr == 0.001
    assert (config.recap.threshold_rate, config.recap.value_hidden) == (0.1, 64)
    settings = config.method_settings()
    assert (settings.learner, settings.imitation, settings.recap) == (config.lwd, config.hg_dagger, config.recap)


def test_deploy_defaults_are_the_online_learner_settings():
    import dataclasses

    from lwd.algorithms.learner import LearnerConfig
    from lwd.fleet.online import DeployConfig

    online, offline = DeployConfig().lwd, LearnerConfig()
    changed = {f.name for f in dataclasses.fields(LearnerConfig) if getattr(online, f.name) != getattr(offline, f.name)}
    assert changed == {
        "tau_base",
        "policy_warmup",
        "freeze_policy_encoder",
        "prior",
        "prior_data",
        "policy_every",
        "policy_lr",
        "policy_tracks_reference",
    }
    assert online.policy_tracks_reference and not offline.policy_tracks_reference  # validation, 2026-12-07
    assert online.policy_every == 4 and offline.policy_every == 1
    assert online.policy_lr == 1e-4 and offline.policy_lr == 3e-5  # issue 18: chosen on validation seeds
    assert (online.tau_base, online.policy_warmup, online.freeze_policy_encoder) == (0.9, 0, True)
    assert online.prior == "learned" and offline.prior == "frozen"
    assert online.prior_data == "hg-dagger" and offline.prior_data == "successes"  # validation seeds, 2026-12-03
