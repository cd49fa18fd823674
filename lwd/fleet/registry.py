"""The policy registry: versioned checkpoints that the learner publishes and robots load.

Layout of a registry directory:

    versions/v000012/     one policy checkpoint per published version (lwd.policy.checkpoint)
    history.jsonl         one line per publication: version, parent, learner step,
                          data snapshot, publication time
    LATEST                JSON naming the newest version; replaced atomically

Publishing writes the checkpoint (itself an atomic directory rename), appends the
history line, then replaces LATEST with os.replace, so a reader sees either the old
or the new version, never a half-written one. Robots read LATEST only at episode
boundaries. Old versions are pruned except the newest `keep_last` and every
`keep_every`-th, which stay for later evaluation (success over versions).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

from lwd.policy.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from lwd.policy.flow_policy import FlowChunkPolicy
from lwd.policy.instructions import InstructionEncoder
from lwd.training.metrics import open_jsonl_for_append, read_jsonl


@dataclass(frozen=True)
class PublishedVersion:
    version: int
    parent_version: int | None
    learner_step: int
    data_snapshot: int  # online-store snapshot the learner had seen when publishing
    published_at: float  # seconds since epoch


class PolicySource(Protocol):
    """What a robot needs from the registry (a network client can implement it too)."""

    def latest(self) -> PublishedVersion | None: ...

    def load(self, version: int) -> tuple[FlowChunkPolicy, InstructionEncoder]: ...


class PolicyRegistry:
    """Local-directory registry; safe for one publisher and many reader processes."""

    def __init__(self, root: str | os.PathLike, *, keep_last: int = 20, keep_every: int = 10):
        if keep_last < 1 or keep_every < 1:
            raise ValueError("keep_last and keep_every must be >= 1")
        self.root = Path(root)
        self.keep_last, self.keep_every = keep_last, keep_every
        (self.root / "versions").mkdir(parents=True, exist_ok=True)

    def path(self, version: int) -> Path:
        return self.root / "versions" / f"v{version:06d}"

    # -- reading (robots) ---------------------------------------------------------------

    def latest(self) -> PublishedVersion | None:
        try:
            return PublishedVersion(**json.loads((self.root / "LATEST").read_text()))
        except FileNotFoundError:
            return None

    def load(self, version: int) -> tuple[FlowChunkPolicy, InstructionEncoder]:
        path = self.path(version)
        if not path.exists():
            raise CheckpointError(f"registry {self.root} has no version {version} (pruned or never published)")
        policy, encoder, _ = load_checkpoint(path)
        return policy.eval(), encoder

    def history(self) -> list[PublishedVersion]:
        path = self.root / "history.jsonl"
        if not path.exists():
            return []
        return [PublishedVersion(**record) for record in read_jsonl(path)]

    def available(self) -> list[int]:
        """Versions whose checkpoints are still on disk, oldest first."""
        return sorted(int(p.name[1:]) for p in (self.root / "versions").glob("v[0-9]*") if p.is_dir())

    # -- publishing (learner) -----------------------------------------------------------

    def next_version(self, at_least: int) -> int:
        """A version number never used before: above `at_least - 1` and above everything published."""
        latest = self.latest()
        published = max([latest.version if latest else -1, *self.available()], default=-1)
        return max(at_least, published + 1)

    def publish(
        self,
        policy: FlowChunkPolicy,
        encoder: InstructionEncoder,
        *,
        version: int,
        parent_version: int | None,
        learner_step: int,
        data_snapshot: int,
        extras: dict | None = None,
    ) -> PublishedVersion:
        latest = self.latest()
        if latest is not None and version <= latest.version:
            raise ValueError(f"version {version} is not newer than the published {latest.version}")
        save_checkpoint(
            self.path(version),
            policy,
            encoder,
            version=version,
            parent_version=parent_version,
            training_step=learner_step,
            data_snapshot=data_snapshot,
            extras=extras,
        )
        return self._announce(PublishedVersion(version, parent_version, learner_step, data_snapshot, time.time()))

    def publish_checkpoint(
        self, checkpoint: str | os.PathLike, *, learner_step: int, data_snapshot: int = 0
    ) -> PublishedVersion:
        """Publish an existing checkpoint (the offline policy) under its own version number."""
        policy, encoder, manifest = load_checkpoint(checkpoint)
        return self.publish(
            policy,
            encoder,
            version=manifest.version,
            parent_version=manifest.parent_version,
            learner_step=learner_step,
            data_snapshot=data_snapshot,
            extras={"source_checkpoint": str(checkpoint)},
        )

    def _announce(self, published: PublishedVersion) -> PublishedVersion:
        line = json.dumps(asdict(published))
        with open_jsonl_for_append(self.root / "history.jsonl") as handle:
            handle.write(line + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        tmp = self.root / f".LATEST.tmp-{os.getpid()}"
        tmp.write_text(line)
        os.replace(tmp, self.root / "LATEST")
        self._prune(published.version)
        return published

    def _prune(self, newest: int) -> None:
        versions = self.available()
        keep = set(versions[-self.keep_last :]) | {v for v in versions if v % self.keep_every == 0} | {newest}
        keep.add(versions[0])  # the starting policy, for before/after comparisons
        for version in versions:
            if version not in keep:
                shutil.rmtree(self.path(version), ignore_errors=True)
