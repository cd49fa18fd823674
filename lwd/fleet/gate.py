"""Version gates (SPEC §6.4): a published version is a candidate until a gate promotes it.

The learner publishes every N_sync steps; a gate decides which candidates robots run.
Every decision goes to the registry (`PolicyRegistry.decide`) with its evidence, and the
learner process is the only one that takes them while a run goes on (a person may add a
`lwd registry promote / rollback` at any time).

- `off`: robots take every new version (the registry has no ROLLOUT).
- `observe`: as `off`, and the background evaluator of `evaluate` scores the newest
  version whenever it is free: the validation curve of published versions, no decisions.
- `canary` (a real fleet): a share of the robots runs the newest candidate first; once it
  has `canary_episodes` episodes, its autonomous success (success without a takeover) is
  compared with that of the other robots on the deployed version over the same time.
- `evaluate` (simulation): a background process scores each candidate on validation
  seeds with no operator, paired with the deployed version on the same episodes; it lives
  in `lwd.evaluation.gate`, above this layer, and plugs in through `VersionGate`.

In both gated modes a candidate is promoted unless it is worse than the deployed version
by more than `margin`, and a promoted version is watched: if its live autonomous success
falls significantly below that of the version it replaced, it is rolled back
(`by: auto-rollback`). The fleet's success under the operator is the only live signal a
real fleet has, so the watch compares like with like (live against live), not live
against a validation score measured without an operator.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from lwd.configargs import documented
from lwd.data.episode import Episode
from lwd.fleet.registry import PolicyRegistry, PublishedVersion
from lwd.policy.sampling import check_noise_scale

GATE_MODES = ("off", "observe", "canary", "evaluate")


@dataclass(frozen=True)
class GateConfig:
    mode: str = documented(
        "off",
        "'off' (robots take every version), 'observe' (as off, and a background evaluator scores the newest "
        "version on validation seeds: the validation curve), 'canary' (a share of robots tries each candidate "
        "first) or 'evaluate' (the background evaluator's scores decide; simulation only)",
    )
    margin: float = documented(
        0.1, "a candidate is promoted unless its success is below the deployed version's by more than this"
    )
    canary_share: float = documented(0.25, "canary: share of robots that run a candidate first (at least one)")
    canary_episodes: int = documented(20, "canary: candidate episodes (and as many of the others) before deciding")
    episodes_per_task: int = documented(5, "evaluate: validation episodes per task for each candidate")
    rollback_episodes: int = documented(
        40, "episodes of a promoted version before the automatic-rollback check (0 = no automatic rollback)"
    )
    evaluator_noise_scale: float = documented(
        0.0,
        "observe / evaluate: sampling temperature of the background evaluator (0 = the deterministic flow, "
        "as `lwd eval` scores by default; the robots explore at --robots.noise-scale)",
    )

    def __post_init__(self) -> None:
        if self.mode not in GATE_MODES:
            raise ValueError(f"unknown gate mode {self.mode!r} (known: {', '.join(GATE_MODES)})")
        if not 0.0 < self.canary_share < 1.0:
            raise ValueError(f"canary_share must be in (0, 1), got {self.canary_share}")
        if self.margin < 0 or self.canary_episodes < 1 or self.episodes_per_task < 1 or self.rollback_episodes < 0:
            raise ValueError("need margin >= 0, canary_episodes >= 1, episodes_per_task >= 1, rollback_episodes >= 0")
        check_noise_scale(self.evaluator_noise_scale, "evaluator_noise_scale")


class VersionGate(Protocol):
    """What the online loop tells a gate, and when it lets it decide."""

    def published(self, version: PublishedVersion) -> None:
        """A new candidate is in the registry."""

    def observe(self, episode: Episode) -> None:
        """A new online episode arrived in the store."""

    def poll(self) -> None:
        """Take whatever decision the evidence now allows (called every learner tick)."""

    def close(self) -> None: ...


def autonomous_success(episode: Episode) -> bool:
    """Success without any operator takeover: what the policy did on its own."""
    return bool(episode.success) and not bool(episode.intervention.any())


def difference_interval(wins_a: int, n_a: int, wins_b: int, n_b: int, z: float = 1.96) -> tuple[float, float, float]:
    """Unpaired difference of two success rates (a − b) with a normal 95% interval."""
    p_a, p_b = wins_a / n_a, wins_b / n_b
    half = z * math.sqrt(p_a * (1 - p_a) / n_a + p_b * (1 - p_b) / n_b)
    return p_a - p_b, p_a - p_b - half, p_a - p_b + half


def adopt_start_version(registry: PolicyRegistry) -> None:
    """A gated run deploys the version robots start with (the newest, before any gate)."""
    rollout = registry.rollout()
    if rollout is not None and rollout.deployed is not None and not (registry.root / "ROLLOUT").exists():
        registry.decide(rollout.deployed.version, "promoted", by="gate", evidence={"reason": "start version"})


class UngatedGate:
    """Mode `off`: robots follow the newest version; nothing to decide."""

    def published(self, version: PublishedVersion) -> None:
        pass

    def observe(self, episode: Episode) -> None:
        pass

    def poll(self) -> None:
        pass

    def close(self) -> None:
        pass


class LiveWatch:
    """Rolls a promoted version back when its live autonomous success is significantly
    below the previous deployed version's (both measured on the fleet, with the operator)."""

    def __init__(self, registry: PolicyRegistry, config: GateConfig):
        self.registry, self.config = registry, config
        self.results: dict[int, list[bool]] = {}  # version -> autonomous successes of its episodes

    def observe(self, episode: Episode, canary_robots: tuple[str, ...]) -> None:
        versions = {int(v) for v in episode.policy_version}
        if len(versions) == 1 and episode.robot_id not in canary_robots:
            self.results.setdefault(versions.pop(), []).append(autonomous_success(episode))

    def poll(self) -> None:
        if not self.config.rollback_episodes:
            return
        rollout = self.registry.rollout()
        if rollout is None or rollout.deployed is None or rollout.pinned:
            return
        current = rollout.deployed.version
        previous = self._replaced(current)
        mine, theirs = self.results.get(current, []), self.results.get(previous, []) if previous is not None else []
        if len(mine) < self.config.rollback_episodes or len(theirs) < self.config.rollback_episodes:
            return
        difference, low, high = difference_interval(sum(mine), len(mine), sum(theirs), len(theirs))
        if high < 0 and difference < -self.config.margin:
            self.registry.decide(
                previous,
                "rolled_back",
                by="auto-rollback",
                evidence={
                    "reason": f"live autonomous success of v{current} fell significantly below v{previous}'s",
                    "rolled_back_version": current,
                    "difference": difference,
                    "interval": [low, high],
                    "episodes": [len(mine), len(theirs)],
                },
            )

    def _replaced(self, version: int) -> int | None:
        """The version deployed before `version` was promoted."""
        for decision in reversed(self.registry.decisions()):
            if decision["version"] == version and decision["decision"] == "promoted":
                return decision["from_version"]
        return None


