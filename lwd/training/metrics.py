"""Flat, namespaced metrics to JSONL and TensorBoard."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TextIO


def open_jsonl_for_append(path: str | Path) -> TextIO:
    """Open a JSON-lines log to append to, first cutting a torn last line (the writer was
    killed mid-write) so that the next record does not run into it."""
    path = Path(path)
    if path.exists():
        data = path.read_bytes()
        if data and not data.endswith(b"\n"):
            with open(path, "r+b") as handle:
                handle.truncate(data.rfind(b"\n") + 1)
    return open(path, "a", buffering=1)


def read_jsonl(path: str | Path) -> list[dict]:
    """The complete records of a JSON-lines log; a torn last line (no newline yet: its
    writer was killed mid-write) is not a record."""
    text = Path(path).read_text()
    lines = text.split("\n")[:-1]  # the part after the last newline is torn or empty
    return [json.loads(line) for line in lines if line.strip()]


class MetricsLogger:
    def __init__(self, directory: str | Path, tensorboard: bool = True):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._jsonl = open_jsonl_for_append(self.directory / "metrics.jsonl")
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
