"""sip_bridge.calls.journal: a call's state survives the process; what is left is an orphan whose
call.ended continues the call's numbering with the finals it had."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from media.wire import Transcript
from sip_bridge.calls.dialogs import Dialog
from sip_bridge.calls.journal import CallJournal, JournalError
from sip_bridge.delivery.events import CallEvents, CallInfo

INFO = CallInfo("c1", "sip-1@pbx", "<sip:a@pbx>", "<sip:b@us>", "PCMU/8000", 8000, "h/media0",
                (("X-Customer", "42"),))  # fmt: skip
DIALOG = Dialog("sip-1@pbx", "<sip:b@us>;tag=l", "<sip:a@pbx>;tag=r", "sip:a@10.0.0.1",
                ("sip:127.0.0.1:5089;lr",))  # fmt: skip


def _final(u: int, text: str) -> Transcript:
    return Transcript("c1", u, True, text, u * 2.0, u * 2.0 + 1.5, 0.9)


def _run_a_call(journal: CallJournal, end: bool) -> CallEvents:
    events = CallEvents(INFO, started_at=1000.0)
    for event in (events.started(), events.transcript(_final(0, "hello")),
                  events.transcript(_final(1, "press one"))):  # fmt: skip
        assert event is not None
        journal.record("acme", events, event, DIALOG, 1001.0)
    if end:
        journal.record("acme", events, events.ended_event("200 OK", 3.0), DIALOG, 1002.0)
    return events


def test_an_ended_call_leaves_nothing(tmp_path: Path) -> None:
    journal = CallJournal(tmp_path / "j.sqlite")
    _run_a_call(journal, end=True)
    assert journal.orphans() == []


def test_a_call_never_ended_is_an_orphan_of_the_next_run(tmp_path: Path) -> None:
    events = _run_a_call(CallJournal(tmp_path / "j.sqlite"), end=False)  # the process "dies"
    (orphan,) = CallJournal(tmp_path / "j.sqlite").orphans()
    assert orphan.tenant == "acme" and orphan.info == INFO and orphan.dialog == DIALOG
    ended = orphan.ended_event("media process lost", now=1010.0).as_dict()
    assert ended["seq"] == events.seq + 1 == 4
    assert ended["reason"] == "media process lost" and ended["duration"] == 10.0
    assert ended["text"] == "hello press one"
    assert [u["utterance"] for u in ended["utterances"]] == [0, 1]


def test_forget_removes_an_orphan(tmp_path: Path) -> None:
    journal = CallJournal(tmp_path / "j.sqlite")
    _run_a_call(journal, end=False)
    journal.forget("c1")
    assert journal.orphans() == []


def test_an_unreadable_row_is_skipped_not_fatal(tmp_path: Path) -> None:
    journal = CallJournal(tmp_path / "j.sqlite")
    _run_a_call(journal, end=False)
    db = sqlite3.connect(tmp_path / "j.sqlite")
    db.execute("INSERT INTO calls VALUES ('c2', '', 'not json', 0, 0, '[]', NULL, 0)")
    db.execute("UPDATE calls SET dialog = ? WHERE call_id = 'c1'", (json.dumps({"x": 1}),))
    db.commit()
    assert CallJournal(tmp_path / "j.sqlite").orphans() == []


def test_a_foreign_file_is_a_journal_error(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(JournalError):
        CallJournal(path)
