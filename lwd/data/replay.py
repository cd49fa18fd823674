"""Chunked replay: (s_t, A_t, R_t, s_{t+nH}, done, mask) batches from committed episodes.

The data layer owns episode boundaries: losses receive masks and bootstrap factors and
never rebuild them. Episodes are loaded into growable in-memory arrays when a snapshot
is pulled in (`refresh`), so `sample` never touches the disk.

Definitions for a step t of an episode with T steps, chunk length H, n-step n, L = nH:
  actions      a_t .. a_{t+H-1}; steps past the end repeat a_{T-1}, action_mask False there
  reward       sum_{i < min(L, T-t)} gamma^i r_{t+i}, r = 1 on the final step of a success
               (with `stage_reward`, also r = stage_reward on the step that completes a stage of
               a long-horizon chain before its last)
  next_obs     s_{min(t+L, T)}
  done         1 when the window reaches the episode end (the episode's outcome is final:
               success, or a failure at the time limit), else 0 (with `takeover_as_failure`,
               also 1 where a window that starts in the policy's control stops at a takeover)
  discount     gamma^{min(L, T-t)}, the factor in front of the bootstrap value
  return_to_go sum_{i < T-t} gamma^i r_{t+i}, the Monte-Carlo return (RECAP's value target)
so the critic target is  y = reward + discount * (1 - done) * V(next_obs).
With `imitation_only` (HG-DAgger's aggregate), only imitable steps are sampled: every step
of a demonstration or of a success without takeovers, and the operator's steps of any
rollout; action_mask is False on the non-imitable actions of a chunk.
With `bootstrap_at_time_limit`, failures that hit the time limit are not terminal:
done = 0 there and the target bootstraps from s_T with discount gamma^{T-t}.
With `image_cameras`, the decoded frames live in a ring of at most `image_memory_mb`: when
it is full, new frames overwrite the oldest episodes' and those episodes are evicted whole
(first in, first out): their steps are never sampled again. A row without its frames
cannot train a network that sees (a blank image would be wrong data, not missing data), so
eviction drops transitions instead of sampling them without images; their observations
stay (a few hundred bytes a step) for normalisation statistics.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from lwd.configargs import documented
from lwd.data.episode import Episode
from lwd.data.store import DamagedEpisode, EpisodeStore
from lwd.envs.cameras import side_by_side
from lwd.envs.tasks import LONG_HORIZON_OBS_DIM, stages_of

_log = logging.getLogger(__name__)


STAGE_END_TARGETS = ("next", "mask", "hold")
IMITABLE_CORRECTIONS = ("all", "completed")


def check_imitable_corrections(value: str, field: str = "imitable_corrections") -> None:
    """Refuses a value outside IMITABLE_CORRECTIONS; `field` names the option in the message."""
    if value not in IMITABLE_CORRECTIONS:
        raise ValueError(f"{field} must be one of {IMITABLE_CORRECTIONS}, got {value!r}")


def check_stage_reward(stage_reward: float) -> None:
    """Refuses a stage reward outside [0, 1] (NaN included): it is a share of the chain's success reward."""
    if not 0.0 <= stage_reward <= 1.0:
        raise ValueError(f"stage_reward must be in [0, 1] (a share of the chain's success reward), got {stage_reward}")


