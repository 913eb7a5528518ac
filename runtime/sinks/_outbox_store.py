"""The alert outbox's SQLite file: append, acknowledge, read in order, bound by bytes and age.

One table, one row per alert not yet acknowledged by the broker. ``seq`` is assigned here
(``max(seq) + 1`` at open, then counted in memory), so it is the order alerts were written and
the order they are sent. The file runs in WAL mode with ``locking_mode=EXCLUSIVE``: a second
process opening the same outbox gets a clear error instead of sharing (and double-sending) it.

``fsync`` maps to SQLite's ``synchronous`` pragma:

- ``full`` (default): every commit is fsynced; a committed alert survives a power cut.
- ``normal``: WAL commits are not fsynced; they survive a crash or SIGKILL of the process (the
  OS has them), not a power cut.
- ``off``: for tests and throw-away devices.

Not thread-safe: the outbox dispatcher thread owns the store (``check_same_thread`` is off only
so that ``close`` can run on the thread that stops the sink, after the dispatcher ended).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from runtime.errors import SinkError

FsyncPolicy = Literal["full", "normal", "off"]

PRIORITY: dict[str, int] = {"info": 0, "warning": 1, "critical": 2}
"""Alert severity -> priority; when the outbox is full, the lowest priority goes first."""

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS outbox (
    seq        INTEGER PRIMARY KEY,
    alert_id   TEXT    NOT NULL,
    pipeline   TEXT    NOT NULL,
    topic      TEXT    NOT NULL,
    priority   INTEGER NOT NULL,
    created_ns INTEGER NOT NULL,
    size       INTEGER NOT NULL,
    payload    BLOB    NOT NULL
)""",
    "CREATE INDEX IF NOT EXISTS outbox_priority ON outbox (priority, seq)",
)
_SCHEMA_VERSION = 1


@dataclass(frozen=True, slots=True)
class NewAlert:
    """An alert on its way into the outbox."""

    alert_id: str
    pipeline: str
    topic: str
    priority: int
    created_ns: int
    payload: bytes


@dataclass(frozen=True, slots=True)
class StoredAlert:
    seq: int
    alert_id: str
    pipeline: str
    topic: str
    priority: int
    created_ns: int
    payload: bytes


@dataclass(frozen=True, slots=True)
class DroppedAlert:
    seq: int
    alert_id: str
    pipeline: str
    priority: int


