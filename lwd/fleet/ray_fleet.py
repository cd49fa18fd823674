"""The fleet on a Ray cluster (`lwd deploy --fleet ray [--ray-address auto|HOST:PORT]`).

    driver: `lwd deploy` = the learner (OnlineLoop)          ── learner's node ──
      RayFleet: start / supervise / hold / stop  ──────────►  IngestActor (pinned here)
                                                               EpisodeStore writer, group commit
                                                               PolicyRegistry reader; weights
                                                                 → Ray object store, per version
                                                               robot leases, fencing tokens
                                                               stop / hold flags, heartbeats
    RobotActor × workers (SPREAD over nodes, num_cpus=1 each, restarted by Ray):
      the same RobotWorker loop as LocalFleet's processes, handed
        RayEpisodeSink    append_batch: the episodes finished in the last 0.2 s, as
                          bytes (safetensors) ─► Receipts (JSON), one call
        RayPolicySource   rollout (JSON, with the stop/hold poll), load: weights bytes
                          via an ObjectRef

Only bytes in documented formats and small JSON-able dicts cross a process boundary: an
episode travels as its store file (safetensors), a version as its checkpoint files, the
rollout as the registry's JSON. The learner is unchanged: it reads the online store and
publishes to the registry on its own disk, as with the local fleet.

Failures are the engine's: a robot actor that dies (kill -9, OOM, a lost node) is restarted
by Ray (`max_restarts=-1`) on any node with a free CPU, and its interrupted `run` call is
resubmitted (`max_task_retries=-1`); the new incarnation resumes each robot after its last
committed episode, so nothing is lost or committed twice. Actors are owned by the driver:
when `lwd deploy` dies, Ray kills them with it (the analogue of the local fleet's
parent-death signal), and the same command resumes the run.

This is the only module of lwd that imports Ray; `make_fleet("ray", ...)` imports it lazily,
so the embedded default never loads it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
import time
import uuid
from collections import OrderedDict
from dataclasses import asdict
from pathlib import Path

import ray
import torch
from ray.exceptions import GetTimeoutError, RayActorError, RayTaskError
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from lwd.data.episode import Episode, EpisodeValidationError, decode, encode
from lwd.data.group_commit import StoreWriter
from lwd.data.lease import RobotLease, RobotLeaseError
from lwd.data.store import EpisodeConflictError, Receipt, StoreError
from lwd.fleet.registry import PolicyRegistry, Rollout
from lwd.fleet.worker import FleetConfig, RobotWorker, robot_specs
from lwd.policy.checkpoint import CheckpointError, load_checkpoint
from lwd.policy.flow_policy import FlowChunkPolicy
from lwd.policy.instructions import InstructionEncoder

log = logging.getLogger(__name__)

WEIGHT_FILES = ("manifest.json", "policy.safetensors")  # what a robot needs of a checkpoint
# Robots read stop, hold and the rollout this often (they matter only at episode boundaries):
# one call per 0.2 s instead of one per boundary, at the price of a new version or a rollback
# reaching a robot up to 0.2 s later.
POLL_SECONDS = 0.2
# Robot actors send the episodes finished in this long in one call: one round trip and one
# store transaction for several episodes (fleet section of docs/benchmarks.md).
UPLOAD_INTERVAL_SECONDS = 0.2
ALIVE_SECONDS = 15.0  # a robot actor silent for longer is not counted in fleet/workers_alive
WEIGHT_CACHE = 4  # versions whose weights the ingest actor keeps in the object store
CALL_TIMEOUT_S = 120.0  # a robot's call to the ingest actor; longer means it is gone


class IngestActor:
    """The fleet's side of the learner's disk, on the learner's node (async: robots' calls
    interleave; store writes run on the `StoreWriter`'s one thread, grouped per commit).

    Leases. On Ray, "one process per robot id" becomes "one live incarnation of one robot
    actor per robot id": each robot id belongs to a fixed slot (robot actor `i` serves
    `robot_specs[i::workers]`), and Ray runs at most one incarnation of an actor at a time.
    A restarted actor (same slot, any node) claims its robots again and gets a new fencing
    token; appends carry the token, and one older than the robot's current token is refused,
    so an incarnation Ray has given up on (a partitioned node that comes back) can never
    commit after its successor started. Across runs the ingest actor also holds the store's
    own `flock` lease for every robot it serves, so another `deploy` (local, gateway or Ray)
    on the same store is refused while this one lives, and the kernel frees the leases when
    this actor dies.
    """

    def __init__(self, store: str, registry: str, owners: dict[str, int]):
        self.store_path, self.registry = store, PolicyRegistry(registry)
        self.owners = owners  # robot id -> the slot of the robot actor that serves it
        self.writer: StoreWriter | None = None
        self.tokens: dict[str, int] = {}
        self.flocks: dict[str, RobotLease] = {}
        self.flags = (False, False)  # (stop, hold)
        self.seen: dict[int, float] = {}
        self.incarnations: dict[int, int] = {}
        self.actors: dict[int, dict] = {}
        self.weight_refs: OrderedDict[int, ray.ObjectRef] = OrderedDict()
        self.appended = 0

    async def _store(self) -> StoreWriter:
        if self.writer is None:
            self.writer = StoreWriter(self.store_path)
            await self.writer.start()
        return self.writer

    async def _flock(self, robot_id: str, wait_seconds: float) -> str | None:
        """Hold the store's lease on `robot_id` in this process; the refusal, or None."""
        if robot_id not in self.flocks:
            leases = Path(self.store_path) / "leases"
            try:
                self.flocks[robot_id] = await asyncio.to_thread(RobotLease, leases, robot_id, wait_seconds=wait_seconds)
            except RobotLeaseError as err:
                return str(err)
        return None

    # -- robots ---------------------------------------------------------------------------

    async def register(self, slot: int, pid: int, node_id: str) -> int:
        """A robot actor (re)started; returns its incarnation (1 = first start)."""
        self.incarnations[slot] = self.incarnations.get(slot, 0) + 1
        self.actors[slot] = {"pid": pid, "node_id": node_id, "since": time.time()}
        self.seen[slot] = time.time()
        return self.incarnations[slot]

    async def lease(self, robot_id: str, slot: int, wait_seconds: float) -> dict:
        if self.owners.get(robot_id) != slot:
            return {"error": "lease", "message": f"robot {robot_id} is not served by robot actor {slot}"}
        refused = await self._flock(robot_id, wait_seconds)
        if refused:
            return {"error": "lease", "message": refused}
        # Newer than any token handed out before (time-based, so also after this actor restarts).
        token = max(time.time_ns(), self.tokens.get(robot_id, 0) + 1)
        self.tokens[robot_id] = token
        return {"token": token}

    async def release(self, robot_id: str, token: int) -> None:
        """The robot actor let go of the robot (the store's lease stays with this run)."""
        if self.tokens.get(robot_id) == token:
            del self.tokens[robot_id]

    async def _fence(self, robot_id: str, slot: int, token: int) -> str | None:
        """Why an append from (slot, token) must be refused, or None."""
        if self.owners.get(robot_id) != slot:
            return f"robot {robot_id} is not served by robot actor {slot}"
        current = self.tokens.get(robot_id)
        if current is not None and token < current:
            return f"robot {robot_id}: a newer incarnation of robot actor {slot} holds it; this one is stale"
        if current is None:  # this actor restarted and lost its tokens: the caller's stands
            refused = await self._flock(robot_id, 0.0)
            if refused:
                return refused
            self.tokens[robot_id] = token
        return None

    async def append_batch(self, datas: list[bytes], slot: int, tokens: dict[str, int]) -> list[dict]:
        """Commit episodes (their store files' bytes) in one transaction, in order; for each a
        Receipt as a dict, or an error. `tokens`: the caller's fencing token per robot id."""
        replies: list[dict | None] = [None] * len(datas)
        episodes, places = [], []
        for i, data in enumerate(datas):
            try:
                episode = decode(data, f"episode from robot actor {slot}")
            except EpisodeValidationError as err:
                replies[i] = {"error": "invalid", "message": str(err)}
                continue
            refused = await self._fence(episode.robot_id, slot, tokens.get(episode.robot_id, 0))
            if refused:
                replies[i] = {"error": "lease", "message": refused}
                continue
            episodes.append(episode)
            places.append(i)
        if episodes:
            try:
                results = await (await self._store()).append_many(episodes)
            except Exception as err:  # the writer itself failed: the robot retries
                results = [err] * len(episodes)
            for i, result in zip(places, results):
                replies[i] = self._reply(result)
        return replies

    def _reply(self, result: Receipt | BaseException) -> dict:
        if isinstance(result, EpisodeConflictError):
            return {"error": "conflict", "message": str(result)}
        if isinstance(result, EpisodeValidationError):
            return {"error": "invalid", "message": str(result)}
        if isinstance(result, BaseException):  # a full disk, a locked catalogue: the robot retries
            return {"error": "store", "message": f"{type(result).__name__}: {result}"}
        self.appended += 1
        return asdict(result)

    async def committed_ids(self, robot_id: str) -> list[int]:
        return sorted(await (await self._store()).committed_ids(robot_id))

    # -- policies -------------------------------------------------------------------------

    async def rollout(self) -> dict | None:
        rollout = self.registry.rollout()
        return rollout.to_json() if rollout else None

    async def weights(self, version: int) -> dict:
        """{"ref": [ObjectRef of {file name: bytes}]}: the version's checkpoint files, put in
        the object store once per version, so each node fetches them once for all its robots."""
        if version not in self.weight_refs:
            folder = self.registry.path(version)
            try:
                files = {name: (folder / name).read_bytes() for name in WEIGHT_FILES}
            except OSError as err:
                return {"error": f"registry has no complete version {version} ({err})"}
            self.weight_refs[version] = ray.put(files)
            while len(self.weight_refs) > WEIGHT_CACHE:
                self.weight_refs.popitem(last=False)
        self.weight_refs.move_to_end(version)
        return {"ref": [self.weight_refs[version]]}

    # -- control ----------------------------------------------------------------------------

    async def set_flags(self, stop: bool, hold: bool) -> None:
        self.flags = (stop, hold)

    async def poll(self, slot: int) -> tuple[bool, bool, dict | None]:
        """(stop, hold, the rollout as JSON) for a robot actor; also its heartbeat."""
        self.seen[slot] = time.time()
        return (*self.flags, await self.rollout())

    async def status(self) -> dict:
        now = time.time()
        return {
            "pid": os.getpid(),
            "incarnations": dict(self.incarnations),
            "seen_ago": {slot: now - at for slot, at in self.seen.items()},
            "actors": dict(self.actors),
            "appended": self.appended,
            "commits": self.writer.commits if self.writer else 0,
        }

    async def close(self) -> None:
        for lease in self.flocks.values():
            lease.release()
        self.flocks.clear()
        if self.writer is not None:
            await self.writer.close()
            self.writer = None


