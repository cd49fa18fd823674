"""A gateway in a child process: `lwd deploy --fleet gateway`, benchmarks and fault tests
run it this way, so killing it (kill -9 included) is killing a real server process.

Free of web-framework imports; the child runs `python -m lwd.gateway` (= `lwd gateway serve`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from lwd.gateway.config import GatewayConfig


def serve_arguments(config: GatewayConfig) -> list[str]:
    """The `lwd gateway serve` options that reproduce `config`."""
    args = []
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        option = "--" + field.name.replace("_", "-")
        if isinstance(value, bool):
            args.append(option if value else "--no-" + field.name.replace("_", "-"))
        elif value is not None:
            args += [option, str(value)]
    return args


class GatewayProcess:
    """`start()` returns the URL once /healthz answers; `kill()` is kill -9; `stop()` asks
    politely (SIGTERM) first. The child's output goes to `<dir>/gateway.log`."""

    def __init__(self, config: GatewayConfig, *, env: dict | None = None):
        self.config = config
        self.env = {**os.environ, **(env or {})}
        self.process: subprocess.Popen | None = None
        self.url: str | None = None

    def start(self, timeout: float = 90.0) -> str:
        directory = Path(self.config.dir)
        directory.mkdir(parents=True, exist_ok=True)
        listening = directory / "listening.json"
        listening.unlink(missing_ok=True)
        with open(directory / "gateway.log", "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "lwd.gateway", *serve_arguments(self.config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"the gateway exited with {self.process.returncode}; see {directory / 'gateway.log'}"
                )
            if self.url is None and listening.exists():
                info = json.loads(listening.read_text())
                if info.get("pid") == self.process.pid:
                    self.url = info["url"]
            if self.url is not None and _healthy(self.url):
                return self.url
            time.sleep(0.1)
        self.kill()
        raise RuntimeError(f"the gateway did not become healthy within {timeout} s; see {directory / 'gateway.log'}")

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(30)

    def stop(self, timeout: float = 20.0) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()

    def __enter__(self) -> GatewayProcess:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def _healthy(url: str) -> bool:
    if not url.startswith("http://"):
        return True  # TLS: the caller's client checks (its trust store is not ours)
    try:
        with urllib.request.urlopen(url + "/healthz", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False
