"""`lwd gateway`: the HTTP front of the episode store and the policy registry for robots
that are not on the learner's machine.

    PUT  /v1/episodes/{robot_id}/{seq}     upload an episode (the store's safetensors bytes)
    GET  /v1/robots/{robot_id}/committed   the robot's committed seqs (where a restarted robot resumes)
    GET  /v1/policy/rollout                which versions robots run (deployed; canary and its robots)
    GET  /v1/policy/latest                 newest PublishedVersion (a candidate when the fleet is gated)
                                           + its bundle's sha256, size, architecture
    GET  /v1/policy/{version}/weights      the version's weight bundle (tar), X-Content-SHA256 header
    POST /v1/act                           server-side inference: msgpack observation -> action chunk
    GET  /healthz, GET /metrics            liveness; counters and latency percentiles (JSON)

Every /v1 endpoint needs `Authorization: Bearer <token>` (lwd.gateway.tokens); a token
speaks for one robot and writes only that robot's episodes. Every refusal is a 4xx JSON
body {"error": code, "detail": text} with a stable code (lwd.gateway.wire), nothing is
written, and the gateway goes on serving. FastAPI on uvicorn: see docs/architecture.md.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import time
from contextlib import asynccontextmanager
from dataclasses import asdict

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from lwd.data.group_commit import StoreWriter
from lwd.data.store import EpisodeConflictError
from lwd.gateway.config import GatewayConfig
from lwd.gateway.control import read_fleet_control
from lwd.gateway.services import ActBatcher, GatewayMetrics, PolicyServer, WeightBundles
from lwd.gateway.tokens import TokenBook
from lwd.gateway.wire import (
    MAX_ACT_BYTES,
    MSGPACK_CONTENT_TYPE,
    WIRE_VERSION,
    WireError,
    decode_act_request,
    decode_episode,
    encode_act_response,
)

router = APIRouter()


class Gateway:
    """Everything the endpoints share; built at startup, closed at shutdown."""

    def __init__(self, config: GatewayConfig):
        from lwd.fleet.registry import PolicyRegistry

        self.config = config
        self.tokens = TokenBook(config.dir)
        self.registry = PolicyRegistry(config.registry)
        self.bundles = WeightBundles(config.dir, self.registry)
        self.metrics = GatewayMetrics(config.connected_window_s)
        self.writer = StoreWriter(config.store, durable=config.durable, max_batch=config.commit_max_batch)
        self.batcher = ActBatcher(
            PolicyServer(self.registry, threads=config.policy_threads, noise_scale=config.act_noise_scale),
            max_batch=config.act_max_batch,
            max_wait_s=config.act_max_wait_ms / 1000,
            queue_size=config.act_queue,
        )

    def robot(self, request: Request) -> str:
        """The robot the request's bearer token speaks for."""
        header = request.headers.get("authorization")
        if header is None:
            raise WireError("unauthorized", "missing Authorization header (Authorization: Bearer <token>)")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise WireError("unauthorized", "the Authorization header must be 'Bearer <token>'")
        robot = self.tokens.robot_for(token.strip())
        if robot is None:
            raise WireError("unauthorized", "unknown or revoked token")
        self.metrics.seen(robot)
        return robot


def create_app(config: GatewayConfig) -> FastAPI:
    """The ASGI app; `serve` runs it, tests run it under uvicorn in a thread."""

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        gateway = Gateway(config)
        await gateway.writer.start()
        await gateway.batcher.start()
        app.state.gateway = gateway
        try:
            yield
        finally:
            await gateway.batcher.close()
            await gateway.writer.close()

    app = FastAPI(title="lwd gateway", version=str(WIRE_VERSION), lifespan=lifespan, docs_url=None, redoc_url=None)
    app.include_router(router)
    app.add_exception_handler(WireError, _wire_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
    return app


def _refuse(request: Request, err: WireError, **extra) -> JSONResponse:
    request.app.state.gateway.metrics.rejects[err.code] += 1
    return JSONResponse(err.body(**extra), status_code=err.status)


async def _wire_error(request: Request, err: WireError) -> JSONResponse:
    return _refuse(request, err)


async def _validation_error(request: Request, err: RequestValidationError) -> JSONResponse:
    problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in err.errors())
    return _refuse(request, WireError("bad_request", problems))


async def _http_error(request: Request, err: HTTPException) -> JSONResponse:
    code = {404: "not_found", 405: "bad_request"}.get(err.status_code, "bad_request")
    body = WireError(code, str(err.detail)).body()
    request.app.state.gateway.metrics.rejects[code] += 1
    return JSONResponse(body, status_code=err.status_code)


