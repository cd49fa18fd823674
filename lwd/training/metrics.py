"""Flat, namespaced metrics to JSONL and TensorBoard."""

from __future__ import annotations

import json
import time
from pathlib import Path


class MetricsLogger:
    def __init__(self, directory: str | Path, tensorboard: bool = True):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._jsonl = open(self.directory / "metrics.jsonl", "a", buffering=1)
        self._writer = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(str(self.directory / "tensorboard"))

    def log(self, step: int, metrics: dict[str, float]) -> None:
        self._jsonl.write(json.dumps({"step": step, "time": time.time(), **metrics}) + "\n")
        if self._writer is not None:
            for name, value in metrics.items():
                self._writer.add_scalar(name, value, step)

    def close(self) -> None:
        self._jsonl.close()
        if self._writer is not None:
            self._writer.close()


def average_metrics(window: list[dict[str, float]]) -> dict[str, float]:
    """Mean of each metric over the records that have it (some steps skip some parts)."""
    keys = sorted(set().union(*window)) if window else []
    return {k: sum(m[k] for m in window if k in m) / sum(1 for m in window if k in m) for k in keys}
