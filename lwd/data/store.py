"""The episode store: append-only, crash-safe, shared by every robot and the learner.

Layout of a store directory:

    catalogue.sqlite        SQLite (WAL) catalogue: one row per committed episode,
                            one per committed snapshot, one per quarantined episode
    episodes/<robot>/<seq>-<digest>.safetensors    one file per episode
    tmp/                    files being written (name carries the writer's pid)
    quarantine/             damaged episode files and unexpected files that
                            `check(repair=True)` moved out of episodes/ (same
                            relative paths below it); created by the first repair
    leases/<robot>.lock     one process at a time drives a robot id (lwd.data.lease)

Commit protocol for a batch of episodes: validate all; write each file to tmp/,
fsync, rename into episodes/ and fsync the directory; then, in one SQLite
transaction, allocate the next snapshot number and insert the catalogue rows. An
episode becomes visible only with that transaction, so a writer killed at any point
leaves either the whole batch visible or none of it (a renamed file without a row is
an invisible orphan that `check(repair=True)` removes). Snapshot numbers come from an
AUTOINCREMENT key, so they only grow, across crashes too.

Damaged episodes (file missing, unreadable, or not matching its digest) are never
fatal to readers: `load_many` skips them with one warning. `check(repair=True)`
quarantines them: a `quarantine` row (reason, time) hides the episode from
`records`, `get` and `summary`, and its file, if there is one, moves to quarantine/;
none of it is deleted. The catalogue row itself stays, so the id remains taken:
`committed_ids` still lists its seq (a robot resuming after its last committed
episode must not reuse it) and `append` still checks the id against the committed
digest (the same content is acknowledged as a duplicate and stays quarantined;
different content is an EpisodeConflictError). Files under episodes/ that are not
episode files are reported as unexpected, never opened, and moved to quarantine/ by
a repair.

Any number of processes may open a store at once: the connection sets SQLite's busy
timeout before its first statement and retries the WAL switch and the schema
creation, which SQLite may refuse with "database is locked" without waiting, with a
bounded backoff.
"""

from __future__ import annotations