@dataclass(frozen=True)
class ReplayConfig:
    chunk_len: int = documented(5, "H: actions per chunk (chosen on validation seeds, docs/benchmarks.md)")
    discount: float = documented(0.99, "gamma per environment step")
    n_step: int = documented(
        1, "n: chunks per TD backup (4 for MT10 offline and lwd online, 10 offline for long-horizon tasks)"
    )
    sources: tuple[str, ...] | None = documented(
        None, "only episodes from these sources (demo, rollout, play); None = all"
    )
    task_balanced: bool = documented(False, "sample tasks uniformly, then steps uniformly within the task")
    bootstrap_at_time_limit: bool = documented(
        False, "treat time-limit failures as truncated (bootstrap) instead of terminal"
    )
    imitation_only: bool = documented(
        False, "sample only demos, takeover-free successes and operator steps (HG-DAgger)"
    )
    image_cameras: tuple[str, ...] = documented(
        (), "cameras whose frames batches carry (side by side, in this order); empty: no images"
    )
    image_memory_mb: float = documented(
        4096.0,
        "most decoded frame memory the replay may hold (MiB); at 2 x 64x64 cameras a step takes 24 KiB, "
        "so 4096 MiB hold ~170k steps; beyond it the oldest episodes are evicted whole (never sampled again)",
    )
    recent_fraction: float = documented(
        0.0,
        "recency weighting: this share of each batch is drawn uniformly from the newest `recent_steps` "
        "live steps (ignoring task balance), the rest as usual (so at least this share lands there); "
        "0 = no weighting",
    )
    recent_steps: int = documented(20_000, "the window of newest steps that `recent_fraction` draws from")
    stage_end_targets: str = documented(
        "next",
        "what a long-horizon chunk that runs past its stage's last step gives the policy to imitate there: "
        "'next' the next stage's first actions as executed (in the next, reset scene); 'mask' nothing (masked "
        "like actions past the episode end; the critic still sees the executed actions); 'hold' the stage's "
        'last action repeated (the critic sees it too) (docs/benchmarks.md, "Where `lh` still fails")',
    )
    stage_reward: float = documented(
        0.0,
        "reward on the step that completes a stage of a long-horizon chain before its last (a shaping "
        "option; SPEC's reward is sparse: 0 keeps it, r = 1 only where a chain succeeds)",
    )
    imitable_corrections: str = documented(
        "all",
        "which operator-driven steps are imitable: 'all' (HG-DAgger's aggregate, SPEC §7) or 'completed' (only "
        "those in a stage the episode goes on to complete; in a one-task episode, only those of a success): a "
        "correction that never finished its stage is left out of imitation; every batch that is not "
        "imitation-only still holds it",
    )
    takeover_as_failure: bool = documented(
        False,
        "a backup that starts in the policy's control and reaches the operator's takeover ends there as a "
        "failure (terminal, no bootstrap from the value of the takeover state, which is the operator's): the "
        "takeover is the policy's outcome (intervention as feedback); False: bootstrap there as anywhere",
    )

    def __post_init__(self) -> None:
        object.__setattr__(self, "image_cameras", tuple(self.image_cameras))
        if self.chunk_len < 1 or self.n_step < 1:
            raise ValueError("chunk_len and n_step must be >= 1")
        if self.image_memory_mb <= 0:
            raise ValueError(f"image_memory_mb must be positive, got {self.image_memory_mb}")
        if not 0.0 < self.discount <= 1.0:
            raise ValueError(f"discount must be in (0, 1], got {self.discount}")
        if not 0.0 <= self.recent_fraction <= 1.0 or self.recent_steps < 1:
            raise ValueError(
                f"need 0 <= recent_fraction <= 1 and recent_steps >= 1, got {self.recent_fraction}, {self.recent_steps}"
            )
        if self.stage_end_targets not in STAGE_END_TARGETS:
            raise ValueError(f"stage_end_targets must be one of {STAGE_END_TARGETS}, got {self.stage_end_targets!r}")
        check_stage_reward(self.stage_reward)
        check_imitable_corrections(self.imitable_corrections)
        if self.recent_fraction and self.imitation_only:
            raise ValueError("recency weighting (recent_fraction > 0) and imitation_only do not combine")