async def _read_capped(request: Request, cap: int, timeout_s: float) -> bytes:
    """The body, refused with 413 as soon as it is known to exceed `cap`: at once from
    Content-Length, else while it streams in (never buffered past the cap)."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise WireError("bad_request", f"Content-Length {declared!r} is not a number")
        if int(declared) > cap:
            raise WireError("too_large", f"the body has {declared} bytes; this gateway accepts at most {cap}")
    chunks, size = [], 0
    try:
        async with asyncio.timeout(timeout_s):  # a stalled sender must not hold a handler forever
            async for chunk in request.stream():
                size += len(chunk)
                if size > cap:
                    raise WireError("too_large", f"the body exceeds {cap} bytes")
                chunks.append(chunk)
    except TimeoutError:
        raise WireError("timeout", f"the body did not arrive within {timeout_s:.0f} s ({size} bytes came)") from None
    if declared is not None and size != int(declared):
        raise WireError("truncated", f"Content-Length says {declared} bytes, {size} arrived")
    return b"".join(chunks)


@router.put("/v1/episodes/{robot_id}/{seq}")
async def put_episode(robot_id: str, seq: int, request: Request) -> JSONResponse:
    gateway: Gateway = request.app.state.gateway
    started = time.perf_counter()
    robot = gateway.robot(request)
    if robot != robot_id:
        raise WireError("forbidden", f"this token speaks for robot {robot!r}, not {robot_id!r}")
    data = await _read_capped(request, gateway.config.max_upload_bytes, gateway.config.body_timeout_s)
    episode = await run_in_threadpool(decode_episode, data)
    if episode.robot_id != robot:
        raise WireError(
            "forbidden", f"the episode belongs to robot {episode.robot_id!r}; this token speaks for {robot!r}"
        )
    if episode.seq != seq:
        raise WireError("id_mismatch", f"the episode has seq {episode.seq}, the URL says {seq}")
    try:
        receipt = await gateway.writer.append(episode)
    except EpisodeConflictError as err:
        raise WireError("conflict", str(err)) from None
    except OSError as err:
        raise WireError("store_unavailable", f"the store could not commit ({err})") from None
    gateway.metrics.counts["duplicates" if receipt.duplicate else "uploads"] += 1
    gateway.metrics.counts["upload_bytes"] += len(data)
    gateway.metrics.latency["upload"].append(time.perf_counter() - started)
    return JSONResponse(asdict(receipt))


@router.get("/v1/robots/{robot_id}/committed")
async def committed(robot_id: str, request: Request) -> JSONResponse:
    gateway: Gateway = request.app.state.gateway
    robot = gateway.robot(request)
    if robot != robot_id:
        raise WireError("forbidden", f"this token speaks for robot {robot!r}, not {robot_id!r}")
    seqs = await gateway.writer.committed_ids(robot_id)
    return JSONResponse({"robot_id": robot_id, "seqs": sorted(seqs)})


@router.get("/v1/policy/latest")
async def policy_latest(request: Request) -> JSONResponse:
    gateway: Gateway = request.app.state.gateway
    gateway.robot(request)
    published = await run_in_threadpool(gateway.registry.latest)
    if published is None:
        raise WireError("no_policy", "no policy has been published yet")
    _, bundle = await run_in_threadpool(gateway.bundles.get, published.version)
    return JSONResponse({**asdict(published), **bundle})


@router.get("/v1/policy/rollout")
async def policy_rollout(request: Request) -> JSONResponse:
    """The registry's rollout (what each robot runs at its next episode start), each
    named version with its bundle's sha256; 404 no_policy before anything is published.
    The canary's robot ids are listed, so one client can serve several robots."""
    gateway: Gateway = request.app.state.gateway
    gateway.robot(request)
    rollout = await run_in_threadpool(gateway.registry.rollout)
    if rollout is None or rollout.deployed is None:
        raise WireError("no_policy", "no policy has been published yet")
    body = rollout.to_json()
    for key in ("deployed", "canary"):
        if body[key] is not None:
            _, bundle = await run_in_threadpool(gateway.bundles.get, body[key]["version"])
            body[key] = {**body[key], **bundle}
    return JSONResponse(body)


@router.get("/v1/fleet/control")
async def fleet_control(request: Request) -> JSONResponse:
    """What the fleet's operator (the learner) asks of every robot: {"hold": bool} — while
    holding, robots finish the episode they are in and start no new one (pacing)."""
    gateway: Gateway = request.app.state.gateway
    gateway.robot(request)
    return JSONResponse(await run_in_threadpool(read_fleet_control, gateway.config.dir))