import logging
import os
import random
import sqlite3
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

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
from lwd.data.lease import RobotLease, pid_alive

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
CREATE TABLE IF NOT EXISTS quarantine (
    episode_id TEXT PRIMARY KEY REFERENCES episodes(episode_id),
    reason TEXT NOT NULL,
    moved_to TEXT,
    quarantined_at REAL NOT NULL
);
"""
# `quarantine` is created IF NOT EXISTS like the rest, so opening a store made before it
# existed migrates it. moved_to: the file's path under quarantine/, NULL when it was missing.

_VISIBLE = "episode_id NOT IN (SELECT episode_id FROM quarantine)"
_QUARANTINE_DIR = "quarantine"
_BUSY_TIMEOUT_S = 60.0  # how long any statement waits for another process's lock
_log = logging.getLogger(__name__)
_T = TypeVar("_T")

_COLUMNS = (
    "episode_id",
    "robot_id",
    "seq",
    "task",
    "instruction",
    "source",
    "success",
    "stage_score",
    "num_steps",
    "num_interventions",
    "seed",
    "started_at",
    "ended_at",
    "path",
    "digest",
    "snapshot",
    "committed_at",
)


class StoreError(RuntimeError):
    """The store cannot do what was asked; the message says why."""


class EpisodeConflictError(StoreError):
    """An episode id that is already committed with different content."""


# What a damaged episode file raises on load (missing, unreadable, wrong digest, invalid);
# anything else (permissions, a full disk) is not the file's fault and propagates.
_DAMAGE_ERRORS = (StoreError, EpisodeValidationError)


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
class DamagedEpisode:
    """A visible episode that could not be loaded."""

    record: EpisodeRecord
    reason: str  # the load error, which names the file


@dataclass(frozen=True)
class QuarantinedEpisode:
    """A catalogued episode hidden from readers because its file was damaged."""

    record: EpisodeRecord
    reason: str  # "missing file", or the load error
    moved_to: str | None  # the file's path under quarantine/, relative to the store root; None if it was missing
    quarantined_at: float


@dataclass(frozen=True)
class CheckReport:
    """What `check` found (paths relative to the store root); with repair, also what it moved."""

    episodes: int  # visible committed episodes after the run
    orphans: list[str]  # episode files no catalogue row points to
    missing: list[str]  # visible catalogue rows whose file is gone
    corrupt: list[str]  # visible rows whose file does not load or does not match its digest
    unexpected: list[str]  # files under episodes/ that are not episode files (never opened)
    quarantined: int  # episodes in quarantine after the run
    quarantined_now: list[str]  # the missing, corrupt and unexpected paths this run quarantined

    @property
    def unresolved(self) -> list[str]:
        """Missing, corrupt or unexpected paths still in the visible store after the run."""
        moved = set(self.quarantined_now)
        return [path for path in self.missing + self.corrupt + self.unexpected if path not in moved]


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


def _is_lock_contention(err: sqlite3.OperationalError) -> bool:
    code = getattr(err, "sqlite_errorcode", None)
    # The low byte is the primary code, so extended ones such as SQLITE_BUSY_RECOVERY count too.
    return code is not None and code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


def _retry_while_locked(action: Callable[[], _T], *, give_up_after_s: float = _BUSY_TIMEOUT_S) -> _T:
    """Run `action`, retrying with a jittered exponential backoff while another process holds the lock.

    SQLite returns "database is locked" at once, without waiting out the busy timeout, where
    waiting could deadlock: switching the journal mode while another connection opens or
    switches it, or upgrading a read of the schema to a write. Retrying the whole statement
    is the documented way out.
    """
    deadline = time.monotonic() + give_up_after_s
    delay = 0.002
    while True:
        try:
            return action()
        except sqlite3.OperationalError as err:
            if not _is_lock_contention(err) or time.monotonic() + delay > deadline:
                raise
        time.sleep(delay * random.uniform(0.5, 1.5))  # jitter: processes that collided must not retry in step
        delay = min(2 * delay, 0.25)


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
        db = self._db()
        _retry_while_locked(lambda: db.executescript(_SCHEMA))
        self._remove_dead_writers_tmp()

    # -- connection -------------------------------------------------------------------

    def _db(self) -> sqlite3.Connection:
        # A connection must not cross a fork; reopen in each process.
        if self._conn is None or self._conn_pid != os.getpid():
            # timeout= is SQLite's busy_timeout, so it is in force before the first statement.
            conn = sqlite3.connect(self.root / "catalogue.sqlite", timeout=_BUSY_TIMEOUT_S, isolation_level=None)
            _retry_while_locked(lambda: conn.execute("PRAGMA journal_mode=WAL"))
            conn.execute(f"PRAGMA synchronous={'FULL' if self.durable else 'NORMAL'}")
            self._conn, self._conn_pid = conn, os.getpid()
        return self._conn

    @contextmanager
    def _immediate_transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction that takes the lock up front (so the busy timeout applies
        at BEGIN, not halfway through); rolled back on any error."""
        db = self._db()
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

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
        EpisodeConflictError and nothing of the batch is written. Quarantined ids count as
        committed: a duplicate of one is acknowledged and stays quarantined.
        """
        if not episodes:
            return []
        encoded: dict[str, tuple[Episode, bytes, str]] = {}
        for episode in episodes:
            validate(episode)
            data, digest = encode(episode)
            previous = encoded.get(episode.episode_id)
            if previous is not None and previous[2] != digest:
                raise EpisodeConflictError(
                    f"episode {episode.episode_id} appears twice in one batch with different content"
                )
            encoded[episode.episode_id] = (episode, data, digest)
        digests = {eid: item[2] for eid, item in encoded.items()}
        committed = self._digests(list(encoded))
        _raise_on_conflicts(committed, digests)

        paths: dict[str, str] = {}
        for eid, (episode, data, digest) in encoded.items():
            if eid not in committed:
                paths[eid] = self._write_file(episode, data, digest)

        now = time.time()
        with self._immediate_transaction() as db:
            # Re-read inside the transaction: another writer may have committed meanwhile.
            existing = self._digests(list(encoded), db)
            _raise_on_conflicts(existing, digests)
            fresh = [eid for eid in encoded if eid not in existing]
            snapshot = None
            if fresh:
                cursor = db.execute(
                    "INSERT INTO snapshots (committed_at, num_episodes) VALUES (?, ?)", (now, len(fresh))
                )
                snapshot = cursor.lastrowid
                db.executemany(
                    f"INSERT INTO episodes ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))})",
                    [self._row(encoded[eid][0], paths[eid], encoded[eid][2], snapshot, now) for eid in fresh],
                )
            existing_snapshots = self._snapshots_of(list(existing), db)
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
        return (
            episode.episode_id,
            episode.robot_id,
            int(episode.seq),
            episode.task,
            episode.instruction,
            episode.source,
            int(bool(episode.success)),
            float(episode.stage_score),
            episode.num_steps,
            episode.num_interventions,
            None if episode.seed is None else int(episode.seed),
            float(episode.started_at),
            float(episode.ended_at),
            path,
            digest,
            snapshot,
            now,
        )

    def _digests(self, ids: list[str], db: sqlite3.Connection | None = None) -> dict[str, str]:
        db = db or self._db()
        found: dict[str, str] = {}
        for start in range(0, len(ids), 500):
            part = ids[start : start + 500]
            rows = db.execute(
                f"SELECT episode_id, digest FROM episodes WHERE episode_id IN ({','.join('?' * len(part))})", part
            )
            found.update(dict(rows.fetchall()))
        return found

    def _snapshots_of(self, ids: list[str], db: sqlite3.Connection) -> dict[str, int]:
        if not ids:
            return {}
        rows = db.execute(
            f"SELECT episode_id, snapshot FROM episodes WHERE episode_id IN ({','.join('?' * len(ids))})", ids
        )
        return dict(rows.fetchall())

    def _remove_dead_writers_tmp(self) -> None:
        for part in (self.root / "tmp").glob("*.part"):
            pid = part.name.split("-", 1)[0]
            if pid.isdigit() and not pid_alive(int(pid)):
                part.unlink(missing_ok=True)

    # -- reading ----------------------------------------------------------------------

    def latest_snapshot(self) -> int:
        """The newest committed snapshot number (0 for an empty store)."""
        row = self._db().execute("SELECT COALESCE(MAX(number), 0) FROM snapshots").fetchone()
        return int(row[0])

    def records(
        self,
        *,
        after: int = 0,
        up_to: int | None = None,
        sources: tuple[str, ...] | None = None,
        tasks: tuple[str, ...] | None = None,
    ) -> list[EpisodeRecord]:
        """Visible (not quarantined) committed episodes with after < snapshot <= up_to, in commit order."""
        query = f"SELECT {', '.join(_COLUMNS)} FROM episodes WHERE snapshot > ? AND {_VISIBLE}"
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
        """The visible episode with this id; None if it was never committed or is quarantined."""
        row = (
            self._db()
            .execute(
                f"SELECT {', '.join(_COLUMNS)} FROM episodes WHERE episode_id = ? AND {_VISIBLE}",
                (episode_id(robot_id, seq),),
            )
            .fetchone()
        )
        return None if row is None else self._record(row)

    def committed_ids(self, robot_id: str) -> set[int]:
        """Every seq of the robot that is committed, quarantined ones included: they stay taken."""
        rows = self._db().execute("SELECT seq FROM episodes WHERE robot_id = ?", (robot_id,)).fetchall()
        return {int(r[0]) for r in rows}

    def simulated_instructions(self) -> dict[str, set[str]]:
        """Per task, every instruction its simulated (seeded) episodes were given, quarantined
        ones included; hardware episodes (no seed) carry free wording and are left out."""
        rows = self._db().execute("SELECT DISTINCT task, instruction FROM episodes WHERE seed IS NOT NULL")
        instructions: dict[str, set[str]] = defaultdict(set)
        for task, instruction in rows.fetchall():
            instructions[str(task)].add(str(instruction))
        return dict(instructions)

    def lease(self, robot_id: str, wait_seconds: float = 0.0) -> RobotLease:
        """Claim `robot_id` for this process (see lwd.data.lease); RobotLeaseError while
        another live process holds it."""
        return RobotLease(self.root / "leases", robot_id, wait_seconds=wait_seconds)

    def quarantined(self) -> list[QuarantinedEpisode]:
        """Episodes hidden by `check(repair=True)`, oldest quarantine first."""
        rows = (
            self._db()
            .execute(
                f"SELECT {', '.join(_COLUMNS)}, reason, moved_to, quarantined_at FROM episodes "
                "JOIN quarantine USING (episode_id) ORDER BY quarantined_at, episode_id"
            )
            .fetchall()
        )
        n = len(_COLUMNS)
        return [QuarantinedEpisode(self._record(row[:n]), *row[n:]) for row in rows]

    def load(self, record: EpisodeRecord) -> Episode:
        """Read and verify one committed episode; errors name the file."""
        path = self.root / record.path
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise StoreError(f"{path}: episode {record.episode_id} is catalogued but its file is missing") from None
        episode = decode(data, str(path), check=False)
        if content_digest(episode) != record.digest:
            raise StoreError(
                f"{path}: content does not match the catalogue digest of {record.episode_id} (corrupt file)"
            )
        return validated(episode, str(path))

    def load_many(
        self, records: Iterable[EpisodeRecord], skipped: list[DamagedEpisode] | None = None
    ) -> Iterator[Episode]:
        """Load the records in order, skipping damaged ones instead of stopping at the first.

        A damaged file costs its own episode only: each skip is appended to `skipped` (when
        given) and, once the records are exhausted, one warning gives the count, the first
        few files and the repair command.
        """
        damaged: list[DamagedEpisode] = []
        for record in records:
            try:
                episode = self.load(record)
            except _DAMAGE_ERRORS as err:
                damaged.append(DamagedEpisode(record, str(err)))
                if skipped is not None:
                    skipped.append(damaged[-1])
                continue
            yield episode
        if damaged:
            shown = ", ".join(str(self.root / d.record.path) for d in damaged[:3])
            _log.warning(
                "skipped %d damaged episodes (file missing, unreadable or not matching its digest): %s%s; "
                "`lwd store check --store %s --repair` quarantines them",
                len(damaged),
                shown,
                ", ..." if len(damaged) > 3 else "",
                self.root,
            )

    def summary(self, up_to: int | None = None) -> list[TaskSummary]:
        """Visible episodes per task and source, as of snapshot `up_to` (default: newest)."""
        query = (
            "SELECT task, source, COUNT(*), SUM(num_steps), SUM(success), SUM(num_interventions) "
            f"FROM episodes WHERE snapshot <= ? AND {_VISIBLE} GROUP BY task, source ORDER BY task, source"
        )
        limit = self.latest_snapshot() if up_to is None else up_to
        return [TaskSummary(*row) for row in self._db().execute(query, (limit,)).fetchall()]

    # -- checking and repair ----------------------------------------------------------

    def check(self, *, repair: bool = False, verify_content: bool = True) -> CheckReport:
        """Compare files with the catalogue.

        With repair: quarantine missing and corrupt episodes and move unexpected files to
        quarantine/; delete only crash debris (orphan episode files over a minute old, dead
        writers' temp files).
        """
        records = self.records()
        # Quarantined rows count as catalogued, so a file a repair has not moved yet is no orphan.
        catalogued = {path for (path,) in self._db().execute("SELECT path FROM episodes")}
        files = [path for path in (self.root / "episodes").rglob("*") if not path.is_dir()]
        episode_files = {str(path.relative_to(self.root)) for path in files if path.suffix == ".safetensors"}
        unexpected = sorted(str(path.relative_to(self.root)) for path in files if path.suffix != ".safetensors")
        orphans = sorted(episode_files - catalogued)
        damaged = [DamagedEpisode(record, "missing file") for record in records if record.path not in episode_files]
        missing = [d.record.path for d in damaged]
        corrupt = []
        if verify_content:
            for record in records:
                if record.path in episode_files:
                    try:
                        self.load(record)
                    except _DAMAGE_ERRORS as err:
                        damaged.append(DamagedEpisode(record, str(err)))
                        corrupt.append(record.path)
        quarantined_now: list[str] = []
        if repair:
            self._quarantine_episodes(damaged)
            for relative in unexpected:
                self._move_unexpected_file(relative)
            quarantined_now = [d.record.path for d in damaged] + unexpected
            # Only orphans older than a minute: a live writer may be between rename and commit.
            cutoff = time.time() - 60.0
            for relative in orphans:
                path = self.root / relative
                if path.stat().st_mtime < cutoff:
                    path.unlink(missing_ok=True)
            self._remove_dead_writers_tmp()
        return CheckReport(
            episodes=len(records) - (len(damaged) if repair else 0),
            orphans=orphans,
            missing=missing,
            corrupt=corrupt,
            unexpected=unexpected,
            quarantined=len(self.quarantined()),
            quarantined_now=quarantined_now,
        )

    def _quarantine_episodes(self, damaged: list[DamagedEpisode]) -> None:
        """Hide the episodes from readers, then move their files (where there is one) to quarantine/.

        The rows come first: a repair killed in between leaves hidden episodes whose files
        are still in episodes/, and the next repair moves those (they are catalogued, so
        never mistaken for orphans).
        """
        now = time.time()
        rows = [
            (
                d.record.episode_id,
                d.reason,
                str(Path(_QUARANTINE_DIR) / d.record.path) if (self.root / d.record.path).exists() else None,
                now,
            )
            for d in damaged
        ]
        with self._immediate_transaction() as db:
            # OR IGNORE: a concurrent repair may have quarantined the same episode.
            db.executemany(
                "INSERT OR IGNORE INTO quarantine (episode_id, reason, moved_to, quarantined_at) VALUES (?, ?, ?, ?)",
                rows,
            )
        for entry in self.quarantined():
            if entry.moved_to is not None and (self.root / entry.record.path).exists():
                self._move(entry.record.path, entry.moved_to)

    def _move_unexpected_file(self, relative: str) -> None:
        target = Path(_QUARANTINE_DIR) / relative
        if (self.root / target).exists():  # planted again after an earlier repair: keep both
            target = target.with_name(f"{target.name}.{uuid.uuid4().hex[:8]}")
        self._move(relative, str(target))

    def _move(self, relative: str, target: str) -> None:
        """Rename a file within the store (both paths relative to its root), durably."""
        source, destination = self.root / relative, self.root / target
        destination.parent.mkdir(parents=True, exist_ok=True)
        os.replace(source, destination)
        if self.durable:
            _fsync_dir(destination.parent)
            _fsync_dir(source.parent)
