"""What the gateway's endpoints stand on: batched policy calls, weight bundles and
metrics (store writes are `lwd.data.group_commit.StoreWriter`). No HTTP here; `server.py`
maps requests onto these.

Blocking work never runs on the event loop. The policy runs
on one thread too (torch parallelises inside a call), fed by a batcher that merges the
requests waiting at that moment into one call per policy version.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
import tarfile
import threading
import time
import uuid
from collections import Counter, deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from lwd.data.group_commit import StoreWriter
from lwd.gateway.wire import ActRequest, ActResponse, WireError

BUNDLE_MEMBERS = ("manifest.json", "policy.safetensors")


class PolicyServer:
    """Loads registry versions (a few at a time) and serves batches of act requests."""

    def __init__(self, registry, *, keep_versions: int = 3, seed: int = 0, threads: int = 1, noise_scale: float = 1.0):
        import torch

        torch.set_num_threads(threads)  # process-wide: the gateway's only torch user is this server
        self.registry = registry
        self.keep_versions = keep_versions
        self._loaded: dict[int, tuple] = {}
        self._generator = torch.Generator().manual_seed(seed)
        self.noise_scale = noise_scale  # the sampling temperature, as FleetConfig.noise_scale

    def _policy(self, version: int) -> tuple:
        from lwd.policy.checkpoint import CheckpointError

        if version not in self._loaded:
            try:
                self._loaded[version] = self.registry.load(version)
            except CheckpointError as err:
                raise WireError("no_such_version", str(err)) from None
            for old in sorted(self._loaded)[: -self.keep_versions]:
                del self._loaded[old]
        return self._loaded[version]

    def serve(self, requests: list[tuple[str, ActRequest]]) -> list[ActResponse | WireError]:
        """One policy call per version among the (robot, request) pairs (runs on the policy
        thread). A request without a version gets the one the rollout names for its robot."""
        from lwd.fleet.policy_actor import sample_chunks
        from lwd.fleet.sensing import policy_images

        rollout = self.registry.rollout()
        results: list[ActResponse | WireError | None] = [None] * len(requests)
        groups: dict[int | None, list[int]] = {}
        for i, (robot, request) in enumerate(requests):
            version = request.version
            if version is None and rollout is not None:
                published = rollout.version_for(robot)
                version = published.version if published is not None else None
            groups.setdefault(version, []).append(i)
        for version, rows in groups.items():
            try:
                if version is None:
                    raise WireError("no_policy", "no policy has been published yet")
                policy, encoder = self._policy(version)
                rows = self._admissible(policy, [r for _, r in requests], rows, results)
                if not rows:
                    continue
                states = np.stack([requests[i][1].state for i in rows])
                instructions = [requests[i][1].instruction for i in rows]
                images = policy_images(policy.cameras, [requests[i][1].frames for i in rows])
                chunks = sample_chunks(
                    policy, encoder, states, instructions, self._generator, images=images, noise_scale=self.noise_scale
                )
                for i, chunk in zip(rows, chunks):
                    results[i] = ActResponse(requests[i][1].request_id, version, chunk.astype(np.float32), len(rows))
            except WireError as err:
                for i in rows:
                    results[i] = results[i] or err
        return results

    @staticmethod
    def _admissible(policy, requests: list[ActRequest], rows: list[int], results: list) -> list[int]:
        """Rows this policy can serve; the others get their error in `results`."""
        config = policy.config
        kept = []
        for i in rows:
            if requests[i].state.shape != (config.obs_dim,):
                results[i] = WireError(
                    "bad_shape", f"state has shape {requests[i].state.shape}; the policy takes ({config.obs_dim},)"
                )
            elif (refusal := _frames_refusal(policy.cameras, config.image_size, requests[i].frames)) is not None:
                results[i] = refusal
            else:
                kept.append(i)
        return kept


def _frames_refusal(cameras: tuple[str, ...], side: int, frames: dict[str, np.ndarray]) -> WireError | None:
    """Why `frames` cannot feed a policy that reads `cameras` (`PolicyAdapter.cameras`), or
    None: every one of them, each (side, side, 3) uint8; other cameras are ignored."""
    missing = [camera for camera in cameras if camera not in frames]
    if missing:
        return WireError(
            "missing_frames",
            f"this policy reads cameras {list(cameras)}; the request has no frames of {missing} "
            f"(it has {sorted(frames)})",
        )
    for camera in cameras:
        if frames[camera].shape != (side, side, 3):
            return WireError(
                "bad_shape",
                f"frames[{camera!r}] has shape {frames[camera].shape}; the policy takes ({side}, {side}, 3)",
            )
    return None


class ActBatcher:
    """Merges concurrent act requests: a call serves every request waiting when it starts
    (at most `max_batch`); a lone request waits `max_wait_s` for company."""

    def __init__(self, server: PolicyServer, *, max_batch: int, max_wait_s: float, queue_size: int):
        self.server, self.max_batch, self.max_wait_s = server, max_batch, max_wait_s
        self._queue: asyncio.Queue = asyncio.Queue(queue_size)
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="lwd-policy")
        self._task: asyncio.Task | None = None
        self.calls = 0
        self.rows = 0
        self.call_seconds: deque = deque(maxlen=10_000)  # policy call durations, for the metrics

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def act(self, robot_id: str, request: ActRequest) -> ActResponse:
        future = asyncio.get_running_loop().create_future()
        try:
            self._queue.put_nowait(((robot_id, request), future))
        except asyncio.QueueFull:
            raise WireError(
                "overloaded", f"{self._queue.maxsize} inference requests are waiting; retry later"
            ) from None
        result = await future
        if isinstance(result, WireError):
            raise result
        return result

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._queue.get()]
            if self.max_wait_s > 0 and self._queue.qsize() + 1 < self.max_batch:
                await asyncio.sleep(self.max_wait_s)
            while len(batch) < self.max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            started = time.perf_counter()
            try:
                results = await loop.run_in_executor(self._executor, self.server.serve, [r for r, _ in batch])
            except Exception as err:  # a policy that fails: every waiting robot is told, the loop goes on
                results = [WireError("internal", f"the policy call failed ({type(err).__name__}: {err})")] * len(batch)
            self.call_seconds.append(time.perf_counter() - started)
            self.calls += 1
            self.rows += len(batch)
            for (_, future), result in zip(batch, results):
                if not future.done():  # an ActResponse or the WireError `act` raises
                    future.set_result(result)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        self._executor.shutdown(wait=False, cancel_futures=True)


class WeightBundles:
    """Each published version as one download: an uncompressed tar of the checkpoint's
    manifest.json and policy.safetensors (no optimiser or learner state), built once per
    version into `<gateway dir>/bundles/`, with its sha256 beside it. The tar is
    deterministic (fixed order, times and owners), so a version's checksum never changes."""

    def __init__(self, directory: str | os.PathLike, registry):
        self.root = Path(directory) / "bundles"
        self.root.mkdir(parents=True, exist_ok=True)
        self.registry = registry
        self._lock = threading.Lock()

    def get(self, version: int) -> tuple[Path, dict]:
        """(tar path, {"sha256", "size", "policy": architecture}); builds it on first use."""
        meta_path = self.root / f"v{version:06d}.json"
        if not meta_path.exists():
            with self._lock:
                if not meta_path.exists():
                    self._build(version, meta_path)
        return self.root / f"v{version:06d}.tar", json.loads(meta_path.read_text())

    def _build(self, version: int, meta_path: Path) -> None:
        source = self.registry.path(version)
        if not (source / "manifest.json").exists():
            raise WireError("no_such_version", f"the registry has no version {version} (pruned or never published)")
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for name in BUNDLE_MEMBERS:
                data = (source / name).read_bytes()
                info = tarfile.TarInfo(name)
                info.size, info.mtime, info.mode = len(data), 0, 0o644
                tar.addfile(info, io.BytesIO(data))
        data = buffer.getvalue()
        manifest = json.loads((source / "manifest.json").read_text())
        keys = ("obs_dim", "action_dim", "chunk_len", "use_images", "image_size")
        meta = {
            "sha256": hashlib.sha256(data).hexdigest(),
            "size": len(data),
            "policy": {k: manifest["config"].get(k) for k in keys},
        }
        _atomic_write(self.root / f"v{version:06d}.tar", data)
        _atomic_write(meta_path, json.dumps(meta).encode())  # written last: its presence means the tar is there
        self._prune()

    def _prune(self) -> None:
        available = set(self.registry.available())
        for path in self.root.glob("v*.json"):
            if int(path.stem[1:]) not in available:
                path.unlink(missing_ok=True)
                path.with_suffix(".tar").unlink(missing_ok=True)


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


