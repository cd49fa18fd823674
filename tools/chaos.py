"""Chaos test of `lwd deploy`: kill robot workers and the learner at random moments, resume,
and check that nothing acknowledged is lost, nothing is committed twice and no process is
left behind.

    .venv/bin/python tools/chaos.py --runs 20 --workdir runs/chaos

Everything runs on this machine: local files and processes, no network. Each run starts
`lwd deploy` on a fresh run directory (the smoke demo's offline policy and store, built
once in WORKDIR/base), then until its kill budget is spent: waits a random 1-8 s and
`kill -9`s either a random robot worker (the learner restarts it) or the learner itself
(then starts the same command again, as an operator would). Once the budget is spent it
lets the run finish. Per run it checks:

  finished      the last invocation exited 0 and spent the env-step budget
  acknowledged  every episode a robot was given a receipt for (acknowledged_episodes.tsv)
                is in the store
  duplicates    no robot's seq committed twice, no episode content committed under two
                ids, no gap in a robot's sequence (gaps)
  damaged       `store check`: no catalogued file missing or corrupt
  leftovers     processes of the run still alive 10 s after it ended (found by an
                environment tag every process of the run inherits)

and writes one JSON line per run and a summary to WORKDIR/chaos.jsonl / chaos.md. Bounded:
every invocation has a timeout, every run a kill budget.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

TAG = "LWD_CHAOS_RUN"


def tagged_processes(tag: str) -> list[int]:
    """Live processes whose environment carries TAG=tag (children inherit it)."""
    found = []
    needle = f"{TAG}={tag}".encode()
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            if needle in environ.read_bytes().split(b"\0") and alive(int(environ.parent.name)):
                found.append(int(environ.parent.name))
        except OSError:
            continue
    return found


def alive(pid: int) -> bool:
    """Whether `pid` runs; a zombie has exited, only its parent's wait is missing."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def children(pid: int, cmdline_contains: bytes = b"") -> list[int]:
    """Every process whose parent is `pid` (from /proc), optionally only those whose
    command line contains `cmdline_contains`."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            if parent == pid and cmdline_contains in (stat.parent / "cmdline").read_bytes():
                found.append(int(stat.parent.name))
        except OSError:
            continue
    return found


def robot_workers(learner_pid: int) -> list[int]:
    """The learner's robot worker processes (not multiprocessing's resource tracker)."""
    return children(learner_pid, b"spawn_main")


def build_base(workdir: Path) -> tuple[Path, Path]:
    """The smoke demo's offline-RL checkpoint and offline store (built once, reused)."""
    base = workdir / "base"
    offline = base / "offline" / "final"
    if not (offline / "manifest.json").exists():
        subprocess.run(
            [sys.executable, "-m", "lwd.cli", "demo", "--preset", "smoke", "--workdir", str(base), "--workers", "1"],
            check=True,
            stdout=subprocess.DEVNULL,
        )
    return offline, base / "store"


def deploy_command(args, checkpoint: Path, store: Path, out: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "lwd.cli",
        "deploy",
        "--checkpoint",
        str(checkpoint),
        "--offline-store",
        str(store),
        "--out",
        str(out),
        "--robots.tasks",
        "reach-v3",
        "drawer-close-v3",
        "--robots.workers",
        str(args.workers),
        "--robots.robots-per-worker",
        str(args.robots_per_worker),
        "--env-steps",
        str(args.env_steps),
        "--n-sync",
        "5",
        "--batch-size",
        "32",
        "--lwd.qam-batch",
        "8",
        "--refresh-seconds",
        "0.2",
        "--checkpoint-every",
        "20",
        "--seed",
        "0",
        "--no-progress",
        "--no-tensorboard",
    ]


def one_run(index: int, args, checkpoint: Path, store: Path) -> dict:
    rng = random.Random(args.seed * 1_000 + index)
    out = Path(args.workdir) / f"run-{index:03d}"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    tag = f"{os.getpid()}-{index}"
    env = {**os.environ, TAG: tag}
    kills = {"worker": 0, "learner": 0}
    budget = rng.randint(1, args.max_kills)
    invocations, returncode, started = 0, None, time.time()
    with open(out / "chaos.log", "ab") as log:
        while returncode != 0 and invocations < budget + 3 and time.time() - started < args.run_timeout:
            invocations += 1
            learner = subprocess.Popen(deploy_command(args, checkpoint, store, out), stdout=log, stderr=log, env=env)
            while learner.poll() is None and sum(kills.values()) < budget:
                time.sleep(rng.uniform(1.0, 8.0))
                if learner.poll() is not None:
                    break
                workers = robot_workers(learner.pid)
                if rng.random() < args.learner_share or not workers:
                    learner.kill()
                    kills["learner"] += 1
                else:
                    os.kill(rng.choice(workers), signal.SIGKILL)
                    kills["worker"] += 1
            try:
                returncode = learner.wait(timeout=max(1.0, args.run_timeout - (time.time() - started)))
            except subprocess.TimeoutExpired:
                learner.kill()
                returncode = learner.wait()
    time.sleep(10)  # what is still alive now was left behind
    leftovers = tagged_processes(tag)
    for pid in leftovers:
        os.kill(pid, signal.SIGKILL)
    return {
        "run": index,
        "kills": kills,
        "invocations": invocations,
        "returncode": returncode,
        "seconds": round(time.time() - started, 1),
        "leftover_processes": len(leftovers),
        **audit(out, args),
    }