class _RayLease:
    """A robot actor's claim on one robot id, held by the ingest actor (see IngestActor)."""

    def __init__(self, ingest, robot_id: str, token: int):
        self.ingest, self.robot_id, self.token = ingest, robot_id, token
        self.held = True

    def release(self) -> None:
        if self.held:
            self.held = False
            try:
                ray.get(self.ingest.release.remote(self.robot_id, self.token), timeout=10)
            except (RayActorError, GetTimeoutError):
                pass  # the ingest is gone, and its leases with it


def _ingest_call(ref):
    """The reply of a call to the ingest actor; its unavailability as a retryable StoreError."""
    try:
        return ray.get(ref, timeout=CALL_TIMEOUT_S)
    except (RayActorError, GetTimeoutError) as err:
        raise StoreError(f"the ingest actor on the learner's node is unreachable ({type(err).__name__})") from err


_ERRORS = {
    "invalid": EpisodeValidationError,
    "conflict": EpisodeConflictError,
    "lease": RobotLeaseError,
    "store": StoreError,
}


def _receipt_or_error(reply: dict) -> Receipt | Exception:
    error = reply.get("error")
    return Receipt(**reply) if error is None else _ERRORS[error](reply["message"])


class RayEpisodeSink:
    """`EpisodeSink` through the ingest actor: episodes as safetensors bytes, receipts back."""

    def __init__(self, ingest, slot: int):
        self.ingest, self.slot = ingest, slot
        self.tokens: dict[str, int] = {}

    def append(self, episode: Episode) -> Receipt:
        result = self.append_batch([episode])[0]
        if isinstance(result, Exception):
            raise result
        return result

    def append_batch(self, episodes: list[Episode]) -> list[Receipt | Exception]:
        datas = [encode(episode)[0] for episode in episodes]
        tokens = {e.robot_id: self.tokens.get(e.robot_id, 0) for e in episodes}
        replies = _ingest_call(self.ingest.append_batch.remote(datas, self.slot, tokens))
        return [_receipt_or_error(reply) for reply in replies]

    def committed_ids(self, robot_id: str) -> set[int]:
        return set(_ingest_call(self.ingest.committed_ids.remote(robot_id)))

    def lease(self, robot_id: str, wait_seconds: float = 0.0) -> _RayLease:
        reply = _ingest_call(self.ingest.lease.remote(robot_id, self.slot, wait_seconds))
        if "error" in reply:
            raise RobotLeaseError(reply["message"])
        self.tokens[robot_id] = reply["token"]
        return _RayLease(self.ingest, robot_id, reply["token"])


