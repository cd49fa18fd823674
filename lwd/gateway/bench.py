"""`lwd bench gateway`: how many robots one gateway serves on this machine.

The gateway runs as its own process (as in deployment), with a durable store and a
policy of the default architecture (random weights, or `--checkpoint`). Simulated robots
are asyncio tasks in this process, with no physics: each replays synthetic valid
200-step episodes (a fresh id per upload, so every upload is a real commit) or asks for
action chunks. Levels:

- closed loop, per concurrency C: C robots upload back to back for `seconds`, then C
  robots call /v1/act back to back: requests/s and client-side P50/P99 latency;
- paced: `paced_robots` robots each upload one episode every `paced_interval_s` (random
  phase) for `paced_seconds`: the issue's goal, 1,000 robots every 30 s with P99 < 1 s.

Clients and server share the machine's cores, so the figures are a floor for the server.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from lwd.data.episode import Episode
from lwd.envs.tasks import task_spec
from lwd.gateway.config import GatewayBenchConfig, GatewayConfig
from lwd.gateway.wire import ActRequest, encode_act_request

BENCH_TASKS = ("reach-v3", "drawer-close-v3", "button-press-topdown-v3")


def synthetic_episode(robot_id: str, seq: int, *, task: str = "reach-v3", steps: int = 200, seed: int = 0) -> Episode:
    """A valid policy rollout of the task's shapes with random numbers (the gateway's cost
    does not depend on them); its policy steps carry version 1."""
    spec = task_spec(task)
    rng = np.random.default_rng([seed, seq])
    now = time.time()
    intervention = np.zeros(steps, bool)
    intervention[steps // 2 : steps // 2 + 10] = True
    return Episode(
        robot_id=robot_id,
        seq=seq,
        task=task,
        instruction=spec.instruction,
        source="rollout",
        observations=rng.normal(size=(steps + 1, spec.obs_dim)).astype(np.float32),
        actions=rng.uniform(-1, 1, size=(steps, spec.action_dim)).astype(np.float32),
        intervention=intervention,
        policy_version=np.ones(steps, np.int64),
        timestamps=now - steps + np.arange(steps, dtype=np.float64),
        success=bool(seq % 2),
        stage_score=float(seq % 2),
        seed=1_000_000 + seq,
        started_at=now - steps,
        ended_at=now,
    )


def publish_random_policy(registry_path: str | Path, *, version: int = 1, tasks=BENCH_TASKS, policy_config=None):
    """Publish a randomly initialised FlowChunkPolicy that knows `tasks`' instructions
    (random unit embeddings, so the sentence encoder is never loaded)."""
    import torch

    from lwd.fleet.registry import PolicyRegistry
    from lwd.policy.flow_policy import FlowChunkPolicy, PolicyConfig
    from lwd.policy.instructions import EMBEDDING_DIM, InstructionEncoder

    torch.manual_seed(version)
    policy = FlowChunkPolicy(policy_config or PolicyConfig(obs_dim=task_spec(tasks[0]).obs_dim))
    rng = np.random.default_rng(version)
    table = {}
    for name in tasks:
        vector = rng.normal(size=EMBEDDING_DIM).astype(np.float32)
        table[task_spec(name).instruction] = vector / np.linalg.norm(vector)
    return PolicyRegistry(registry_path).publish(
        policy, InstructionEncoder(table), version=version, parent_version=None, learner_step=0, data_snapshot=0
    )


def _percentiles(latencies: list[float], seconds: float) -> dict:
    ms = np.asarray(latencies) * 1000 if latencies else np.zeros(1)
    return {
        "requests": len(latencies),
        "per_s": len(latencies) / seconds,
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
    }


class _Bodies:
    """Upload bodies made cheaply: one episode's tensors, new metadata per (robot, seq), so
    the simulated robots spend their CPU on HTTP, not on making data."""

    def __init__(self, steps: int):
        from lwd.data.episode import episode_metadata, episode_tensors

        template = synthetic_episode("template", 0, steps=steps)
        self.tensors, self.meta = episode_tensors(template), episode_metadata(template)

    def __call__(self, robot: str, seq: int) -> bytes:
        from safetensors.numpy import save

        task = BENCH_TASKS[seq % len(BENCH_TASKS)]  # same shapes, other task and instruction
        meta = {**self.meta, "robot_id": robot, "seq": seq, "task": task, "instruction": task_spec(task).instruction}
        return save(self.tensors, metadata={"lwd_episode": json.dumps(meta, sort_keys=True)})


_SSL = None


def _robot_client(url: str, token: str, **headers):
    """One robot = one machine = its own client and connection (a shared pool of 1,000
    connections would cost the simulator more than the gateway). One TLS context serves all:
    httpx would otherwise load the CA bundle once per client (~30 ms each)."""
    import ssl

    import httpx

    global _SSL
    _SSL = _SSL or ssl.create_default_context()
    auth = {"Authorization": f"Bearer {token}", **headers}
    limits = httpx.Limits(max_connections=1)
    return httpx.AsyncClient(base_url=url, headers=auth, timeout=120.0, limits=limits, verify=_SSL)


async def _timed(out: list, errors: list, request) -> None:
    started = time.perf_counter()
    try:
        response = await request
        ok, what = response.status_code == 200, response
    except Exception as err:  # a refused or reset connection under overload is a result, not a crash
        ok, what = False, err
    (out if ok else errors).append(time.perf_counter() - started if ok else str(what)[:200])


async def _upload_loop(url: str, robot: str, token: str, seqs, until: float, bodies: _Bodies, out, errors) -> None:
    async with _robot_client(url, token) as client:
        while time.monotonic() < until:
            seq = next(seqs)
            await _timed(out, errors, client.put(f"/v1/episodes/{robot}/{seq}", content=bodies(robot, seq)))


async def _act_loop(url: str, robot: str, token: str, until: float, out: list, errors: list) -> None:
    spec, rng, n = task_spec(BENCH_TASKS[0]), np.random.default_rng(len(robot)), 0
    async with _robot_client(url, token, **{"Content-Type": "application/msgpack"}) as client:
        while time.monotonic() < until:
            n += 1
            body = encode_act_request(ActRequest(f"{robot}-{n}", rng.normal(size=spec.obs_dim), spec.instruction))
            await _timed(out, errors, client.post("/v1/act", content=body))


def _cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a process (Linux /proc), to tell who was the bottleneck."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _run_kind(client, kind: str, names, tokens, seconds: float, bodies: _Bodies, seq_start: int, server_pid: int):
    """One closed-loop phase: every robot uploads (or acts) back to back for `seconds`."""
    import itertools

    before = (await client.get("/metrics")).json()
    server_cpu, client_cpu = _cpu_seconds(server_pid), time.process_time()
    out, errors = [], []
    started = time.monotonic()
    until = started + seconds
    if kind == "upload":
        seqs = itertools.count(seq_start)
        jobs = [_upload_loop(str(client.base_url), r, tokens[r], seqs, until, bodies, out, errors) for r in names]
    else:
        jobs = [_act_loop(str(client.base_url), r, tokens[r], until, out, errors) for r in names]
    await asyncio.gather(*jobs)
    wall = time.monotonic() - started
    after = (await client.get("/metrics")).json()
    row = {**_percentiles(out, wall), "errors": len(errors)}
    row["client_cpu_cores"] = (time.process_time() - client_cpu) / wall
    if server_cpu is not None:
        row["server_cpu_cores"] = (_cpu_seconds(server_pid) - server_cpu) / wall
        row["server_cpu_ms_per_request"] = row["server_cpu_cores"] * wall * 1000 / max(row["requests"], 1)
    # server-side handler latency (the gateway's window of its last 10,000 requests)
    row["server_p50_ms"], row["server_p99_ms"] = (
        after.get(f"latency/{kind}_p50_ms"),
        after.get(f"latency/{kind}_p99_ms"),
    )
    if kind == "act":
        row["mean_batch"] = row["requests"] / max(after["act/policy_calls"] - before["act/policy_calls"], 1)
    else:
        row["mean_group_commit"] = row["requests"] / max(
            after["upload/store_commits"] - before["upload/store_commits"], 1
        )
    if errors:
        row["first_error"] = errors[0]
    return row


async def _level(url: str, tokens: dict[str, str], robots: int, config: GatewayBenchConfig, seq_start: int, pid: int):
    import httpx

    names = sorted(tokens)[:robots]
    bodies = _Bodies(config.steps)
    async with httpx.AsyncClient(base_url=url.rstrip("/"), timeout=120.0) as client:
        spec = task_spec(BENCH_TASKS[0])
        warm = encode_act_request(ActRequest("warm-up", np.zeros(spec.obs_dim), spec.instruction))
        headers = {"Authorization": f"Bearer {tokens[names[0]]}"}
        await client.post("/v1/act", content=warm, headers=headers)  # the first call loads the policy: not timed
        row = {"robots": robots, "load_average": os.getloadavg()[0]}
        for kind in ("upload", "act"):
            row[kind] = await _run_kind(client, kind, names, tokens, config.seconds, bodies, seq_start, pid)
        return row


async def _paced(url: str, tokens: dict[str, str], config: GatewayBenchConfig, seq_start: int) -> dict:
    names = sorted(tokens)[: config.paced_robots]
    bodies = _Bodies(config.steps)
    out, errors = [], []
    start = time.monotonic()

    async def robot(name: str, phase: float) -> None:
        async with _robot_client(url, tokens[name]) as client:
            k = 0
            while phase + k * config.paced_interval_s <= config.paced_seconds:
                await asyncio.sleep(max(0.0, start + phase + k * config.paced_interval_s - time.monotonic()))
                seq = seq_start + k
                await _timed(out, errors, client.put(f"/v1/episodes/{name}/{seq}", content=bodies(name, seq)))
                k += 1

    rng = np.random.default_rng(0)
    await asyncio.gather(*[robot(n, float(rng.uniform(0, config.paced_interval_s))) for n in names])
    return {
        "robots": len(names),
        "interval_s": config.paced_interval_s,
        "seconds": config.paced_seconds,
        "uploads": len(out),
        "errors": len(errors),
        **{k: v for k, v in _percentiles(out, config.paced_seconds).items() if k != "requests"},
    }


def bench_gateway(config: GatewayBenchConfig) -> dict:
    """Run every level against a fresh gateway process; write and return the report."""
    from lwd.data.store import EpisodeStore
    from lwd.fleet.registry import PolicyRegistry
    from lwd.gateway.launch import GatewayProcess
    from lwd.gateway.tokens import TokenBook

    with tempfile.TemporaryDirectory(prefix="lwd-bench-gateway-") as tmp:
        root = Path(tmp)
        if config.checkpoint:
            PolicyRegistry(root / "registry").publish_checkpoint(config.checkpoint, learner_step=0)
        else:
            publish_random_policy(root / "registry")
        robots = max([*config.concurrency, config.paced_robots])
        tokens = TokenBook(root / "gateway").add_many([f"bench-{i:04d}" for i in range(robots)])
        gateway_config = GatewayConfig(
            dir=str(root / "gateway"), store=str(root / "store"), registry=str(root / "registry"), port=0
        )
        levels, paced = [], None
        with GatewayProcess(gateway_config) as gateway:
            for i, level in enumerate(config.concurrency):
                row = asyncio.run(_level(gateway.url, tokens, level, config, 1_000_000 * i, gateway.process.pid))
                levels.append(row)
            if config.paced_robots:
                paced = asyncio.run(_paced(gateway.url, tokens, config, 10_000_000))
        committed = len(EpisodeStore(root / "store").records())
    report = {
        "config": asdict(config),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "levels": levels,
        "paced": paced,
        "episodes_committed": committed,
    }
    out = Path(config.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    return report
