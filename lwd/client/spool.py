"""The robot's durable upload spool and `RemoteEpisodeSink`, the worker's `EpisodeSink`
over the network.

A finished episode is first made durable on the robot's own disk, the way the store
makes it durable (temp file, fsync, rename, fsync of the directory), and only then
offered to the gateway by a background thread that retries with exponential backoff and
jitter until the gateway's receipt arrives. The spool file is deleted only after that
receipt has been written to the robot's ledger. So a robot survives gateway outages, a
bad link and its own death: at-least-once delivery from the spool plus the store's
idempotent episode ids gives exactly-once in the store.

Layout of a spool directory:

    pending/<robot>/<seq>.safetensors  durable, waiting for the gateway's receipt (the store's file bytes)
    acknowledged/<robot>.jsonl         the ledger: one line per receipt (seq, digest, snapshot, duplicate)
    rejected/<robot>/<seq>.safetensors refused by the gateway for good, with <seq>.reason.txt; kept, never deleted
    tmp/<pid>-<uuid>.part              being written; a dead writer's are removed when a spool opens
    leases/<robot>.lock                one process drives a robot id (lwd.data.lease)
    uploader.lock                      one uploader thread per spool directory, whatever the processes

Crash points: killed while writing, the temp file is debris and the episode was never
acknowledged to the robot (the worker re-runs it); killed after the rename, the file is
uploaded by the next uploader; killed mid-upload or after the gateway committed but before
the ledger line, the re-upload is acknowledged as a duplicate; killed after the ledger
line but before the delete, the same.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import random
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from lwd.client.http import GatewayClient, GatewayError
from lwd.data.episode import Episode, content_digest, decode, encode, validate
from lwd.data.lease import RobotLease, pid_alive
from lwd.data.store import EpisodeConflictError, Receipt

log = logging.getLogger(__name__)

SPOOLED = 0  # the snapshot of a receipt for an episode durable in the spool, not yet at the gateway


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _append_line(path: Path, line: str) -> None:
    """Append one line durably; a torn last line (its writer was killed) is cut off first,
    so the new record does not run into it."""
    with open(path, "a+b") as handle:
        size = handle.seek(0, os.SEEK_END)
        if size:
            handle.seek(size - 1)
            if handle.read(1) != b"\n":
                handle.seek(0)
                data = handle.read()
                handle.truncate(data.rfind(b"\n") + 1)
        handle.write(line.encode() + b"\n")
        handle.flush()
        os.fsync(handle.fileno())


@dataclass(frozen=True)
class SpooledEpisode:
    robot_id: str
    seq: int
    path: Path


class EpisodeSpool:
    """The on-disk spool (layout in the module docstring). Safe for several processes, each
    driving its own robots; one of them at a time uploads."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self._ledgers: dict[str, tuple[int, dict[int, dict]]] = {}  # robot -> (bytes read, entries)
        self._ledger_lock = threading.Lock()
        for sub in ("pending", "acknowledged", "rejected", "tmp", "leases"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        for part in (self.root / "tmp").glob("*.part"):  # torn writes of dead processes
            pid = part.name.split("-", 1)[0]
            if pid.isdigit() and not pid_alive(int(pid)):
                part.unlink(missing_ok=True)

    def _pending_path(self, robot_id: str, seq: int) -> Path:
        return self.root / "pending" / robot_id / f"{seq:010d}.safetensors"

    def put(self, episode: Episode) -> Receipt:
        """Make the episode durable here. The same content again is a duplicate; other content
        under an id already spooled or acknowledged is an EpisodeConflictError."""
        validate(episode)  # the store's own check: what the gateway would refuse never enters the spool
        data, digest = encode(episode)
        acknowledged = self.acknowledged(episode.robot_id)
        if episode.seq in acknowledged:
            entry = acknowledged[episode.seq]
            if entry["digest"] != digest:
                raise EpisodeConflictError(f"episode {episode.episode_id} was already delivered with different content")
            return Receipt(episode.episode_id, entry["snapshot"], duplicate=True)
        final = self._pending_path(episode.robot_id, episode.seq)
        if final.exists():
            if content_digest(decode(final.read_bytes(), str(final), check=False)) != digest:
                raise EpisodeConflictError(f"episode {episode.episode_id} is already spooled with different content")
            return Receipt(episode.episode_id, SPOOLED, duplicate=True)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.root / "tmp" / f"{os.getpid()}-{uuid.uuid4().hex}.part"
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, final)
        _fsync_dir(final.parent)
        return Receipt(episode.episode_id, SPOOLED, duplicate=False)

    def pending(self, robots: set[str] | None = None) -> list[SpooledEpisode]:
        """Spooled episodes, oldest first (robots in turn, each in seq order)."""
        found = []
        for directory in (self.root / "pending").iterdir():
            if robots is not None and directory.name not in robots:
                continue
            for path in directory.glob("*.safetensors"):
                found.append(SpooledEpisode(directory.name, int(path.stem), path))
        return sorted(found, key=lambda e: (e.seq, e.robot_id))

    def acknowledged(self, robot_id: str) -> dict[int, dict]:
        """The robot's ledger: seq -> {digest, snapshot, duplicate, at}. Read incrementally
        (only lines appended since the last call), so a long ledger costs nothing per episode."""
        path = self.root / "acknowledged" / f"{robot_id}.jsonl"
        with self._ledger_lock:
            offset, entries = self._ledgers.get(robot_id, (0, {}))
            try:
                with open(path, "rb") as handle:
                    if os.fstat(handle.fileno()).st_size < offset:  # cut back (a torn line): read again
                        offset, entries = 0, {}
                    handle.seek(offset)
                    new = handle.read()
            except FileNotFoundError:
                return {}
            complete = new[: new.rfind(b"\n") + 1]  # a torn last line is not a record yet
            for line in complete.splitlines():
                if line.strip():
                    record = json.loads(line)
                    entries[record["seq"]] = record
            self._ledgers[robot_id] = (offset + len(complete), entries)
            return dict(entries)

    def known_ids(self, robot_id: str) -> set[int]:
        """Seqs this spool holds or has delivered: a resuming robot continues after them."""
        return set(self.acknowledged(robot_id)) | {e.seq for e in self.pending({robot_id})}

    def acknowledge(self, spooled: SpooledEpisode, receipt: Receipt, digest: str) -> None:
        """Record the gateway's receipt durably, then drop the spooled file."""
        line = {"seq": spooled.seq, "digest": digest, "snapshot": receipt.snapshot, "duplicate": receipt.duplicate}
        _append_line(self.root / "acknowledged" / f"{spooled.robot_id}.jsonl", json.dumps({**line, "at": time.time()}))
        spooled.path.unlink(missing_ok=True)
        _fsync_dir(spooled.path.parent)

    def reject(self, spooled: SpooledEpisode, reason: str) -> Path:
        """Move an episode the gateway refused for good out of pending/ (kept, with the reason)."""
        target = self.root / "rejected" / spooled.robot_id / spooled.path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.with_suffix(".reason.txt").write_text(reason + "\n")
        os.replace(spooled.path, target)
        _fsync_dir(target.parent)
        return target

    def rejected(self) -> list[Path]:
        return sorted((self.root / "rejected").rglob("*.safetensors"))


