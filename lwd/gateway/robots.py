"""`lwd robot`: simulated robots that reach the learner only through a gateway.

One process runs its share of the fleet plan (`--robots.*`, the same plan `lwd deploy`
uses: robot ids, tasks, seeds, operator) with the same `RobotWorker` as the local fleet;
only the transport differs: episodes go through a durable spool to the gateway
(`RemoteEpisodeSink`), policies come from it (`RemotePolicySource`), and the learner's
hold (pacing) is read from `GET /v1/fleet/control` at episode boundaries. SIGTERM or
Ctrl-C stops it after the robots finish their episodes and the spool has drained (or
`--flush-seconds` passed; what is left uploads at the next start).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from lwd.configargs import documented
from lwd.fleet.worker import EXIT_LEASE_REFUSED, FleetConfig, robot_specs

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RobotProcessConfig:
    gateway: str = documented("http://127.0.0.1:8470", "the gateway's URL (https:// with TLS)")
    tokens: str = documented(
        "robot_tokens.json", "JSON file {robot_id: token} (`lwd gateway token add`) with a token for each robot here"
    )
    worker: int = documented(
        0, "which of the plan's --robots.workers processes this is: it runs robots worker, worker + workers, …"
    )
    spool: str = documented("runs/robot/spool", "durable upload spool: episodes wait here until the gateway has them")
    policy_cache: str = documented("runs/robot/policies", "verified policy versions downloaded from the gateway")
    log_dir: str = documented("", "also write robots/worker-<i>.json status and upload logs here ('' = no)")
    seed: int = documented(0, "seed of the robots' policy noise and operators (as `lwd deploy --seed`)")
    ca_file: str = documented("", "CA bundle that signs the gateway's TLS certificate ('' = the system's)")
    flush_seconds: float = documented(120.0, "on stop, wait this long for the spool to drain to the gateway")
    control_seconds: float = documented(0.5, "how often to ask the gateway whether the fleet is held")
    parent_pid: int = documented(0, "exit at once when this process dies (set by `lwd deploy --fleet gateway`)")
    ready_file: str = documented(
        "", "write this process's pid here once SIGTERM stops it cleanly; a supervisor waits for it ('' = none)"
    )
    robots: FleetConfig = documented(FleetConfig(), "the fleet plan: suite, tasks, workers × robots, operator")


class HoldPoller:
    """`should_hold()` for the worker: asks the gateway at most every `seconds`; while the
    gateway is unreachable, keeps the last answer (robots keep working, or keep waiting)."""

    def __init__(self, client, seconds: float):
        self.client, self.seconds = client, seconds
        self.holding, self.asked_at = False, 0.0

    def __call__(self) -> bool:
        from lwd.client.http import GatewayError

        now = time.monotonic()
        if now - self.asked_at >= self.seconds:
            self.asked_at = now
            try:
                self.holding = bool(self.client.fleet_control()["hold"])
            except GatewayError as err:
                log.warning("fleet control unreachable (%s); holding=%s as before", err, self.holding)
        return self.holding


def run_robots(config: RobotProcessConfig) -> int:
    """Run this process's robots until SIGTERM/Ctrl-C; returns the exit code."""
    stop = []  # first: a SIGTERM during the slow imports below must still flush the spool
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.append(True))
    if config.ready_file:
        Path(config.ready_file).write_text(str(os.getpid()))
    import torch

    from lwd.client.http import GatewayClient
    from lwd.client.policy import RemotePolicySource
    from lwd.client.spool import RemoteEpisodeSink
    from lwd.data.lease import RobotLeaseError
    from lwd.fleet.worker import RobotWorker, die_with_parent

    if config.parent_pid:
        die_with_parent(config.parent_pid)
    specs = robot_specs(config.robots)[config.worker :: config.robots.workers]
    if not specs:
        raise ValueError(f"worker {config.worker} has no robots in a plan of {config.robots.workers} workers")
    tokens = json.loads(Path(config.tokens).read_text())
    missing = [s.robot_id for s in specs if s.robot_id not in tokens]
    if missing:
        raise ValueError(f"{config.tokens} has no token for {', '.join(missing)}")
    mine = {s.robot_id: tokens[s.robot_id] for s in specs}
    verify = config.ca_file or True
    torch.set_num_threads(1)
    sink = RemoteEpisodeSink(config.gateway, mine, config.spool, verify=verify)
    source = RemotePolicySource(config.gateway, next(iter(mine.values())), config.policy_cache, verify=verify)
    control = GatewayClient(config.gateway, next(iter(mine.values())), verify=verify)
    try:
        try:
            worker = RobotWorker(
                config.worker,
                specs,
                config.robots,
                sink,
                source,
                config.log_dir or None,
                lease_wait_seconds=10.0,
                seed=config.seed,
            )
        except RobotLeaseError as err:
            log.error("refused: %s", err)
            return EXIT_LEASE_REFUSED
        worker.run(lambda: bool(stop), HoldPoller(control, config.control_seconds))
        worker.release()
    finally:
        drained = sink.flush(config.flush_seconds)
        sink.close()
        control.close()
        source.close()
    if not drained:
        log.warning("stopped with episodes still in the spool %s; they upload at the next start", config.spool)
    return 0


def robot_arguments(config: RobotProcessConfig) -> list[str]:
    """The `lwd robot` options that reproduce `config` (for starting robot processes)."""
    return _options(config, "")


def _options(config, prefix: str) -> list[str]:
    args: list[str] = []
    for field in dataclasses.fields(config):
        value, name = getattr(config, field.name), prefix + field.name.replace("_", "-")
        if dataclasses.is_dataclass(value):
            args += _options(value, name + ".")
        elif isinstance(value, bool):
            args.append(f"--{name}" if value else f"--{prefix}no-{field.name.replace('_', '-')}")
        elif isinstance(value, tuple):
            if value:
                args += [f"--{name}", *map(str, value)]
        else:
            args += [f"--{name}", str(value)]
    return args


def cmd_robot(config: RobotProcessConfig) -> int:
    logging.basicConfig(level=logging.WARNING, format=f"robot worker {config.worker}: %(message)s")
    return run_robots(config)