class CanaryGate:
    """Mode `canary`: the robots in `canary_robots` run the newest candidate; the rest stay
    on the deployed version; after `canary_episodes` of each, promote or reject."""

    def __init__(self, registry: PolicyRegistry, config: GateConfig, robot_ids: list[str]):
        self.registry, self.config = registry, config
        count = max(1, round(config.canary_share * len(robot_ids)))
        if count >= len(robot_ids):
            raise ValueError(f"a canary of {count} robots leaves none of the {len(robot_ids)} on the deployed version")
        self.canary_robots = tuple(sorted(robot_ids)[:count])
        self.watch = LiveWatch(registry, config)
        self.pending: PublishedVersion | None = None  # the newest candidate not yet tried
        self._reset_trial()
        adopt_start_version(registry)
        rollout = registry.rollout()
        if rollout is not None and rollout.canary is not None:  # a resumed run: restart that trial
            self.pending = rollout.canary

    def _reset_trial(self) -> None:
        self.trial: PublishedVersion | None = None
        self.trial_started = 0.0
        self.candidate: list[bool] = []
        self.control: list[bool] = []

    def published(self, version: PublishedVersion) -> None:
        self.pending = version

    def observe(self, episode: Episode) -> None:
        self.watch.observe(episode, self.canary_robots)
        if self.trial is None or episode.started_at < self.trial_started:
            return
        versions = {int(v) for v in episode.policy_version}
        if episode.robot_id in self.canary_robots and versions == {self.trial.version}:
            self.candidate.append(autonomous_success(episode))
        elif episode.robot_id not in self.canary_robots and len(versions) == 1:
            self.control.append(autonomous_success(episode))

    def poll(self) -> None:
        rollout = self.registry.rollout()
        if rollout is None or rollout.pinned:
            return
        if self.trial is None:
            if self.pending is not None and (
                rollout.deployed is None or self.pending.version > rollout.deployed.version
            ):
                self.trial, self.trial_started, self.pending = self.pending, time.time(), None
                self.registry.decide(
                    self.trial.version,
                    "canary",
                    by="gate",
                    evidence={"robots": list(self.canary_robots)},
                    canary_robots=self.canary_robots,
                )
            self.watch.poll()
            return
        if rollout.canary is None or rollout.canary.version != self.trial.version:
            self._reset_trial()  # someone promoted or rolled back by hand: this trial is moot
            return
        need = self.config.canary_episodes
        if len(self.candidate) >= need and len(self.control) >= need:
            self._decide()

    def _decide(self) -> None:
        wins, n = sum(self.candidate), len(self.candidate)
        base_wins, base_n = sum(self.control), len(self.control)
        difference, low, high = difference_interval(wins, n, base_wins, base_n)
        promote = difference >= -self.config.margin
        self.registry.decide(
            self.trial.version,
            "promoted" if promote else "rejected",
            by="gate",
            evidence={
                "mode": "canary",
                "candidate_success": wins / n,
                "deployed_success": base_wins / base_n,
                "difference": difference,
                "interval": [low, high],
                "episodes": [n, base_n],
                "margin": self.config.margin,
            },
        )
        self._reset_trial()

    def close(self) -> None:
        pass


class GateFactory(Protocol):
    def __call__(
        self,
        config: GateConfig,
        registry: PolicyRegistry,
        *,
        out: Path,
        robot_ids: list[str],
        tasks: tuple[str, ...],
        noise_seed: int = 0,
    ) -> VersionGate: ...


def make_fleet_gate(
    config: GateConfig,
    registry: PolicyRegistry,
    *,
    out: Path,
    robot_ids: list[str],
    tasks: tuple[str, ...],
    noise_seed: int = 0,
) -> VersionGate:
    """The gates this layer can build (`off`, `canary`); `lwd.evaluation.gate.make_gate`
    builds every mode, `evaluate` included."""
    if config.mode == "canary":
        return CanaryGate(registry, config, robot_ids)
    if config.mode == "off":
        return UngatedGate()
    raise ValueError(
        f"gate mode {config.mode!r} needs lwd.evaluation.gate.make_gate (`lwd deploy` and the recipes pass it)"
    )
