"""Reading a run directory for the dashboard, while `lwd deploy` may be writing it.

Any file may be missing (an old run, no gate, a run that has not started), a JSON-lines
log may end in a torn line (its writer was killed, or is mid-write), and a damaged line
or file is reported on the page instead of failing the request.

Polling a long run must stay cheap, so nothing is parsed twice: a JSON file is parsed
again only when its (inode, size, mtime) changed, and a JSON-lines log is read from where
the last read stopped. That is safe because its writers only append, and cut only a torn
last line (`open_jsonl_for_append`), which a reader never consumed: like
`lwd.training.metrics.read_jsonl`, a reader takes complete lines only (up to the last
newline). A log that shrank below that point or was replaced is read again from the start.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path

from lwd.dashboard.state import RunFiles, valid_records

# The JSON-lines logs of a deploy run (lwd.fleet.online, lwd.fleet.registry, the gate),
# with the keys a record needs to be used at all.
LOGS = {
    "history": ("registry/history.jsonl", ("version",)),
    "decisions": ("registry/decisions.jsonl", ("version", "decision")),
    "evaluations": ("gate/evaluations.jsonl", ("version",)),
    "episodes": ("episodes.jsonl", ("robot_id", "task", "success")),
    "metrics": ("metrics.jsonl", ()),
}
ROLLOUT, SUMMARY, CONFIG = "registry/ROLLOUT", "summary.json", "config.json"
WORKERS = "robots"  # robots/worker-<i>.json, one per robot worker process


class _LogTail:
    """One JSON-lines log, read incrementally: the usable records so far, and where the
    complete lines end."""

    def __init__(self, inode: int):
        self.inode, self.offset, self.records = inode, 0, []
        self.damaged = self.incomplete = 0  # lines that are not JSON; records without the needed keys

    def update(self, path: Path, required: tuple[str, ...]) -> None:
        with open(path, "rb") as handle:
            handle.seek(self.offset)
            data = handle.read()
        end = data.rfind(b"\n") + 1  # what follows the last newline is torn (or being written)
        if end == 0:
            return
        self.offset += end
        new = []
        for line in data[:end].decode("utf-8", errors="replace").split("\n"):
            if line.strip():
                try:
                    new.append(json.loads(line))
                except ValueError:
                    self.damaged += 1
        good, bad = valid_records(new, required)
        self.incomplete += bad
        # A new list, never extended in place: payloads being computed from the old one
        # in other server threads keep a list that does not change under them.
        self.records = self.records + good

    def problems(self, relative: str, required: tuple[str, ...]) -> list[str]:
        out = [f"{relative}: {self.damaged} damaged lines skipped"] if self.damaged else []
        if self.incomplete:
            out.append(f"{relative}: {self.incomplete} records without {', '.join(required)} ignored")
        return out


class RunReader:
    """Reads a run directory into `RunFiles`, parsing only what changed since the last
    read. Safe to call from several server threads."""

    def __init__(self, run: str | os.PathLike):
        self.run = Path(run)
        self._cache: dict[Path, tuple[tuple, object, list[str]]] = {}
        self._logs: dict[str, _LogTail] = {}
        self._lock = threading.Lock()

    def read(self) -> RunFiles:
        with self._lock:
            stats: dict[str, os.stat_result] = {}
            problems: list[str] = []
            logs = {name: self._log(relative, required, stats, problems) for name, (relative, required) in LOGS.items()}
            workers = []
            for path in sorted((self.run / WORKERS).glob("worker-*.json")):
                worker = self._parse(f"{WORKERS}/{path.name}", stats, problems)
                if isinstance(worker, dict) and isinstance(worker.get("robots"), list):
                    robots = [r for r in worker["robots"] if isinstance(r, dict) and "robot_id" in r]
                    workers.append({**worker, "robots": robots})
            rollout = self._parse(ROLLOUT, stats, problems)
            summary = self._parse(SUMMARY, stats, problems)
            if (self.run / CONFIG).exists():
                stats[CONFIG] = (self.run / CONFIG).stat()
            live = [s.st_mtime for name, s in stats.items() if name != SUMMARY]
            return RunFiles(
                run=str(self.run),
                workers=workers,
                rollout=rollout if isinstance(rollout, dict) else None,
                summary=summary if isinstance(summary, dict) else None,
                summary_mtime=stats[SUMMARY].st_mtime if SUMMARY in stats else None,
                newest_mtime=max(live, default=None),
                revision=_revision(stats),
                problems=tuple(problems),
                **logs,
            )

    def _log(self, relative: str, required: tuple[str, ...], stats: dict, problems: list[str]) -> list[dict]:
        path = self.run / relative
        try:
            stat = path.stat()
        except FileNotFoundError:
            self._logs.pop(relative, None)
            return []
        stats[relative] = stat
        tail = self._logs.get(relative)
        if tail is None or tail.inode != stat.st_ino or stat.st_size < tail.offset:
            tail = self._logs[relative] = _LogTail(stat.st_ino)  # new, replaced or cut short: from the start
        if stat.st_size > tail.offset:
            try:
                tail.update(path, required)
            except FileNotFoundError:  # removed between stat and open
                return []
        problems.extend(tail.problems(relative, required))
        return tail.records

    def _parse(self, relative: str, stats: dict, problems: list[str]):
        """A JSON file, parsed again only when its (inode, size, mtime) changed; None when
        it does not exist or does not parse."""
        path = self.run / relative
        try:
            stat = path.stat()
        except FileNotFoundError:
            self._cache.pop(path, None)
            return None
        stats[relative] = stat
        key = (stat.st_ino, stat.st_size, stat.st_mtime_ns)
        cached = self._cache.get(path)
        if cached is None or cached[0] != key:
            try:
                value, problem = json.loads(path.read_text()), []
            except FileNotFoundError:  # replaced or removed between stat and open
                return None
            except ValueError as err:
                # summary.json is written in place, so it can be read half-written once
                value, problem = None, [f"{relative}: not valid JSON ({err}); read again at the next poll"]
            cached = self._cache[path] = (key, value, problem)
        problems.extend(cached[2])
        return cached[1]


def read_run(run: str | os.PathLike) -> RunFiles:
    """A run directory's files, read once (tests, scripts)."""
    return RunReader(run).read()


def _revision(stats: dict[str, os.stat_result]) -> str:
    digest = hashlib.sha1()
    for name in sorted(stats):
        digest.update(f"{name}:{stats[name].st_size}:{stats[name].st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]