class RayPolicySource:
    """`PolicySource` through the ingest actor: the rollout as of the last poll (at most
    POLL_SECONDS old), a version's weights through the object store when first needed."""

    def __init__(self, ingest, poll: IngestPoll):
        self.ingest, self.poll = ingest, poll

    def rollout(self) -> Rollout | None:
        return self.poll.rollout()

    def load(self, version: int) -> tuple[FlowChunkPolicy, InstructionEncoder]:
        reply = _ingest_call(self.ingest.weights.remote(version))
        if "error" in reply:
            raise CheckpointError(reply["error"])
        files = ray.get(reply["ref"][0], timeout=CALL_TIMEOUT_S)
        # The checkpoint loader validates a directory; a private temporary one per load.
        with tempfile.TemporaryDirectory(prefix=f"lwd-v{version}-") as folder:
            for name, data in files.items():
                (Path(folder) / name).write_bytes(data)
            policy, encoder, _ = load_checkpoint(folder)
        return policy.eval(), encoder


class IngestPoll:
    """Stop, hold and the rollout as the robot loop reads them every sweep: a cached copy of
    the ingest actor's, refreshed (and the heartbeat sent) by a call every POLL_SECONDS.

    The robots do not wait for the call's reply: the sweeps after it pick the reply up once
    it is there (a round trip to the ingest takes ~1 ms here, 1,000 calls in a row, and
    longer while it commits; waiting took that from the robots five times a second). So the
    copy is at most POLL_SECONDS plus a round trip plus one sweep old. Only the first read
    waits: no robot can start an episode before the rollout is known."""

    def __init__(self, ingest, slot: int):
        self.ingest, self.slot = ingest, slot
        self.flags = (False, False)
        self._rollout: Rollout | None = None
        self._in_flight: ray.ObjectRef | None = None
        self._sent_at = -POLL_SECONDS  # monotonic time of the last call; the first read sends one
        self._answered = False

    def _read(self) -> None:
        if self._in_flight is None and time.monotonic() - self._sent_at >= POLL_SECONDS:
            self._in_flight, self._sent_at = self.ingest.poll.remote(self.slot), time.monotonic()
        if self._in_flight is None:
            return
        ready, _ = ray.wait([self._in_flight], timeout=0.0 if self._answered else CALL_TIMEOUT_S)
        if ready:
            try:
                stop, hold, rollout = ray.get(ready[0])
                self.flags = (stop, hold)
                self._rollout = Rollout.from_json(rollout) if rollout else None
            except RayActorError:
                self.flags = (True, self.flags[1])  # the run is gone: finish the episodes and stop
        elif time.monotonic() - self._sent_at >= CALL_TIMEOUT_S:
            self.flags = (True, self.flags[1])  # no reply for so long: the run is gone, as above
        else:
            return  # the reply comes in a later sweep
        self._in_flight, self._answered = None, True

    def stopping(self) -> bool:
        self._read()
        return self.flags[0]

    def holding(self) -> bool:
        self._read()
        return self.flags[1]

    def rollout(self) -> Rollout | None:
        self._read()
        return self._rollout


