"""The policy registry: versioned checkpoints that the learner publishes and robots load.

Layout of a registry directory:

    versions/v000012/     one policy checkpoint per published version (lwd.policy.checkpoint)
    history.jsonl         one line per publication: version, parent, learner step,
                          data snapshot, publication time
    LATEST                JSON naming the newest version; replaced atomically
    ROLLOUT               which version robots run (deployed, and a canary candidate for
                          a share of robots); absent: robots follow LATEST
    decisions.jsonl       one line per rollout decision (promoted, rejected, canary,
                          rolled back) with who took it and the evidence

Publishing writes the checkpoint (itself an atomic directory rename), appends the
history line, then replaces LATEST with os.replace, so a reader sees either the old
or the new version, never a half-written one. Robots read LATEST only at episode
boundaries. Old versions are pruned except the newest `keep_last` and every
`keep_every`-th, which stay for later evaluation (success over versions), the versions
the rollout names and the last `ROLLBACK_DEPTH` deployed ones (rollback targets).

Published versions are candidates. Until a gate or a person writes ROLLOUT, robots run
the newest (an ungated fleet); once ROLLOUT exists, robots run its `deployed` version,
and the robots in `canary_robots` run its `canary` version. A rollback pins the rollout:
newer publications stay candidates until someone promotes one.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, replace
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
    env_steps: int | None = None  # online env steps the fleet had made when publishing


@dataclass(frozen=True)
class Rollout:
    """Which version each robot runs: `deployed`, or `canary` for the robots named in
    `canary_robots`. `pinned` (after a rollback) keeps gates from promoting on their own."""

    deployed: PublishedVersion | None
    canary: PublishedVersion | None = None
    canary_robots: tuple[str, ...] = ()
    pinned: bool = False

    def version_for(self, robot_id: str) -> PublishedVersion | None:
        if self.canary is not None and robot_id in self.canary_robots:
            return self.canary
        return self.deployed

    def to_json(self) -> dict:
        return {
            "deployed": asdict(self.deployed) if self.deployed else None,
            "canary": asdict(self.canary) if self.canary else None,
            "canary_robots": list(self.canary_robots),
            "pinned": self.pinned,
        }

    @classmethod
    def from_json(cls, data: dict) -> Rollout:
        def published(entry: dict | None) -> PublishedVersion | None:
            return PublishedVersion(**entry) if entry else None

        return cls(
            published(data["deployed"]),
            published(data.get("canary")),
            tuple(data.get("canary_robots", ())),
            bool(data.get("pinned", False)),
        )


DECISIONS = ("promoted", "rejected", "canary", "rolled_back")
ROLLBACK_DEPTH = 5  # the last deployed versions that pruning keeps as rollback targets


class PolicySource(Protocol):
    """What a robot needs from the registry (a network client can implement it too):
    at each episode boundary the rollout, then the weights of the version it names."""

    def rollout(self) -> Rollout | None: ...

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
        """The newest published version (a candidate, unless the fleet is ungated)."""
        try:
            return PublishedVersion(**json.loads((self.root / "LATEST").read_text()))
        except FileNotFoundError:
            return None

    def rollout(self) -> Rollout | None:
        """What robots run now; None before anything is published."""
        try:
            return Rollout.from_json(json.loads((self.root / "ROLLOUT").read_text()))
        except FileNotFoundError:
            latest = self.latest()
            return Rollout(latest) if latest else None

    def deployed(self) -> PublishedVersion | None:
        rollout = self.rollout()
        return rollout.deployed if rollout else None

    def published(self, version: int) -> PublishedVersion:
        for entry in self.history():
            if entry.version == version:
                return entry
        raise CheckpointError(f"registry {self.root} never published version {version}")

    def decisions(self) -> list[dict]:
        path = self.root / "decisions.jsonl"
        return read_jsonl(path) if path.exists() else []

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
        env_steps: int | None = None,
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
        return self._announce(
            PublishedVersion(version, parent_version, learner_step, data_snapshot, time.time(), env_steps)
        )

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

    # -- rollout (gates and people) ----------------------------------------------------

    def decide(
        self, version: int, decision: str, *, by: str, evidence: dict | None = None, canary_robots: tuple[str, ...] = ()
    ) -> Rollout:
        """Record a decision about `version` and apply it to the rollout:
        promoted → robots run it; rejected → its canary (if any) ends; canary → the
        `canary_robots` run it; rolled_back → robots run it again and the rollout is pinned.
        Promoting a version unpins. One writer at a time (the learner, or a person)."""
        if decision not in DECISIONS:
            raise ValueError(f"unknown decision {decision!r} (known: {', '.join(DECISIONS)})")
        target = self.published(version)
        if decision != "rejected" and not self.path(version).exists():  # a rejection needs no weights
            raise CheckpointError(f"registry {self.root}: version {version} was pruned, it cannot be deployed")
        current = self.rollout() or Rollout(None)
        if decision == "promoted":
            rollout = Rollout(target)
        elif decision == "rolled_back":
            rollout = Rollout(target, pinned=True)
        elif decision == "canary":
            rollout = replace(current, canary=target, canary_robots=tuple(canary_robots))
        else:
            ends_canary = current.canary is not None and current.canary.version == version
            rollout = replace(current, canary=None, canary_robots=()) if ends_canary else current
        record = {
            "at": time.time(),
            "version": version,
            "decision": decision,
            "by": by,
            "from_version": current.deployed.version if current.deployed else None,
            "evidence": evidence or {},
        }
        with open_jsonl_for_append(self.root / "decisions.jsonl") as handle:
            handle.write(json.dumps(record) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        self._write_atomically("ROLLOUT", json.dumps(rollout.to_json()))
        return rollout

    def rollback_target(self) -> int:
        """The version deployed before the one deployed now (for `lwd registry rollback`)."""
        deployed = self.deployed()
        if deployed is None:
            raise ValueError(f"registry {self.root} has nothing deployed")
        earlier = [
            d["version"]
            for d in self.decisions()
            if d["decision"] in ("promoted", "rolled_back") and d["version"] != deployed.version
        ]
        if not earlier:
            earlier = [p.version for p in self.history() if p.version < deployed.version]
        candidates = [v for v in reversed(earlier) if self.path(v).exists()]
        if not candidates:
            raise ValueError(f"registry {self.root}: no earlier version on disk to roll back to")
        return candidates[0]

    def _write_atomically(self, name: str, text: str) -> None:
        tmp = self.root / f".{name}.tmp-{os.getpid()}"
        tmp.write_text(text)
        os.replace(tmp, self.root / name)

    def _announce(self, published: PublishedVersion) -> PublishedVersion:
        line = json.dumps(asdict(published))
        with open_jsonl_for_append(self.root / "history.jsonl") as handle:
            handle.write(line + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        self._write_atomically("LATEST", line)
        self._prune(published.version)
        return published

    def _prune(self, newest: int) -> None:
        versions = self.available()
        keep = set(versions[-self.keep_last :]) | {v for v in versions if v % self.keep_every == 0} | {newest}
        keep.add(versions[0])  # the starting policy, for before/after comparisons
        rollout = self.rollout()
        if rollout is not None:  # what robots run, and what they could be rolled back to
            keep |= {p.version for p in (rollout.deployed, rollout.canary) if p is not None}
            deployed_before = [d["version"] for d in self.decisions() if d["decision"] in ("promoted", "rolled_back")]
            keep |= set(deployed_before[-ROLLBACK_DEPTH:])
        for version in versions:
            if version not in keep:
                shutil.rmtree(self.path(version), ignore_errors=True)
