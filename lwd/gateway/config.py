"""The gateway's command configs. Kept free of web-framework imports, so that building
the `lwd` command tree does not load FastAPI."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Union

import tyro

from lwd.configargs import documented
from lwd.policy.sampling import check_noise_scale


@dataclass(frozen=True)
class GatewayConfig:
    dir: str = documented("runs/gateway", "gateway directory: tokens.json, weight bundles, listening.json")
    store: str = documented("runs/deploy/online_store", "episode store the robots' uploads are committed to")
    registry: str = documented("runs/deploy/registry", "policy registry the robots' policies come from")
    host: str = documented("127.0.0.1", "address to listen on (0.0.0.0 exposes the gateway: use TLS or a proxy)")
    port: int = documented(8470, "TCP port (0 = any free port; the chosen one is written to <dir>/listening.json)")
    max_upload_mb: float = documented(64.0, "largest episode upload accepted, in MiB (bigger bodies get 413 unread)")
    body_timeout_s: float = documented(120.0, "longest a request body may take to arrive (408 after that)")
    ssl_certfile: str | None = documented(None, "TLS certificate (PEM); with --ssl-keyfile the gateway speaks HTTPS")
    ssl_keyfile: str | None = documented(None, "TLS private key (PEM)")
    act_max_batch: int = documented(64, "most inference requests served by one batched policy call")
    act_max_wait_ms: float = documented(5.0, "longest a request waits for others to join its batch")
    act_queue: int = documented(4096, "inference requests waiting at most; more are refused with 503 overloaded")
    act_noise_scale: float = documented(
        1.0, "sampling temperature of served chunks: x_0 ~ N(0, s²I), as a local fleet's --robots.noise-scale"
    )
    # 1: on 2 cores, torch's second thread fights the event loop and other processes; a batch
    # of 16 took 480 ms with 2 threads and 22 ms with 1 on a loaded machine (docs/benchmarks.md).
    policy_threads: int = documented(1, "torch threads of the policy calls (raise on a machine with idle cores)")
    commit_max_batch: int = documented(64, "most uploads committed to the store in one transaction (group commit)")
    connected_window_s: float = documented(60.0, "a robot counts as connected if it made a request this recently")
    durable: bool = documented(True, "fsync every committed episode (off only for benchmarks of the HTTP layer)")
    log_level: str = documented("warning", "uvicorn log level")

    def __post_init__(self) -> None:
        if self.max_upload_mb <= 0:
            raise ValueError("max_upload_mb must be > 0")
        if (self.ssl_certfile is None) != (self.ssl_keyfile is None):
            raise ValueError("TLS needs both --ssl-certfile and --ssl-keyfile")
        for name in ("act_max_batch", "act_queue", "commit_max_batch", "policy_threads"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        check_noise_scale(self.act_noise_scale, "act_noise_scale")
        if self.act_max_wait_ms < 0 or self.body_timeout_s <= 0 or not 0 <= self.port < 65536:
            raise ValueError("act_max_wait_ms must be >= 0, body_timeout_s > 0 and port in [0, 65535]")

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 2**20)


@dataclass(frozen=True)
class TokenAddConfig:
    robot_id: Annotated[str, tyro.conf.Positional, tyro.conf.arg(metavar="ROBOT_ID")]
    dir: str = documented("runs/gateway", "gateway directory holding tokens.json")


@dataclass(frozen=True)
class TokenListConfig:
    dir: str = documented("runs/gateway", "gateway directory holding tokens.json")


@dataclass(frozen=True)
class TokenRevokeConfig:
    robot_id: Annotated[str, tyro.conf.Positional, tyro.conf.arg(metavar="ROBOT_ID")]
    token_id: str | None = documented(None, "revoke only this token of the robot (default: all of them)")
    dir: str = documented("runs/gateway", "gateway directory holding tokens.json")


TokenCommand = Union[  # noqa: UP007 (tyro reads the Annotated members of a typing.Union)
    Annotated[TokenAddConfig, tyro.conf.subcommand("add", description="issue a token for a robot (printed once)")],
    Annotated[TokenListConfig, tyro.conf.subcommand("list", description="list tokens (ids, robots; never secrets)")],
    Annotated[TokenRevokeConfig, tyro.conf.subcommand("revoke", description="revoke a robot's tokens")],
]


@dataclass(frozen=True)
class GatewayBenchConfig:
    concurrency: tuple[int, ...] = documented((10, 100, 1000), "simulated robots at once, one level each")
    seconds: float = documented(8.0, "how long each closed-loop level runs")
    steps: int = documented(200, "steps of each synthetic episode (Meta-World's time limit)")
    paced_robots: int = documented(1000, "robots of the paced run (0 = skip it)")
    paced_interval_s: float = documented(30.0, "each paced robot uploads one episode this often")
    paced_seconds: float = documented(60.0, "how long the paced run lasts")
    checkpoint: str | None = documented(None, "policy checkpoint for the inference levels (default: a random policy)")
    out: str = documented("runs/bench/gateway.json", "where to write the JSON result")