class RobotActor:
    """One robot worker (`robot_specs[slot::workers]`) as a Ray actor."""

    def __init__(
        self,
        slot: int,
        config: FleetConfig,
        ingest_name: str,
        log_dir: str | None,
        lease_wait_seconds: float,
        seed: int,
    ):
        torch.set_num_threads(1)  # one core per actor, as a local worker process
        logging.basicConfig(level=logging.WARNING, format=f"robot actor {slot}: %(message)s")
        # Looked up by name, not handed over as a handle: Ray keeps a handle argument in the
        # object store, where a restart after its owner's death could not find it.
        ingest = ray.get_actor(ingest_name)
        self.slot, self.config, self.ingest, self.seed = slot, config, ingest, seed
        self.lease_wait_seconds = lease_wait_seconds
        self.log_dir = _writable(log_dir)
        node_id = ray.get_runtime_context().get_node_id()
        self.incarnation = ray.get(ingest.register.remote(slot, os.getpid(), node_id), timeout=CALL_TIMEOUT_S)

    def run(self) -> int:
        """Run the robots until the fleet stops; returns the episodes this call uploaded."""
        specs = robot_specs(self.config)[self.slot :: self.config.workers]
        sink = RayEpisodeSink(self.ingest, self.slot)
        poll = IngestPoll(self.ingest, self.slot)
        worker = RobotWorker(
            self.slot,
            specs,
            self.config,
            sink,
            RayPolicySource(self.ingest, poll),
            self.log_dir,
            lease_wait_seconds=self.lease_wait_seconds,
            seed=self.seed,
            upload_sink=lambda: sink,  # thread-safe: uploads wait for the ingest off the robots' loop
            upload_interval_s=UPLOAD_INTERVAL_SECONDS,
        )
        try:
            worker.run(poll.stopping, poll.holding)
        finally:
            worker.release()
        return worker.uploaded


