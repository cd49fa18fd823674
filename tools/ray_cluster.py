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

`--node-cores 0 1` pins each node (its raylet and every worker it starts) to its own cores:
here the head to core 0, the second node to core 1, and `--command-cores 1` runs COMMAND on
core 1. Nodes then share no core, as separate machines would not, so a robot node's figures
(`lwd bench fleet --fleet ray --workers 1`, whose bare replay runs on the command's cores)
are not mixed with the learner node's ingest and daemons (docs/benchmarks.md, fleet section).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator


def start_cluster(
    nodes: int, cpus_per_node: float, head_cpus: float | None = None, node_cores: list[set[int]] | None = None
):
    """A started `ray.cluster_utils.Cluster` of `nodes` nodes on loopback (the caller shuts it
    down). `node_cores`: per node, the cores its processes may run on (None: any)."""
    from ray.cluster_utils import Cluster

    if node_cores is not None and len(node_cores) != nodes:
        raise ValueError(f"{len(node_cores)} core sets for {nodes} nodes")
    head_args = {"num_cpus": cpus_per_node if head_cpus is None else head_cpus, "include_dashboard": False}
    with pinned_to(node_cores[0] if node_cores else None):
        cluster = Cluster(initialize_head=True, head_node_args=head_args)
    try:
        for node in range(1, nodes):
            with pinned_to(node_cores[node] if node_cores else None):
                cluster.add_node(num_cpus=cpus_per_node)
    except BaseException:
        cluster.shutdown()
        raise
    return cluster


@contextlib.contextmanager
def pinned_to(cores: set[int] | None) -> Iterator[None]:
    """Processes started inside run on `cores` (None: where this one may). A process inherits
    its parent's affinity, and the workers a raylet starts inherit the raylet's. Only this
    thread is pinned and restored: threads started inside (Ray's gRPC clients) keep `cores`."""
    everywhere = os.sched_getaffinity(0)
    if cores is not None:
        os.sched_setaffinity(0, cores)
    try:
        yield
    finally:
        os.sched_setaffinity(0, everywhere)


def core_set(text: str) -> set[int]:
    """A core list as `taskset -c` writes it ("1", "0,2", "0-3") -> the set of core numbers,
    each one this process may run on."""
    allowed = os.sched_getaffinity(0)
    cores: set[int] = set()
    try:
        for part in text.split(","):
            first, _, last = part.partition("-")
            span = range(int(first), int(last or first) + 1)
            if not span:
                raise ValueError(f"{part}: the range is empty")
            cores |= set(span)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"{text!r} is not a core list such as 1, 0,2 or 0-3 ({err})") from None
    if not cores <= allowed:
        outside = sorted(cores - allowed)
        raise argparse.ArgumentTypeError(f"cores {outside} are not among this process's {sorted(allowed)}")
    return cores


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=3, help="Ray nodes, the head included")
    parser.add_argument("--cpus-per-node", type=float, default=1.0, help="CPUs each node offers to actors")
    parser.add_argument("--head-cpus", type=float, default=None, help="CPUs of the head node (default: as the others)")
    parser.add_argument(
        "--node-cores", nargs="+", type=core_set, default=None, help="per node, its cores: e.g. 0 1 or 0 1-3"
    )
    parser.add_argument("--command-cores", type=core_set, default=None, help="the cores COMMAND runs on")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND [ARGS...] to run against the cluster")
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give a command after --, e.g. -- bash")
    if args.node_cores is not None and len(args.node_cores) != args.nodes:
        parser.error(f"--node-cores names {len(args.node_cores)} core sets for --nodes {args.nodes}")
    began = time.time()
    cluster = start_cluster(args.nodes, args.cpus_per_node, args.head_cpus, args.node_cores)
    try:
        print(
            f"ray_cluster: {args.nodes} nodes at {cluster.address} up in {time.time() - began:.1f} s",
            file=sys.stderr,
        )
        with pinned_to(args.command_cores):
            child = subprocess.Popen(command, env={**os.environ, "RAY_ADDRESS": cluster.address})
        return child.wait()
    finally:
        cluster.shutdown()


if __name__ == "__main__":
    sys.exit(main())
