"""The comparison of SPEC §7 (`lwd experiment`): every method on every suite with the
same data, starting checkpoint and online budget, several training seeds, evaluated on
evaluation seeds; writes the comparison table, the ablation table and plots.

Per suite and training seed, under <workdir>/<suite>/seed<k>/:

    store, sft/                demonstrations → SFT (the SFT baseline; start of every method)
    offline/                   offline store (+ SFT rollouts, play) → LWD offline (DIVL + QAM)
    offline_expectile/         ablation: scalar expectile value instead of DIVL's categorical V
    offline_constant_tau/      ablation: constant τ = τ_base instead of the adaptive τ(s)
    lwd/, hg-dagger/, recap/   the fleet deployed for the same env-step budget with each learner
    eval/<method>/             evaluation on evaluation seeds, no operator

Training seeds vary initialisation, batch sampling, policy noise and the SFT rollouts in the
offline store; the demonstrations and the robots' initial states are the same for all seeds
(the world is fixed, the learner's luck is not). Every stage is reused when finished, so a
re-run only does what is missing. With `--starts-from`, the stages up to the deploys are read
from finished experiments instead, so fleet settings (the operator) compare on the same starts.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TypeVar

import numpy as np

from lwd.configargs import documented
from lwd.envs.operator import OperatorConfig
from lwd.envs.tasks import task_spec
from lwd.evaluation.compare import (
    PairedDifference,
    SeedLevelDifference,
    compare_table,
    failed_stage_table,
    has_multi_stage_outcomes,
    load_report,
    load_runs,
    mean_of_independent,
    paired_cell,
    paired_difference_over_seeds,
    pooled_average,
    seed_level_difference,
    seed_level_mean_of_suites,
    signed_interval,
)
from lwd.evaluation.report import load_episodes, pyplot, rolling_mean
from lwd.recipes.presets import DEPLOY_ONLY_FIELDS, EXPERIMENT_PRESETS, Preset
from lwd.recipes.stages import (
    deploy_stage,
    evaluation,
    offline_data_stage,
    offline_rl_stage,
    sft_stage,
    timed,
)

METHODS = ("SFT", "HG-DAgger", "RECAP", "LWD offline", "LWD online")
ABLATIONS = ("LWD offline", "LWD offline, expectile V", "LWD offline, constant τ")
ONLINE_METHODS = {"HG-DAgger": "hg-dagger", "RECAP": "recap", "LWD online": "lwd"}
START_DIRS = {
    "SFT": "sft",
    "LWD offline": "offline",
    "LWD offline, expectile V": "offline_expectile",
    "LWD offline, constant τ": "offline_constant_tau",
}  # the methods that are not deployed, and where each run directory keeps their final checkpoint
BASELINES = ("SFT", "HG-DAgger", "RECAP")  # the methods LWD is measured against (SPEC §7)
D = TypeVar("D", PairedDifference, SeedLevelDifference)  # a paired difference, by episode or by seed


@dataclass(frozen=True)
class ExperimentConfig:
    preset: str = documented(
        "small",
        "smoke (CI, minutes), small (≤ 1 hour per suite on 2 cores), full (a GPU box), or from pixels "
        "smoke-image, small-image (mt10 only: --suites mt10)",
    )
    suites: tuple[str, ...] = documented(("mt10", "lh"), "suites to run")
    seeds: tuple[int, ...] = documented((0, 1, 2), "training seeds")
    workdir: str = documented("runs/experiment", "where runs, evaluations, tables and plots go")
    workers: int = documented(2, "parallel simulator processes (collection, fleet, evaluation)")
    merge: tuple[str, ...] = documented(
        (),
        "instead of running: pool the finished results of these experiment workdirs (same preset, "
        "different training seeds) into one set of tables and plots in --workdir; runs stay where they are",
    )
    operator: OperatorConfig = documented(OperatorConfig(), "the scripted operator watching every deployed fleet")
    eval_episodes_per_task: int = documented(
        0,
        "evaluation episodes per task (per chain on lh) for every method; 0 = the preset's (20 in small). "
        "LWD online and HG-DAgger differ by ~0.01 on lh, which 20 per chain on three seeds cannot resolve: "
        "120 per chain on six seeds did, at ~3 min per policy and seed on 2 cores "
        '(docs/benchmarks.md, "The twelve `lh` seeds on 100 fresh initial conditions per chain")',
    )
    starts_from: tuple[str, ...] = documented(
        (),
        "reuse the data, SFT and offline RL stages (ablations and their evaluations included) of these "
        "finished experiment workdirs, read where they are (each seed from the one that ran it, same preset "
        "up to its online settings); run only the deploys and their evaluations in --workdir: e.g. another "
        "--operator on the same starts",
    )

    def __post_init__(self) -> None:
        if self.preset not in EXPERIMENT_PRESETS:
            raise ValueError(f"unknown preset {self.preset!r}; choose from {sorted(EXPERIMENT_PRESETS)}")
        unknown = sorted(set(self.suites) - set(EXPERIMENT_PRESETS[self.preset]))
        if unknown or not self.suites:
            raise ValueError(f"suites must be some of {sorted(EXPERIMENT_PRESETS[self.preset])}, got {self.suites}")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"need at least one training seed, each once; got {self.seeds}")
        object.__setattr__(self, "merge", tuple(self.merge))
        object.__setattr__(self, "starts_from", tuple(self.starts_from))
        if self.merge and self.starts_from:
            raise ValueError("--merge pools finished results; it cannot also deploy from --starts-from")
        if self.eval_episodes_per_task < 0:
            raise ValueError(
                f"eval_episodes_per_task must be >= 0 (0: the preset's); got {self.eval_episodes_per_task}"
            )
        if self.merge and self.eval_episodes_per_task:
            raise ValueError("--merge pools evaluations as they ran; it cannot change --eval-episodes-per-task")

    def presets(self) -> dict[str, Preset]:
        """The preset of each suite, with the evaluation size replaced where `eval_episodes_per_task` says."""
        presets = EXPERIMENT_PRESETS[self.preset]
        if not self.eval_episodes_per_task:
            return dict(presets)
        return {name: replace(p, eval_episodes_per_task=self.eval_episodes_per_task) for name, p in presets.items()}


def _slug(name: str) -> str:
    return name.lower().replace(", ", "_").replace(" ", "_").replace("τ", "tau")


def _eval_dir(run: Path, method: str) -> Path:
    """Where a run directory keeps the evaluation of `method` (eval.json)."""
    return run / "eval" / _slug(method)


class StageClock(dict):
    """Wall time of each stage of one run, kept in <run>/stage_seconds.json as soon as a stage ends
    or is interrupted. `timed` adds each attempt's time, so a stage interrupted and resumed counts
    both parts, and a finished stage that a re-run only reuses gains next to nothing."""

    def __init__(self, path: Path) -> None:
        super().__init__(json.loads(path.read_text()) if path.exists() else {})
        self.path = path

    def __setitem__(self, stage: str, seconds: float) -> None:
        super().__setitem__(stage, seconds)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps(self, indent=2))


def train_starts(
    work: Path, preset: Preset, seed: int, workers: int, quiet: bool, stages: dict[str, float]
) -> tuple[str, dict[str, Path]]:
    """The stages before the fleet for one suite and training seed: the store and the final
    checkpoint of every method that is not deployed (SFT, LWD offline and its ablations)."""
    store, sft = sft_stage(work, preset, seed, workers, quiet, stages)
    offline_data_stage(store, sft, preset, workers, quiet, stages)
    checkpoints = {"SFT": sft}
    checkpoints["LWD offline"] = offline_rl_stage(
        work / START_DIRS["LWD offline"], store, sft, preset, seed, quiet, stages
    )
    checkpoints["LWD offline, expectile V"] = offline_rl_stage(
        work / START_DIRS["LWD offline, expectile V"],
        store,
        sft,
        preset,
        seed,
        quiet,
        stages,
        "offline RL (expectile V)",
        value_kind="expectile",
    )
    checkpoints["LWD offline, constant τ"] = offline_rl_stage(
        work / START_DIRS["LWD offline, constant τ"],
        store,
        sft,
        preset,
        seed,
        quiet,
        stages,
        "offline RL (constant τ)",
        learner={"tau_mode": "constant"},
    )
    return store, checkpoints


def deploy_methods(
    work: Path,
    store: str,
    starts: dict[str, Path],
    preset: Preset,
    seed: int,
    operator: OperatorConfig,
    quiet: bool,
    stages: dict[str, float],
) -> dict[str, Path]:
    """Every online method deployed for the same budget from its start (LWD from LWD offline, the
    baselines from SFT); returns their final checkpoints."""
    checkpoints = {}
    for name, method in ONLINE_METHODS.items():
        start = starts["LWD offline"] if method == "lwd" else starts["SFT"]
        # RECAP has its own offline stage (value + conditioned policy), as long as LWD's.
        extra = {"offline_steps": preset.offline_steps} if method == "recap" else {}
        summary = deploy_stage(
            work / method, method, start, store, preset, seed, quiet, stages, f"deploy {name}", operator, **extra
        )
        checkpoints[name] = Path(summary["final"])
    return checkpoints


def finished_starts(sources: tuple[Path, ...], suite_name: str, seed: int, preset: Preset) -> Path:
    """The run directory of `suite_name`/seed<k> in whichever source experiment finished it with
    this preset; it must hold the store and every start checkpoint with its evaluation."""
    for source in sources:
        run = source / suite_name / f"seed{seed}"
        if not run.is_dir():
            continue
        recorded_path = source / "experiment_config.json"
        if not recorded_path.exists():
            raise FileNotFoundError(f"{source} is not an experiment workdir: no {recorded_path.name}")
        recorded = json.loads(recorded_path.read_text())["presets"].get(suite_name) or {}
        wanted = json.loads(json.dumps(asdict(preset)))  # as JSON records it (tuples as lists)
        # The deploys run here with this preset; only what the starts were built with must match.
        changed = sorted(k for k in wanted if k not in DEPLOY_ONLY_FIELDS and recorded.get(k) != wanted[k])
        if changed:
            raise ValueError(f"{source} ran {suite_name} with other settings ({', '.join(changed)})")
        needed = [run / "store" / "catalogue.sqlite"]
        for name, directory in START_DIRS.items():
            needed += [run / directory / "final" / "manifest.json", _eval_dir(run, name) / "eval.json"]
        missing = [str(p) for p in needed if not p.exists()]
        if missing:
            raise FileNotFoundError(f"{run} has not finished its starts: no {missing[0]}")
        return run
    raise FileNotFoundError(f"no {suite_name} seed {seed} in --starts-from {', '.join(map(str, sources))}")


def run_experiment(config: ExperimentConfig) -> Path:
    """Run (or finish) every suite × seed × method (or, with `merge`, pool finished experiments);
    returns the path of results.md."""
    if config.merge:
        return merge_experiments([Path(source) for source in config.merge], Path(config.workdir))
    work = Path(config.workdir)
    work.mkdir(parents=True, exist_ok=True)
    presets = config.presets()
    (work / "experiment_config.json").write_text(
        json.dumps({"experiment": asdict(config), "presets": {s: asdict(presets[s]) for s in config.suites}}, indent=2)
    )
    quiet = config.preset == "smoke"
    results: dict = {"config": asdict(config), "suites": {}}
    for suite_name in config.suites:
        preset = presets[suite_name]
        suite_results = results["suites"].setdefault(suite_name, {"runs": {}, "seconds": {}})
        for seed in config.seeds:
            run = work / suite_name / f"seed{seed}"
            stages = StageClock(run / "stage_seconds.json")
            if config.starts_from:
                start_run = finished_starts(tuple(map(Path, config.starts_from)), suite_name, seed, preset)
                print(f"[{suite_name} seed {seed}] starts from {start_run}, deploy ×{len(ONLINE_METHODS)}")
                store, starts = str(start_run / "store"), {n: start_run / d / "final" for n, d in START_DIRS.items()}
                for name in starts:  # evaluated where they ran; read, never rewritten
                    suite_results["runs"].setdefault(name, []).append(str(_eval_dir(start_run, name) / "eval.json"))
            else:
                print(f"[{suite_name} seed {seed}] data, SFT, offline RL (+ ablations), deploy ×{len(ONLINE_METHODS)}")
                store, starts = train_starts(run, preset, seed, config.workers, quiet, stages)
            checkpoints = deploy_methods(run, store, starts, preset, seed, config.operator, quiet, stages)
            if not config.starts_from:
                checkpoints = {**starts, **checkpoints}
            print(f"[{suite_name} seed {seed}] evaluation on evaluation seeds")
            for name, checkpoint in checkpoints.items():
                out = _eval_dir(run, name)
                timed(
                    stages,
                    f"eval {name}",
                    lambda c=checkpoint, o=out, p=preset, s=seed: evaluation(c, o, p, config.workers, s),
                )
                suite_results["runs"].setdefault(name, []).append(str(out / "eval.json"))
            suite_results["seconds"][str(seed)] = {"total": sum(stages.values()), **stages}
            (work / "results.json").write_text(json.dumps(results, indent=2))
    return write_tables(work, results, presets)


def merge_experiments(sources: list[Path], work: Path) -> Path:
    """Pool the finished seeds of several experiment workdirs into one results.json, results.md and
    plots in `work` (the runs are read where they are). The sources must have run the same preset
    with the same recorded settings and must not share a training seed on any suite: seeds are the
    unit the seed-level intervals count, so a seed twice would count one run as two."""
    if len(sources) < 2:
        raise ValueError(f"merge needs at least two experiment workdirs, got {len(sources)}")
    merged: dict = {"config": None, "suites": {}, "merged_from": []}
    recorded_presets: dict[str, dict] = {}
    for source in sources:
        paths = source / "results.json", source / "experiment_config.json"
        missing = [str(p) for p in paths if not p.exists()]
        if missing:
            raise FileNotFoundError(f"{source} is not a finished experiment workdir: no {', '.join(missing)}")
        results, recorded = (json.loads(p.read_text()) for p in paths)
        preset_name = recorded["experiment"]["preset"]
        if merged["config"] is None:
            merged["config"] = {**recorded["experiment"], "seeds": [], "workdir": str(work), "merge": []}
        elif preset_name != merged["config"]["preset"]:
            raise ValueError(f"{source} ran preset {preset_name!r}, {sources[0]} ran {merged['config']['preset']!r}")
        elif recorded["experiment"].get("operator") != merged["config"].get("operator"):
            # workdirs from before the operator was recorded have none: they pool only with each other
            raise ValueError(f"{source} deployed its fleets with another operator than {sources[0]}")
        for suite_name, suite_results in results["suites"].items():
            preset = recorded["presets"][suite_name]
            if recorded_presets.setdefault(suite_name, preset) != preset:
                changed = sorted(k for k in preset if preset[k] != recorded_presets[suite_name].get(k))
                raise ValueError(f"{source} ran suite {suite_name} with other settings ({', '.join(changed)})")
            into = merged["suites"].setdefault(suite_name, {"runs": {}, "seconds": {}})
            repeated = sorted(set(into["seconds"]) & set(suite_results["seconds"]), key=int)
            if repeated:
                raise ValueError(f"training seed(s) {', '.join(repeated)} of {suite_name} appear in two sources")
            for method, reports in suite_results["runs"].items():
                into["runs"].setdefault(method, []).extend(
                    _report_path(p, recorded["experiment"]["workdir"], source) for p in reports
                )
            into["seconds"].update(suite_results["seconds"])
        finished = sorted({int(seed) for r in results["suites"].values() for seed in r["seconds"]})
        merged["merged_from"].append({"workdir": str(source), "seeds": finished})
    merged["config"]["seeds"] = sorted({int(s) for r in merged["suites"].values() for s in r["seconds"]})
    merged["config"]["merge"] = [str(s) for s in sources]
    unreadable = [p for r in merged["suites"].values() for ps in r["runs"].values() for p in ps if not Path(p).exists()]
    if unreadable:
        raise FileNotFoundError(f"{len(unreadable)} evaluation report(s) are missing, e.g. {unreadable[0]}")
    work.mkdir(parents=True, exist_ok=True)
    (work / "results.json").write_text(json.dumps(merged, indent=2))
    presets = {name: Preset(**_tuples(fields)) for name, fields in recorded_presets.items()}
    return write_tables(work, merged, presets)


def _report_path(recorded: str, recorded_workdir: str, source: Path) -> str:
    """Where a report of `source` is now. Reports under that experiment's --workdir were written as
    it was spelt then (maybe relative to another directory): find them under the source as given
    now. Reports read from elsewhere (--starts-from) stay as recorded."""
    try:
        return str((source / Path(recorded).relative_to(recorded_workdir)).resolve())
    except ValueError:
        return str(Path(recorded).resolve())


def _tuples(fields: dict) -> dict:
    """A preset as JSON recorded it, its lists back to tuples."""
    return {k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()}


def _run_dirs(suite_results: dict) -> list[Path]:
    """Each finished seed's run directory of the deployed methods (<run>/eval/lwd_online/eval.json),
    in seed order."""
    return [Path(p).parents[2] for p in suite_results["runs"]["LWD online"]]


# -- tables and plots --------------------------------------------------------------------


def _reports(paths: list[str]) -> list[dict]:
    return [load_report(p) for p in paths]


def summary_table(results: dict, methods: tuple[str, ...]) -> list[str]:
    suites = list(results["suites"])
    lines = ["| method | " + " | ".join(suites) + " | average over suites |", "|---|" + "---|" * (len(suites) + 1)]
    for method in methods:
        cells, rates = [], []
        for suite_name in suites:
            runs = results["suites"][suite_name]["runs"].get(method)
            if not runs:
                cells.append("–")
                continue
            rate, low, high = pooled_average(_reports(runs))
            rates.append(rate)
            cells.append(f"{rate:.3f} ({low:.2f}–{high:.2f})")
        overall = f"**{np.mean(rates):.3f}**" if len(rates) == len(suites) else "–"
        lines.append(f"| {method} | " + " | ".join(cells) + f" | {overall} |")
    return lines


def _versus_table(
    results: dict,
    method: str,
    difference: Callable[[list[tuple[dict, dict]]], D],
    cell: Callable[[D], str],
    average: Callable[[list[D]], str],
) -> list[str]:
    """`method` minus every other method per suite (`difference` of each seed's pair of reports,
    shown by `cell`), with the `average` over suites; the last row is each suite's best baseline."""
    suites = list(results["suites"])
    differences: dict[tuple[str, str], D] = {}  # (suite, other method), each loaded once
    for suite_name in suites:
        runs = results["suites"][suite_name]["runs"]
        reports = _reports(runs[method])
        for other in METHODS:
            if other != method:
                differences[suite_name, other] = difference(list(zip(_reports(runs[other]), reports)))

    def row(label: str, others: list[str], name_them: bool = False) -> str:
        diffs = [differences[s, o] for s, o in zip(suites, others)]
        cells = [(f"vs {o}: " if name_them else "") + cell(d) for d, o in zip(diffs, others)]
        return f"| {label} | " + " | ".join([*cells, average(diffs)]) + " |"

    lines = [
        f"| {method} − | " + " | ".join(suites) + " | average over suites |",
        "|---|" + "---|" * (len(suites) + 1),
    ]
    lines += [row(other, [other] * len(suites)) for other in METHODS if other != method]
    lines.append(row("**best baseline**", _best_baselines(results, suites), name_them=True))
    return lines


