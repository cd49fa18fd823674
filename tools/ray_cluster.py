"""A local multi-node Ray cluster on this machine, for tests and for trying `--fleet ray`.

Starts a head node and `--nodes - 1` more nodes (each its own raylet with `--cpus-per-node`
CPUs, as separate machines would be), runs COMMAND with RAY_ADDRESS pointing at the head (so
`ray.init("auto")` and `lwd deploy --fleet ray --ray-address auto` join it), and stops every
node when COMMAND ends. Run it in a private network namespace, where only loopback exists:
Ray binds the machine's interface address even when asked for 127.0.0.1.

    tools/netns-run .venv/bin/python tools/ray_cluster.py --nodes 3 --cpus-per-node 1 -- \\
        lwd deploy --fleet ray --ray-address auto --robots.workers 3 ...
    make ray-cluster            # the same with an interactive shell as COMMAND

The head node is the learner's: `--head-cpus 0` keeps robot actors off it (on a real cluster,
`ray start --head --num-cpus 0` on the GPU machine does the same).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time


def start_cluster(nodes: int, cpus_per_node: float, head_cpus: float | None = None):
    """A started `ray.cluster_utils.Cluster` of `nodes` nodes on loopback (the caller shuts it down)."""
    from ray.cluster_utils import Cluster

    head_args = {"num_cpus": cpus_per_node if head_cpus is None else head_cpus, "include_dashboard": False}
    cluster = Cluster(initialize_head=True, head_node_args=head_args)
    for _ in range(nodes - 1):
        cluster.add_node(num_cpus=cpus_per_node)
    return cluster


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=3, help="Ray nodes, the head included")
    parser.add_argument("--cpus-per-node", type=float, default=1.0, help="CPUs each node offers to actors")
    parser.add_argument("--head-cpus", type=float, default=None, help="CPUs of the head node (default: as the others)")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND [ARGS...] to run against the cluster")
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give a command after --, e.g. -- bash")
    began = time.time()
    cluster = start_cluster(args.nodes, args.cpus_per_node, args.head_cpus)
    try:
        print(
            f"ray_cluster: {args.nodes} nodes at {cluster.address} up in {time.time() - began:.1f} s",
            file=sys.stderr,
        )
        return subprocess.call(command, env={**os.environ, "RAY_ADDRESS": cluster.address})
    finally:
        cluster.shutdown()


if __name__ == "__main__":
    sys.exit(main())