def audit(out: Path, args) -> dict:
    from lwd.data.store import EpisodeStore

    summary = json.loads((out / "summary.json").read_text()) if (out / "summary.json").exists() else {}
    finished = summary.get("reason") == "budget" and summary.get("env_steps", 0) >= args.env_steps
    if not (out / "online_store" / "catalogue.sqlite").exists():
        return {
            "finished": finished,
            "acknowledged": 0,
            "present": 0,
            "acknowledged_missing": 0,
            "duplicates": 0,
            "gaps": 0,
            "damaged": 0,
        }
    store = EpisodeStore(out / "online_store", create=False)
    records = store.records()
    present = {record.episode_id for record in records}
    ack_path = out / "acknowledged_episodes.tsv"
    acknowledged = (
        {line.split("\t")[0] for line in ack_path.read_text().splitlines() if line} if ack_path.exists() else set()
    )
    seqs = defaultdict(list)
    for record in records:
        seqs[record.robot_id].append(record.seq)
    gaps = sum(sorted(s) != list(range(len(s))) for s in seqs.values())
    # Twice = one robot's seq committed twice, or one episode's content committed under two ids.
    duplicates = (len(records) - len({(r.robot_id, r.seq) for r in records})) + (
        len(records) - len({r.digest for r in records})
    )
    report = store.check()
    orphans = len(report.orphans)  # files of commits killed before their catalogue row: invisible
    return {
        "finished": finished,
        "acknowledged": len(acknowledged),
        "present": len(present),
        "acknowledged_missing": len(acknowledged - present),
        "duplicates": duplicates,
        "gaps": gaps,
        "orphan_files": orphans,
        "damaged": len(report.missing) + len(report.corrupt),
        "env_steps": summary.get("env_steps"),
    }


def write_summary(rows: list[dict], path: Path, command: str) -> None:
    total = {
        key: sum(row.get(key, 0) or 0 for row in rows)
        for key in (
            "acknowledged",
            "present",
            "acknowledged_missing",
            "duplicates",
            "gaps",
            "damaged",
            "leftover_processes",
            "orphan_files",
        )
    }
    lines = [
        f"`{command}` ({time.strftime('%Y-%m-%d')}, {os.uname().nodename})",
        "",
        f"- runs finished: {sum(row['finished'] for row in rows)} / {len(rows)}",
        (
            f"- kills: {sum(row['kills']['worker'] for row in rows)} robot workers, "
            f"{sum(row['kills']['learner'] for row in rows)} learners"
        ),
        (
            f"- episodes acknowledged {total['acknowledged']}, present {total['present']}, "
            f"acknowledged but missing {total['acknowledged_missing']}"
        ),
        (
            f"- duplicates {total['duplicates']}, sequence gaps {total['gaps']}, damaged files {total['damaged']}, "
            f"uncommitted files left by killed commits {total['orphan_files']}"
        ),
        f"- processes left behind: {total['leftover_processes']}",
        "",
        (
            "| run | worker kills | learner kills | invocations | finished | acknowledged | present | missing | "
            "duplicates | leftovers | seconds |"
        ),
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['run']} | {row['kills']['worker']} | {row['kills']['learner']} | {row['invocations']} | "
            f"{'yes' if row['finished'] else 'NO'} | {row['acknowledged']} | {row['present']} | "
            f"{row['acknowledged_missing']} | {row['duplicates']} | {row['leftover_processes']} | "
            f"{row['seconds']} |"
        )
    path.write_text("\n".join(lines) + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=20, help="independent chaos runs")
    parser.add_argument("--workdir", default="runs/chaos", help="base checkpoint, run directories and the tally")
    parser.add_argument("--env-steps", type=int, default=12_000, help="online env-step budget of each run")
    parser.add_argument("--workers", type=int, default=2, help="robot worker processes")
    parser.add_argument("--robots-per-worker", type=int, default=2, help="simulated robots per worker")
    parser.add_argument("--max-kills", type=int, default=6, help="each run kills 1..this many processes")
    parser.add_argument("--learner-share", type=float, default=0.4, help="probability a kill hits the learner")
    parser.add_argument("--run-timeout", type=float, default=600.0, help="seconds a run may take in all")
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill schedule")
    args = parser.parse_args()
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    checkpoint, store = build_base(workdir)
    rows = []
    with open(workdir / "chaos.jsonl", "w") as tally:
        for index in range(args.runs):
            row = one_run(index, args, checkpoint, store)
            rows.append(row)
            tally.write(json.dumps(row) + "\n")
            tally.flush()
            print(json.dumps(row), flush=True)
    write_summary(rows, workdir / "chaos.md", "python tools/chaos.py " + " ".join(sys.argv[1:]))
    print((workdir / "chaos.md").read_text())
    failed = [
        row
        for row in rows
        if not row["finished"]
        or row["acknowledged_missing"]
        or row["duplicates"]
        or row["gaps"]
        or row["damaged"]
        or row["leftover_processes"]
    ]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
