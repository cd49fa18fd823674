"""Policy checkpoints: safetensors weights + a JSON manifest. One loading path for
training, evaluation and deployment.

    <dir>/manifest.json       format, architecture, config, version, parent version,
                              training step, data snapshot, code version, instructions
    <dir>/policy.safetensors  weights, normalisation buffers, instruction_table (N, 384)
    <dir>/trainer.safetensors optional optimiser state (training resumes from it)
    <dir>/learner.safetensors optional RL learner networks (reference., critic.,
                              critic_target., value.), so a later stage inherits them
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import torch

import lwd
from lwd.policy.adapter import FlowPolicyBase
from lwd.policy.architectures import POLICY_CLASSES, build_policy
from lwd.policy.flow_policy import PolicyConfig
from lwd.policy.instructions import InstructionEncoder

FORMAT = "lwd-policy-checkpoint"
FORMAT_VERSION = 1
# Checkpoints written before the manifest named the policy class by architecture.
LEGACY_ARCHITECTURES = {"FlowChunkPolicy": "flow_mlp"}


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be loaded; the message names the file and the problem."""


@dataclass(frozen=True)
class Manifest:
    config: dict
    version: int
    parent_version: int | None
    training_step: int
    data_snapshot: int
    code_version: str
    instructions: list[str]
    created_at: float
    extras: dict
    architecture: str = "flow_mlp"  # a key of lwd.policy.architectures.POLICY_CLASSES


def code_version() -> str:
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        rev = ""
    return f"lwd {lwd.__version__}" + (f" ({rev})" if rev else "")


def save_checkpoint(
    directory: str | os.PathLike,
    policy: FlowPolicyBase,
    encoder: InstructionEncoder,
    *,
    version: int = 0,
    parent_version: int | None = None,
    training_step: int = 0,
    data_snapshot: int = 0,
    optimizer_state: dict[str, torch.Tensor] | None = None,
    extras: dict | None = None,
    learner_modules: dict[str, torch.nn.Module] | None = None,
) -> Path:
    """Write atomically: into a sibling temp dir, then rename over the target."""
    from safetensors.torch import save_file

    target = Path(directory)
    recover_interrupted_save(target)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    table = encoder.table
    instructions = sorted(table)
    tensors = {name: t.detach().cpu().contiguous() for name, t in policy.state_dict().items()}
    tensors["instruction_table"] = torch.from_numpy(
        np.stack([table[i] for i in instructions])
        if instructions
        else np.zeros((0, policy.config.text_dim), np.float32)
    )
    save_file(tensors, tmp / "policy.safetensors")
    if learner_modules:
        save_file(
            {
                f"{name}.{key}": t.detach().cpu().contiguous()
                for name, module in learner_modules.items()
                for key, t in module.state_dict().items()
            },
            tmp / "learner.safetensors",
        )
    if optimizer_state is not None:
        save_file({k: v.contiguous() for k, v in optimizer_state.items()}, tmp / "trainer.safetensors")
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "architecture": policy.config.architecture,
        "config": policy.config.to_dict(),
        "version": version,
        "parent_version": parent_version,
        "training_step": training_step,
        "data_snapshot": data_snapshot,
        "code_version": code_version(),
        "instructions": instructions,
        "created_at": time.time(),
        "extras": extras or {},
    }
    if encoder.prompt is not None:
        manifest["extras"] = {**manifest["extras"], "instruction_prompt": encoder.prompt}
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2))
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        target.rename(old)
        tmp.rename(target)
        shutil.rmtree(old)
    else:
        tmp.rename(target)
    return target


def recover_interrupted_save(directory: str | os.PathLike) -> None:
    """Undo the one window in which `save_checkpoint` leaves no checkpoint: killed between
    moving the old one aside and renaming the new one in, the old one is put back."""
    target = Path(directory)
    if target.exists():
        return
    aside = sorted(target.parent.glob(f".{target.name}.old-*"), key=lambda path: path.stat().st_mtime)
    if aside and (aside[-1] / "manifest.json").exists():
        aside[-1].rename(target)


def has_checkpoint(directory: str | os.PathLike) -> bool:
    """Whether a complete checkpoint is at `directory` (after recovering an interrupted save)."""
    recover_interrupted_save(directory)
    return (Path(directory) / "manifest.json").exists()


