"""`lwd deploy --fleet gateway`: the learner serves its robots through a gateway.

`GatewayFleet` is a `Fleet` (lwd.fleet.fleet): it starts `lwd gateway serve` in front of the
run's online store and registry, issues one token per robot of the plan, and starts the
plan's robot workers as `lwd robot` processes on this machine that talk to the gateway on
loopback only, exactly as robots on other machines would (`lwd robot --gateway URL` there,
with the tokens file). Holding (pacing) goes through the gateway's fleet control; a dead
robot process or a dead gateway is restarted by `supervise`.

    <out>/gateway/               tokens.json (hashed), weight bundles, gateway.log
    <out>/gateway/robot_tokens.json   the robots' secrets (0600), for `lwd robot --tokens`
    <out>/robot_spools/worker-<i>/    each robot process's durable upload spool
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

from lwd.fleet.worker import EXIT_LEASE_REFUSED, FleetConfig, robot_specs
from lwd.gateway.config import GatewayConfig
from lwd.gateway.control import write_fleet_control
from lwd.gateway.launch import GatewayProcess
from lwd.gateway.robots import RobotProcessConfig, robot_arguments
from lwd.gateway.tokens import TokenBook

log = logging.getLogger(__name__)


def robot_tokens(gateway_dir: Path, robot_ids: list[str]) -> Path:
    """The tokens file of the plan's robots: reused by a resumed run, else issued now."""
    path = gateway_dir / "robot_tokens.json"
    if path.exists() and set(robot_ids) <= set(json.loads(path.read_text())):
        return path
    issued = TokenBook(gateway_dir).add_many(robot_ids)
    tmp = path.with_suffix(".tmp")
    with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as handle:
        json.dump(issued, handle)
    os.replace(tmp, path)
    return path


class GatewayFleet:
    def __init__(
        self,
        config: FleetConfig,
        store: str | Path,
        registry: str | Path,
        log_dir: str | Path,
        seed: int = 0,
        max_restarts: int = 20,
    ):
        self.config, self.seed, self.out = config, seed, Path(log_dir)
        self.gateway_dir = self.out / "gateway"
        self.gateway_dir.mkdir(parents=True, exist_ok=True)
        # Port 0: the gateway picks a free port (listening.json); a restarted gateway takes the same one.
        self.gateway_config = GatewayConfig(dir=str(self.gateway_dir), store=str(store), registry=str(registry), port=0)
        self.gateway = GatewayProcess(self.gateway_config)
        self.tokens = robot_tokens(self.gateway_dir, [s.robot_id for s in robot_specs(config)])
        self.processes: list[subprocess.Popen | None] = [None] * config.workers
        self.restarts, self.max_restarts = 0, max_restarts
        self.flush_seconds = 30.0  # a stopping robot waits this long for its spool to drain
        self.url: str | None = None
        self._holding = False
        write_fleet_control(str(self.gateway_dir), hold=False)

    def _robot_config(self, index: int) -> RobotProcessConfig:
        spool = self.out / "robot_spools" / f"worker-{index}"
        return RobotProcessConfig(
            gateway=self.url,
            tokens=str(self.tokens),
            worker=index,
            spool=str(spool),
            policy_cache=str(self.out / "robot_spools" / "policies"),
            log_dir=str(self.out),
            seed=self.seed,
            flush_seconds=self.flush_seconds,
            parent_pid=os.getpid(),
            ready_file=str(self._ready_file(index)),
            robots=self.config,
        )

    def _ready_file(self, index: int) -> Path:
        return self.out / f"robot-worker-{index}.ready"

    def _spawn(self, index: int) -> None:
        self._ready_file(index).unlink(missing_ok=True)
        command = [sys.executable, "-m", "lwd.cli", "robot", *robot_arguments(self._robot_config(index))]
        with open(self.out / f"robot-worker-{index}.log", "ab") as log_file:
            self.processes[index] = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT)

    def start(self) -> None:
        self.url = self.gateway.start()
        for index in range(self.config.workers):
            self._spawn(index)

    def supervise(self) -> list[int]:
        """Restart a dead gateway (same directory, store and port: robots keep their URL and
        their spools hold what they finish meanwhile) and dead robot processes; returns the
        indices of robot processes restarted."""
        if self.gateway.process is not None and self.gateway.process.poll() is not None:
            self.restarts += 1
            port = int(self.url.rsplit(":", 1)[1])
            self.gateway = GatewayProcess(replace(self.gateway_config, port=port))
            self.gateway.start()
        restarted = []
        for index, process in enumerate(self.processes):
            if process is None or process.poll() is None:
                continue
            if process.returncode == EXIT_LEASE_REFUSED:
                raise RuntimeError(f"robot worker {index} was refused its robots: another process drives them")
            if self.restarts >= self.max_restarts:
                raise RuntimeError(f"robot processes died {self.restarts} times; see {self.out}/robot-worker-*.log")
            self.restarts += 1
            self._spawn(index)
            restarted.append(index)
        return restarted

    def hold(self, holding: bool) -> None:
        """Robots read it at their next episode boundary (within `control_seconds`)."""
        if holding != self._holding:
            write_fleet_control(str(self.gateway_dir), hold=holding)
            self._holding = holding

    @property
    def holding(self) -> bool:
        return self._holding

    def stop(self, timeout: float | None = None) -> None:
        """Robots finish their episodes and drain their spools; then the gateway stops.
        A robot process still starting is signalled only once it handles SIGTERM (a
        restarted one would otherwise die with its spool undrained)."""
        timeout = self.flush_seconds + 60.0 if timeout is None else timeout
        deadline = time.monotonic() + timeout
        for index, process in enumerate(self.processes):
            if process is None:
                continue
            while process.poll() is None and not self._ready_file(index).exists() and time.monotonic() < deadline:
                time.sleep(0.05)
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for index, process in enumerate(self.processes):
            if process is None:
                continue
            try:
                process.wait(max(deadline - time.monotonic(), 1.0))
            except subprocess.TimeoutExpired:
                log.warning("robot worker %d did not stop within %.0f s; killed", index, timeout)
                process.kill()
                process.wait()
                continue
            if process.returncode != 0:
                log.warning("robot worker %d exited with %s; see %s", index, process.returncode, self.out)
        self.gateway.stop()

    @property
    def alive(self) -> int:
        return sum(p is not None and p.poll() is None for p in self.processes)
