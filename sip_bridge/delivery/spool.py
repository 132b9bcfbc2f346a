"""The durable webhook spool: every event is on disk, one row per endpoint, before any POST.

One SQLite file per media process (WAL, ``synchronous=NORMAL``: a commit survives the process
being killed, not a power cut), so a media process restarted with the same index resumes its
backlog. A row leaves ``pending`` only when delivered (deleted) or parked in ``dead_letters``;
a crash between a POST and its delete means the event is sent again: at-least-once, with the
stable ``event_id`` ``<call_id>-<seq>`` as the receiver's idempotency key.

Order: per endpoint and call, only the *head* (the pending row with the lowest ``seq``) is ever
due, so a call's later events wait while an earlier one backs off; other calls go ahead.

Retries back off exponentially with full jitter (a uniform wait in ``[0, min(max_backoff_s,
backoff_s * 2**(attempts-1))]``) until ``horizon_s`` after the event was spooled; the next
failure then parks it in ``dead_letters`` and the call's next event becomes the head and goes
(the receiver sees a gap in ``seq``; ``replay()`` sends the parked one later, out of order).
Later events of that call already past their own horizon are parked with it, so a long-dead
endpoint does not pay one timeout per stale event.

Sans-IO apart from SQLite: every time is an argument (unix seconds), randomness is injected.
It never touches the network. One :class:`Spool` (one connection) per thread.
"""

from __future__ import annotations

import random
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from sip_bridge.delivery.events import Event
from sip_bridge.delivery.private_db import open_private
from sip_bridge.settings.config import WEBHOOK_BACKOFF_S, WEBHOOK_HORIZON_S, WEBHOOK_MAX_BACKOFF_S

SCHEMA_VERSION = 1

_COLUMNS = "endpoint, call_id, seq, event_id, type, body, attempts, created_at, last_error"

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS pending (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    endpoint TEXT NOT NULL,
    call_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    event_id TEXT NOT NULL,
    type TEXT NOT NULL,
    body BLOB NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,       -- spooled (or replayed): the horizon counts from here
    next_attempt_at REAL NOT NULL,
    last_error TEXT NOT NULL DEFAULT '',
    UNIQUE (endpoint, event_id)
);
CREATE INDEX IF NOT EXISTS pending_order ON pending (endpoint, call_id, seq);
CREATE TABLE IF NOT EXISTS dead_letters (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    endpoint TEXT NOT NULL,
    call_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    event_id TEXT NOT NULL,
    type TEXT NOT NULL,
    body BLOB NOT NULL,
    attempts INTEGER NOT NULL,
    created_at REAL NOT NULL,
    last_error TEXT NOT NULL,
    parked_at REAL NOT NULL
);
PRAGMA user_version = {SCHEMA_VERSION};
"""

# Rows that are the head of their call for their endpoint: only those may be sent.
_HEADS = """
FROM pending AS p
WHERE p.endpoint = ?
  AND p.seq = (SELECT MIN(q.seq) FROM pending AS q
               WHERE q.endpoint = p.endpoint AND q.call_id = p.call_id)