def paired_suites_table(results: dict, method: str = "LWD online") -> list[str]:
    """`method` minus every other method, episode by episode on the same evaluation episodes
    (pooled over training seeds), per suite and averaged over suites; the last row is the best
    baseline of each suite, which is what "best with an interval that excludes zero" means."""
    return _versus_table(
        results,
        method,
        paired_difference_over_seeds,
        paired_cell,
        lambda diffs: signed_interval(*mean_of_independent(diffs)),
    )


def seed_level_table(results: dict, method: str = "LWD online") -> list[str]:
    """The paired differences of `paired_suites_table` with the training seed as the unit: each
    seed's mean difference, the Student-t 95% interval over seeds, and the per-seed values. With
    few seeds this interval is wide; it is the one that says whether a rerun would reproduce the
    gain."""

    def cell(d: SeedLevelDifference) -> str:
        return signed_interval(d.mean, d.ci95) + "; per seed " + " / ".join(f"{v:+.3f}" for v in d.per_seed)

    # The training seed of each suite's values, in the order its runs were recorded.
    seeds = [list(suite["seconds"]) for suite in results["suites"].values()]

    def average(diffs: list[SeedLevelDifference]) -> str:
        try:
            mean = seed_level_mean_of_suites(diffs, seeds)
        except ValueError as error:
            return f"({error})"
        text = signed_interval(mean.mean, mean.ci95)
        if any(len(d.per_seed) != len(mean.per_seed) for d in diffs):
            count = len(mean.per_seed)
            text += f" over the {count} seed{'s' if count > 1 else ''} every suite ran"
        return text

    return _versus_table(results, method, seed_level_difference, cell, average)


