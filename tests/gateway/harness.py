"""Shared by the gateway and client tests: a real gateway (uvicorn in a thread or a child
process) on 127.0.0.1, a published tiny policy, robot tokens, and a fault-injecting TCP
proxy. Everything started here is stopped by the context managers that start it."""

from __future__ import annotations

import asyncio
import random
import socket
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from lwd.data.store import EpisodeStore
from lwd.gateway.config import GatewayConfig
from lwd.gateway.tokens import TokenBook

ROOT = Path(__file__).resolve().parents[2]
ROBOTS = ("robot-a", "robot-b")


def tiny_policy_config():
    from lwd.policy.flow_policy import PolicyConfig

    return PolicyConfig(context_dim=16, hidden_dim=32, num_layers=1, time_dim=8, sample_steps=2)


def publish_tiny(registry: Path, version: int = 1):
    from lwd.gateway.bench import publish_random_policy

    return publish_random_policy(registry, version=version, policy_config=tiny_policy_config())


@dataclass
class Site:
    """Where a test's gateway keeps its state, and the robots' tokens."""

    root: Path
    tokens: dict[str, str]

    def config(self, **overrides) -> GatewayConfig:
        settings = dict(
            dir=str(self.root / "gateway"),
            store=str(self.root / "store"),
            registry=str(self.root / "registry"),
            port=0,
        )
        return GatewayConfig(**{**settings, **overrides})

    def store(self) -> EpisodeStore:
        return EpisodeStore(self.root / "store")


def make_site(root: Path, robots=ROBOTS, publish: bool = True) -> Site:
    if publish:
        publish_tiny(root / "registry")
    return Site(root, TokenBook(root / "gateway").add_many(list(robots)))


@contextmanager
def gateway_thread(site: Site, **overrides):
    from lwd.gateway.server import GatewayThread

    thread = GatewayThread(site.config(**overrides))
    thread.start()
    try:
        yield thread
    finally:
        thread.stop()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class FaultProxy:
    """A TCP proxy on 127.0.0.1 that breaks a fraction of what passes through it.

    For each chunk a client sends, with probability `drop` the proxy either resets the
    connection before forwarding it (the request is lost) or forwards it and resets the
    connection when the answer comes (the request landed, the client never hears so);
    `delay` holds every answer back. Runs its own event loop in a thread."""

    def __init__(self, upstream_port: int, *, drop: float = 0.0, delay: float = 0.0, seed: int = 0):
        self.upstream_port, self.drop, self.delay = upstream_port, drop, delay
        self.rng = random.Random(seed)
        self.resets = 0
        self.loop = asyncio.new_event_loop()
        self._server = None
        self._thread = threading.Thread(target=self.loop.run_forever, name="fault-proxy", daemon=True)

    def start(self) -> int:
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(asyncio.start_server(self._handle, "127.0.0.1", 0), self.loop)
        self._server = future.result(10)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    def stop(self) -> None:
        async def shutdown():
            self._server.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(shutdown(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()

    async def _handle(self, reader, writer) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            writer.transport.abort()
            return
        poisoned = asyncio.Event()  # set: reset the client's connection at the next answer
        pumps = [
            asyncio.create_task(self._pump(reader, up_writer, writer, poisoned, upstream=True)),
            asyncio.create_task(self._pump(up_reader, writer, writer, poisoned, upstream=False)),
        ]
        try:
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:  # either side done or broken: both connections go, so no server waits on half a request
            for pump in pumps:
                pump.cancel()
            up_writer.transport.abort()
            writer.transport.abort()
            await asyncio.gather(*pumps, return_exceptions=True)

    async def _pump(self, source, sink, client_writer, poisoned, *, upstream: bool) -> None:
        while True:
            data = await source.read(65536)
            if not data:
                return
            if upstream and self.rng.random() < self.drop:
                self.resets += 1
                if self.rng.random() < 0.5:
                    client_writer.transport.abort()  # lost on the way in
                    return
                poisoned.set()  # lost on the way back
            if not upstream:
                if self.delay:
                    await asyncio.sleep(self.delay)
                if poisoned.is_set():
                    client_writer.transport.abort()
                    return
            sink.write(data)
            await sink.drain()

    def __enter__(self) -> FaultProxy:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
