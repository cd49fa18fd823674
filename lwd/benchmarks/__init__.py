"""The benchmarks behind `lwd bench` (figures in docs/benchmarks.md), one module each:

    sim       bare Meta-World vs expert collection into the store, same cores (`sim`)
    policy    chunk latency at batch 1 and 16, SFT and learner updates/s (`policy`)
    fleet     fleet env steps/s vs the bare simulator on the same episodes (`fleet`)
    operator  how often the deployment operator takes over, and whether it had to (`operator`)
    gates     many operator gates scored on the same policy-alone episodes (`gates`)
    render, frames
              camera rendering speed and how to store frames (`cameras`)

Benchmarks sit above every other layer but the CLI: they drive environments, stores,
policies, learners and fleets, and nothing below imports them.
"""

from __future__ import annotations

import json
from pathlib import Path


def written_report(report: dict, path: str) -> dict:
    """Write a benchmark's JSON report to `path` (parents created) and return it."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    return report