@router.get("/v1/policy/{version}/weights")
async def policy_weights(version: int, request: Request) -> FileResponse:
    gateway: Gateway = request.app.state.gateway
    gateway.robot(request)
    if version < 0:
        raise WireError("no_such_version", f"version {version} is negative")
    path, bundle = await run_in_threadpool(gateway.bundles.get, version)
    return FileResponse(
        path,
        media_type="application/x-tar",
        headers={"X-Content-SHA256": bundle["sha256"], "ETag": f'"{bundle["sha256"]}"'},
    )


@router.post("/v1/act")
async def act(request: Request) -> Response:
    gateway: Gateway = request.app.state.gateway
    started = time.perf_counter()
    robot = gateway.robot(request)
    data = await _read_capped(request, MAX_ACT_BYTES, gateway.config.body_timeout_s)
    act_request = await run_in_threadpool(decode_act_request, data)
    try:
        response = await gateway.batcher.act(robot, act_request)
    except WireError as err:
        return _refuse(request, err, request_id=act_request.request_id)
    gateway.metrics.counts["act_requests"] += 1
    gateway.metrics.counts["act_frames"] += len(act_request.frames)
    gateway.metrics.latency["act"].append(time.perf_counter() - started)
    return Response(encode_act_response(response), media_type=MSGPACK_CONTENT_TYPE)


@router.get("/healthz")
async def healthz(request: Request) -> JSONResponse:
    gateway: Gateway = request.app.state.gateway
    published = await run_in_threadpool(gateway.registry.latest)
    return JSONResponse(
        {
            "ok": True,
            "wire": WIRE_VERSION,
            "max_upload_bytes": gateway.config.max_upload_bytes,
            "latest_version": None if published is None else published.version,
        }
    )


@router.get("/metrics")
async def metrics(request: Request) -> JSONResponse:
    gateway: Gateway = request.app.state.gateway
    return JSONResponse(gateway.metrics.snapshot(gateway.writer, gateway.batcher))


def bind(host: str, port: int) -> socket.socket:
    """A listening socket; port 0 picks a free one (read it from `getsockname()`)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def uvicorn_server(config: GatewayConfig):
    import uvicorn

    return uvicorn.Server(
        uvicorn.Config(
            create_app(config),
            log_level=config.log_level,
            ssl_certfile=config.ssl_certfile,
            ssl_keyfile=config.ssl_keyfile,
            timeout_keep_alive=30,  # robots upload every few seconds; keep their connection
            timeout_graceful_shutdown=10,  # SIGTERM: requests in flight get 10 s, then the gateway stops
            access_log=False,
        )
    )


def serve(config: GatewayConfig) -> None:
    """Run the gateway until SIGINT/SIGTERM. Writes `<dir>/listening.json` (host, port,
    scheme, pid) once the socket is bound, so scripts and tests find a port-0 gateway."""
    os.makedirs(config.dir, exist_ok=True)
    sock = bind(config.host, config.port)
    host, port = sock.getsockname()[:2]
    scheme = "https" if config.ssl_certfile else "http"
    netloc = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    listening = {"host": host, "port": port, "scheme": scheme, "url": f"{scheme}://{netloc}", "pid": os.getpid()}
    tmp = os.path.join(config.dir, f".listening.json.tmp-{os.getpid()}")
    with open(tmp, "w") as handle:
        json.dump(listening, handle)
    os.replace(tmp, os.path.join(config.dir, "listening.json"))
    print(f"lwd gateway listening on {listening['url']} (store {config.store}, registry {config.registry})", flush=True)
    uvicorn_server(config).run(sockets=[sock])


class GatewayThread:
    """The gateway under uvicorn in a thread of this process, on a port of its own choosing
    (tests, and an embedded gateway). `stop()` shuts it down gracefully and joins it."""

    def __init__(self, config: GatewayConfig):
        import threading

        self.config = config
        self._sock = bind(config.host, config.port)
        self.port = self._sock.getsockname()[1]
        self.url = f"{'https' if config.ssl_certfile else 'http'}://{config.host}:{self.port}"
        self.server = uvicorn_server(config)
        self._thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self._sock]}, name="lwd-gateway", daemon=True
        )

    def start(self, timeout: float = 30.0) -> str:
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the gateway thread did not start within {timeout} s")
            time.sleep(0.02)
        return self.url

    @property
    def gateway(self) -> Gateway:
        return self.server.config.app.state.gateway

    def stop(self, timeout: float = 15.0) -> None:
        self.server.should_exit = True
        self._thread.join(timeout)
        self._sock.close()
        if self._thread.is_alive():
            raise RuntimeError(f"the gateway thread did not stop within {timeout} s")

    def __enter__(self) -> GatewayThread:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