"""


class SpoolError(Exception):
    """The spool file cannot be used (foreign schema version, not a database)."""


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    backoff_s: float = WEBHOOK_BACKOFF_S  # the first retry waits up to this; doubling from there
    max_backoff_s: float = WEBHOOK_MAX_BACKOFF_S  # no wait is longer
    horizon_s: float = WEBHOOK_HORIZON_S  # a failure later than this after spooling parks the event

    def delay(self, attempts: int, rand: float) -> float:
        """The wait after the ``attempts``-th failed attempt, ``rand`` uniform in [0, 1)."""
        ceiling = min(self.max_backoff_s, self.backoff_s * 2.0 ** min(attempts - 1, 60))
        return ceiling * rand


@dataclass(frozen=True, slots=True)
class Delivery:
    """One event for one endpoint, as spooled."""

    id: int
    endpoint: str
    call_id: str
    seq: int
    event_id: str
    type: str
    body: bytes
    attempts: int
    created_at: float
    next_attempt_at: float
    last_error: str


@dataclass(frozen=True, slots=True)
class DeadLetter:
    id: int
    endpoint: str
    call_id: str
    seq: int
    event_id: str
    type: str
    body: bytes
    attempts: int
    created_at: float
    last_error: str
    parked_at: float


def event_id(event: Event) -> str:
    return f"{event.call_id}-{event.seq}"


class Spool:
    def __init__(
        self,
        path: str | Path,
        policy: RetryPolicy | None = None,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.path = Path(path)
        self.policy = policy or RetryPolicy()
        self._rand = rand
        # Bodies are transcripts: the file is private to us.
        self._db = open_private(self.path, _SCHEMA, SCHEMA_VERSION, SpoolError, "spool schema")

    def close(self) -> None:
        self._db.close()

    # -- writing, from the event's producer ----------------------------------------------------

    def add(self, event: Event, endpoints: Iterable[str], now: float) -> None:
        """Spool ``event`` for each of ``endpoints``, in one transaction. Adding an event that
        is already pending for an endpoint changes nothing (idempotent)."""
        rows = [
            (url, event.call_id, event.seq, event_id(event), event.type, event.body, now, now)
            for url in endpoints
        ]
        if not rows:
            return
        with self._transaction():
            self._db.executemany(
                "INSERT OR IGNORE INTO pending (endpoint, call_id, seq, event_id, type, body,"
                " created_at, next_attempt_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )

    # -- the delivery loop ---------------------------------------------------------------------

    def due(self, endpoint: str, now: float, limit: int = 100) -> list[Delivery]:
        """Heads of their calls for ``endpoint`` whose time has come, oldest first: at most one
        per call, so sending them in any order keeps every call's order."""
        cur = self._db.execute(
            f"SELECT id, {_COLUMNS.replace('created_at', 'created_at, next_attempt_at')} {_HEADS}"
            " AND p.next_attempt_at <= ? ORDER BY p.next_attempt_at, p.id LIMIT ?",
            (endpoint, now, limit),
        )
        return [Delivery(*row) for row in cur]

    def next_due_at(self, endpoint: str) -> float | None:
        """When the earliest head for ``endpoint`` is due; ``None`` if nothing is pending."""
        row = self._db.execute(f"SELECT MIN(p.next_attempt_at) {_HEADS}", (endpoint,)).fetchone()
        return None if row[0] is None else float(row[0])

    def delivered(self, d: Delivery) -> None:
        with self._transaction():
            self._db.execute("DELETE FROM pending WHERE id = ?", (d.id,))

    def failed(self, d: Delivery, now: float, error: str) -> int:
        """Record a failed attempt. Returns 0 if it will be retried, else how many events were
        parked (this one and its call's later ones already past their horizon)."""
        attempts = d.attempts + 1
        with self._transaction():
            if now - d.created_at < self.policy.horizon_s:
                wait = self.policy.delay(attempts, self._rand())
                self._db.execute(
                    "UPDATE pending SET attempts = ?, next_attempt_at = ?, last_error = ?"
                    " WHERE id = ?",
                    (attempts, now + wait, error, d.id),
                )
                return 0
            self._db.execute(
                "UPDATE pending SET attempts = ?, last_error = ? WHERE id = ?",
                (attempts, error, d.id),
            )
            return self._park(
                "id = ? OR (endpoint = ? AND call_id = ? AND created_at <= ?)",
                (d.id, d.endpoint, d.call_id, now - self.policy.horizon_s),
                now,
            )

    def retry_now(self, endpoint: str, now: float) -> None:
        """The endpoint answered again: end every backing-off wait for it."""
        with self._transaction():
            self._db.execute(
                "UPDATE pending SET next_attempt_at = ? WHERE endpoint = ? AND next_attempt_at > ?",
                (now, endpoint, now),
            )

    def park_other_endpoints(self, endpoints: Sequence[str], now: float) -> int:
        """Park everything pending for an endpoint no longer configured; how many."""
        marks = ", ".join("?" * len(endpoints))
        with self._transaction():
            self._db.execute(
                f"UPDATE pending SET last_error = 'endpoint no longer configured'"
                f" WHERE endpoint NOT IN ({marks})",
                tuple(endpoints),
            )
            return self._park(f"endpoint NOT IN ({marks})", tuple(endpoints), now)

    def pending_count(self, endpoint: str | None = None) -> int:
        if endpoint is None:
            row = self._db.execute("SELECT COUNT(*) FROM pending").fetchone()
        else:
            row = self._db.execute(
                "SELECT COUNT(*) FROM pending WHERE endpoint = ?", (endpoint,)
            ).fetchone()
        return int(row[0])

    # -- dead letters (what a CLI lists and replays) ---------------------------------------------

    def dead_letters(self, endpoint: str | None = None, limit: int = 1000) -> list[DeadLetter]:
        where, args = ("WHERE endpoint = ?", (endpoint,)) if endpoint else ("", ())
        cur = self._db.execute(
            f"SELECT id, {_COLUMNS}, parked_at FROM dead_letters {where} ORDER BY id LIMIT ?",
            (*args, limit),
        )
        return [DeadLetter(*row) for row in cur]

    def replay(self, ids: Iterable[int], now: float) -> int:
        """Move dead letters back to pending, attempts reset and due now, their horizon counting
        afresh. Each keeps its ``seq``, so it goes before its call's events still pending. An
        event already pending again for the same endpoint is not doubled. Returns how many."""
        ids = list(ids)
        if not ids:
            return 0
        marks = ", ".join("?" * len(ids))
        with self._transaction():
            self._db.execute(
                "INSERT OR IGNORE INTO pending (endpoint, call_id, seq, event_id, type, body,"
                " created_at, next_attempt_at, last_error)"
                f" SELECT endpoint, call_id, seq, event_id, type, body, ?, ?, last_error"
                f" FROM dead_letters WHERE id IN ({marks}) ORDER BY id",
                (now, now, *ids),
            )
            cur = self._db.execute(f"DELETE FROM dead_letters WHERE id IN ({marks})", ids)
            return cur.rowcount

    # -- helpers ---------------------------------------------------------------------------------

    def _park(self, where: str, args: tuple[object, ...], now: float) -> int:
        self._db.execute(
            f"INSERT INTO dead_letters ({_COLUMNS}, parked_at)"
            f" SELECT {_COLUMNS}, ? FROM pending WHERE {where} ORDER BY id",
            (now, *args),
        )
        return self._db.execute(f"DELETE FROM pending WHERE {where}", args).rowcount

    def _transaction(self) -> _Transaction:
        return _Transaction(self._db)


class _Transaction:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` (``ROLLBACK`` on error), on an autocommit connection."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self._db.execute("COMMIT" if exc_type is None else "ROLLBACK")