class OutboxStore:
    """An open outbox file. ``SinkError`` for anything SQLite refuses, naming the file."""

    def __init__(self, path: Path, *, fsync: FsyncPolicy = "full") -> None:
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        except (OSError, sqlite3.Error) as e:
            raise SinkError(f"alert outbox {path}: can't open: {e}") from e
        try:
            self._setup(fsync)
            row = self._db.execute(
                "SELECT coalesce(max(seq), 0), count(*), coalesce(sum(size), 0) FROM outbox"
            ).fetchone()
        except sqlite3.Error as e:
            self._db.close()
            raise SinkError(f"alert outbox {path}: {_explain(e)}") from e
        self._last_seq: int = row[0]
        self.depth: int = row[1]
        self.bytes: int = row[2]
        self.reopened_seq = self._last_seq
        """The highest seq left by an earlier run: those alerts are replays."""

    def _setup(self, fsync: FsyncPolicy) -> None:
        db = self._db
        db.execute("PRAGMA locking_mode=EXCLUSIVE")
        mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise sqlite3.OperationalError(f"can't switch to WAL journaling (got {mode!r})")
        db.execute(f"PRAGMA synchronous={fsync.upper()}")
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version not in (0, _SCHEMA_VERSION):
            raise sqlite3.DatabaseError(
                f"outbox schema version {version}, this edgewatch reads {_SCHEMA_VERSION}"
            )
        # BEGIN IMMEDIATE takes the exclusive lock now, so a second process fails at open.
        db.execute("BEGIN IMMEDIATE")
        for statement in _SCHEMA:
            db.execute(statement)
        db.execute(f"PRAGMA user_version={_SCHEMA_VERSION}")
        db.execute("COMMIT")

    @property
    def last_seq(self) -> int:
        return self._last_seq

    def write(self, new: Sequence[NewAlert], acked: Collection[int]) -> list[int]:
        """Append ``new`` and delete ``acked`` in one transaction (one fsync); the new seqs."""
        if not new and not acked:
            return []
        seqs = list(range(self._last_seq + 1, self._last_seq + 1 + len(new)))
        rows = [
            (
                s,
                a.alert_id,
                a.pipeline,
                a.topic,
                a.priority,
                a.created_ns,
                len(a.payload),
                a.payload,
            )
            for s, a in zip(seqs, new, strict=True)
        ]
        try:
            self._db.execute("BEGIN")
            freed, removed = self._delete(acked)
            self._db.executemany("INSERT INTO outbox VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
            self._db.execute("COMMIT")
        except sqlite3.Error as e:
            self._rollback()
            raise SinkError(f"alert outbox {self.path}: write failed: {_explain(e)}") from e
        if seqs:
            self._last_seq = seqs[-1]
        self.depth += len(rows) - removed
        self.bytes += sum(r[6] for r in rows) - freed
        return seqs

    def _delete(self, seqs: Collection[int]) -> tuple[int, int]:
        """Inside a transaction: delete rows by seq; (bytes freed, rows removed)."""
        if not seqs:
            return 0, 0
        sizes = self._db.execute(
            "DELETE FROM outbox WHERE seq IN (SELECT value FROM json_each(?)) RETURNING size",
            (json.dumps(list(seqs)),),
        ).fetchall()
        return sum(size for (size,) in sizes), len(sizes)

    def after(self, seq: int, limit: int) -> list[StoredAlert]:
        """Up to ``limit`` rows with a seq above ``seq``, oldest first."""
        try:
            rows = self._db.execute(
                "SELECT seq, alert_id, pipeline, topic, priority, created_ns, payload "
                "FROM outbox WHERE seq > ? ORDER BY seq LIMIT ?",
                (seq, limit),
            ).fetchall()
        except sqlite3.Error as e:
            raise SinkError(f"alert outbox {self.path}: read failed: {_explain(e)}") from e
        return [StoredAlert(*r) for r in rows]

    def oldest_created_ns(self) -> int | None:
        row = self._query("SELECT created_ns FROM outbox ORDER BY seq LIMIT 1")
        return None if not row else int(row[0][0])

    def shift_created(self, step_ns: int) -> None:
        """Add ``step_ns`` to every row's creation time (the wall clock was stepped)."""
        try:
            self._db.execute("UPDATE outbox SET created_ns = created_ns + ?", (step_ns,))
        except sqlite3.Error as e:
            raise SinkError(f"alert outbox {self.path}: update failed: {_explain(e)}") from e

    def _query(self, sql: str, args: tuple[int, ...] = ()) -> list[tuple[Any, ...]]:
        try:
            return self._db.execute(sql, args).fetchall()
        except sqlite3.Error as e:
            raise SinkError(f"alert outbox {self.path}: read failed: {_explain(e)}") from e

    def shrink_to(self, max_bytes: int, keep: Collection[int]) -> list[DroppedAlert]:
        """Delete the lowest-priority, oldest rows (never those in ``keep``) until the outbox
        holds at most ``max_bytes``; the rows deleted."""
        excess = self.bytes - max_bytes
        if excess <= 0:
            return []
        victims: list[tuple[int, str, str, int]] = []
        freed = 0
        try:
            cursor = self._db.execute(
                "SELECT seq, alert_id, pipeline, priority, size FROM outbox ORDER BY priority, seq"
            )
            for seq, alert_id, pipeline, priority, size in cursor:
                if seq in keep:
                    continue
                victims.append((seq, alert_id, pipeline, priority))
                freed += size
                if freed >= excess:
                    break
            cursor.close()
        except sqlite3.Error as e:
            raise SinkError(f"alert outbox {self.path}: read failed: {_explain(e)}") from e
        return self._drop(victims)

    def expire(self, before_ns: int, keep: Collection[int]) -> list[DroppedAlert]:
        """Delete rows created before ``before_ns`` (never those in ``keep``); the rows deleted."""
        rows = self._query(
            "SELECT seq, alert_id, pipeline, priority FROM outbox WHERE created_ns < ?",
            (before_ns,),
        )
        return self._drop([(r[0], r[1], r[2], r[3]) for r in rows if r[0] not in keep])

    def _drop(self, victims: Iterable[tuple[int, str, str, int]]) -> list[DroppedAlert]:
        dropped = [DroppedAlert(*v) for v in victims]
        if not dropped:
            return []
        try:
            self._db.execute("BEGIN")
            freed, removed = self._delete([d.seq for d in dropped])
            self._db.execute("COMMIT")
        except sqlite3.Error as e:
            self._rollback()
            raise SinkError(f"alert outbox {self.path}: delete failed: {_explain(e)}") from e
        self.depth -= removed
        self.bytes -= freed
        return dropped

    def _rollback(self) -> None:
        if self._db.in_transaction:
            try:
                self._db.execute("ROLLBACK")
            except sqlite3.Error:
                return  # the original error is the one reported

    def close(self) -> None:
        try:
            self._db.close()
        except sqlite3.Error as e:
            raise SinkError(f"alert outbox {self.path}: close failed: {e}") from e


def _explain(e: sqlite3.Error) -> str:
    text = str(e)
    if "locked" in text:
        return f"{text} (another edgewatch process has this outbox open; give each its own file)"
    if "not a database" in text or "malformed" in text:
        return f"{text} (the file is not a usable outbox; move it away to start a fresh one)"
    return text


__all__ = ["PRIORITY", "DroppedAlert", "FsyncPolicy", "NewAlert", "OutboxStore", "StoredAlert"]