@dataclass(frozen=True)
class UploadPolicy:
    """How the uploader retries: exponential backoff with full jitter, capped."""

    initial_backoff_s: float = 0.5
    max_backoff_s: float = 30.0
    idle_poll_s: float = 1.0  # how often an idle uploader looks for files other processes spooled
    # while a stopping process flushes, a backoff grown during an outage must not outlast the flush
    flush_retry_s: float = 1.0

    def __post_init__(self) -> None:
        if min(self.initial_backoff_s, self.max_backoff_s, self.idle_poll_s, self.flush_retry_s) <= 0:
            raise ValueError(f"upload policy times must be positive (a zero one spins the uploader): {self}")

    def backoff(self, failures: int) -> float:
        return random.uniform(0, min(self.max_backoff_s, self.initial_backoff_s * 2 ** min(failures, 30)))


class SpoolUploader:
    """The background thread that drains a spool to the gateway. It uploads only while it
    holds the spool's uploader lock, so processes sharing a spool never race on a file."""

    def __init__(self, spool: EpisodeSpool, client: GatewayClient, tokens: dict[str, str], policy: UploadPolicy):
        self.spool, self.policy = spool, policy
        self._client, self._tokens = client, tokens
        self._clients: dict[str, GatewayClient] = {}
        self._wake = threading.Event()
        self._retry_now = threading.Event()
        self._hurried = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lwd-spool-uploader", daemon=True)
        self.delivered = 0
        self.failures = 0  # consecutive transient failures
        self.last_error: str | None = None

    def start(self) -> None:
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def hurry(self) -> None:
        """Retry now, and from here on at most `flush_retry_s` apart (the process is stopping)."""
        self._hurried = True
        self._retry_now.set()
        self._wake.set()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._retry_now.set()
        self._wake.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        lock = None
        while not self._stop.is_set():
            if lock is None:
                lock = self._try_lock()
                if lock is None:
                    self._wake.wait(self.policy.idle_poll_s)
                    self._wake.clear()
                    continue
            try:
                progressed, retry_in = self._drain()
            except Exception as err:  # a full disk, a damaged file: never let the uploader die
                log.exception("spool uploader: %s", err)
                self.failures += 1
                progressed, retry_in = False, self.policy.backoff(self.failures)
            if retry_in is not None:
                if self._hurried:
                    retry_in = min(retry_in, self.policy.flush_retry_s)
                self._retry_now.wait(retry_in)
                self._retry_now.clear()
            elif not progressed:
                self._wake.wait(self.policy.idle_poll_s)
                self._wake.clear()
        if lock is not None:
            os.close(lock)

    def _try_lock(self) -> int | None:
        fd = os.open(self.spool.root / "uploader.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            os.close(fd)
            return None

    def _client_for(self, robot_id: str) -> GatewayClient | None:
        token = self._tokens.get(robot_id)
        if token is None:
            return None
        if robot_id not in self._clients:
            self._clients[robot_id] = self._client.with_token(token)
        return self._clients[robot_id]

    def _drain(self) -> tuple[bool, float | None]:
        """Upload what is pending; (anything delivered, seconds to wait before retrying)."""
        progressed = False
        for spooled in self.spool.pending(set(self._tokens)):
            if self._stop.is_set():
                break
            try:
                data = spooled.path.read_bytes()
            except FileNotFoundError:  # delivered meanwhile by another uploader generation
                continue
            try:
                receipt = self._client_for(spooled.robot_id).upload(spooled.robot_id, spooled.seq, data)
            except GatewayError as err:
                if err.retryable or err.code == "unauthorized":  # a token can be fixed; keep the episode
                    self.failures += 1
                    self.last_error = str(err)
                    log.warning("upload of %s/%d failed (%s); retrying", spooled.robot_id, spooled.seq, err)
                    return progressed, self.policy.backoff(self.failures)
                log.error("gateway refused %s/%d for good: %s", spooled.robot_id, spooled.seq, err)
                self.spool.reject(spooled, str(err))
                continue
            digest = content_digest(decode(data, str(spooled.path), check=False))
            self.spool.acknowledge(spooled, receipt, digest)
            self.failures, self.delivered, progressed = 0, self.delivered + 1, True
        return progressed, None


class RemoteEpisodeSink:
    """The worker's `EpisodeSink` (append, committed_ids, lease) over the network.

    `append` returns once the episode is durable in the local spool: its Receipt has
    snapshot 0 (`SPOOLED`) because the gateway's acknowledgement comes later, from the
    background uploader. `committed_ids` is the union of what the gateway has committed,
    what the ledger records as delivered and what waits in the spool, so a restarted
    robot neither redoes nor skips an episode, also while the gateway is unreachable.
    `lease` is a flock on the spool directory, the local analogue of the store's lease.

    `tokens` maps each robot id this process drives to its token (a str: one robot's).
    """

    def __init__(
        self,
        url: str,
        tokens: dict[str, str],
        spool_dir: str | os.PathLike,
        *,
        upload_policy: UploadPolicy | None = None,
        timeout: float = 30.0,
        verify: bool | str = True,
    ):
        if not tokens:
            raise ValueError("RemoteEpisodeSink needs a token for each robot it uploads for")
        self.spool = EpisodeSpool(spool_dir)
        self.tokens = dict(tokens)
        first = next(iter(self.tokens.values()))
        self._client = GatewayClient(url, first, timeout=timeout, verify=verify)
        self._query_client = GatewayClient(url, first, timeout=min(timeout, 10.0), verify=verify)
        self.uploader = SpoolUploader(self.spool, self._client, self.tokens, upload_policy or UploadPolicy())
        self.uploader.start()

    def append(self, episode: Episode) -> Receipt:
        if episode.robot_id not in self.tokens:
            raise ValueError(f"no token for robot {episode.robot_id!r} in this sink")
        receipt = self.spool.put(episode)
        self.uploader.wake()
        return receipt

    def committed_ids(self, robot_id: str) -> set[int]:
        local = self.spool.known_ids(robot_id)
        token = self.tokens.get(robot_id)
        if token is None:
            raise ValueError(f"no token for robot {robot_id!r} in this sink")
        try:
            remote = self._query_client.with_token(token).committed(robot_id)
        except GatewayError as err:
            if not err.retryable:
                raise
            log.warning("gateway unreachable (%s); resuming %s from the local spool and ledger", err, robot_id)
            remote = set()
        return local | remote

    def lease(self, robot_id: str, wait_seconds: float = 0.0) -> RobotLease:
        return RobotLease(self.spool.root / "leases", robot_id, wait_seconds=wait_seconds)

    def pending(self) -> int:
        return len(self.spool.pending(set(self.tokens)))

    def flush(self, timeout: float = 60.0) -> bool:
        """Wait until this sink's robots have nothing left in the spool; False on timeout."""
        deadline = time.monotonic() + timeout
        self.uploader.hurry()
        while self.pending():
            if time.monotonic() > deadline:
                return False
            self.uploader.wake()
            time.sleep(0.05)
        return True

    def close(self, flush_timeout: float = 0.0) -> None:
        """Stop uploading (after up to `flush_timeout` s of draining); spooled files stay for next time."""
        if flush_timeout > 0:
            self.flush(flush_timeout)
        self.uploader.stop()
        self._client.close()
        self._query_client.close()
