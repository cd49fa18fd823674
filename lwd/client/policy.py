"""Policies for a robot that reaches the learner only through the gateway.

Two ways to act, chosen per robot:

- on-robot inference: `RemotePolicySource` is the worker's `PolicySource` (rollout, load);
  it downloads a version's weight bundle once, verifies its sha256 and keeps it in a
  per-version cache on the robot's disk, then loads it with the same `load_checkpoint`
  the learner's machine uses;
- server-side inference: `RemotePolicy` is an `Actor` whose chunks come from the
  gateway's batched policy server (`POST /v1/act`).

Either way a robot switches versions only at an episode boundary: the worker reads
`rollout()` when an episode starts, and `RemotePolicy` pins the version of its first
chunk (by default the one the rollout names for its robot) until `start_episode`.
"""

from __future__ import annotations

import logging
import os
import shutil
import tarfile
import time
import uuid
from pathlib import Path

import numpy as np

from lwd.client.http import GatewayClient, GatewayError
from lwd.envs.robot import Observation
from lwd.fleet.chunks import ChunkQueue
from lwd.gateway.wire import ActRequest

log = logging.getLogger(__name__)

BUNDLE_MEMBERS = ("manifest.json", "policy.safetensors")
_MAX_MEMBER_BYTES = 4 * 2**30


class RemotePolicySource:
    """`PolicySource` over the gateway, with an on-disk cache of verified versions.

    `rollout()` says which version each robot runs (the deployed one, or a canary for the
    robots the rollout names), as the local registry does. While the gateway is unreachable
    it returns the last rollout it saw (the robot keeps running what it has) and warns;
    before it has seen any it raises."""

    def __init__(self, url: str, token: str, cache_dir: str | os.PathLike, *, timeout: float = 60.0, verify=True):
        self.client = GatewayClient(url, token, timeout=timeout, verify=verify)
        self.cache = Path(cache_dir)
        self.cache.mkdir(parents=True, exist_ok=True)
        self._last = None
        self._sha256: dict[int, str] = {}

    def rollout(self):
        from lwd.fleet.registry import Rollout

        try:
            info = self.client.rollout()
        except GatewayError as err:
            if err.retryable and self._last is not None:
                log.warning("gateway unreachable (%s); staying on the last rollout seen", err)
                return self._last
            raise
        if info is None:
            return None
        for key in ("deployed", "canary"):
            if info[key] is not None:
                self._sha256[info[key]["version"]] = info[key]["sha256"]
                info[key] = _published_fields(info[key])
        self._last = Rollout.from_json(info)
        return self._last

    def path(self, version: int) -> Path:
        return self.cache / f"v{version:06d}"

    def load(self, version: int):
        """(policy in eval mode, instruction encoder) of `version`, downloaded once."""
        from lwd.policy.checkpoint import load_checkpoint

        target = self.path(version)
        if not (target / "sha256").exists():
            self._download(version, target)
        policy, encoder, _ = load_checkpoint(target)
        return policy.eval(), encoder

    def _download(self, version: int, target: Path) -> None:
        """Fetch, verify and unpack into a temp dir, then rename it into the cache."""
        staging = self.cache / f".v{version:06d}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        staging.mkdir()
        try:
            bundle = staging / "bundle.tar"
            digest = self.client.download_weights(version, bundle, self._sha256.get(version))
            _unpack(bundle, staging)
            bundle.unlink()
            (staging / "sha256").write_text(digest + "\n")
            shutil.rmtree(target, ignore_errors=True)  # an incomplete copy (no sha256 marker)
            os.replace(staging, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def close(self) -> None:
        self.client.close()


def _published_fields(entry: dict) -> dict:
    """The PublishedVersion fields of a rollout entry (the gateway adds sha256, size, policy)."""
    from dataclasses import fields

    from lwd.fleet.registry import PublishedVersion

    return {f.name: entry[f.name] for f in fields(PublishedVersion) if f.name in entry}


def _unpack(bundle: Path, directory: Path) -> None:
    """Extract exactly the bundle's two regular files by name, never a path the tar names:
    a hostile tar cannot write outside `directory`, link, or add files."""
    with tarfile.open(bundle, mode="r:") as tar:
        members = {m.name: m for m in tar.getmembers()}
        if set(members) != set(BUNDLE_MEMBERS):
            raise GatewayError(0, "bad_bundle", f"weight bundle holds {sorted(members)}, expected {BUNDLE_MEMBERS}")
        for name in BUNDLE_MEMBERS:
            member = members[name]
            if not member.isreg() or member.size > _MAX_MEMBER_BYTES:
                raise GatewayError(0, "bad_bundle", f"weight bundle member {name} is not a regular file of sane size")
            with tar.extractfile(member) as source, open(directory / name, "wb") as out:
                shutil.copyfileobj(source, out)


class RemotePolicy(ChunkQueue):
    """An `Actor` served by the gateway's policy: one `POST /v1/act` per chunk.

    `start_episode(version)` pins the version for the episode (None: the newest, pinned
    from the first chunk on), so an episode never mixes versions. `version` is the version
    of the chunk being executed, as `PolicyActor` has it. Transient gateway errors are
    retried `retries` times with backoff, then raised to the robot's loop."""

    def __init__(self, client: GatewayClient, *, execute_steps: int = 0, retries: int = 3):
        super().__init__(execute_steps)
        self.client, self.retries = client, retries
        self._pinned: int | None = None
        self.last_batch_size = 0

    def start_episode(self, version: int | None = None) -> None:
        self._pinned = version
        self.reset()

    def request_chunk(self, observation: Observation) -> np.ndarray:
        """(H, A) actions for this observation from the gateway; pins the version."""
        request = ActRequest(
            request_id=uuid.uuid4().hex,
            state=np.asarray(observation.state, np.float32),
            instruction=observation.instruction,
            frames=dict(observation.images),
            version=self._pinned,
        )
        for attempt in range(self.retries + 1):
            try:
                response = self.client.act(request)
                break
            except GatewayError as err:
                if not err.retryable or attempt == self.retries:
                    raise
                time.sleep(min(0.1 * 2**attempt, 2.0))
        self._pinned = response.version
        self.last_batch_size = response.batch_size
        self.fill(response.actions, response.version)
        return response.actions

    def act(self, observation: Observation) -> np.ndarray:
        if self.needs_chunk:
            self.request_chunk(observation)
        return self.next_action()
