"""The step loop every training stage shares: progress bar, metric windows, resumable
checkpoints at `<out>/last`, and the finished model at `<out>/final`."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from lwd.training.metrics import MetricsLogger, average_metrics


@dataclass(frozen=True)
class LoopSettings:
    desc: str  # progress-bar label
    rate_key: str  # metric name of the updates/s figure
    steps: int
    log_every: int
    checkpoint_every: int
    progress: bool


def run_steps(
    settings: LoopSettings,
    out: Path,
    start: int,
    step: Callable[[], dict[str, float]],
    logger: MetricsLogger,
    save: Callable[[Path, int], None],
    summary: Callable[[dict[str, float]], dict[str, str]],
    extra_metrics: Callable[[], dict[str, float]] = dict,
) -> Path:
    """Run steps start..settings.steps; `save(path, step)` writes a checkpoint, `summary`
    turns logged means into the bar's postfix. Returns `<out>/final`."""
    from tqdm import tqdm

    began = time.perf_counter()
    window: list[dict[str, float]] = []
    with tqdm(
        total=settings.steps, initial=start, desc=settings.desc, unit="step", disable=not settings.progress
    ) as bar:
        for index in range(start, settings.steps):
            window.append(step())
            done = index + 1
            if done % settings.log_every == 0 or done == settings.steps:
                mean = average_metrics(window)
                mean.update(extra_metrics())
                mean[settings.rate_key] = (done - start) / (time.perf_counter() - began)
                logger.log(done, mean)
                bar.set_postfix(**summary(mean))
                window = []
            if done % settings.checkpoint_every == 0:
                save(out / "last", done)
            bar.update(1)
    logger.close()
    save(out / "last", settings.steps)
    save(out / "final", settings.steps)
    return out / "final"
