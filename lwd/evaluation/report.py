"""The learning-while-deploying report: evaluation tables of every stage and plots of
the online run (success over env steps per task, intervention rate over time, policy
version timeline, latency histograms), as markdown + PNG."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from lwd.evaluation.compare import paired_difference
from lwd.evaluation.gate import validation_curve


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def rolling_mean(values: np.ndarray, window: int) -> np.ndarray:
    if len(values) == 0:
        return values
    cumulative = np.cumsum(np.insert(values.astype(np.float64), 0, 0.0))
    starts = np.maximum(np.arange(1, len(values) + 1) - window, 0)
    return (cumulative[1:] - cumulative[starts]) / (np.arange(1, len(values) + 1) - starts)


def load_episodes(run: Path) -> list[dict]:
    path = Path(run) / "episodes.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []
    return sorted(rows, key=lambda r: r["ended_at"])


def plot_success_over_env_steps(
    episodes: list[dict], path: Path, window: int = 30, validation: list[dict] | None = None
) -> None:
    """Rolling autonomous success per task, and (with a gate evaluator) the validation
    success of each scored version at the env steps it was published."""
    plt = pyplot()
    by_task = defaultdict(list)
    for row in episodes:
        by_task[row["task"]].append(row)
    fig, ax = plt.subplots(figsize=(9, 4.5))
    for task, rows in sorted(by_task.items()):
        autonomous = np.array([r["success"] and r["interventions"] == 0 for r in rows])
        ax.plot(
            [r["env_steps_total"] for r in rows], rolling_mean(autonomous, window), lw=1, label=task.removesuffix("-v3")
        )
    overall = np.array([r["success"] and r["interventions"] == 0 for r in episodes])
    ax.plot(
        [r["env_steps_total"] for r in episodes],
        rolling_mean(overall, window * max(len(by_task), 1)),
        "k",
        lw=2.5,
        label="all tasks",
    )
    scored = [row for row in validation or [] if row["env_steps"] is not None]
    if scored:
        ax.plot(
            [row["env_steps"] for row in scored],
            [row["success"] for row in scored],
            "o-",
            color="crimson",
            lw=2,
            ms=4,
            label="published versions, validation seeds, no operator",
        )
    ax.set_xlabel("online env steps")
    ax.set_ylabel(f"autonomous success (rolling {window} episodes)")
    ax.set_ylim(0, 1.02)
    ax.set_title("Deployed policy: success without operator help, per task")
    ax.legend(fontsize=7, ncol=2, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_interventions_over_time(episodes: list[dict], path: Path, window: int = 100) -> None:
    plt = pyplot()
    t0 = min(r["started_at"] for r in episodes)
    minutes = np.array([(r["ended_at"] - t0) / 60 for r in episodes])
    step_rate = np.array([r["interventions"] / r["steps"] for r in episodes])
    episode_rate = np.array([r["interventions"] > 0 for r in episodes])
    fig, ax = plt.subplots(figsize=(9, 3.5))
    ax.plot(minutes, rolling_mean(episode_rate, window), label="episodes with a takeover")
    ax.plot(minutes, rolling_mean(step_rate, window), label="steps driven by the operator")
    ax.set_xlabel("minutes since deployment started")
    ax.set_ylabel(f"rate (rolling {window} episodes)")
    ax.set_ylim(0, max(0.05, float(rolling_mean(episode_rate, window).max()) * 1.1))
    ax.set_title("Operator interventions over time")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_version_timeline(episodes: list[dict], history: list[dict], path: Path) -> None:
    plt = pyplot()
    t0 = min([r["started_at"] for r in episodes] + [h["published_at"] for h in history])
    robots = sorted({r["robot_id"] for r in episodes})
    fig, ax = plt.subplots(figsize=(9, 4))
    ax.step(
        [(h["published_at"] - t0) / 60 for h in history],
        [h["version"] for h in history],
        where="post",
        color="k",
        lw=2,
        label="published (registry)",
    )
    for index, robot in enumerate(robots):
        rows = [r for r in episodes if r["robot_id"] == robot]
        ax.plot(
            [(r["started_at"] - t0) / 60 for r in rows],
            [r["version"] for r in rows],
            ".",
            ms=3,
            alpha=0.6,
            label="episodes of each robot" if index == 0 else None,
        )
    ax.set_xlabel("minutes since deployment started")
    ax.set_ylabel("policy version")
    ax.set_title("Policy versions: publication and pickup at episode boundaries")
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_latencies(episodes: list[dict], path: Path) -> None:
    plt = pyplot()
    upload = [r["episode_to_learner_s"] for r in episodes if r.get("episode_to_learner_s") is not None]
    model = [r["model_to_robot_s"] for r in episodes if r.get("model_to_robot_s") is not None]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    for ax, values, title in ((axes[0], upload, "episode → learner"), (axes[1], model, "model → robot")):
        if values:
            ax.hist(values, bins=40, color="#4C72B0")
            for q, style in ((50, "--"), (99, ":")):
                ax.axvline(
                    np.percentile(values, q), color="k", ls=style, label=f"P{q} {np.percentile(values, q):.2f} s"
                )
            ax.legend()
        ax.set_title(title)
        ax.set_xlabel("seconds")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_stage_comparison(evals: dict[str, dict], path: Path) -> None:
    plt = pyplot()
    names = list(evals)
    tasks = list(next(iter(evals.values()))["per_task"])
    width = 0.8 / len(names)
    fig, ax = plt.subplots(figsize=(max(7, 0.9 * len(tasks)), 4))
    for k, name in enumerate(names):
        rates = [evals[name]["per_task"][t]["success"] for t in tasks]
        ax.bar(np.arange(len(tasks)) + k * width, rates, width, label=f"{name} ({evals[name]['average_success']:.3f})")
    ax.set_xticks(
        np.arange(len(tasks)) + width * (len(names) - 1) / 2,
        [t.removesuffix("-v3") for t in tasks],
        rotation=45,
        ha="right",
    )
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("success on evaluation seeds")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def comparison_table(evals: dict[str, dict]) -> list[str]:
    names = list(evals)
    tasks = list(next(iter(evals.values()))["per_task"])
    lines = ["| task | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for task in tasks:
        cells = []
        for name in names:
            v = evals[name]["per_task"][task]
            cells.append(f"{v['success']:.2f} ({v['ci95'][0]:.2f}–{v['ci95'][1]:.2f})")
        lines.append(f"| {task} | " + " | ".join(cells) + " |")
    lines.append(
        "| **average** | "
        + " | ".join(
            f"**{evals[n]['average_success']:.3f}** "
            f"({evals[n]['average_ci95'][0]:.2f}–{evals[n]['average_ci95'][1]:.2f})"
            for n in names
        )
        + " |"
    )
    lines.append(
        "| cycle time (steps) | " + " | ".join(f"{evals[n]['average_cycle_time_steps']:.1f}" for n in names) + " |"
    )
    return lines


def paired_table(evals: dict[str, dict]) -> list[str]:
    """Each later stage against the first, episode by episode (same evaluation seeds)."""
    names = list(evals)
    baseline = names[0]
    lines = [
        f"Paired with {baseline} on the same {len(evals[baseline]['outcomes'])} evaluation episodes:",
        "",
        f"| | difference (95% CI) | solved only by it / only by {baseline} | sign test p |",
        "|---|---|---|---|",
    ]
    for name in names[1:]:
        d = paired_difference(evals[baseline], evals[name])
        lines.append(
            f"| {name} | {d.mean:+.3f} ({d.ci95[0]:+.3f} … {d.ci95[1]:+.3f}) | {d.gains} / {d.losses} | "
            f"{d.sign_test_p:.2g} |"
        )
    return lines


def _decisions_text(counts: dict | None) -> str:
    return ", ".join(f"{n} {kind}" for kind, n in sorted(counts.items())) if counts else "none (ungated)"


def _curve_text(validation: list[dict]) -> str:
    if not validation:
        return "not scored (no `--gate.mode evaluate`)"
    first, last = validation[0], validation[-1]
    span = f"v{first['version']} {first['success']:.3f} → v{last['version']} {last['success']:.3f}"
    return f"{span} ({len(validation)} versions)"


def write_report(
    out: Path,
    evals: dict[str, dict],
    deploy_run: Path,
    deploy_summary: dict,
    title: str,
    stage_seconds: dict[str, float] | None = None,
    notes: list[str] | None = None,
) -> Path:
    """Write `<out>/report.md` and its PNGs; returns the markdown path."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    episodes = load_episodes(deploy_run)
    history_path = Path(deploy_run) / "registry" / "history.jsonl"
    history = [json.loads(line) for line in history_path.read_text().splitlines()] if history_path.exists() else []
    lines = [f"# {title}", ""]
    lines += notes or []
    lines += ["", "## Evaluation (evaluation seeds, no operator)", ""]
    episodes_per_task = next(iter(next(iter(evals.values()))["per_task"].values()))["episodes"]
    lines += [f"Success with Wilson 95% intervals, {episodes_per_task} episodes per task.", ""]
    lines += comparison_table(evals)
    if len(evals) > 1:
        lines += [""] + paired_table(evals)
    plot_stage_comparison(evals, out / "stages.png")
    lines += ["", "![stages](stages.png)", ""]
    if episodes:
        validation = validation_curve(deploy_run)
        plot_success_over_env_steps(episodes, out / "success_over_env_steps.png", validation=validation)
        plot_interventions_over_time(episodes, out / "interventions.png")
        plot_version_timeline(episodes, history, out / "versions.png")
        plot_latencies(episodes, out / "latency.png")
        s = deploy_summary
        lines += [
            "## Learning while deploying",
            "",
            "| measure | value |",
            "|---|---|",
            f"| online env steps / episodes | {s['env_steps']:,} / {s['episodes']:,} |",
            f"| learner steps / versions published | {s['learner_steps']:,} / {s['versions_published']} |",
            f"| wall time | {s['wall_seconds'] / 60:.1f} min |",
            f"| env steps/s / learner updates/s (whole run, side by side) | {s['env_steps_per_s']:.0f} / "
            f"{s['learner_updates_per_s']:.1f} |",
            f"| rolling autonomous success / with operator (last {20} per task) | "
            f"{s.get('fleet/autonomous_success', float('nan')):.3f} / {s.get('fleet/success', float('nan')):.3f} |",
            f"| intervention rate (steps) | {s.get('fleet/intervention_rate', float('nan')):.3f} |",
            f"| episode → learner latency P50 / P99 | {s.get('latency/episode_to_learner_p50_s', float('nan')):.2f} / "
            f"{s.get('latency/episode_to_learner_p99_s', float('nan')):.2f} s |",
            f"| model → robot latency P50 / P99 | {s.get('latency/model_to_robot_p50_s', float('nan')):.2f} / "
            f"{s.get('latency/model_to_robot_p99_s', float('nan')):.2f} s |",
            f"| worker restarts | {s['worker_restarts']} |",
            f"| gate decisions | {_decisions_text(s.get('gate_decisions'))} |",
            f"| validation success of scored versions (first → last) | {_curve_text(validation)} |",
            "",
            "![success over env steps](success_over_env_steps.png)",
            "",
            "![interventions](interventions.png)",
            "",
            "![versions](versions.png)",
            "",
            "![latency](latency.png)",
            "",
        ]
    if stage_seconds:
        lines += ["## Wall time per stage", "", "| stage | seconds |", "|---|---|"]
        lines += [f"| {name} | {seconds:.0f} |" for name, seconds in stage_seconds.items()]
        lines += [f"| **total** | **{sum(stage_seconds.values()):.0f}** |", ""]
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path