def read_manifest(directory: str | os.PathLike) -> Manifest:
    path = Path(directory) / "manifest.json"
    if not Path(directory).is_dir():
        raise CheckpointError(f"no checkpoint at {directory}: directory does not exist")
    if not path.exists():
        raise CheckpointError(f"{path}: missing; {directory} is not a complete lwd checkpoint")
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{path}: not valid JSON ({err})") from err
    if raw.get("format") != FORMAT or raw.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: format {raw.get('format')!r} v{raw.get('format_version')} is not {FORMAT!r} v{FORMAT_VERSION}"
        )
    architecture = raw.get("architecture", "flow_mlp")
    architecture = LEGACY_ARCHITECTURES.get(architecture, architecture)
    if architecture not in POLICY_CLASSES:
        raise CheckpointError(f"{path}: architecture {architecture!r}; this build loads {sorted(POLICY_CLASSES)}")
    return Manifest(
        **{f.name: raw[f.name] for f in fields(Manifest) if f.name != "architecture"}, architecture=architecture
    )


def load_checkpoint(
    directory: str | os.PathLike, expect: PolicyConfig | None = None
) -> tuple[FlowPolicyBase, InstructionEncoder, Manifest]:
    """Load policy (of the class the manifest's architecture names), its instruction cache
    and manifest; `expect` guards the architecture and sizes."""
    from safetensors.torch import load_file

    manifest = read_manifest(directory)
    known = {f.name for f in fields(PolicyConfig)}
    unknown = set(manifest.config) - known
    if unknown:
        raise CheckpointError(f"{directory}: config has fields this build does not know: {sorted(unknown)}")
    recorded = manifest.config.get("architecture", manifest.architecture)
    if recorded != manifest.architecture:
        raise CheckpointError(
            f"{directory}: manifest names architecture {manifest.architecture!r} but its config {recorded!r}"
        )
    config = PolicyConfig(**{**manifest.config, "architecture": manifest.architecture})
    if expect is not None and expect != config:
        diff = {k: (v, getattr(expect, k)) for k, v in config.to_dict().items() if getattr(expect, k) != v}
        raise CheckpointError(
            f"{directory}: checkpoint architecture differs from the expected one "
            f"(field: checkpoint vs expected): {diff}"
        )
    weights = Path(directory) / "policy.safetensors"
    if not weights.exists():
        raise CheckpointError(f"{weights}: missing")
    try:
        tensors = load_file(weights)
    except Exception as err:  # safetensors raises several types for damaged files
        raise CheckpointError(f"{weights}: unreadable ({err})") from err
    table = tensors.pop("instruction_table", None)
    policy = build_policy(config)
    expected = policy.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    wrong = sorted(k for k in set(expected) & set(tensors) if expected[k].shape != tensors[k].shape)
    if missing or unexpected or wrong:
        raise CheckpointError(
            f"{weights}: weights do not fit the manifest's architecture: missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}, wrong shape {wrong[:5]}"
        )
    policy.load_state_dict(tensors)
    if table is None or len(table) != len(manifest.instructions):
        raise CheckpointError(f"{weights}: instruction_table does not match the manifest's instruction list")
    encoder = InstructionEncoder(
        {text: table[i].numpy() for i, text in enumerate(manifest.instructions)},
        prompt=manifest.extras.get("instruction_prompt"),
    )
    return policy, encoder, manifest


def load_trainer_state(directory: str | os.PathLike) -> dict[str, torch.Tensor] | None:
    from safetensors.torch import load_file

    path = Path(directory) / "trainer.safetensors"
    return load_file(path) if path.exists() else None


def load_learner_state(directory: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The RL learner's networks saved next to the policy; a clear error if absent."""
    from safetensors.torch import load_file

    path = Path(directory) / "learner.safetensors"
    if not path.exists():
        raise CheckpointError(
            f"{path}: missing; {directory} is a policy-only checkpoint (e.g. SFT), not an RL learner checkpoint"
        )
    try:
        return load_file(path)
    except Exception as err:  # safetensors raises several types for damaged files
        raise CheckpointError(f"{path}: unreadable ({err})") from err