@dataclass(frozen=True)
class ChunkBatch:
    """A batch of chunked transitions. B = batch, H = chunk length, D = obs dim, A = action dim."""

    obs: np.ndarray  # (B, D) float32, s_t
    actions: np.ndarray  # (B, H, A) float32, A_t (padded past the episode end)
    action_mask: np.ndarray  # (B, H) bool, False on padded actions
    intervention: np.ndarray  # (B, H) bool, operator-driven actions
    imitable: np.ndarray  # (B, H) bool, HG-DAgger's aggregate: demo, operator-driven, or of a takeover-free success
    reward: np.ndarray  # (B,) float32, discounted reward over the n*H window
    return_to_go: np.ndarray  # (B,) float32, discounted reward to the episode's end
    next_obs: np.ndarray  # (B, D) float32, s_{t+nH} (or s_T)
    done: np.ndarray  # (B,) float32, 1 = no bootstrap
    discount: np.ndarray  # (B,) float32, gamma^(steps covered)
    task_ids: np.ndarray  # (B,) int64, index into task_vocab
    instruction_ids: np.ndarray  # (B,) int64, index into instruction_vocab
    policy_version: np.ndarray  # (B,) int64, version that acted at s_t (-1: none)
    task_vocab: tuple[str, ...]
    instruction_vocab: tuple[str, ...]
    images: np.ndarray | None = None  # (B, S, S * cameras, 3) uint8 at s_t, when the replay holds frames
    next_images: np.ndarray | None = None  # (B, S, S * cameras, 3) uint8 at next_obs

    def __len__(self) -> int:
        return int(self.obs.shape[0])


class _Growable:
    """An append-only array with amortised O(1) appends."""

    def __init__(self, row_shape: tuple[int, ...], dtype):
        self._data = np.zeros((1024, *row_shape), dtype=dtype)
        self.size = 0

    def extend(self, rows: np.ndarray) -> None:
        needed = self.size + len(rows)
        if needed > len(self._data):
            grown = np.zeros((max(needed, 2 * len(self._data)), *self._data.shape[1:]), dtype=self._data.dtype)
            grown[: self.size] = self._data[: self.size]
            self._data = grown
        self._data[self.size : needed] = rows
        self.size = needed

    @property
    def view(self) -> np.ndarray:
        return self._data[: self.size]


class _FrameRing:
    """Rows of decoded frames by observation row, at most `capacity` of them: row r lives in
    slot r % capacity, so once full the newest rows overwrite the oldest. Memory grows with
    the rows written, never past `capacity` rows."""

    def __init__(self, row_shape: tuple[int, ...], capacity: int):
        self.capacity = capacity
        self.rows = 0  # rows ever written
        self._data = np.zeros((min(1024, capacity), *row_shape), dtype=np.uint8)

    @property
    def row_shape(self) -> tuple[int, ...]:
        return self._data.shape[1:]

    @property
    def nbytes(self) -> int:
        return self._data.nbytes

    @property
    def oldest_row(self) -> int:
        """The first row still held."""
        return max(0, self.rows - self.capacity)

    def extend(self, rows: np.ndarray) -> None:
        needed = min(self.rows + len(rows), self.capacity)
        if needed > len(self._data):  # still below capacity, so nothing has wrapped yet
            grown = np.zeros((min(max(needed, 2 * len(self._data)), self.capacity), *self.row_shape), np.uint8)
            grown[: self.rows] = self._data[: self.rows]
            self._data = grown
        self._data[(self.rows + np.arange(len(rows))) % self.capacity] = rows
        self.rows += len(rows)

    def __getitem__(self, rows: np.ndarray) -> np.ndarray:
        return self._data[rows % self.capacity]


