"""The SQLite files a media process keeps for itself (the webhook spool, the call journal).

They hold transcripts and who called whom, so each file is created private (0600; SQLite's
``-wal`` and ``-shm`` copy its mode) in a private directory (0700), opened in WAL mode with
``synchronous=NORMAL`` (an event survives a crash of the process, not always of the machine) and
autocommit (the callers open their own transactions), and its schema is created or checked by
``PRAGMA user_version``. No sockets, no threads.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path


def open_private(
    path: Path, schema: str, version: int, error: type[Exception], label: str = "schema"
) -> sqlite3.Connection:
    """Open (creating it if need be) the database at ``path`` with ``schema`` (a script that
    creates what is missing and sets ``user_version`` to ``version``). A file of another
    version, or one that is not a database, raises ``error`` naming the path."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.close(os.open(path, os.O_CREAT | os.O_RDWR, 0o600))
    db = sqlite3.connect(path, timeout=30.0, isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        found = db.execute("PRAGMA user_version").fetchone()[0]
        if found not in (0, version):
            raise error(f"{path}: {label} {found}, expected {version}")
        db.executescript(schema)
    except sqlite3.DatabaseError as exc:
        db.close()
        raise error(f"{path}: {exc}") from exc
    except error:
        db.close()
        raise
    return db
