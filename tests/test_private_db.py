"""The private SQLite opener behind the spool and the call journal."""

from __future__ import annotations

import sqlite3
import stat
from pathlib import Path

import pytest

from sip_bridge.delivery.private_db import open_private

SCHEMA = "CREATE TABLE IF NOT EXISTS t (x INTEGER);\nPRAGMA user_version = 2;\n"


class Oops(Exception):
    pass


def test_a_new_file_is_private_in_a_private_directory_and_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "state" / "db.sqlite"
    db = open_private(path, SCHEMA, 2, Oops)
    db.execute("INSERT INTO t VALUES (1)")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    db.close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    again = open_private(path, SCHEMA, 2, Oops)  # the same version opens as it is
    assert again.execute("SELECT x FROM t").fetchall() == [(1,)]
    again.close()


def test_another_version_or_a_file_that_is_not_a_database_raises_the_callers_error(
    tmp_path: Path,
) -> None:
    newer = tmp_path / "newer.sqlite"
    db = sqlite3.connect(newer)
    db.execute("PRAGMA user_version = 3")
    db.close()
    with pytest.raises(Oops, match=rf"{newer}: journal 3, expected 2"):
        open_private(newer, SCHEMA, 2, Oops, "journal")
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"not a database at all" * 100)
    with pytest.raises(Oops, match=str(junk)):
        open_private(junk, SCHEMA, 2, Oops)
