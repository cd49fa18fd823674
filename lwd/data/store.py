"""The episode store: append-only, crash-safe, shared by every robot and the learner.

Layout of a store directory:

    catalogue.sqlite        SQLite (WAL) catalogue: one row per committed episode,
                            one row per committed snapshot
    episodes/<robot>/<seq>-<digest>.safetensors    one file per episode
    tmp/                    files being written (name carries the writer's pid)

Commit protocol for a batch of episodes: validate all; write each file to tmp/,
fsync, rename into episodes/ and fsync the directory; then, in one SQLite
transaction, allocate the next snapshot number and insert the catalogue rows. An
episode becomes visible only with that transaction, so a writer killed at any point
leaves either the whole batch visible or none of it (a renamed file without a row is
an invisible orphan that `check(repair=True)` removes). Snapshot numbers come from an
AUTOINCREMENT key, so they only grow, across crashes too.
"""

from __future__ import annotations

import os
import sqlite3
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from lwd.data.episode import (
    Episode,
    EpisodeValidationError,
    content_digest,
    decode,
    encode,
    episode_id,
    validate,
    validated,
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS snapshots (
    number INTEGER PRIMARY KEY AUTOINCREMENT,
    committed_at REAL NOT NULL,
    num_episodes INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS episodes (
    episode_id TEXT PRIMARY KEY,
    robot_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    task TEXT NOT NULL,
    instruction TEXT NOT NULL,
    source TEXT NOT NULL,
    success INTEGER NOT NULL,
    stage_score REAL NOT NULL,
    num_steps INTEGER NOT NULL,
    num_interventions INTEGER NOT NULL,
    seed INTEGER,
    started_at REAL NOT NULL,
    ended_at REAL NOT NULL,
    path TEXT NOT NULL,
    digest TEXT NOT NULL,
    snapshot INTEGER NOT NULL REFERENCES snapshots(number),
    committed_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS episodes_by_snapshot ON episodes(snapshot);
"""

_COLUMNS = ("episode_id", "robot_id", "seq", "task", "instruction", "source", "success", "stage_score",
            "num_steps", "num_interventions", "seed", "started_at", "ended_at", "path", "digest", "snapshot",
            "committed_at")


class StoreError(RuntimeError):
    """The store cannot do what was asked; the message says why."""


class EpisodeConflictError(StoreError):
    """An episode id that is already committed with different content."""


@dataclass(frozen=True)
class EpisodeRecord:
    """A catalogue row: everything about a committed episode except its arrays."""

    episode_id: str
    robot_id: str
    seq: int
    task: str
    instruction: str
    source: str
    success: bool
    stage_score: float
    num_steps: int
    num_interventions: int
    seed: int | None
    started_at: float
    ended_at: float
    path: str  # relative to the store root
    digest: str
    snapshot: int
    committed_at: float


@dataclass(frozen=True)
class Receipt:
    """The acknowledgement of an append: the episode is durable once you hold this."""

    episode_id: str
    snapshot: int
    duplicate: bool  # True when the id was already committed with identical content


@dataclass(frozen=True)
class TaskSummary:
    task: str
    source: str
    episodes: int
    steps: int
    successes: int
    interventions: int


@dataclass(frozen=True)
class CheckReport:
    episodes: int
    orphans: list[str]  # episode files no catalogue row points to
    missing: list[str]  # catalogue rows whose file is gone
    corrupt: list[str]  # files whose content does not match the catalogue


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _raise_on_conflicts(committed: dict[str, str], incoming: dict[str, str]) -> None:
    """Refuse ids that are committed with a different content digest."""
    for eid, digest in committed.items():
        if digest != incoming[eid]:
            raise EpisodeConflictError(f"episode {eid} is already committed with different content")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class EpisodeStore:
    """Append-only episode store on local disk; safe for several writer processes."""

    def __init__(self, root: str | os.PathLike, *, create: bool = True, durable: bool = True):
        self.root = Path(root)
        self.durable = durable
        catalogue = self.root / "catalogue.sqlite"
        if not catalogue.exists() and not create:
            raise StoreError(f"no episode store at {self.root} (missing {catalogue.name})")
        (self.root / "episodes").mkdir(parents=True, exist_ok=True)
        (self.root / "tmp").mkdir(exist_ok=True)
        self._conn_pid: int | None = None
        self._conn: sqlite3.Connection | None = None
        with self._db() as db:
            db.executescript(_SCHEMA)
        self._remove_dead_writers_tmp()

    # -- connection -------------------------------------------------------------------

    def _db(self) -> sqlite3.Connection:
        # A connection must not cross a fork; reopen in each process.
        if self._conn is None or self._conn_pid != os.getpid():
            conn = sqlite3.connect(self.root / "catalogue.sqlite", timeout=60.0, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={'FULL' if self.durable else 'NORMAL'}")
            self._conn, self._conn_pid = conn, os.getpid()
        return self._conn

    def close(self) -> None:
        if self._conn is not None and self._conn_pid == os.getpid():
            self._conn.close()
        self._conn = None

    def __enter__(self) -> EpisodeStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- writing ----------------------------------------------------------------------

    def append(self, episode: Episode) -> Receipt:
        return self.append_many([episode])[0]

    def append_many(self, episodes: list[Episode]) -> list[Receipt]:
        """Commit episodes atomically as one new snapshot.

        Ids already committed with the same content are acknowledged as duplicates and
        not written again; an id committed with different content raises
        EpisodeConflictError and nothing of the batch is written.
        """
        if not episodes:
            return []
        encoded: dict[str, tuple[Episode, bytes, str]] = {}
        for episode in episodes:
            validate(episode)
            data, digest = encode(episode)
            previous = encoded.get(episode.episode_id)
            if previous is not None and previous[2] != digest:
                raise EpisodeConflictError(f"episode {episode.episode_id} appears twice in one batch with different content")
            encoded[episode.episode_id] = (episode, data, digest)
        digests = {eid: item[2] for eid, item in encoded.items()}
        committed = self._digests(list(encoded))
        _raise_on_conflicts(committed, digests)

        paths: dict[str, str] = {}
        for eid, (episode, data, digest) in encoded.items():
            if eid not in committed:
                paths[eid] = self._write_file(episode, data, digest)

        db = self._db()
        now = time.time()
        db.execute("BEGIN IMMEDIATE")
        try:
            # Re-read inside the transaction: another writer may have committed meanwhile.
            existing = self._digests(list(encoded), db)
            _raise_on_conflicts(existing, digests)
            fresh = [eid for eid in encoded if eid not in existing]
            snapshot = None
            if fresh:
                cursor = db.execute("INSERT INTO snapshots (committed_at, num_episodes) VALUES (?, ?)", (now, len(fresh)))
                snapshot = cursor.lastrowid
                db.executemany(
                    f"INSERT INTO episodes ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))})",
                    [self._row(encoded[eid][0], paths[eid], encoded[eid][2], snapshot, now) for eid in fresh],
                )
            existing_snapshots = self._snapshots_of(list(existing), db)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        receipts = []
        for episode in episodes:
            eid = episode.episode_id
            if eid in existing:
                receipts.append(Receipt(eid, existing_snapshots[eid], duplicate=True))
            else:
                receipts.append(Receipt(eid, snapshot, duplicate=False))
        return receipts

    def _write_file(self, episode: Episode, data: bytes, digest: str) -> str:
        relative = Path("episodes") / episode.robot_id / f"{episode.seq:010d}-{digest[:16]}.safetensors"
        final = self.root / relative
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.root / "tmp" / f"{os.getpid()}-{uuid.uuid4().hex}.part"
        with open(tmp, "wb") as handle:
            handle.write(data)
            if self.durable:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(tmp, final)
        if self.durable:
            _fsync_dir(final.parent)
        return str(relative)

    @staticmethod
    def _row(episode: Episode, path: str, digest: str, snapshot: int, now: float) -> tuple:
        return (episode.episode_id, episode.robot_id, int(episode.seq), episode.task, episode.instruction,
                episode.source, int(bool(episode.success)), float(episode.stage_score), episode.num_steps,
                episode.num_interventions, None if episode.seed is None else int(episode.seed),
                float(episode.started_at), float(episode.ended_at), path, digest, snapshot, now)

    def _digests(self, ids: list[str], db: sqlite3.Connection | None = None) -> dict[str, str]:
        db = db or self._db()
        found: dict[str, str] = {}
        for start in range(0, len(ids), 500):
            part = ids[start:start + 500]
            rows = db.execute(f"SELECT episode_id, digest FROM episodes WHERE episode_id IN ({','.join('?' * len(part))})", part)
            found.update(dict(rows.fetchall()))
        return found

    def _snapshots_of(self, ids: list[str], db: sqlite3.Connection) -> dict[str, int]:
        if not ids:
            return {}
        rows = db.execute(f"SELECT episode_id, snapshot FROM episodes WHERE episode_id IN ({','.join('?' * len(ids))})", ids)
        return dict(rows.fetchall())

    def _remove_dead_writers_tmp(self) -> None:
        for part in (self.root / "tmp").glob("*.part"):
            pid = part.name.split("-", 1)[0]
            if pid.isdigit() and not _pid_alive(int(pid)):
                part.unlink(missing_ok=True)

    # -- reading ----------------------------------------------------------------------

    def latest_snapshot(self) -> int:
        """The newest committed snapshot number (0 for an empty store)."""
        row = self._db().execute("SELECT COALESCE(MAX(number), 0) FROM snapshots").fetchone()
        return int(row[0])

    def records(self, *, after: int = 0, up_to: int | None = None, sources: tuple[str, ...] | None = None,
                tasks: tuple[str, ...] | None = None) -> list[EpisodeRecord]:
        """Committed episodes with after < snapshot <= up_to, in commit order."""
        query = f"SELECT {', '.join(_COLUMNS)} FROM episodes WHERE snapshot > ?"
        args: list = [after]
        if up_to is not None:
            query += " AND snapshot <= ?"
            args.append(up_to)
        for column, allowed in (("source", sources), ("task", tasks)):
            if allowed is not None:
                query += f" AND {column} IN ({','.join('?' * len(allowed))})"
                args.extend(allowed)
        query += " ORDER BY snapshot, episode_id"
        return [self._record(row) for row in self._db().execute(query, args).fetchall()]

    @staticmethod
    def _record(row: tuple) -> EpisodeRecord:
        values = dict(zip(_COLUMNS, row))
        values["success"] = bool(values["success"])
        return EpisodeRecord(**values)

    def get(self, robot_id: str, seq: int) -> EpisodeRecord | None:
        row = self._db().execute(f"SELECT {', '.join(_COLUMNS)} FROM episodes WHERE episode_id = ?",
                                 (episode_id(robot_id, seq),)).fetchone()
        return None if row is None else self._record(row)

    def committed_ids(self, robot_id: str) -> set[int]:
        rows = self._db().execute("SELECT seq FROM episodes WHERE robot_id = ?", (robot_id,)).fetchall()
        return {int(r[0]) for r in rows}

    def load(self, record: EpisodeRecord) -> Episode:
        """Read and verify one committed episode; errors name the file."""
        path = self.root / record.path
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise StoreError(f"{path}: episode {record.episode_id} is catalogued but its file is missing") from None
        episode = decode(data, str(path), check=False)
        if content_digest(episode) != record.digest:
            raise StoreError(f"{path}: content does not match the catalogue digest of {record.episode_id} (corrupt file)")
        return validated(episode, str(path))

    def summary(self, up_to: int | None = None) -> list[TaskSummary]:
        query = ("SELECT task, source, COUNT(*), SUM(num_steps), SUM(success), SUM(num_interventions) "
                 "FROM episodes WHERE snapshot <= ? GROUP BY task, source ORDER BY task, source")
        limit = self.latest_snapshot() if up_to is None else up_to
        return [TaskSummary(*row) for row in self._db().execute(query, (limit,)).fetchall()]

    def check(self, *, repair: bool = False, verify_content: bool = True) -> CheckReport:
        """Compare files with the catalogue; with repair, delete orphans and stale tmp files."""
        records = self.records()
        catalogued = {r.path for r in records}
        on_disk = {str(p.relative_to(self.root)) for p in (self.root / "episodes").rglob("*.safetensors")}
        orphans = sorted(on_disk - catalogued)
        missing = sorted(r.path for r in records if r.path not in on_disk)
        corrupt = []
        if verify_content:
            for record in records:
                if record.path in on_disk:
                    try:
                        self.load(record)
                    except (StoreError, EpisodeValidationError):
                        corrupt.append(record.path)
        if repair:
            # Only orphans older than a minute: a live writer may be between rename and commit.
            cutoff = time.time() - 60.0
            for relative in orphans:
                path = self.root / relative
                if path.stat().st_mtime < cutoff:
                    path.unlink(missing_ok=True)
            self._remove_dead_writers_tmp()
        return CheckReport(episodes=len(records), orphans=orphans, missing=missing, corrupt=corrupt)
