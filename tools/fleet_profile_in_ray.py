"""`tools/fleet_profile.py`, run once in this process and once inside a Ray worker process,
to tell what Ray's process costs from what its API and daemons cost (docs/benchmarks.md,
fleet section).

    tools/netns-run .venv/bin/python tools/fleet_profile_in_ray.py --checkpoint CKPT --episodes 300 [--renice]

Prints two JSON lines, `plain` and `ray`: the same worker loop on the same episodes (their
digests must agree), each with the bare replay of those episodes in the same process.
`--renice` runs the Ray task at niceness 0 (Ray starts its workers at 15; lowering it needs
the privilege to).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
from pathlib import Path

TOOLS = Path(__file__).resolve().parent


def profile(argv: list[str], renice: bool = False) -> dict:
    sys.path[:0] = [str(TOOLS), str(TOOLS.parent)]
    import fleet_profile

    if renice:
        os.setpriority(os.PRIO_PROCESS, 0, 0)
    sys.argv = ["fleet_profile.py", *argv]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        fleet_profile.main()
    figures = json.loads(out.getvalue().strip().splitlines()[-1])
    return {**figures, "niceness": os.getpriority(os.PRIO_PROCESS, 0), "threads": len(os.listdir("/proc/self/task"))}


def main() -> None:
    import ray

    argv = [a for a in sys.argv[1:] if a != "--renice"]
    renice = "--renice" in sys.argv
    print(json.dumps({"where": "plain", **profile(argv)}))
    ray.init(address="local", include_dashboard=False, logging_level="ERROR")
    try:
        in_ray = ray.get(ray.remote(num_cpus=1)(profile).remote(argv, renice))
    finally:
        ray.shutdown()
    print(json.dumps({"where": "ray", **in_ray}))


if __name__ == "__main__":
    main()
