"""One LWD learner step (SPEC §4.5): V update → target y from the fresh V → Q update →
EMA of Q̄ → QAM policy update. Tensors in, metrics out; no I/O.

The learner owns the trained policy f_θ, the frozen reference f_β (the SFT policy),
the critic ensemble Q_φ with its EMA target Q̄ and the value V_ψ, plus one optimiser
each. Offline and online stages use the same step with different configs.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass

import torch

from lwd.algorithms.batch import LearnerBatch
from lwd.algorithms.divl import (
    adaptive_tau,
    categorical_value_loss,
    critic_loss,
    ema_update,
    expectile_loss,
    normalized_entropy,
    quantile_readout,
    td_target,
)
from lwd.algorithms.flow_matching import flow_matching_update
from lwd.algorithms.qam import ADJOINT_TIMES, VelocityField, qam_loss, reference_qam_loss
from lwd.configargs import documented
from lwd.policy.adapter import HIDDEN_DTYPES, PolicyAdapter
from lwd.policy.critic import ChunkCritic, StateValue

TAU_MODES = ("adaptive", "constant")
IMPLEMENTATIONS = ("fast", "reference")
PRIORS = ("frozen", "learned")
PRIOR_DATA = ("successes", "aggregate", "hg-dagger")
LAM_SCALES = ("absolute", "gradient")


@dataclass(frozen=True)
class LearnerConfig:
    lam: float = documented(0.03, "λ: temperature of π_β·exp(Q/λ); smaller trusts Q more (λ sweep, docs/benchmarks.md)")
    lam_scale: str = documented(
        "absolute",
        "'absolute' (λ as given, SPEC §5) or 'gradient' (λ in units of the batch's mean ‖∇_A Q‖, so the "
        "tilt keeps its strength as Q's scale changes; there λ ≈ 0.7 gives today's ‖ã_K‖ ≈ 1.4)",
    )
    tau_mode: str = documented("adaptive", "'adaptive' (entropy-adaptive τ) or 'constant' (ablation: τ = τ_base)")
    tau_base: float = documented(0.6, "τ_base: 0.6 offline, 0.9 online")
    tau_alpha: float = documented(0.3, "α: how much the value's entropy lowers τ")
    tau_min: float = documented(0.4, "lower clip of τ")
    tau_max: float = documented(0.95, "upper clip of τ")
    expectile: float = documented(0.7, "expectile of the scalar-value ablation")
    critic_ema: float = documented(0.005, "EMA rate of the target critic")
    critic_lr: float = documented(5e-4, "Adam learning rate of critic and value")
    policy_lr: float = documented(
        3e-5,
        "AdamW learning rate of the policy (QAM); offline, 1e-4 drifted from the frozen reference on noise "
        "(`lwd deploy` defaults to 1e-4: its reference is the learned prior)",
    )
    policy_weight_decay: float = documented(0.0, "AdamW weight decay of the policy")
    grad_clip: float = documented(1.0, "global gradient-norm clip of the policy")
    qam_batch: int = documented(
        128, "states per QAM update, drawn from the batch (0 = all); QAM costs ~K× a critic step"
    )
    policy_warmup: int = documented(
        2_000,
        "learner steps that train only V and Q before QAM starts (a random "
        "critic's gradient would only push the policy around)",
    )
    policy_every: int = documented(1, "QAM policy update every N learner steps (TD3-style delay; 1 = SPEC order)")
    adjoint_time: str = documented(
        "step_start",
        "lean-adjoint discretisation: 'step_start' (exact gradient of the "
        "rollout's sampler) or 'step_end' (SPEC §5 as written)",
    )
    freeze_policy_encoder: bool = documented(False, "train only the action expert (the paper freezes the VLM online)")
    implementation: str = documented(
        "fast",
        "'fast' (QAM batched over the K flow steps, fused optimisers; the same math) or "
        "'reference' (the literal step it is tested against; `lwd bench policy` times both)",
    )
    qam_dtype: str = documented(
        "float32",
        "precision of the velocity network's hidden layers inside QAM ('fast' only): 'float32', "
        "or 'bfloat16' (bf16 units: AMX CPUs, GPUs; ~3 significant digits; not validated for training)",
    )

    prior: str = documented(
        "frozen",
        "QAM's reference π_β: 'frozen' (the SFT policy, SPEC §5) or 'learned' (a behaviour prior "
        "trained by flow matching on the batch's operator-driven and successful chunks; QAM "
        "tilts a slowly updated EMA copy of it, so corrections can teach motions SFT lacks)",
    )
    prior_data: str = documented(
        "successes",
        "what the learned prior imitates: 'successes' (chunks the operator drove or whose episode went on to "
        "succeed) or 'aggregate' (HG-DAgger's: demonstrations, operator-driven actions and takeover-free "
        "successes; the policy's own actions before a takeover are masked out), or 'hg-dagger' (the same actions "
        "in a batch of the prior's own, sampled as HG-DAgger's: only imitable steps, balanced over tasks by their "
        "imitable steps when the replay balances tasks, never recency-weighted; so a task the fleet often fails "
        "gets as many imitable rows as one it always solves: the online default, chosen on validation seeds, "
        "docs/benchmarks.md); 'aggregate' measured +0.000 on MT10 validation seeds (docs/benchmarks.md)",
    )
    prior_lr: float = documented(1e-4, "AdamW learning rate of the learned behaviour prior")
    prior_ema: float = documented(0.01, "EMA rate of QAM's reference towards the learned prior (per prior update)")
    prior_every: int = documented(
        1, "learned prior: a flow-matching update (and the reference's EMA step) every N learner steps"
    )
    policy_ema: float = documented(
        0.0,
        "Polyak averaging of the deployed policy: > 0 keeps an EMA copy of the QAM-trained policy (this rate "
        "per policy update) and publishes and saves that copy, as the QAM reference averages the learned prior; "
        "QAM trains the raw policy, kept in the learner state; 0 = deploy the raw policy (the default: 0.01 "
        "measured +0.017, −0.003 … +0.037, on lh validation seeds, docs/benchmarks.md)",
    )
    policy_tracks_reference: bool = documented(
        False,
        "with the learned prior: each EMA step of QAM's reference towards the prior moves the policy's action "
        "expert by the same parameter change, so the policy follows what the reference gains from the "
        "corrections and keeps the tilt QAM gave it (QAM still trains it; the target stays SPEC §5's); off here "
        "(it needs the learned prior), on in `lwd deploy`'s learner and every preset: +0.027 (+0.008 … +0.047) "
        "on lh validation seeds, +0.012 (−0.003 … +0.026) on MT10's (docs/benchmarks.md)",
    )
    imitate_operator: bool = documented(
        False,
        "also train the policy itself by flow matching on the operator's own actions in each batch, at every "
        "learner step (HG-DAgger's update, restricted to corrections), beside QAM's tilt; off by default: "
        "−0.060 on MT10 validation seeds (docs/benchmarks.md)",
    )

    def __post_init__(self) -> None:
        if self.prior not in PRIORS:
            raise ValueError(f"prior must be one of {PRIORS}, got {self.prior!r}")
        if self.prior_data not in PRIOR_DATA:
            raise ValueError(f"prior_data must be one of {PRIOR_DATA}, got {self.prior_data!r}")
        if not 0 < self.prior_ema <= 1:
            raise ValueError(f"prior_ema must be in (0, 1], got {self.prior_ema}")
        if not 0 <= self.policy_ema <= 1:
            raise ValueError(f"policy_ema must be in [0, 1], got {self.policy_ema}")
        if self.policy_tracks_reference and self.prior != "learned":
            raise ValueError("policy_tracks_reference needs prior='learned' (a frozen reference never moves)")
        if self.tau_mode not in TAU_MODES:
            raise ValueError(f"tau_mode must be one of {TAU_MODES}, got {self.tau_mode!r}")
        if self.lam <= 0:
            raise ValueError(f"lam must be > 0, got {self.lam}")
        if self.lam_scale not in LAM_SCALES:
            raise ValueError(f"lam_scale must be one of {LAM_SCALES}, got {self.lam_scale!r}")
        if self.adjoint_time not in ADJOINT_TIMES:
            raise ValueError(f"adjoint_time must be one of {ADJOINT_TIMES}, got {self.adjoint_time!r}")
        if self.policy_every < 1 or self.policy_warmup < 0 or self.prior_every < 1:
            raise ValueError("need policy_every >= 1, prior_every >= 1 and policy_warmup >= 0")
        if not 0 < self.tau_min <= self.tau_max < 1:
            raise ValueError("need 0 < tau_min <= tau_max < 1")
        if self.implementation not in IMPLEMENTATIONS:
            raise ValueError(f"implementation must be one of {IMPLEMENTATIONS}, got {self.implementation!r}")
        if self.qam_dtype not in HIDDEN_DTYPES:
            raise ValueError(f"qam_dtype must be one of {tuple(HIDDEN_DTYPES)}, got {self.qam_dtype!r}")
        if self.implementation == "reference" and self.qam_dtype != "float32":
            raise ValueError("the reference implementation runs in float32 only (qam_dtype='float32')")

    def to_dict(self) -> dict:
        return asdict(self)


def _fused(module: torch.nn.Module, fast: bool) -> dict[str, bool]:
    """Adam options: one fused kernel over all parameters where torch has one (CPU, CUDA)
    instead of ~10 small ops per tensor (~2 ms per optimiser step on 2 CPU cores); the same
    update up to float rounding."""
    if not fast:
        return {}
    return {"fused": True} if {p.device.type for p in module.parameters()} <= {"cpu", "cuda"} else {"foreach": True}


class LWDLearner:
    """Networks, optimisers and the update; `step(batch)` is one learner step."""

    def __init__(
        self,
        policy: PolicyAdapter,
        reference: PolicyAdapter,
        critic: ChunkCritic,
        value: StateValue,
        config: LearnerConfig,
        critic_target: ChunkCritic | None = None,
    ):
        self.config = config
        self.policy = policy
        self.reference = reference.requires_grad_(False).eval()
        self.critic = critic
        self.critic_target = (critic_target or copy.deepcopy(critic)).requires_grad_(False)
        self.value = value
        self.step_count = 0
        fast = config.implementation == "fast"
        self.critic_optimizer = torch.optim.Adam(critic.parameters(), lr=config.critic_lr, **_fused(critic, fast))
        self.value_optimizer = torch.optim.Adam(value.parameters(), lr=config.critic_lr, **_fused(value, fast))
        self.policy_optimizer = torch.optim.AdamW(
            self.policy_parameters(),
            lr=config.policy_lr,
            weight_decay=config.policy_weight_decay,
            **_fused(policy, fast),
        )
        # The learned behaviour prior (config.prior == "learned") and its optimiser; QAM keeps
        # tilting `reference`, which follows the prior by EMA. Synced from the reference by
        # `sync_prior()` once the reference's weights are loaded.
        self.prior: PolicyAdapter | None = None
        self.prior_optimizer: torch.optim.Optimizer | None = None
        if config.prior == "learned":
            self.prior = copy.deepcopy(self.reference).train()
            for parameter in self.prior.action_expert_parameters():  # the encoder stays the reference's
                parameter.requires_grad_(True)
            self.prior_optimizer = torch.optim.AdamW(
                self.prior.action_expert_parameters(), lr=config.prior_lr, **_fused(self.prior, fast)
            )

        # The deployed policy when config.policy_ema > 0: a Polyak average of the QAM-trained one.
        self.policy_average: PolicyAdapter | None = None
        if config.policy_ema > 0:
            self.policy_average = copy.deepcopy(policy).requires_grad_(False)

    @property
    def deployed_policy(self) -> PolicyAdapter:
        """The network robots run and checkpoints save as the policy: the average, or the trained policy."""
        return self.policy if self.policy_average is None else self.policy_average

    def sync_prior(self) -> None:
        """Start the learned prior from the reference's current weights (a fresh optimiser)."""
        if self.prior is not None:
            self.prior.load_state_dict(self.reference.state_dict())

    def policy_parameters(self) -> list[torch.nn.Parameter]:
        if not self.config.freeze_policy_encoder:
            return list(self.policy.parameters())
        return self.policy.action_expert_parameters()

    @property
    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        optimizers = {"critic": self.critic_optimizer, "value": self.value_optimizer, "policy": self.policy_optimizer}
        if self.prior_optimizer is not None:
            optimizers["prior"] = self.prior_optimizer
        return optimizers

    # -- the parts of one step ----------------------------------------------------------

    def value_readout(
        self, obs: torch.Tensor, instruction: torch.Tensor, images: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """V at s' for the critic target: Quant_τ(s') (categorical) or the scalar (ablation);
        `images` are the camera input at s' for networks that see."""
        with torch.no_grad():
            out = self.value(obs, instruction, images)
            if self.value.config.value_kind != "categorical":
                return out, {}
            probs = out.softmax(-1)
            cfg = self.config
            if cfg.tau_mode == "adaptive":
                tau = adaptive_tau(probs, cfg.tau_base, cfg.tau_alpha, cfg.tau_min, cfg.tau_max)
            else:
                tau = torch.full(probs.shape[:1], cfg.tau_base, device=probs.device)
            quantile = quantile_readout(probs, tau, self.value.atoms)
            return quantile, {
                "value/tau_mean": float(tau.mean()),
                "value/entropy": float(normalized_entropy(probs).mean()),
                "value/quantile_mean": float(quantile.mean()),
            }

    def update_value(self, obs, instruction, actions, images: torch.Tensor | None = None) -> dict[str, float]:
        with torch.no_grad():
            data_action_values = self.critic_target(obs, instruction, actions, images).min(dim=0).values
        out = self.value(obs, instruction, images)
        if self.value.config.value_kind == "categorical":
            loss = categorical_value_loss(out, data_action_values, self.value.atoms)
        else:
            loss = expectile_loss(out, data_action_values, self.config.expectile)
        self.value_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.value_optimizer.step()
        return {"value/loss": float(loss.detach()), "value/data_q_mean": float(data_action_values.mean())}

    def update_critic(self, obs, instruction, actions, target, images: torch.Tensor | None = None) -> dict[str, float]:
        q_values = self.critic(obs, instruction, actions, images)
        loss = critic_loss(q_values, target)
        self.critic_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.critic_optimizer.step()
        return {
            "critic/loss": float(loss.detach()),
            "critic/q_mean": float(q_values.detach().mean()),
            "critic/q_std": float(q_values.detach().std()),
            "critic/target_mean": float(target.mean()),
        }

    def update_policy(
        self, obs, instruction, generator: torch.Generator | None, images: torch.Tensor | None = None
    ) -> dict[str, float]:
        cfg = self.config
        if cfg.qam_batch and obs.shape[0] > cfg.qam_batch:
            obs, instruction = obs[: cfg.qam_batch], instruction[: cfg.qam_batch]
            images = None if images is None else images[: cfg.qam_batch]
        batch, dim, steps = obs.shape[0], self.policy.flat_action_dim, self.policy.sample_steps
        context = self.policy.encode(obs, instruction, images)
        with torch.no_grad():
            reference_context = self.reference.encode(obs, instruction, images)
            # The critic's CNN once per update, not at every one of QAM's ~K evaluations of Q.
            critic_image_features = self.critic.encode_images(images)

        def q_value(x: torch.Tensor) -> torch.Tensor:
            actions = self.policy.unnormalize(x)
            return self.critic(obs, instruction, actions, image_features=critic_image_features).mean(dim=0)

        # Drawn on the generator (CPU), then moved: the same numbers whatever device the learner uses.
        x_0 = torch.randn(batch, dim, generator=generator).to(obs.device)
        noise = torch.randn(steps - 1, batch, dim, generator=generator).to(obs.device)
        args = (q_value, x_0, noise, steps, cfg.lam, cfg.adjoint_time)
        relative_lam = cfg.lam_scale == "gradient"
        if cfg.implementation == "fast":
            dtype = HIDDEN_DTYPES[cfg.qam_dtype]
            policy_field = self.policy.velocity_field(context, dtype)
            reference_field = self.reference.velocity_field(reference_context, dtype)
            linearize = self.reference.velocity_linearization(reference_context, dtype)
            out = qam_loss(policy_field, reference_field, *args, linearize=linearize, relative_lam=relative_lam)
        else:
            out = reference_qam_loss(
                *self._reference_fields(context, reference_context), *args, relative_lam=relative_lam
            )
        self.policy_optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.policy_parameters(), cfg.grad_clip)
        self.policy_optimizer.step()
        return {
            "qam/loss": float(out.loss.detach()),
            "qam/terminal_adjoint_norm": float(out.terminal_adjoint_norm.mean()),
            "qam/kl_proxy": float(out.kl_proxy.mean()),
            "qam/grad_norm": float(grad_norm),
        }

    def _reference_fields(
        self, context: torch.Tensor, reference_context: torch.Tensor
    ) -> tuple[VelocityField, VelocityField]:
        """f_θ and f_β as the reference implementation binds them: every call re-runs the
        whole first layer on `context.repeat(n, 1)`."""
        batch = context.shape[0]

        def policy_field(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
            return self.policy.velocity(context.repeat(x.shape[0] // batch, 1), x, w)

        def reference_field(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
            return self.reference.velocity(reference_context.repeat(x.shape[0] // batch, 1), x, w)

        return policy_field, reference_field

    @property
    def wants_imitable_batch(self) -> bool:
        """Does the next `step` train the prior on an `imitable_batch` of its own (`prior_data = "hg-dagger"`,
        and a prior update due at this step)? The loops draw that batch only then."""
        return self._prior_update_due and self.config.prior_data == "hg-dagger"

    @property
    def _prior_update_due(self) -> bool:
        return self.prior is not None and self.step_count % self.config.prior_every == 0

    def update_prior(self, batch: LearnerBatch, generator: torch.Generator | None) -> dict[str, float]:
        """Flow matching of the behaviour prior on the chunks worth imitating — those the
        operator drove and those of episodes that went on to succeed (a positive return to
        go under the sparse terminal reward), or with `prior_data = "aggregate"` only the actions
        HG-DAgger imitates, or with "hg-dagger" every row of `batch`, which is then the prior's
        own imitation-only batch — then the reference's EMA step towards it."""
        if self.config.prior_data == "hg-dagger":
            action_mask = batch.action_mask
            imitate = action_mask.any(dim=1)
        elif self.config.prior_data == "aggregate":
            if batch.imitable is None:
                raise ValueError("prior_data='aggregate' needs batches with `imitable` (from lwd.data.replay)")
            action_mask = batch.action_mask & batch.imitable
            imitate = action_mask.any(dim=1)
        else:
            action_mask = batch.action_mask
            imitate = batch.intervention.any(dim=1) | (batch.return_to_go > 0)
        metrics = {"prior/imitated_fraction": float(imitate.float().mean())}
        if bool(imitate.any()):
            rows = imitate.nonzero().squeeze(1)
            metrics.update(
                flow_matching_update(
                    self.prior,
                    self.prior_optimizer,
                    self.prior.action_expert_parameters(),
                    self.config.grad_clip,
                    batch.obs[rows],
                    batch.instruction[rows],
                    batch.actions[rows],
                    action_mask[rows],
                    generator,
                    None if batch.images is None else batch.images[rows],
                )
            )
        with torch.no_grad():  # only the action expert learns: the encoders stay equal, nothing to average
            reference, prior = self.reference.action_expert_parameters(), self.prior.action_expert_parameters()
            if self.config.policy_tracks_reference:
                step = torch._foreach_sub(prior, reference)
                torch._foreach_mul_(step, self.config.prior_ema)
                torch._foreach_add_(self.policy.action_expert_parameters(), step)
            torch._foreach_lerp_(reference, prior, self.config.prior_ema)
        renamed = {"sft/flow_loss": "prior/flow_loss", "policy/grad_norm": "prior/grad_norm"}
        return {renamed.get(key, key): value for key, value in metrics.items()}

    def imitate_operator(self, batch: LearnerBatch, generator: torch.Generator | None) -> dict[str, float]:
        """Flow matching of the policy on the operator-driven actions of the batch (the policy's
        own actions in the same chunks are masked out): corrections reach the deployed policy
        directly, not only through Q and the prior's slow EMA."""
        mask = batch.action_mask & batch.intervention
        rows = mask.any(dim=1).nonzero().squeeze(1)
        metrics = {"operator/imitated_fraction": float(rows.numel() / mask.shape[0])}
        if rows.numel():
            update = flow_matching_update(
                self.policy,
                self.policy_optimizer,
                self.policy_parameters(),
                self.config.grad_clip,
                batch.obs[rows],
                batch.instruction[rows],
                batch.actions[rows],
                mask[rows],
                generator,
                None if batch.images is None else batch.images[rows],
            )
            metrics["operator/flow_loss"] = update["sft/flow_loss"]
        return metrics

    def step(
        self,
        batch: LearnerBatch,
        generator: torch.Generator | None = None,
        imitable_batch: LearnerBatch | None = None,
    ) -> dict[str, float]:
        """One learner step on a batch of chunked transitions; `imitable_batch` (an imitation-only
        batch, as HG-DAgger samples) is what the learned prior trains on when `wants_imitable_batch`;
        None there means the replays hold no imitable step yet, and the prior waits for one."""
        prior_due, own_batch = self._prior_update_due, self.wants_imitable_batch
        obs, instruction, actions = batch.obs, batch.instruction, batch.actions
        metrics = self.update_value(obs, instruction, actions, batch.images)
        next_value, readout = self.value_readout(batch.next_obs, instruction, batch.next_images)
        metrics.update(readout)
        target = td_target(batch.reward, batch.discount, batch.done, next_value)
        metrics.update(self.update_critic(obs, instruction, actions, target, batch.images))
        ema_update(self.critic_target, self.critic, self.config.critic_ema)
        if own_batch and imitable_batch is None:  # own_batch implies a prior update is due
            metrics["prior/imitated_fraction"] = 0.0  # no imitable step in the replays yet: the prior waits
        elif prior_due:
            metrics.update(self.update_prior(imitable_batch if own_batch else batch, generator))
        policy_updated = (
            self.step_count >= self.config.policy_warmup and self.step_count % self.config.policy_every == 0
        )
        if policy_updated:
            metrics.update(self.update_policy(obs, instruction, generator, batch.images))
        if self.config.imitate_operator:
            metrics.update(self.imitate_operator(batch, generator))
            policy_updated = True
        if policy_updated and self.policy_average is not None:
            ema_update(self.policy_average, self.policy, self.config.policy_ema)
        self.step_count += 1
        return metrics