class GatewayMetrics:
    """Counters and latency windows for `GET /metrics` (flat, namespaced names)."""

    def __init__(self, connected_window_s: float, window: int = 10_000):
        self.connected_window_s = connected_window_s
        self.counts: Counter = Counter()
        self.rejects: Counter = Counter()
        self.latency = {"upload": deque(maxlen=window), "act": deque(maxlen=window)}
        self._seen: dict[str, float] = {}
        self.started = time.monotonic()

    def seen(self, robot_id: str) -> None:
        self._seen[robot_id] = time.monotonic()

    def connected(self) -> int:
        cutoff = time.monotonic() - self.connected_window_s
        for robot in [r for r, t in self._seen.items() if t < cutoff]:
            del self._seen[robot]
        return len(self._seen)

    def snapshot(self, writer: StoreWriter, batcher: ActBatcher) -> dict:
        report = {
            "gateway/uptime_s": time.monotonic() - self.started,
            "gateway/connected_robots": self.connected(),
            "gateway/connected_window_s": self.connected_window_s,
            "upload/committed": self.counts["uploads"],
            "upload/duplicates": self.counts["duplicates"],
            "upload/bytes": self.counts["upload_bytes"],
            "upload/store_commits": writer.commits,
            "act/requests": self.counts["act_requests"],
            "act/frames": self.counts["act_frames"],
            "act/policy_calls": batcher.calls,
            "act/mean_batch": batcher.rows / batcher.calls if batcher.calls else 0.0,
            "rejects/total": sum(self.rejects.values()),
        }
        report.update({f"rejects/{code}": n for code, n in sorted(self.rejects.items())})
        for name, values in {**self.latency, "policy_call": batcher.call_seconds}.items():
            if values:
                ms = np.asarray(values) * 1000
                report[f"latency/{name}_p50_ms"] = float(np.percentile(ms, 50))
                report[f"latency/{name}_p99_ms"] = float(np.percentile(ms, 99))
        return report
