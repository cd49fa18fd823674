"""`lwd registry list / promote / rollback`: see and change which version robots run.

Robots read the rollout at every episode boundary, so a promotion or a rollback reaches
every robot within one episode. A rollback pins the rollout: the learner keeps publishing
candidates, but no gate promotes one until a person does (`lwd registry promote`).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass

from lwd.configargs import documented
from lwd.fleet.registry import PolicyRegistry


@dataclass(frozen=True)
class RegistryListConfig:
    registry: str = documented("runs/deploy/registry", "policy registry directory (a deploy run's <out>/registry)")
    last: int = documented(30, "show the newest N versions (0 = all)")
    json: bool = documented(False, "print JSON instead of a table")


@dataclass(frozen=True)
class RegistryPromoteConfig:
    registry: str = documented("runs/deploy/registry", "policy registry directory")
    version: int = documented(-1, "the version every robot should run from its next episode (required)")
    reason: str = documented("", "why, for the record")


@dataclass(frozen=True)
class RegistryRollbackConfig:
    registry: str = documented("runs/deploy/registry", "policy registry directory")
    to: int = documented(-1, "the version to go back to (default: the one deployed before the current one)")
    reason: str = documented("", "why, for the record")


def _open(path: str) -> PolicyRegistry:
    registry = PolicyRegistry(path)
    if registry.latest() is None:
        raise FileNotFoundError(f"no policy registry with published versions at {path}")
    return registry


def version_rows(registry: PolicyRegistry) -> list[dict]:
    """Every published version with its status and its last decision. Status: deployed,
    canary, rolled back (deployed once, then taken back), rejected, retired (deployed once,
    then replaced) or candidate (never decided)."""
    rollout = registry.rollout()
    decisions = registry.decisions()
    last_decision = {d["version"]: d for d in decisions}
    taken_back = {d["evidence"].get("rolled_back_version") for d in decisions if d["decision"] == "rolled_back"}
    once_deployed = {d["version"] for d in decisions if d["decision"] in ("promoted", "rolled_back")}
    live = {
        "deployed": rollout.deployed.version if rollout and rollout.deployed else None,
        "canary": rollout.canary.version if rollout and rollout.canary else None,
    }
    on_disk = set(registry.available())
    rows = []
    for published in registry.history():
        version, decision = published.version, last_decision.get(published.version)
        status = next((name for name, v in live.items() if v == version), None)
        if status is None:
            if version in taken_back:
                status = "rolled back"
            elif decision is not None and decision["decision"] == "rejected":
                status = "rejected"
            else:
                status = "retired" if version in once_deployed else "candidate"
        rows.append({**asdict(published), "status": status, "on_disk": version in on_disk, "decision": decision})
    return rows


def _evidence_text(decision: dict | None) -> str:
    if not decision:
        return ""
    evidence = decision.get("evidence", {})
    if "difference" in evidence:
        low, high = evidence.get("interval", [float("nan")] * 2)
        return f"{decision['by']}: Δ {evidence['difference']:+.3f} [{low:+.3f}, {high:+.3f}]"
    return f"{decision['by']}: {evidence.get('reason', '')}".strip()


def cmd_registry_list(config: RegistryListConfig) -> int:
    registry = _open(config.registry)
    rows = version_rows(registry)[-config.last :] if config.last else version_rows(registry)
    rollout = registry.rollout()
    if config.json:
        print(json.dumps({"rollout": rollout.to_json() if rollout else None, "versions": rows}, indent=2))
        return 0
    pinned = " (pinned after a rollback)" if rollout and rollout.pinned else ""
    print(f"registry {config.registry}: deployed v{rollout.deployed.version}{pinned}")
    print(f"{'version':>8s} {'status':>11s} {'learner step':>12s} {'env steps':>10s}  published            evidence")
    for row in rows:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(row["published_at"]))
        env = "" if row["env_steps"] is None else str(row["env_steps"])
        print(
            f"{row['version']:8d} {row['status']:>11s} {row['learner_step']:12d} {env:>10s}  {when}  "
            f"{_evidence_text(row['decision'])}"
        )
    return 0


def cmd_registry_promote(config: RegistryPromoteConfig) -> int:
    if config.version < 0:
        raise ValueError("--version is required")
    registry = _open(config.registry)
    registry.decide(config.version, "promoted", by="user", evidence={"reason": config.reason or "manual promotion"})
    print(f"v{config.version} deployed: every robot runs it from its next episode")
    return 0


def cmd_registry_rollback(config: RegistryRollbackConfig) -> int:
    registry = _open(config.registry)
    current = registry.deployed()
    target = config.to if config.to >= 0 else registry.rollback_target()
    registry.decide(
        target,
        "rolled_back",
        by="user",
        evidence={"reason": config.reason or "manual rollback", "rolled_back_version": current.version},
    )
    print(
        f"rolled back from v{current.version} to v{target}: every robot runs v{target} from its next episode; "
        "gates promote nothing until `lwd registry promote`"
    )
    return 0
