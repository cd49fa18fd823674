"""The learners a fleet can train while deploying, behind one role-shaped interface.

The online loop (`lwd.fleet.online.deploy`) samples batches, calls `step`, publishes
`deployable_encoder()` with the policy, and saves `modules()`, `optimizer_state()` and
`state()` to resume. It never branches on the method; everything method-specific is here:

    lwd        DIVL + QAM from an offline-RL checkpoint (inherits critic, value, reference)
    hg-dagger  flow matching on demos + operator segments + takeover-free successes, from SFT
    recap      advantage-conditioned flow matching with a Monte-Carlo value, from SFT
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from lwd.algorithms.batch import RecapBatch
from lwd.algorithms.hg_dagger import HGDaggerLearner, ImitationConfig
from lwd.algorithms.learner import LearnerConfig
from lwd.algorithms.recap import POSITIVE_PROMPT, RecapConfig, RecapLearner, conditioned
from lwd.data.replay import ChunkBatch, ChunkReplay, ReplayConfig
from lwd.policy.adapter import PolicyAdapter
from lwd.policy.architectures import build_policy
from lwd.policy.checkpoint import Manifest, load_checkpoint, load_learner_state
from lwd.policy.critic import CriticConfig, StateValue
from lwd.policy.instructions import InstructionEncoder
from lwd.training.batches import learner_batch
from lwd.training.offline import (
    build_learner,
    learner_modules,
    load_modules,
)
from lwd.training.resume import optimizer_state, restore_optimizers

METHODS = ("lwd", "hg-dagger", "recap")

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MethodSettings:
    """The settings of every method; each reads its own part."""

    learner: LearnerConfig  # lwd
    imitation: ImitationConfig  # hg-dagger
    recap: RecapConfig  # recap


class OnlineMethod(Protocol):
    name: str
    policy: PolicyAdapter
    encoder: InstructionEncoder  # the training encoder (plain instructions)
    manifest: Manifest  # of the checkpoint the method started or resumed from

    def replay_config(self, base: ReplayConfig) -> ReplayConfig:
        """What this method samples: `base`, possibly filtered."""

    def prepare(self, offline: ChunkReplay, tasks: Sequence[str]) -> None:
        """Initialise from the offline data (normalisation, task lists); not called on resume."""

    def set_step(self, step: int) -> None: ...

    @property
    def wants_imitable_batch(self) -> bool:
        """Should each `step` also get an imitation-only batch (`ChunkReplay.sample(..., imitable_only=True)`)?"""

    def step(
        self, batch: ChunkBatch, generator: torch.Generator, imitable_batch: ChunkBatch | None = None
    ) -> dict[str, float]: ...

    def deployable_encoder(self) -> InstructionEncoder:
        """The encoder robots get with the policy (RECAP's carries the positive indicator)."""

    def modules(self) -> dict[str, torch.nn.Module]: ...

    def optimizer_state(self) -> dict[str, torch.Tensor]: ...

    def restore_optimizers(self, state: dict[str, torch.Tensor]) -> None: ...

    def state(self) -> dict:
        """JSON-serialisable state beyond tensors (configs, thresholds), for `resume`."""


def start_method(
    name: str,
    checkpoint: str | Path,
    settings: MethodSettings,
    saved: dict | None = None,
    device: torch.device | str = "cpu",
) -> OnlineMethod:
    """Build `name` from a checkpoint: the start checkpoint, or the run's own `last`
    checkpoint with `saved` = the state() it wrote. Its networks train on `device`; `step`
    takes CPU batches and moves them there."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r} (known: {', '.join(METHODS)})")
    method_class = {"lwd": LWDMethod, "hg-dagger": HGDaggerMethod, "recap": RecapMethod}[name]
    return method_class(checkpoint, settings, saved, torch.device(device))


class _LearnerMethod:
    """What the methods share: a `learner` with `step_count`, `optimizers` and `modules()`,
    the plain-instruction encoder for training and deployment, the replay as given."""

    learner: object
    encoder: InstructionEncoder
    device: torch.device

    def replay_config(self, base: ReplayConfig) -> ReplayConfig:
        return base

    def prepare(self, offline: ChunkReplay, tasks: Sequence[str]) -> None:
        pass

    def set_step(self, step: int) -> None:
        self.learner.step_count = step

    @property
    def wants_imitable_batch(self) -> bool:
        return False

    def deployable_encoder(self) -> InstructionEncoder:
        return self.encoder

    def modules(self) -> dict[str, torch.nn.Module]:
        return self.learner.modules()

    def optimizer_state(self) -> dict[str, torch.Tensor]:
        return optimizer_state(self.learner.optimizers)

    def restore_optimizers(self, state: dict[str, torch.Tensor]) -> None:
        restore_optimizers(self.learner.optimizers, state)


class LWDMethod(_LearnerMethod):
    name = "lwd"

    def __init__(self, checkpoint: str | Path, settings: MethodSettings, saved: dict | None, device: torch.device):
        self.device = device
        self.policy, self.encoder, self.manifest = load_checkpoint(checkpoint)
        state = load_learner_state(checkpoint)  # names the problem if given an SFT checkpoint
        stage = saved or self.manifest.extras.get("offline")
        if stage is None or "critic" not in stage:
            raise ValueError(
                f"{checkpoint}: not an offline-RL checkpoint (no critic config in its manifest); "
                "LWD online starts from `lwd train offline`'s output"
            )
        self.critic_config = CriticConfig(**stage["critic"])
        self.learner_config = settings.learner
        if saved and "learner" in saved:
            now = settings.learner.to_dict()
            changed = sorted(name for name, value in saved["learner"].items() if now.get(name) != value)
            if changed:  # a resume with other flags, or after a default changed: say so, the run goes on with them
                _log.warning(
                    "resuming with other learner settings than the run started with: %s",
                    ", ".join(f"{name} {saved['learner'][name]!r} -> {now.get(name)!r}" for name in changed),
                )
        self.learner = build_learner(
            self.policy,
            build_policy(self.policy.config),
            self.critic_config,
            settings.learner,
            state=state,
            device=device,
        )
        self.policy = self.learner.deployed_policy  # what is published and saved: the average under policy_ema

    # prepare: nothing; critic, value and reference come trained from offline RL.

    @property
    def wants_imitable_batch(self) -> bool:
        return self.learner.wants_imitable_batch

    def step(
        self, batch: ChunkBatch, generator: torch.Generator, imitable_batch: ChunkBatch | None = None
    ) -> dict[str, float]:
        own = None if imitable_batch is None else learner_batch(imitable_batch, self.encoder).to(self.device)
        return self.learner.step(learner_batch(batch, self.encoder).to(self.device), generator, own)

    def modules(self) -> dict[str, torch.nn.Module]:
        return learner_modules(self.learner)

    def state(self) -> dict:
        return {"critic": self.critic_config.to_dict(), "learner": self.learner_config.to_dict()}


class HGDaggerMethod(_LearnerMethod):
    name = "hg-dagger"

    def __init__(self, checkpoint: str | Path, settings: MethodSettings, saved: dict | None, device: torch.device):
        self.device = device
        self.policy, self.encoder, self.manifest = load_checkpoint(checkpoint)
        self.config = settings.imitation
        self.learner = HGDaggerLearner(self.policy.to(device), self.config)

    def replay_config(self, base: ReplayConfig) -> ReplayConfig:
        return replace(base, imitation_only=True)

    def step(
        self, batch: ChunkBatch, generator: torch.Generator, imitable_batch: ChunkBatch | None = None
    ) -> dict[str, float]:
        return self.learner.step(learner_batch(batch, self.encoder).to(self.device), generator)

    def state(self) -> dict:
        return {"imitation": self.config.to_dict()}


class RecapMethod(_LearnerMethod):
    name = "recap"

    def __init__(self, checkpoint: str | Path, settings: MethodSettings, saved: dict | None, device: torch.device):
        self.device = device
        self.policy, self.encoder, self.manifest = load_checkpoint(checkpoint)
        self.policy.to(device)
        self.encoder = self.encoder.with_prompt(None)  # train on plain and conditioned text alike
        self.config = settings.recap
        value_config = (
            CriticConfig(**saved["value"])
            if saved
            else CriticConfig.for_policy(self.policy.config, hidden_dim=settings.recap.value_hidden)
        )
        self.value_config = value_config
        self.tasks: list[str] = list(saved["tasks"]) if saved else []
        self.learner: RecapLearner | None = None
        if saved:
            self._build(StateValue(value_config))
            load_modules(self.learner.modules(), load_learner_state(checkpoint))
            device = self.learner.thresholds.device  # the value's: the learner may run on a GPU
            self.learner.thresholds = torch.tensor(saved["thresholds"], dtype=torch.float32, device=device)
            self.learner.thresholds_seen = torch.tensor(saved["thresholds_seen"], dtype=torch.bool, device=device)

    def _build(self, value: StateValue) -> None:
        self.learner = RecapLearner(self.policy, value.to(self.device), self.config, num_tasks=len(self.tasks))

    def prepare(self, offline: ChunkReplay, tasks: Sequence[str]) -> None:
        self.tasks = sorted(set(offline.task_vocab) | set(tasks))
        value = StateValue(self.value_config)
        obs = offline.observation_array
        value.set_normalization(obs.mean(0), obs.std(0))
        self._build(value)

    def step(
        self, batch: ChunkBatch, generator: torch.Generator, imitable_batch: ChunkBatch | None = None
    ) -> dict[str, float]:
        base = learner_batch(batch, self.encoder)
        vocab = list(batch.instruction_vocab)
        ids = torch.from_numpy(batch.instruction_ids)
        positive, negative = (
            torch.from_numpy(self.encoder.embed([conditioned(text, improved) for text in vocab]))[ids]
            for improved in (True, False)
        )
        unknown = sorted(set(batch.task_vocab) - set(self.tasks))
        if unknown:
            raise ValueError(f"RECAP was set up for tasks {self.tasks}; the data has {unknown}")
        task_index = np.array([self.tasks.index(name) for name in batch.task_vocab], dtype=np.int64)
        recap_batch = RecapBatch(
            **{f.name: getattr(base, f.name) for f in fields(base)},
            task=torch.from_numpy(task_index[batch.task_ids]),
            instruction_positive=positive,
            instruction_negative=negative,
        )
        return self.learner.step(recap_batch.to(self.device), generator)

    def deployable_encoder(self) -> InstructionEncoder:
        return self.encoder.with_prompt(POSITIVE_PROMPT)

    def state(self) -> dict:
        return {
            "recap": self.config.to_dict(),
            "value": self.value_config.to_dict(),
            "tasks": self.tasks,
            "thresholds": self.learner.thresholds.tolist(),
            "thresholds_seen": self.learner.thresholds_seen.tolist(),
        }