class ChunkReplay:
    """In-memory index over one store's committed episodes (optionally one source)."""

    def __init__(self, store: EpisodeStore, config: ReplayConfig = ReplayConfig()):
        self.store = store
        self.config = config
        self.snapshot = 0
        self.num_episodes = 0
        self.skipped_episodes = 0  # damaged episodes refresh() could not load
        self._pulled: set[str] = set()  # ids taken in (or skipped as damaged) from snapshots after self.snapshot
        self._obs: _Growable | None = None
        self._actions: _Growable | None = None
        self._images: _FrameRing | None = None  # obs row -> the cameras' frames side by side, decoded
        self._episode_start = _Growable((2,), np.int64)  # episode -> (first step, first obs row)
        self._first_live_step = 0  # steps before it belong to episodes whose frames were evicted
        self._evicted_episodes = 0
        self._intervention = _Growable((), np.bool_)
        self._version = _Growable((), np.int64)
        self._reward = _Growable((), np.float32)
        self._return_to_go = _Growable((), np.float32)
        self._obs_row = _Growable((), np.int64)  # step -> row of s_t in the obs array
        self._episode_end = _Growable((), np.int64)  # step -> one past the episode's last step
        self._control_end = _Growable((), np.int64)  # step -> next switch between policy and operator (or the end)
        self._stage_end = _Growable((), np.int64)  # step -> one past its stage's last step (or the episode's)
        self._terminal = _Growable((), np.bool_)  # step -> does the episode end terminally
        self._imitable = _Growable((), np.bool_)  # step -> may HG-DAgger imitate this action
        self._num_imitable = 0
        self._task = _Growable((), np.int64)
        self._instruction = _Growable((), np.int64)
        self.task_vocab: list[str] = []
        self.instruction_vocab: list[str] = []
        # Sampleable steps per task, for all steps (key False) and for the imitable ones (True).
        self._by_task: dict[bool, list[np.ndarray]] = {}

    @property
    def num_steps(self) -> int:
        return self._reward.size

    @property
    def observation_array(self) -> np.ndarray:
        """(sum of T+1, D) every stored observation, for normalisation statistics."""
        return self._obs.view if self._obs is not None else np.zeros((0, 0), np.float32)

    @property
    def image_shape(self) -> tuple[int, ...]:
        """(S, S * cameras, 3): the shape of one row of batch images; () while none are held."""
        return self._images.row_shape if self._images is not None else ()

    @property
    def image_bytes(self) -> int:
        """Bytes of decoded frames held (what `ReplayConfig.image_memory_mb` bounds)."""
        return self._images.nbytes if self._images is not None else 0

    @property
    def evicted_episodes(self) -> int:
        """Oldest episodes whose frames the memory budget evicted; their steps are not sampled."""
        return self._evicted_episodes

    @property
    def first_live_step(self) -> int:
        """The first step a batch may start at: earlier ones lost their frames to the budget."""
        return self._first_live_step

    @property
    def action_array(self) -> np.ndarray:
        """(sum of T, A) every stored action."""
        return self._actions.view if self._actions is not None else np.zeros((0, 0), np.float32)

    def refresh(self, up_to: int | None = None, on_episode: Callable[[Episode], None] | None = None) -> int:
        """Pull in episodes committed up to snapshot `up_to` (default: newest); returns how many.
        `on_episode` sees each new episode as it arrives (fleet metrics, latencies). Damaged
        episodes (missing or corrupt files) are skipped with a warning and counted in
        `skipped_episodes`, so training goes on with the rest."""
        target = self.store.latest_snapshot() if up_to is None else up_to
        if target <= self.snapshot:
            return 0
        # A refresh that raised part-way (a refused episode, a failing `on_episode`) is retried
        # by calling it again: what it already took in is remembered, so nothing is added twice.
        # Within one refresh, rows follow (robot, seq), not commit order: parallel collectors
        # commit in whatever order they finish, and a replay laid out by that order would make
        # the same seed sample different batches from the same episodes on every run.
        records = sorted(
            (
                record
                for record in self.store.records(after=self.snapshot, up_to=target, sources=self.config.sources)
                if record.episode_id not in self._pulled
            ),
            key=lambda record: (record.robot_id, record.seq),
        )
        damaged: list[DamagedEpisode] = []
        added = 0
        try:
            for episode in self.store.load_many(records, damaged):
                self.add(episode)
                self._pulled.add(episode.episode_id)
                added += 1
                if on_episode is not None:
                    on_episode(episode)
        finally:
            # Skipped for good: the store is append-only, so a damaged episode never heals.
            self.skipped_episodes += len(damaged)
            self._pulled.update(d.record.episode_id for d in damaged)
        self.snapshot = target
        self._pulled.clear()
        return added

    def add(self, episode: Episode) -> None:
        steps = episode.num_steps
        if self._obs is None:
            self._obs = _Growable(episode.observations.shape[1:], np.float32)
            self._actions = _Growable(episode.actions.shape[1:], np.float32)
        elif (episode.observations.shape[1:], episode.actions.shape[1:]) != (
            self._obs.view.shape[1:],
            self._actions.view.shape[1:],
        ):
            raise ValueError(
                f"episode {episode.episode_id} ({episode.task}) has observations/actions of size "
                f"{episode.observations.shape[1:]}/{episode.actions.shape[1:]}, this replay holds "
                f"{self._obs.view.shape[1:]}/{self._actions.view.shape[1:]}: keep suites with different "
                "observation sizes (e.g. mt10 and lh) in separate stores"
            )
        images = self._episode_images(episode)
        start_step, start_row = self._reward.size, self._obs.size
        if images is not None:
            if self._images is None:
                capacity = int(self.config.image_memory_mb * 2**20) // images[0].nbytes
                self._images = _FrameRing(images.shape[1:], capacity)
            elif images.shape[1:] != self._images.row_shape:
                raise ValueError(
                    f"episode {episode.episode_id} has frames of {images.shape[1:]} side by side, this replay "
                    f"holds {self._images.row_shape}: one replay takes one camera setup"
                )
            if len(images) > self._images.capacity:
                raise ValueError(
                    f"episode {episode.episode_id} alone has {images.nbytes / 2**20:.1f} MiB of frames, over the "
                    f"replay's image_memory_mb={self.config.image_memory_mb:g}: raise the budget"
                )
            self._images.extend(images)
        self._episode_start.extend(np.array([[start_step, start_row]], np.int64))
        self._obs.extend(episode.observations)
        self._actions.extend(episode.actions)
        self._intervention.extend(episode.intervention)
        self._version.extend(episode.policy_version)
        reward = np.zeros(steps, np.float32)
        reward[-1] = float(episode.success)
        if self.config.stage_reward and episode.observations.shape[1] == LONG_HORIZON_OBS_DIM:
            stage = stages_of(episode.observations)
            reward[np.flatnonzero(stage[1:steps] > stage[: steps - 1])] += self.config.stage_reward
        self._reward.extend(reward)
        self._return_to_go.extend(_discounted_sums_to_end(reward, self.config.discount))
        self._obs_row.extend(start_row + np.arange(steps))
        self._episode_end.extend(np.full(steps, start_step + steps))
        flags = np.asarray(episode.intervention, bool)
        switches = np.append(1 + np.flatnonzero(flags[1:] != flags[:-1]), steps)
        self._control_end.extend(start_step + switches[np.searchsorted(switches, np.arange(steps), side="right")])
        self._stage_end.extend(start_step + self._stage_ends(episode, steps))
        terminal = bool(episode.success) or not self.config.bootstrap_at_time_limit
        self._terminal.extend(np.full(steps, terminal))
        autonomous_success = bool(episode.success) and not episode.intervention.any()
        corrections = np.asarray(episode.intervention, bool)
        if self.config.imitable_corrections == "completed":
            corrections = corrections & self._in_completed_stage(episode, steps)
        imitable = corrections | (episode.source == "demo" or autonomous_success)
        self._imitable.extend(imitable)
        self._num_imitable += int(imitable.sum())
        self._task.extend(np.full(steps, self._vocab_index(self.task_vocab, episode.task)))
        self._instruction.extend(np.full(steps, self._vocab_index(self.instruction_vocab, episode.instruction)))
        self.num_episodes += 1
        self._by_task = {}
        if self._images is not None:
            self._evict_before(self._images.oldest_row)

    def _stage_ends(self, episode: Episode, steps: int) -> np.ndarray:
        """Per step, one past the last step of its stage, read from the stage one-hot of a
        long-horizon observation; the episode's end elsewhere (and with `stage_end_targets`
        'next', where it is not needed)."""
        if self.config.stage_end_targets == "next" or episode.observations.shape[1] != LONG_HORIZON_OBS_DIM:
            return np.full(steps, steps)
        stage = stages_of(episode.observations)  # (T+1,): before each step, and after the last
        ends = np.append(1 + np.flatnonzero(stage[1:] != stage[:-1]), steps)
        return ends[np.searchsorted(ends, np.arange(steps), side="right")]

    @staticmethod
    def _in_completed_stage(episode: Episode, steps: int) -> np.ndarray:
        """(T,) bool: does the episode go on to complete the stage each step is in? All of a
        success; in a failed long-horizon chain, the steps before its last stage reached; none
        of a failed one-task episode."""
        if episode.success:
            return np.ones(steps, bool)
        if episode.observations.shape[1] != LONG_HORIZON_OBS_DIM:
            return np.zeros(steps, bool)
        stage = stages_of(episode.observations)  # (T+1,): before each step, and after the last
        return stage[:steps] < stage[steps]

    def _evict_before(self, row: int) -> None:
        """Stop sampling every episode with an observation row before `row` (its frames were overwritten)."""
        starts = self._episode_start.view
        first_live = int(np.searchsorted(starts[:, 1], row, side="left"))
        if first_live <= self._evicted_episodes:
            return
        if self._evicted_episodes == 0:
            _log.warning(
                "the replay's frames reached image_memory_mb=%g: evicting the oldest episodes (their steps are "
                "no longer sampled)",
                self.config.image_memory_mb,
            )
        step = int(starts[first_live, 0]) if first_live < len(starts) else self.num_steps
        self._num_imitable -= int(self._imitable.view[self._first_live_step : step].sum())
        self._first_live_step, self._evicted_episodes = step, first_live
        self._by_task = {}

    def _episode_images(self, episode: Episode) -> np.ndarray | None:
        """The episode's frames as the batches carry them, checked against the memory budget."""
        cameras = self.config.image_cameras
        if not cameras:
            return None
        if any(name not in episode.frames for name in cameras):
            raise ValueError(
                f"episode {episode.episode_id} ({episode.task}) has frames of {sorted(episode.frames)} but this "
                f"replay needs cameras {list(cameras)}: collect with the same --sensors.cameras"
            )
        return side_by_side(episode.frames, cameras)

    @staticmethod
    def _vocab_index(vocab: list[str], item: str) -> int:
        if item not in vocab:
            vocab.append(item)
        return vocab.index(item)

    @property
    def num_sampleable(self) -> int:
        """Steps a batch can start at (all not evicted, or the imitable ones under `imitation_only`)."""
        return self.num_sampleable_steps()

    def num_sampleable_steps(self, imitable_only: bool = False) -> int:
        """Steps a batch can start at; with `imitable_only`, the imitable ones whatever the config."""
        if imitable_only or self.config.imitation_only:
            return self._num_imitable
        return self.num_steps - self._first_live_step

    def _sample_steps(self, batch_size: int, rng: np.random.Generator, imitable_only: bool = False) -> np.ndarray:
        steps = self._sample_steps_evenly(batch_size, rng, imitable_only or self.config.imitation_only)
        if self.config.recent_fraction > 0 and not imitable_only:
            # Draws for the recent rows come after the usual ones, so with no weighting the
            # random stream (and every batch) is what it always was.
            recent = rng.random(batch_size) < self.config.recent_fraction
            window_start = max(self._first_live_step, self.num_steps - self.config.recent_steps)
            steps[recent] = rng.integers(window_start, self.num_steps, size=int(recent.sum()))
        return steps

    def _sample_steps_evenly(self, batch_size: int, rng: np.random.Generator, imitable_only: bool) -> np.ndarray:
        if not self.config.task_balanced and not imitable_only:
            return rng.integers(self._first_live_step, self.num_steps, size=batch_size)
        if imitable_only not in self._by_task:
            allowed = self._imitable.view.copy() if imitable_only else np.ones(self.num_steps, bool)
            allowed[: self._first_live_step] = False
            if not self.config.task_balanced:
                self._by_task[imitable_only] = [np.flatnonzero(allowed)]
            else:
                tasks = self._task.view
                self._by_task[imitable_only] = [
                    np.flatnonzero((tasks == k) & allowed) for k in range(len(self.task_vocab))
                ]
        present = [steps for steps in self._by_task[imitable_only] if len(steps)]
        chosen = rng.integers(0, len(present), size=batch_size)
        sizes = np.array([len(s) for s in present])
        offsets = (rng.random(batch_size) * sizes[chosen]).astype(np.int64)
        return np.array([present[c][o] for c, o in zip(chosen, offsets)], dtype=np.int64)

    def sample(self, batch_size: int, rng: np.random.Generator, imitable_only: bool = False) -> ChunkBatch:
        """A batch as the config says; `imitable_only` samples as `imitation_only` does (HG-DAgger's
        batch: only imitable steps, the other actions of a chunk masked) for this batch alone."""
        if self.num_sampleable_steps(imitable_only) == 0:
            raise ValueError(
                "cannot sample from an empty replay; refresh() after episodes are committed"
                + (" (none of its steps is imitable)" if self.num_steps else "")
            )
        return self.gather(self._sample_steps(batch_size, rng, imitable_only), imitable_only)

    def gather(self, steps: np.ndarray, imitable_only: bool = False) -> ChunkBatch:
        """The chunked transitions that start at the given global step indices (with
        `imitable_only`, or under `imitation_only`, non-imitable actions masked out)."""
        cfg = self.config
        if len(steps) and int(steps.min()) < self._first_live_step:
            raise ValueError(
                f"step {int(steps.min())} belongs to an episode evicted by the image budget "
                f"(steps from {self._first_live_step} are held)"
            )
        horizon = cfg.chunk_len
        window = cfg.chunk_len * cfg.n_step
        end = self._episode_end.view[steps]  # (B,)
        # Steps the backup covers: n chunks, cut at the episode end and, after the first
        # chunk, at the next switch between policy and operator, so a multi-chunk backup
        # never straddles the two (SPEC §4.4's reason for n = 1 online).
        first_chunk = np.minimum(horizon, end - steps)
        covered = np.minimum(
            np.minimum(window, end - steps), np.maximum(first_chunk, self._control_end.view[steps] - steps)
        )  # (B,)

        action_idx = steps[:, None] + np.arange(horizon)[None, :]  # (B, H)
        stage_end = self._stage_end.view[steps]
        action_mask = action_idx < (stage_end if cfg.stage_end_targets == "mask" else end)[:, None]
        action_idx = np.minimum(action_idx, (stage_end if cfg.stage_end_targets == "hold" else end)[:, None] - 1)
        if cfg.imitation_only or imitable_only:
            action_mask &= self._imitable.view[action_idx]

        reward_idx = steps[:, None] + np.arange(window)[None, :]  # (B, L)
        reward_valid = reward_idx < (steps + covered)[:, None]
        rewards = self._reward.view[np.minimum(reward_idx, end[:, None] - 1)] * reward_valid
        reward = (rewards * cfg.discount ** np.arange(window, dtype=np.float64)[None, :]).sum(axis=1)

        return_to_go = self._return_to_go.view[steps]

        reaches_end = steps + covered >= end
        done = reaches_end & self._terminal.view[steps]
        if cfg.takeover_as_failure:
            control_end = self._control_end.view[steps]
            # Only a backup that stops exactly at the takeover: one whose first chunk already
            # holds operator actions bootstraps as before.
            done |= ~self._intervention.view[steps] & (control_end < end) & (steps + covered == control_end)
        obs_rows = self._obs_row.view[steps]
        images = None if self._images is None else self._images[obs_rows]
        next_images = None if self._images is None else self._images[obs_rows + covered]
        return ChunkBatch(
            obs=self._obs.view[obs_rows],
            actions=self._actions.view[action_idx],
            action_mask=action_mask,
            intervention=self._intervention.view[action_idx] & action_mask,
            imitable=self._imitable.view[action_idx] & action_mask,
            reward=reward.astype(np.float32),
            return_to_go=return_to_go,
            next_obs=self._obs.view[obs_rows + covered],
            done=done.astype(np.float32),
            discount=(cfg.discount**covered).astype(np.float32),
            task_ids=self._task.view[steps],
            instruction_ids=self._instruction.view[steps],
            policy_version=self._version.view[steps],
            task_vocab=tuple(self.task_vocab),
            instruction_vocab=tuple(self.instruction_vocab),
            images=images,
            next_images=next_images,
        )