def _best_baselines(results: dict, suites: list[str]) -> list[str]:
    """The baseline with the highest mean success on each suite."""
    return [
        max(BASELINES, key=lambda b, s=s: pooled_average(_reports(results["suites"][s]["runs"][b]))[0]) for s in suites
    ]


def stage_score_table(results: dict, suite_name: str) -> list[str]:
    """Per-task stage scores of a suite with multi-stage tasks (empty for single-stage suites)."""
    runs = results["suites"][suite_name]["runs"]
    first = _reports(runs["SFT"])[0]
    multi_stage = any(task_spec(name).num_stages > 1 for name in first["per_task"])
    if not multi_stage or not all("stage_score" in t for t in first["per_task"].values()):
        return []
    tasks = list(first["per_task"])
    lines = ["| task | " + " | ".join(METHODS) + " |", "|---|" + "---|" * len(METHODS)]
    for task in [*tasks, None]:
        cells = []
        for method in METHODS:
            reports = _reports(runs[method])
            values = (
                [r["per_task"][task]["stage_score"] for r in reports]
                if task
                else [np.mean([t["stage_score"] for t in r["per_task"].values()]) for r in reports]
            )
            cells.append(f"{np.mean(values):.3f}")
        lines.append(f"| {task or '**average**'} | " + " | ".join(cells) + " |")
    return lines