def _writable(log_dir: str | None) -> str | None:
    """The run directory for the robots' status and audit files, if this node can write it
    (the same path on every node: shared storage makes them one directory)."""
    if log_dir is None:
        return None
    try:
        Path(log_dir).mkdir(parents=True, exist_ok=True)
        return log_dir
    except OSError as err:
        log.warning("robot status and audit files not written on this node: %s", err)
        return None


_IngestActor = ray.remote(IngestActor)
_RobotActor = ray.remote(RobotActor)


class RayFleet:
    """`Fleet` on a Ray cluster: `workers` robot actors spread over the nodes and one ingest
    actor on the driver's (the learner's) node.

    `address`: "" starts a private local Ray instance (stopped with the fleet), "auto" joins
    the cluster this machine belongs to, "HOST:PORT" a given head node. If the driver is
    already connected (`ray.init` called before), that connection is used and kept."""

    def __init__(
        self,
        config: FleetConfig,
        store: str | Path,
        registry: str | Path,
        log_dir: str | Path | None = None,
        seed: int = 0,
        address: str = "",
        cpus_per_worker: float = 1.0,
        max_restarts: int = 20,
        lease_wait_seconds: float = 10.0,
    ):
        self.config, self.seed, self.address = config, seed, address
        self.store, self.registry = str(store), str(registry)
        self.log_dir = str(log_dir) if log_dir else None
        self.cpus_per_worker, self.max_restarts = cpus_per_worker, max_restarts
        self.lease_wait_seconds = lease_wait_seconds
        self.restarts = 0
        self.ingest = None
        self.actors: list = []
        self.runs: dict = {}  # ObjectRef of a robot actor's run() -> its slot
        self._flags = (False, False)
        self._incarnations: dict[int, int] = {}
        self._owns_ray = False
        self.ingest_name = f"lwd-ingest-{uuid.uuid4().hex[:12]}"

    def start(self) -> None:
        if not ray.is_initialized():
            # "local", not None: None would join whatever cluster another process on this
            # machine last started (Ray's /tmp/ray/ray_current_cluster), even one in another
            # network namespace, and hang there.
            ray.init(address=self.address or "local", include_dashboard=False, logging_level=logging.WARNING)
            self._owns_ray = True
        here = ray.get_runtime_context().get_node_id()
        owners = {spec.robot_id: spec.index % self.config.workers for spec in robot_specs(self.config)}
        # Pinned (hard affinity) to the learner's node: the store and registry are its local disk.
        self.ingest = _IngestActor.options(
            name=self.ingest_name,  # robot actors find it by name; unique, so runs can share a cluster
            num_cpus=0,
            scheduling_strategy=NodeAffinitySchedulingStrategy(here, soft=False),
            max_restarts=-1,
            max_task_retries=-1,
        ).remote(self.store, self.registry, owners)
        cpus = ray.cluster_resources().get("CPU", 0)
        if cpus < self.config.workers * self.cpus_per_worker:
            log.warning(
                "the cluster has %.0f CPUs for %d robot actors of %.1f CPU: some wait for resources",
                cpus,
                self.config.workers,
                self.cpus_per_worker,
            )
        self.actors = [self._robot_actor(slot) for slot in range(self.config.workers)]
        self.runs = {actor.run.remote(): slot for slot, actor in enumerate(self.actors)}

    def _robot_actor(self, slot: int):
        # SPREAD: robot actors go to different nodes while there are nodes with room; Ray
        # restarts a dead one (and resubmits its run) on whichever node has a CPU free.
        return _RobotActor.options(
            num_cpus=self.cpus_per_worker,
            scheduling_strategy="SPREAD",
            max_restarts=-1,
            max_task_retries=-1,
        ).remote(slot, self.config, self.ingest_name, self.log_dir, self.lease_wait_seconds, self.seed)

    def supervise(self) -> list[int]:
        """Ray restarts dead robot actors itself; here: count the restarts, recreate an actor
        that is gone for good, and report a robot refused its lease."""
        if self._flags[0] or not self.runs:
            return []
        done, _ = ray.wait(list(self.runs), num_returns=len(self.runs), timeout=0)
        for ref in done:
            self._replace_run(ref)
        restarted = self._count_restarts()
        if self.restarts > self.max_restarts:
            raise RuntimeError(f"robot actors were restarted {self.restarts} times; giving up")
        return restarted

    def _count_restarts(self) -> list[int]:
        """Add the robot actors' new incarnations (registered with the ingest) to `restarts`;
        the slots that restarted since the last count."""
        try:
            incarnations = ray.get(self.ingest.status.remote(), timeout=30)["incarnations"]
        except (RayActorError, GetTimeoutError):
            return []
        restarted = [slot for slot, count in incarnations.items() if count > self._incarnations.get(slot, 1)]
        for slot in restarted:
            self.restarts += incarnations[slot] - self._incarnations.get(slot, 1)
            self._incarnations[slot] = incarnations[slot]
        return restarted

    def _replace_run(self, ref) -> None:
        """A robot actor's run() returned while the fleet runs: find out why and go on."""
        slot = self.runs.pop(ref)
        try:
            ray.get(ref)
            log.warning("robot actor %d stopped on its own; running it again", slot)
            self.restarts += 1
        except RayTaskError as err:
            if isinstance(err.cause, RobotLeaseError):
                raise RuntimeError(
                    f"robot actor {slot} was refused its robots: {err.cause}; stop that process or use another "
                    "run directory"
                ) from None
            log.warning("robot actor %d failed (%s); running it again", slot, err.cause)
            self.restarts += 1
        except RayActorError:  # gone for good (killed without restart): a new actor for the slot
            log.warning("robot actor %d is gone; starting a new one", slot)
            self.actors[slot] = self._robot_actor(slot)  # its registration counts the restart
        self.runs[self.actors[slot].run.remote()] = slot

    def hold(self, holding: bool) -> None:
        if holding != self._flags[1]:  # pacing calls this every tick; send only changes
            self._flags = (self._flags[0], holding)
            self.ingest.set_flags.remote(*self._flags)

    @property
    def holding(self) -> bool:
        return self._flags[1]

    @property
    def alive(self) -> int:
        """Robot actors heard from within ALIVE_SECONDS (they poll the flags every sweep)."""
        if self.ingest is None:
            return 0
        try:
            seen_ago = ray.get(self.ingest.status.remote(), timeout=30)["seen_ago"]
        except (RayActorError, GetTimeoutError):
            return 0
        return sum(ago < ALIVE_SECONDS for ago in seen_ago.values())

    def status(self) -> dict:
        """The ingest actor's view: incarnations, heartbeats, pids and nodes of robot actors."""
        return ray.get(self.ingest.status.remote(), timeout=30)

    def stop(self, timeout: float = 60.0) -> None:
        """Robots finish their current episodes and upload them; stragglers are killed."""
        if self.ingest is None:
            return
        self._flags = (True, self._flags[1])
        try:
            ray.get(self.ingest.set_flags.remote(*self._flags), timeout=30)
            done, pending = ray.wait(list(self.runs), num_returns=len(self.runs), timeout=timeout)
            for ref in done:
                try:
                    ray.get(ref)
                except (RayTaskError, RayActorError) as err:
                    log.warning("robot actor %d ended with %s", self.runs[ref], err)
            if pending:
                log.warning("%d robot actors did not finish within %.0f s; killed", len(pending), timeout)
            self._count_restarts()  # restarts since the last supervise() count too
            for actor in self.actors:
                ray.kill(actor, no_restart=True)
            ray.get(self.ingest.close.remote(), timeout=30)
        except (RayActorError, GetTimeoutError) as err:
            log.warning("stopping the Ray fleet: %s", err)
        finally:
            ray.kill(self.ingest, no_restart=True)
            self.ingest, self.runs = None, {}
            if self._owns_ray:
                ray.shutdown()
                self._owns_ray = False