def _discounted_sums_to_end(reward: np.ndarray, discount: float) -> np.ndarray:
    """(T,) float32: sum_{i < T-t} discount^i reward[t+i] for every t; a loop over the few
    rewarded steps (the success, the stage ends), not over every step."""
    sums = np.zeros(len(reward))
    for j in np.flatnonzero(reward):
        sums[: j + 1] += float(reward[j]) * discount ** np.arange(j, -1, -1, dtype=np.float64)
    return sums.astype(np.float32)


def _remap(ids: np.ndarray, vocab: tuple[str, ...], merged: list[str]) -> np.ndarray:
    for item in vocab:
        if item not in merged:
            merged.append(item)
    table = np.array([merged.index(item) for item in vocab], dtype=np.int64)
    return table[ids]


def concat_batches(batches: list[ChunkBatch]) -> ChunkBatch:
    """One batch from several, with task and instruction vocabularies merged."""
    tasks: list[str] = []
    instructions: list[str] = []
    task_ids = [_remap(b.task_ids, b.task_vocab, tasks) for b in batches]
    instruction_ids = [_remap(b.instruction_ids, b.instruction_vocab, instructions) for b in batches]
    arrays = {
        name: np.concatenate([getattr(b, name) for b in batches])
        for name in (
            "obs",
            "actions",
            "action_mask",
            "intervention",
            "imitable",
            "reward",
            "return_to_go",
            "next_obs",
            "done",
            "discount",
            "policy_version",
        )
    }
    for name in ("images", "next_images"):
        parts = [getattr(b, name) for b in batches]
        if any(p is None for p in parts) and not all(p is None for p in parts):
            raise ValueError(f"cannot mix batches with and without {name}: give every replay the same image_cameras")
        arrays[name] = None if parts[0] is None else np.concatenate(parts)
    return ChunkBatch(
        **arrays,
        task_ids=np.concatenate(task_ids),
        instruction_ids=np.concatenate(instruction_ids),
        task_vocab=tuple(tasks),
        instruction_vocab=tuple(instructions),
    )


