"""The `lwd` command line. Thin: parse a config, call the library, print a summary."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from lwd.configargs import documented


@dataclass(frozen=True)
class StoreInfoConfig:
    store: str = documented("runs/store", "episode store directory")
    snapshot: int | None = documented(None, "report as of this snapshot (default: newest)")
    json: bool = documented(False, "print JSON instead of a table")


@dataclass(frozen=True)
class StoreCheckConfig:
    store: str = documented("runs/store", "episode store directory")
    repair: bool = documented(
        False,
        "move missing or corrupt episodes and unexpected files to <store>/quarantine/ "
        "(nothing is deleted but orphan files over a minute old and dead writers' "
        "temp files)",
    )


def store_table(store_path: str, snapshot: int | None) -> tuple[str, dict]:
    from lwd.data.store import EpisodeStore

    store = EpisodeStore(store_path, create=False)
    latest = store.latest_snapshot()
    pinned = latest if snapshot is None else snapshot
    rows = store.summary(up_to=pinned)
    quarantined = len(store.quarantined())
    data = {
        "store": store_path,
        "snapshot": pinned,
        "latest_snapshot": latest,
        "quarantined": quarantined,
        "rows": [row.__dict__ for row in rows],
    }
    lines = [
        f"store {store_path}  snapshot {pinned} (latest {latest})  {quarantined} quarantined episodes",
        f"{'task':30s} {'source':8s} {'episodes':>8s} {'steps':>8s} {'success':>8s} {'interv.':>8s}",
    ]
    for r in rows:
        rate = r.successes / r.episodes if r.episodes else 0.0
        lines.append(f"{r.task:30s} {r.source:8s} {r.episodes:8d} {r.steps:8d} {rate:8.3f} {r.interventions:8d}")
    by_source: dict[str, list] = {}
    for r in rows:
        by_source.setdefault(r.source, []).append(r)
    for source, group in sorted(by_source.items()):
        episodes = sum(r.episodes for r in group)
        successes = sum(r.successes for r in group)
        lines.append(
            f"{'TOTAL':30s} {source:8s} {episodes:8d} {sum(r.steps for r in group):8d} "
            f"{successes / max(episodes, 1):8.3f} {sum(r.interventions for r in group):8d}"
        )
        data.setdefault("totals", {})[source] = {"episodes": episodes, "success_rate": successes / max(episodes, 1)}
    return "\n".join(lines), data


def cmd_collect(config) -> int:
    from lwd.fleet.collect import collect

    result = collect(config)
    rates = result.success_by_task()
    print(
        f"collected {len(result.stats)} episodes ({result.skipped} already in the store) "
        f"in {result.wall_seconds:.1f}s, {result.steps / max(result.wall_seconds, 1e-9):.0f} env steps/s"
    )
    for task, rate in rates.items():
        print(f"  {task:30s} success {rate:.3f}")
    if rates:
        print(f"  {'average':30s} success {sum(rates.values()) / len(rates):.3f}")
    return 0


def cmd_store_info(config: StoreInfoConfig) -> int:
    table, data = store_table(config.store, config.snapshot)
    print(json.dumps(data, indent=2) if config.json else table)
    return 0


def cmd_store_check(config: StoreCheckConfig) -> int:
    from lwd.data.store import EpisodeStore

    report = EpisodeStore(config.store, create=False).check(repair=config.repair)
    print(
        f"{report.episodes} committed episodes; {len(report.orphans)} orphan files; "
        f"{len(report.missing)} missing files; {len(report.corrupt)} corrupt files; "
        f"{len(report.unexpected)} unexpected files; {report.quarantined} quarantined episodes"
    )
    for kind, paths in (
        ("missing", report.missing),
        ("corrupt", report.corrupt),
        ("unexpected", report.unexpected),
        ("orphans", report.orphans),
        ("quarantined", report.quarantined_now),
    ):
        for path in paths:
            print(f"  {kind}: {path}")
    if report.unresolved:
        print(f"  run `lwd store check --store {config.store} --repair` to move them to {config.store}/quarantine/")
    return 1 if report.unresolved else 0


def cmd_bench_sim(config) -> int:
    from lwd.benchmarks.sim import run_sim_bench

    report = run_sim_bench(config)
    print(f"bare simulator      {report['bare_steps_per_s']:8.0f} env steps/s")
    print(f"expert -> store     {report['collect_steps_per_s']:8.0f} env steps/s")
    print(f"ratio               {report['ratio']:8.3f}   (expert success {report['expert_success']:.3f})")
    print(f"written to {config.out}")
    return 0


def cmd_demo(config) -> int:
    from lwd.recipes.demo import run_demo

    report = run_demo(config)
    print(report.read_text().split("## Learning while deploying")[0])
    print(f"report: {report} (plots next to it)")
    return 0


def cmd_experiment(config) -> int:
    from lwd.recipes.experiment import run_experiment

    results = run_experiment(config)
    print(results.read_text().split("## Online runs")[0])
    print(f"tables: {results} (plots next to it)")
    return 0


def cmd_bench_fleet(config) -> int:
    from lwd.benchmarks.fleet import run_fleet_bench

    report = run_fleet_bench(config)
    print(
        f"fleet ({config.workers} workers x {config.robots_per_worker} robots) "
        f"{report['fleet_steps_per_s']:8.0f} env steps/s"
    )
    print(f"bare Meta-World, same episodes            {report['bare_steps_per_s']:8.0f} env steps/s")
    rounds = ", ".join(f"{r['ratio']:.3f}" for r in report["rounds"])
    verdict = "met" if report["ratio"] >= 0.7 else "not met"  # 0.69993 prints as 0.700
    print(
        f"ratio                                     {report['ratio']:8.3f}   (goal >= 0.7: {verdict}; median of "
        f"{len(report['rounds'])} rounds: {rounds})"
    )
    if "cpu_ratio" in report:  # Linux: CPU seconds per env step, which other jobs on the machine move far less
        rounds = ", ".join(f"{r['cpu_ratio']:.3f}" for r in report["rounds"])
        print(
            f"ratio in CPU time                         {report['cpu_ratio']:8.3f}   (median of rounds: {rounds}; "
            f"robot processes alone {report['cpu_ratio_robots']:.3f})"
        )
    print(f"written to {config.out}")
    return 0


def cmd_bench_operator(config) -> int:
    from lwd.benchmarks.operator import run_operator_bench

    report = run_operator_bench(config)

    def cell(value) -> str:
        return "    -" if value is None else f"{value:5.2f}"

    counterfactual = "policy_alone_success" in report
    header = f"{'task':26s} episodes  takeover  success  alone-no-takeover  rescued"
    if counterfactual:
        header += "  policy-alone  unneeded (of episodes / of takeovers)  needed-recall"
    print(header)
    rows = [*report["per_task"].items(), ("mean over tasks", report)]
    for task, row in rows:
        line = (
            f"{task:26s} {row['episodes']:8d}  {row['takeover']:8.2f}  {row['success']:7.2f}  "
            f"{row['autonomous_success']:17.2f}  {cell(row['rescued']):>7s}"
        )
        if counterfactual:
            line += (
                f"  {cell(row['policy_alone_success']):>12s}  {cell(row['unneeded_takeover']):>8s} / "
                f"{cell(row['unneeded_share_of_takeovers'])}{'':24s}  {cell(row['needed_takeover_recall'])}"
            )
        print(line)
    print(f"written to {config.out}")
    return 0


def cmd_bench_gates(config) -> int:
    from lwd.benchmarks.gates import run_gate_sweep

    report = run_gate_sweep(config)
    print(f"{report['episodes']} policy-alone episodes; success per task: {report['policy_alone_success']}")
    print("deviation (L2, steps)  stall (steps, L2)  takeover  unneeded  unneeded/takeovers  needed-recall (pooled)")
    for row in report["gates"]:
        gate = row["gate"]

        def cell(value) -> str:
            return "   -" if value is None else f"{value:4.2f}"

        print(
            f"{gate['deviation_threshold']:9.2f} {gate['deviation_steps']:4d}     "
            f"{gate['stall_steps']:6d} {gate['stall_disagreement']:5.2f}    {cell(row['takeover']):>8s}  "
            f"{cell(row['unneeded_takeover']):>8s}  {cell(row['unneeded_share_of_takeovers']):>18s}  "
            f"{cell(row['needed_takeover_recall'])} ({cell(row['needed_takeover_recall_pooled'])})"
        )
    print(f"written to {config.out}")
    return 0


def cmd_bench_policy(config) -> int:
    from lwd.benchmarks.policy import run_policy_bench

    report = run_policy_bench(config)
    for batch in (1, 16):
        lat = report[f"latency_ms_batch{batch}"]
        print(f"chunk sampling, batch {batch:2d}: P50 {lat['p50']:.2f} ms  P99 {lat['p99']:.2f} ms")
    print(f"SFT updates/s at batch 256: {report['sft_updates_per_s_batch256']:.1f}")
    for name, rate in report["learner_updates_per_s_batch256"].items():
        print(f"LWD learner steps/s at batch 256, {name.replace('_', ' ')}: {rate:.1f}")
    return 0


def cmd_bench_render(config) -> int:
    from lwd.benchmarks.cameras import run_render_bench

    report = run_render_bench(config)
    print(f"{'path':12s} {'size':>4s} cameras         frames/s  CPU ms/frame")
    for row in report["render"]:
        cameras, rate, cpu = "+".join(row["cameras"]), row["frames_per_s"], row["cpu_ms_per_frame"]
        print(f"{row['path']:12s} {row['size']:4d} {cameras:15s} {rate:8.1f}  {cpu:8.2f}")
    steps = report["env_steps"]
    for setting in ("off", "scene", "scene+gripper"):
        print(
            f"env steps/s, cameras {setting:13s} at {steps['size']}px: {steps[setting]['steps_per_s']:7.1f} "
            f"({steps[setting]['cpu_ms_per_step']:.2f} CPU ms/step)"
        )
    print(f"written to {config.out}")
    return 0


def cmd_bench_frames(config) -> int:
    from lwd.benchmarks.cameras import run_frame_storage_bench

    report = run_frame_storage_bench(config)
    print(f"{report['episodes']} episodes, {report['steps']} steps, raw {report['raw_bytes_per_step']:.0f} bytes/step")
    print(f"{'format':52s} bytes/step  x smaller  encode ms/ep (CPU)  decode ms/ep (CPU)  error: max  p99  mean")
    for row in report["formats"]:
        print(
            f"{row['format']:52s} {row['bytes_per_step']:10.0f}  {row['ratio_to_raw']:9.1f}  "
            f"{row['encode_ms_per_episode']:7.1f} ({row['encode_cpu_ms_per_episode']:6.1f})  "
            f"{row['decode_ms_per_episode']:7.1f} ({row['decode_cpu_ms_per_episode']:6.1f})  "
            f"{row['max_pixel_error']:10d} {row['p99_pixel_error']:4d} {row['mean_pixel_error']:5.2f}"
        )
    print(f"written to {config.out}")
    return 0


def cmd_bench_ceiling(config) -> int:
    from lwd.evaluation.ceiling import ceiling_table, run_ceiling_bench

    report = run_ceiling_bench(config)
    print(ceiling_table(report), end="")
    print(f"written to {config.out} (and {Path(config.out).with_suffix('.md')})")
    return 0


def cmd_pretrain(config) -> int:
    from lwd.training.sft import pretrain

    final = pretrain(config)
    print(f"SFT policy written to {final}; metrics in {config.out}/metrics.jsonl and {config.out}/tensorboard")
    return 0


def cmd_offline_data(config) -> int:
    from lwd.fleet.collect import build_offline_store

    results = build_offline_store(config)
    for name, result in results.items():
        rates = result.success_by_task()
        average = sum(rates.values()) / len(rates) if rates else float("nan")
        print(
            f"{name:8s} {len(result.stats):5d} new episodes ({result.skipped} already there) "
            f"in {result.wall_seconds:6.1f}s, success {average:.3f}"
        )
    text, _ = store_table(config.store, None)
    print(text)
    return 0


def cmd_train_offline(config) -> int:
    from lwd.training.offline import train_offline

    final = train_offline(config)
    print(f"offline RL policy (with critic and value) written to {final}; metrics in {config.out}/metrics.jsonl")
    return 0


def cmd_deploy(config) -> int:
    from lwd.evaluation.gate import make_gate
    from lwd.fleet.online import deploy

    summary = deploy(config, make_gate=make_gate)
    print(
        f"deploy finished ({summary['reason']}): {summary['env_steps']} env steps in {summary['episodes']} episodes, "
        f"{summary['learner_steps']} learner steps, {summary['versions_published']} versions published "
        f"(latest v{summary['latest_version']}), {summary['worker_restarts']} worker restarts"
    )
    for key in (
        "fleet/autonomous_success",
        "fleet/success",
        "fleet/intervention_rate",
        "latency/episode_to_learner_p99_s",
        "latency/model_to_robot_p99_s",
    ):
        if key in summary:
            print(f"  {key:34s} {summary[key]:.3f}")
    print(
        f"final policy: {summary['final']}; metrics: {config.out}/metrics.jsonl, episodes: {config.out}/episodes.jsonl"
    )
    return 0


def cmd_compare(config) -> int:
    from lwd.evaluation.compare import (
        compare_table,
        failed_stage_table,
        has_multi_stage_outcomes,
        load_runs,
        paired_table,
        parse_runs,
    )

    runs = parse_runs(config.runs)
    reports = load_runs(runs)
    table = compare_table(reports)
    if config.paired_against:
        table += "\n\n" + paired_table(reports, config.paired_against)
    if has_multi_stage_outcomes(reports):
        table += "\n\n" + failed_stage_table(reports)
    print(table)
    if config.out:
        Path(config.out).parent.mkdir(parents=True, exist_ok=True)
        Path(config.out).write_text(table + "\n")
    return 0


def cmd_eval(config) -> int:
    from lwd.evaluation.evaluate import evaluate

    summary = evaluate(config)
    if len(config.phrasings) > 1:  # one report per phrasing set, and the gap between them
        print(Path(config.out, "phrasings.md").read_text())
        print(f"reports in {config.out}/{{{','.join(config.phrasings)}}}/ and {config.out}/phrasings.{{json,md}}")
        return 0
    print(Path(config.out, "eval.md").read_text())
    if "critic_changed_fraction" in summary:
        changed = summary["critic_changed_fraction"]
        if config.best_of_n > 1:
            print(f"the critic picked a sample over the plain chunk at {changed:.0%} of replans")
        else:
            print(
                f"at {summary['resampled_chunks']} resamples the critic picked another chunk than the first "
                f"draw {changed:.0%} of the time"
            )
    print(
        f"{summary['env_steps']} env steps in {summary['wall_seconds']:.1f}s; "
        f"report in {config.out}/eval.{{json,md,png}}"
    )
    return 0


Command = tuple[tuple[str, ...], str, type, Callable[..., int]]  # (path, help, config class, handler)
GROUPS = {
    "train": "RL training stages",
    "store": "inspect an episode store",
    "bench": "benchmarks",
    "registry": "see and change which published version robots run (promote, roll back)",
    "gateway": "serve robots over the network (episode upload, policies, remote inference) and manage their tokens",
    "dataset": "datasets in other formats: export a store as a LeRobot dataset, import one into a store",
}


def _job_commands() -> list[Command]:
    from lwd.evaluation.compare import CompareConfig
    from lwd.evaluation.evaluate import EvalConfig
    from lwd.fleet.collect import CollectConfig, OfflineDataConfig
    from lwd.fleet.online import DeployConfig
    from lwd.recipes.demo import DemoConfig
    from lwd.recipes.experiment import ExperimentConfig
    from lwd.training.offline import OfflineConfig
    from lwd.training.sft import PretrainConfig

    return [
        (
            ("demo",),
            "the main job: demos -> SFT -> offline RL -> learning while deploying with a simulated fleet "
            "-> evaluation -> report (resumable; finished stages are reused)",
            DemoConfig,
            cmd_demo,
        ),
        (
            ("experiment",),
            "the comparison table: SFT, HG-DAgger, RECAP, LWD offline and online (+ ablations) "
            "on MT10 and the long-horizon suite, several training seeds, same budgets (resumable)",
            ExperimentConfig,
            cmd_experiment,
        ),
        (
            ("collect",),
            "collect expert demonstrations, play data or policy rollouts into an episode store",
            CollectConfig,
            cmd_collect,
        ),
        (
            ("pretrain",),
            "SFT: supervised flow matching on the store's demonstrations (resumable)",
            PretrainConfig,
            cmd_pretrain,
        ),
        (
            ("offline-data",),
            "build the offline RL store: demos + SFT rollouts + play (resumable)",
            OfflineDataConfig,
            cmd_offline_data,
        ),
        (
            ("train", "offline"),
            "offline RL (DIVL + QAM) from the SFT checkpoint on the offline store (resumable)",
            OfflineConfig,
            cmd_train_offline,
        ),
        (
            ("deploy",),
            "learning while deploying: a fleet of simulated robots runs the newest policy while the "
            "learner trains on their episodes and publishes versions (resumable; Ctrl-C stops cleanly)",
            DeployConfig,
            cmd_deploy,
        ),
        (
            ("eval",),
            "evaluate a checkpoint on evaluation seeds (no operator): success, 95% CI, cycle time",
            EvalConfig,
            cmd_eval,
        ),
        (
            ("compare",),
            "side-by-side success table of evaluation reports (mean over training seeds, 95% CI)",
            CompareConfig,
            cmd_compare,
        ),
    ]


def _tool_commands() -> list[Command]:
    from lwd.benchmarks.cameras import FrameStorageBenchConfig, RenderBenchConfig
    from lwd.benchmarks.fleet import FleetBenchConfig
    from lwd.benchmarks.gates import GateSweepConfig
    from lwd.benchmarks.operator import OperatorBenchConfig
    from lwd.benchmarks.policy import PolicyBenchConfig
    from lwd.benchmarks.sim import SimBenchConfig
    from lwd.dashboard.server import DashboardConfig, cmd_dashboard
    from lwd.evaluation.ceiling import CeilingConfig

    return [
        (
            ("dashboard",),
            "a live web page about a deploy run: robots, versions and gate decisions, success and "
            "interventions per task, validation curve, throughput, latencies (reads --run; 127.0.0.1:8050)",
            DashboardConfig,
            cmd_dashboard,
        ),
        (
            ("store", "info"),
            "episodes, steps, success and interventions per task and source",
            StoreInfoConfig,
            cmd_store_info,
        ),
        (
            ("store", "check"),
            "verify every episode file against the catalogue; --repair quarantines damage",
            StoreCheckConfig,
            cmd_store_check,
        ),
        (
            ("bench", "sim"),
            "bare simulator vs expert collection into the store, same cores",
            SimBenchConfig,
            cmd_bench_sim,
        ),
        (
            ("bench", "fleet"),
            "fleet throughput (policy, operator, uploads) vs bare Meta-World on the same episodes and cores",
            FleetBenchConfig,
            cmd_bench_fleet,
        ),
        (
            ("bench", "operator"),
            "how often the deployment operator takes over, per task, from a fixed policy "
            "(tune the gate: --robots.operator.*)",
            OperatorBenchConfig,
            cmd_bench_operator,
        ),
        (
            ("bench", "gates"),
            "operator gates scored on the same policy-alone episodes: takeovers, unneeded takeovers "
            "(the policy would have succeeded), recall of the episodes it would have failed",
            GateSweepConfig,
            cmd_bench_gates,
        ),
        (
            ("bench", "policy"),
            "policy chunk latency (batch 1, 16), SFT and LWD learner updates/s (batch 256)",
            PolicyBenchConfig,
            cmd_bench_policy,
        ),
        (
            ("bench", "render"),
            "camera frames/s per process (64/96/128 px, 1-2 cameras), lwd's tuned renderer vs gymnasium's "
            "rgb_array path, and env steps/s with cameras off and on",
            RenderBenchConfig,
            cmd_bench_render,
        ),
        (
            ("bench", "frames"),
            "how to store camera frames: bytes/step, encode/decode ms and pixel error of raw, PNG, JPEG "
            "and video (PyAV: pip install -e '.[video]') on real expert episodes",
            FrameStorageBenchConfig,
            cmd_bench_frames,
        ),
        (
            ("bench", "ceiling"),
            "best-of-N chunks at every replan, picked by a simulator oracle (restore and roll out) "
            "or by the learned Q: where the ceiling is for the critic and for extraction",
            CeilingConfig,
            cmd_bench_ceiling,
        ),
    ]


def _registry_commands() -> list[Command]:
    from lwd.fleet.registry_commands import (
        RegistryListConfig,
        RegistryPromoteConfig,
        RegistryRollbackConfig,
        cmd_registry_list,
        cmd_registry_promote,
        cmd_registry_rollback,
    )

    return [
        (
            ("registry", "list"),
            "published versions: deployed, canary, promoted, rejected or candidate, with the gate's evidence",
            RegistryListConfig,
            cmd_registry_list,
        ),
        (
            ("registry", "promote"),
            "deploy a version: every robot runs it from its next episode",
            RegistryPromoteConfig,
            cmd_registry_promote,
        ),
        (
            ("registry", "rollback"),
            "go back to the previously deployed version (or --to N) and pin it until a promote",
            RegistryRollbackConfig,
            cmd_registry_rollback,
        ),
    ]


def _gateway_commands() -> list[Command]:
    from lwd.gateway.commands import cmd_bench_gateway, cmd_gateway_serve, cmd_gateway_token
    from lwd.gateway.config import GatewayBenchConfig, GatewayConfig, TokenCommand
    from lwd.gateway.robots import RobotProcessConfig, cmd_robot

    return [
        (
            ("robot",),
            "run simulated robots (Meta-World + scripted operator) that reach the learner only through a gateway: "
            "uploads via a durable spool, policies and the fleet's hold from the gateway",
            RobotProcessConfig,
            cmd_robot,
        ),
        (
            ("gateway", "serve"),
            "the network gateway: robots upload episodes to the store, fetch policies and ask for "
            "actions over HTTP(S), with per-robot tokens (docs/connecting-a-robot.md)",
            GatewayConfig,
            cmd_gateway_serve,
        ),
        (("gateway", "token"), "issue, list or revoke robots' gateway tokens", TokenCommand, cmd_gateway_token),
        (
            ("bench", "gateway"),
            "gateway uploads/s and inference requests/s with P50/P99 at 10/100/1000 simulated robots",
            GatewayBenchConfig,
            cmd_bench_gateway,
        ),
    ]


def _dataset_commands() -> list[Command]:
    from lwd.data.lerobot import ExportConfig, ImportConfig, cmd_dataset_export, cmd_dataset_import

    return [
        (
            ("dataset", "export"),
            "write a store's episodes as a LeRobotDataset v3.0 (parquet steps, mp4 per camera, meta JSON) "
            "that LeRobot's tools open (pip install -e '.[lerobot]')",
            ExportConfig,
            cmd_dataset_export,
        ),
        (
            ("dataset", "import"),
            "commit a LeRobotDataset v3.0's episodes (lwd's exports, or recorded with LeRobot) to a store",
            ImportConfig,
            cmd_dataset_import,
        ),
    ]


def all_commands() -> list[Command]:
    return _job_commands() + _tool_commands() + _registry_commands() + _gateway_commands() + _dataset_commands()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lwd", description="Learning while deploying: robot fleet, episode store, RL learner."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    groups = {}  # group name -> its sub-command parsers
    for path, help_text, config_cls, handler in all_commands():
        parent = commands
        if len(path) == 2:
            if path[0] not in groups:
                groups[path[0]] = commands.add_parser(path[0], help=GROUPS[path[0]]).add_subparsers(
                    dest=f"{path[0]}_command", required=True
                )
            parent = groups[path[0]]
        # The leaf's options (and its --help) are tyro's: it reads the config dataclass,
        # nested configs included, with each field's help text and default.
        sub = parent.add_parser(path[-1], help=help_text.replace("%", "%%"), add_help=False)
        sub.set_defaults(handler=handler, config_cls=config_cls, command=" ".join(path), description=help_text)
    return parser


def parse_config(config_cls: type, options: list[str], prog: str, description: str):
    """The config a command's options describe (tyro; `--help` lists every field)."""
    import tyro

    return tyro.cli(config_cls, args=options, prog=prog, description=description)


def main(argv: list[str] | None = None) -> int:
    from lwd.data.store import StoreError
    from lwd.envs.tasks import UnknownTaskError
    from lwd.policy.checkpoint import CheckpointError

    args, options = build_parser().parse_known_args(argv)
    try:
        config = parse_config(args.config_cls, options, prog=f"lwd {args.command}", description=args.description)
        return args.handler(config)
    except (StoreError, UnknownTaskError, CheckpointError, ValueError, FileNotFoundError) as err:
        print(f"lwd: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("lwd: interrupted; everything committed so far is in the store", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
