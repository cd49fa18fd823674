"""Per-robot bearer tokens, stored hashed in `<gateway dir>/tokens.json`.

A token is `lwd1.<token_id>.<secret>`: the token id (public, 8 random bytes) finds the
entry in one dictionary lookup, the secret (32 random bytes) proves possession. The file
keeps, per token, the robot it speaks for, a random salt and sha256(salt ‖ secret) —
never the secret. A fast hash is the right one here: slow password hashes (scrypt,
argon2) exist to make guessing low-entropy passwords expensive, and a 256-bit random
secret cannot be guessed; the salt makes equal secrets hash differently and costs
nothing. The comparison is constant-time (`hmac.compare_digest`).

The file is replaced atomically (temp file, fsync, rename) with mode 0600, and a
running gateway re-reads it when its modification time changes, so `lwd gateway token
add/revoke` take effect without a restart.
"""

from __future__ import annotations

import fcntl
import hashlib
import hmac
import json
import os
import re
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

TOKENS_FILE = "tokens.json"
_FORMAT = "lwd-gateway-tokens"
_ROBOT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")  # the episode record's rule


class TokenError(ValueError):
    """A token operation that cannot be done; the message says why."""


@dataclass(frozen=True)
class TokenEntry:
    token_id: str
    robot_id: str
    salt: str  # hex
    hash: str  # hex sha256(salt || secret)
    created_at: float
    revoked_at: float | None = None


def _hash(salt: bytes, secret: str) -> str:
    return hashlib.sha256(salt + secret.encode()).hexdigest()


class TokenBook:
    """The tokens of one gateway directory. Thread-safe; reloads the file when it changes."""

    def __init__(self, directory: str | os.PathLike):
        self.path = Path(directory) / TOKENS_FILE
        self._lock = threading.Lock()
        self._entries: dict[str, TokenEntry] = {}
        self._loaded_mtime: float | None = None
        self._checked_at = 0.0

    # -- reading ---------------------------------------------------------------------

    def _load(self) -> None:
        try:
            mtime = self.path.stat().st_mtime_ns
        except FileNotFoundError:
            self._entries, self._loaded_mtime = {}, None
            return
        if mtime == self._loaded_mtime:
            return
        try:
            raw = json.loads(self.path.read_text())
            if raw.get("format") != _FORMAT:
                raise TokenError(f"{self.path}: not an lwd gateway token file (format {raw.get('format')!r})")
            entries = {e["token_id"]: TokenEntry(**e) for e in raw["tokens"]}
        except (OSError, json.JSONDecodeError, KeyError, TypeError) as err:
            raise TokenError(f"{self.path}: unreadable token file ({err})") from err
        self._entries, self._loaded_mtime = entries, mtime

    def entries(self) -> list[TokenEntry]:
        with self._lock:
            self._load()
            return sorted(self._entries.values(), key=lambda e: (e.robot_id, e.created_at))

    def robot_for(self, token: str) -> str | None:
        """The robot a presented token speaks for; None if unknown, revoked or malformed."""
        parts = token.split(".")
        if len(parts) != 3 or parts[0] != "lwd1":
            return None
        with self._lock:
            now = time.monotonic()
            if now - self._checked_at > 1.0:  # stat the file at most once a second
                self._load()
                self._checked_at = now
            entry = self._entries.get(parts[1])
        if entry is None or entry.revoked_at is not None:
            return None
        if not hmac.compare_digest(_hash(bytes.fromhex(entry.salt), parts[2]), entry.hash):
            return None
        return entry.robot_id

    # -- writing (the `lwd gateway token` commands) ------------------------------------

    def add(self, robot_id: str) -> str:
        """Issue a token for `robot_id`; the only time the secret exists outside a robot."""
        return self.add_many([robot_id])[robot_id]

    def add_many(self, robot_ids: list[str]) -> dict[str, str]:
        """One new token per robot, written in one go (a fleet of simulated robots)."""
        for robot_id in robot_ids:
            if not _ROBOT_ID.match(robot_id):
                raise TokenError(f"robot id {robot_id!r} must match {_ROBOT_ID.pattern}")
        issued, entries = {}, []
        for robot_id in robot_ids:
            token_id, secret, salt = secrets.token_hex(8), secrets.token_urlsafe(32), secrets.token_bytes(16)
            entries.append(TokenEntry(token_id, robot_id, salt.hex(), _hash(salt, secret), time.time()))
            issued[robot_id] = f"lwd1.{token_id}.{secret}"
        with self._lock, self._writing():
            self._load()
            self._entries.update({e.token_id: e for e in entries})
            self._write()
        return issued

    def revoke(self, robot_id: str, token_id: str | None = None) -> list[str]:
        """Revoke the robot's tokens (only `token_id` if given); returns the ids revoked."""
        with self._lock, self._writing():
            self._load()
            hits = [
                e
                for e in self._entries.values()
                if e.robot_id == robot_id and e.revoked_at is None and token_id in (None, e.token_id)
            ]
            if not hits:
                which = f"token {token_id} of robot" if token_id else "robot"
                raise TokenError(f"{which} {robot_id!r} has no active token in {self.path}")
            now = time.time()
            for entry in hits:
                self._entries[entry.token_id] = TokenEntry(**{**asdict(entry), "revoked_at": now})
            self._write()
        return [e.token_id for e in hits]

    @contextmanager
    def _writing(self) -> Iterator[None]:
        """Serialise read-modify-write across processes: two `token add`s must not lose one."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path.with_name(f".{TOKENS_FILE}.lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            self._loaded_mtime = None  # re-read under the lock
            yield
        finally:
            os.close(fd)

    def _write(self) -> None:
        tmp = self.path.with_name(f".{TOKENS_FILE}.tmp-{os.getpid()}")
        data = {"format": _FORMAT, "tokens": [asdict(e) for e in self._entries.values()]}
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(data, handle, indent=1)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self.path)
        self._loaded_mtime = self.path.stat().st_mtime_ns