class MixedReplay:
    """Samples from several replays by ratio, e.g. offline : online = 1 : 1.

    A replay that is still empty (the online store at the start of deployment) gives
    its share to the others.
    """

    def __init__(self, parts: list[tuple[ChunkReplay, float]]):
        if not parts or any(weight <= 0 for _, weight in parts):
            raise ValueError("MixedReplay needs at least one (replay, positive weight) pair")
        self.parts = parts

    def refresh(self) -> int:
        return sum(replay.refresh() for replay, _ in self.parts)

    def num_sampleable_steps(self, imitable_only: bool = False) -> int:
        return sum(replay.num_sampleable_steps(imitable_only) for replay, _ in self.parts)

    def sample(self, batch_size: int, rng: np.random.Generator, imitable_only: bool = False) -> ChunkBatch:
        """A batch drawn from the parts by ratio; `imitable_only` as in `ChunkReplay.sample`."""
        live = [(replay, weight) for replay, weight in self.parts if replay.num_sampleable_steps(imitable_only) > 0]
        if not live:
            raise ValueError("every replay in the mix is empty" + (" of imitable steps" if imitable_only else ""))
        weights = np.array([w for _, w in live], dtype=np.float64)
        counts = np.floor(batch_size * weights / weights.sum()).astype(int)
        counts[: batch_size - counts.sum()] += 1  # hand out the rounding remainder
        return concat_batches(
            [replay.sample(int(n), rng, imitable_only) for (replay, _), n in zip(live, counts) if n > 0]
        )


def sample_learner_batches(
    replay: ChunkReplay | MixedReplay, batch_size: int, rng: np.random.Generator, want_imitable: bool
) -> tuple[ChunkBatch, ChunkBatch | None]:
    """A learner batch, and an imitation-only one (the learned prior's own batch) when
    `want_imitable` and the replay holds an imitable step; None otherwise, so a prior waits
    for its first imitable step instead of failing the run."""
    batch = replay.sample(batch_size, rng)
    if not want_imitable or replay.num_sampleable_steps(imitable_only=True) == 0:
        return batch, None
    return batch, replay.sample(batch_size, rng, imitable_only=True)