def plot_methods(results: dict, methods: tuple[str, ...], path: Path, title: str) -> None:
    plt = pyplot()
    suites = list(results["suites"])
    fig, ax = plt.subplots(figsize=(2.2 + 1.6 * len(methods) * len(suites) / 2, 4))
    width = 0.8 / len(methods)
    for m, method in enumerate(methods):
        stats = [pooled_average(_reports(results["suites"][s]["runs"][method])) for s in suites]
        rates = [r for r, _, _ in stats]
        errors = np.array([[r - lo, hi - r] for r, lo, hi in stats]).T
        ax.bar(
            np.arange(len(suites)) + (m - (len(methods) - 1) / 2) * width,
            rates,
            width,
            yerr=errors,
            capsize=3,
            label=method,
        )
    ax.set_xticks(range(len(suites)), suites)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("success on evaluation seeds (95% CI)")
    ax.set_title(title)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_online_curves(results: dict, path: Path, window: int = 100) -> None:
    """Rolling autonomous success of each online method's fleet over env steps (one line per seed)."""
    plt = pyplot()
    suites = list(results["suites"])
    fig, axes = plt.subplots(1, len(suites), figsize=(6 * len(suites), 4), squeeze=False)
    colors = {"HG-DAgger": "#DD8452", "RECAP": "#55A868", "LWD online": "#C44E52"}
    for ax, suite_name in zip(axes[0], suites):
        for name, method in ONLINE_METHODS.items():
            for k, run in enumerate(_run_dirs(results["suites"][suite_name])):
                episodes = load_episodes(run / method)
                if not episodes:
                    continue
                autonomous = np.array([e["success"] and e["interventions"] == 0 for e in episodes])
                ax.plot(
                    [e["env_steps_total"] for e in episodes],
                    rolling_mean(autonomous, window),
                    color=colors[name],
                    lw=1.2,
                    alpha=0.8,
                    label=name if k == 0 else None,
                )
        ax.set_title(f"{suite_name}: deployed policy while learning")
        ax.set_xlabel("online env steps")
        ax.set_ylabel(f"autonomous success (rolling {window} episodes)")
        ax.set_ylim(0, 1.02)
        ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def online_runs_table(results: dict) -> list[str]:
    """What each online method got from its budget, mean over seeds: learner updates while the
    robots ran (the same for all when paced; RECAP's offline stage not counted) and the wall
    time the deploy took."""
    lines = [
        "| suite | method | env steps | learner updates online | updates per 1k env steps | deploy minutes |",
        "|---|---|---|---|---|---|",
    ]
    for suite_name, suite_results in results["suites"].items():
        for name, method in ONLINE_METHODS.items():
            paths = [run / method / "summary.json" for run in _run_dirs(suite_results)]
            summaries = [json.loads(p.read_text()) for p in paths if p.exists()]
            if not summaries:
                continue
            env_steps = float(np.mean([s["env_steps"] for s in summaries]))
            rate = float(np.mean([s["learner_updates_per_1k_env_steps"] for s in summaries]))
            minutes = float(np.mean([s.get("online_wall_seconds", s["wall_seconds"]) for s in summaries])) / 60
            lines.append(
                f"| {suite_name} | {name} | {env_steps:,.0f} | {rate * env_steps / 1000:,.0f} | {rate:.1f} | "
                f"{minutes:.1f} |"
            )
    return lines


