"""Would any chunk the policy can sample free it where it has stopped? (issue 18, diagnostic)

Almost every failed `lh` episode is one whose policy stopped short and stayed stopped:
`lwd eval`'s unstick rule fires ~25 times in it, each time a random chunk at s = 1 that does
not free it (docs/benchmarks.md, "Where `lh` episodes fail"). This scores a policy as `lwd
eval` does, except that where the rule fires the simulator oracle of `lwd bench ceiling`
(`OracleScorer`: restore the state, roll each candidate out for `--lookahead` steps, then the
plain policy) picks among N resampled chunks. Compare with `lwd eval --unstick.candidates N
--critic CKPT` (the critic's pick) and plain `lwd eval` on the same episodes via `lwd compare`.

    python tools/stopped_oracle.py --checkpoint CKPT --suite lh --split validation \\
        --episodes-per-task 20 --seed K --candidates 4 --out runs/stopped_oracle_sK

Runs in one process (the oracle's scratch simulators live beside the episodes). `--candidates 1`
runs the plain rule, for pairing with the same `--seed` (the noise seed decides the resampled chunks).
"""

from __future__ import annotations

import argparse
import time
from dataclasses import asdict, replace
from pathlib import Path

from lwd.envs import SEEDS, suite
from lwd.evaluation.ceiling import OracleScorer
from lwd.evaluation.evaluate import EvalConfig, episodes_report, run_policy_episodes, write_report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--suite", default="lh")
    parser.add_argument("--split", default="validation", choices=("validation", "eval"))
    parser.add_argument("--episodes-per-task", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0, help="the policy's noise seed, as lwd eval --seed")
    parser.add_argument(
        "--candidates", type=int, default=4, help="chunks drawn where the policy has stopped (1: lwd eval as is)"
    )
    parser.add_argument("--max-live", type=int, default=40, help="episodes stepped together (one simulator each)")
    parser.add_argument("--lookahead", type=int, default=40, help="oracle look-ahead in env steps")
    parser.add_argument("--out", required=True)
    a = parser.parse_args()
    defaults = EvalConfig()
    unstick = replace(defaults.unstick, candidates=a.candidates)
    jobs = [(t, SEEDS.held_out(a.split, k)) for t in suite(a.suite).task_names for k in range(a.episodes_per_task)]
    oracles: list[OracleScorer] = []

    def oracle(policy, encoder) -> OracleScorer:
        # The continuation runs the plain policy (s = 0), as `lwd eval` scores it between resamples.
        oracles.append(OracleScorer(policy, encoder, a.lookahead, noise_seed=a.seed, continuation_noise_scale=0.0))
        return oracles[-1]

    began = time.perf_counter()
    outcomes = run_policy_episodes(
        a.checkpoint,
        jobs,
        defaults.execute_steps,
        a.seed,
        noise_scale=defaults.noise_scale,
        max_live=a.max_live,
        unstick=unstick,
        unstick_picker=oracle,
    )
    for scorer in oracles:
        scorer.close()
    summary = episodes_report(outcomes, began)
    summary.update(
        {
            "checkpoint": a.checkpoint,
            "split": a.split,
            # what `lwd compare` checks before pairing: the scoring's temperature and unstick rule
            "config": {"noise_scale": defaults.noise_scale, "unstick": asdict(unstick), "seed": a.seed},
            "lookahead_env_steps": sum(scorer.lookahead_steps for scorer in oracles),
            "oracle": {"candidates": a.candidates, "lookahead": a.lookahead},
        }
    )
    title = f"{a.checkpoint} on {a.suite} ({a.split} seeds, the oracle's pick of {a.candidates} where it stopped)"
    write_report(summary, Path(a.out), title)
    resampled = summary["resampled_chunks"]
    print(f"success {summary['average_success']:.3f}, {resampled} resampled chunks; report in {a.out}")


if __name__ == "__main__":
    main()
