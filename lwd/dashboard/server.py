"""`lwd dashboard`: a FastAPI app on uvicorn serving one static page and a JSON API
about a deploy run directory, which it only reads.

    GET /              the page (static/index.html; plain HTML + JS, uPlot vendored)
    GET /api/state     run status, headline numbers, robots, versions, decisions, tasks
    GET /api/series    the chart arrays; the page fetches it when the state's revision changes
    GET /static/...    the page's script, style and the vendored uPlot

Why this stack: docs/architecture.md ("The dashboard").
"""

from __future__ import annotations

import os
import socket
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path

from lwd.configargs import documented
from lwd.dashboard.files import RunReader
from lwd.dashboard.state import Settings, build_series, build_state, run_overview

STATIC = Path(__file__).parent / "static"


@dataclass(frozen=True)
class DashboardConfig:
    """Watch a deploy run in a browser: robots, versions and gate decisions, success and
    interventions per task, the validation curve, throughput and latencies."""

    run: str = documented(
        "runs/deploy",
        "run directory of `lwd deploy` (its --out; for `lwd demo`, runs/demo/deploy); it is only read, "
        "and may not exist yet",
    )
    host: str = documented(
        "127.0.0.1",
        "address to listen on; the default keeps the page on this machine (0.0.0.0 shows it to the "
        "network, without authentication)",
    )
    port: int = documented(8050, "port to listen on (0: any free port; the address is printed)")
    poll_seconds: float = documented(2.0, "how often the page asks the server for new numbers")
    window: int = documented(20, "rolling window: success and intervention rate over a task's last N episodes")
    stale_seconds: float = documented(
        60.0, "a robot worker (or the whole run) with no update for this long is marked stale (quiet)"
    )
    log_level: str = documented("warning", "uvicorn log level")

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError(f"--port must be in 0..65535, got {self.port}")
        if self.poll_seconds <= 0 or self.stale_seconds <= 0:
            raise ValueError("--poll-seconds and --stale-seconds must be > 0")
        if self.window < 1:
            raise ValueError(f"--window must be >= 1, got {self.window}")

    @property
    def settings(self) -> Settings:
        return Settings(window=self.window, stale_seconds=self.stale_seconds)


def create_app(config: DashboardConfig):
    from fastapi import FastAPI
    from fastapi.responses import FileResponse, JSONResponse
    from fastapi.staticfiles import StaticFiles

    reader = RunReader(config.run)
    # The file-derived payloads are recomputed only when a file changed: many pages may poll.
    overview_of, series_of = _ByRevision(run_overview), _ByRevision(build_series)
    app = FastAPI(title="lwd dashboard", docs_url=None, redoc_url=None, openapi_url=None)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    no_store = {"Cache-Control": "no-store"}  # every poll must see the run as it is now

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers=no_store)

    # Plain `def` endpoints: FastAPI runs them in its thread pool, so reading a large
    # episodes.jsonl never blocks the event loop.
    @app.get("/api/state")
    def state() -> JSONResponse:
        files = reader.read()
        payload = build_state(files, time.time(), config.settings, overview_of(files, config.settings))
        payload["poll_seconds"] = config.poll_seconds
        return JSONResponse(payload, headers=no_store)

    @app.get("/api/series")
    def series() -> JSONResponse:
        files = reader.read()
        return JSONResponse(series_of(files, config.settings), headers=no_store)

    return app


class _ByRevision:
    """`compute(files, settings)`, kept while the files' revision is unchanged. On a long
    live run files change every second and a payload takes a while: it is then recomputed
    at most once per `5 × its last duration`, so the dashboard never takes more than about
    a fifth of a core from the deploy it watches. The payload names the revision it was
    computed from, so the page asks again until it has the newest."""

    def __init__(self, compute, share: float = 0.2):
        self.compute, self.share = compute, share
        self.revision, self.value, self.computed_at, self.took = None, None, 0.0, 0.0
        self._lock = threading.Lock()

    def __call__(self, files, settings: Settings):
        with self._lock:
            fresh = self.revision == files.revision
            if not fresh and (self.value is None or time.monotonic() - self.computed_at >= self.took / self.share):
                began = time.monotonic()
                self.value, self.revision = self.compute(files, settings), files.revision
                self.computed_at, self.took = time.monotonic(), time.monotonic() - began
            return self.value


def _server(config: DashboardConfig):
    import uvicorn

    return uvicorn.Server(uvicorn.Config(create_app(config), log_level=config.log_level, access_log=False))


def _bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound before uvicorn starts so that port 0's choice is known."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(64)
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def serve(config: DashboardConfig) -> None:
    """Serve until Ctrl-C / SIGTERM (uvicorn handles both)."""
    sock = _bind(config.host, config.port)
    note = "" if Path(config.run).exists() else " (it does not exist yet; the page waits for it)"
    print(f"lwd dashboard: {url_of(sock)}  watching {os.path.abspath(config.run)}{note}", flush=True)
    _server(config).run(sockets=[sock])


class DashboardThread:
    """The dashboard under uvicorn in a thread of this process (tests; a notebook).
    Use as a context manager: `stop()` shuts it down and joins the thread."""

    def __init__(self, config: DashboardConfig):
        self._sock = _bind(config.host, config.port)
        self.url = url_of(self._sock)
        self.server = _server(config)
        self._thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self._sock]}, name="lwd-dashboard", daemon=True
        )

    def start(self, timeout: float = 30.0) -> str:
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the dashboard server did not start within {timeout} s")
            time.sleep(0.02)
        return self.url

    def stop(self, timeout: float = 15.0) -> None:
        self.server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(timeout)
        self._sock.close()
        if self._thread.is_alive():
            raise RuntimeError(f"the dashboard server thread did not stop within {timeout} s")

    def __enter__(self) -> DashboardThread:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def cmd_dashboard(config: DashboardConfig) -> int:
    """`lwd dashboard`: `--run` may name a `lwd demo` run; its deploy stage is then watched."""
    run = Path(config.run)
    if not (run / "registry").exists() and (run / "deploy" / "registry").exists():
        config = replace(config, run=str(run / "deploy"))
    serve(config)
    return 0