def _finished_seeds(results: dict) -> str:
    """Per suite, the training seeds whose every stage finished (a run may still be going)."""
    return "; ".join(f"{name} {', '.join(r['seconds']) or 'none'}" for name, r in results["suites"].items())


def write_tables(work: Path, results: dict, presets: dict[str, Preset]) -> Path:
    config = results["config"]
    lines = [
        f"# lwd experiment: preset `{config['preset']}`",
        "",
        f"Training seeds with results: {_finished_seeds(results)} (asked for {', '.join(map(str, config['seeds']))}); "
        "evaluation on evaluation seeds (disjoint from training), no operator. Cells: mean success over seeds, "
        "Wilson 95% interval of all pooled episodes.",
        "",
    ]
    lines += [
        f"- merged: training seeds {', '.join(map(str, source['seeds']))} from `{source['workdir']}`"
        for source in results.get("merged_from", [])
    ]
    if config.get("starts_from"):
        lines.append(
            "- SFT, LWD offline and its ablations (and their evaluations) from `"
            + "`, `".join(config["starts_from"])
            + "`; the online methods deployed here"
        )
    if config.get("operator"):
        lines.append("- operator of every fleet: " + ", ".join(f"{k} {v}" for k, v in config["operator"].items()))
    for suite_name, preset in presets.items():
        if suite_name in results["suites"]:
            lines.append(
                f"- `{suite_name}`: {preset.eval_episodes_per_task} evaluation episodes per task and seed; "
                f"online budget {preset.online_env_steps:,} env steps per method; offline RL "
                f"{preset.offline_steps:,} learner steps with n = {preset.offline_n_step} chunk backups; "
                + (
                    f"online learners paced at {preset.updates_per_1k_env_steps:g} updates per 1,000 env steps."
                    if preset.updates_per_1k_env_steps
                    else "online learners unpaced (each makes the updates its speed allows)."
                )
            )
    lines += ["", "## Comparison", "", *summary_table(results, METHODS), "", "![methods](methods.png)", ""]
    lines += [
        "### LWD online against each method, paired",
        "",
        "Cells: mean difference in success over the same evaluation episodes (all seeds pooled) with its "
        "95% interval, episodes gained / lost, exact sign-test p. The average over suites is the mean of the "
        "suites' differences (intervals combined as independent). Best baseline: the best of "
        + ", ".join(BASELINES)
        + " on each suite.",
        "",
        *paired_suites_table(results),
        "",
        "The same differences with the training seed as the unit: the mean of each seed's paired difference, "
        "the Student-t 95% interval over seeds (wider whenever seeds differ more than their episodes explain), "
        "and each seed's value. The average over suites averages seed k's suite differences, then takes the "
        "interval over seeds (over the seeds every suite ran, where the suites ran different ones).",
        "",
        *seed_level_table(results),
        "",
    ]
    plot_methods(results, METHODS, work / "methods.png", "SFT vs baselines vs LWD")
    for suite_name, suite_results in results["suites"].items():
        runs = [(m, p) for m in METHODS for p in suite_results["runs"][m]]
        reports = load_runs(runs)
        lines += [f"### {suite_name}: per task", "", compare_table(reports), ""]
        stage_scores = stage_score_table(results, suite_name)
        if stage_scores:
            lines += [
                f"### {suite_name}: stage score (fraction of stages completed, mean over seeds)",
                "",
                *stage_scores,
                "",
            ]
        if has_multi_stage_outcomes(reports):
            lines += [f"### {suite_name}: failed episodes by stage (seeds pooled)", "", failed_stage_table(reports), ""]
    lines += [
        "## Ablations (offline RL, SPEC §4.6)",
        "",
        *summary_table(results, ABLATIONS),
        "",
        "![ablations](ablations.png)",
        "",
    ]
    plot_methods(results, ABLATIONS, work / "ablations.png", "DIVL vs expectile V; adaptive vs constant τ")
    plot_online_curves(results, work / "online.png")
    lines += [
        "## Online runs",
        "",
        "![online](online.png)",
        "",
        *online_runs_table(results),
        "",
        "## Wall time (minutes per suite and seed)",
        "",
        "| suite | seed | total | slowest stages |",
        "|---|---|---|---|",
    ]
    for suite_name, suite_results in results["suites"].items():
        for seed, seconds in suite_results["seconds"].items():
            slowest = sorted(((v, k) for k, v in seconds.items() if k != "total"), reverse=True)[:3]
            lines.append(
                f"| {suite_name} | {seed} | {seconds['total'] / 60:.1f} | "
                + ", ".join(f"{k} {v / 60:.1f}" for v, k in slowest)
                + " |"
            )
    path = work / "results.md"
    path.write_text("\n".join(lines) + "\n")
    return path
