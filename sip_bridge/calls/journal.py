"""The calls a media process has in progress, on disk, so that whoever takes its place after a
crash can end them properly.

One SQLite file per media process index, beside its webhook spool (WAL, ``synchronous=NORMAL``:
a commit survives the process being killed). A row is written when a call starts, updated with
each event's ``seq`` (and each final's text) and deleted when ``call.ended`` goes out. Rows left
at start-up are the *orphans* of a previous run of this index: calls it never ended.

The restarted process gives each orphan its ``call.ended`` (reason ``media process lost``, the
finals it had, the next ``seq``, so event ids stay unique) and sends the BYE that the dead one
could not (see :mod:`sip_bridge.calls.dialogs`). Sans-IO apart from SQLite; times are arguments.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sip_bridge.calls.dialogs import Dialog, DialogError
from sip_bridge.delivery.events import (
    CALL_ENDED,
    CALL_STARTED,
    TRANSCRIPT_FINAL,
    CallEvents,
    CallInfo,
    Conversation,
    Event,
    FinalText,
)
from sip_bridge.delivery.private_db import open_private
from sip_bridge.siprec.speakers import Speaker

SCHEMA_VERSION = 1
_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS calls (
    call_id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    info TEXT NOT NULL,          -- CallInfo as JSON
    started_at REAL NOT NULL,    -- wall clock, as call.started said
    seq INTEGER NOT NULL,        -- the last event's
    finals TEXT NOT NULL,        -- [[utterance, start, end, text, stream, speaker], ...]
    dialog TEXT,                 -- Dialog as JSON, once our 2xx is sent
    updated_at REAL NOT NULL
);
PRAGMA user_version = {SCHEMA_VERSION};
"""


class JournalError(Exception):
    """The journal file cannot be used (not a database, a foreign schema)."""


@dataclass(frozen=True, slots=True)
class Orphan:
    """A call a previous run of this media process never ended."""

    tenant: str
    info: CallInfo
    started_at: float
    seq: int
    finals: tuple[FinalText, ...]
    dialog: Dialog | None
    updated_at: float
    version: int = 2
    conversation: Conversation | None = None

    def ended_event(self, reason: str, now: float) -> Event:
        events = CallEvents(self.info, self.started_at, self.version, self.conversation)
        events.restore(self.seq, self.finals)
        return events.ended_event(reason, max(0.0, now - self.started_at))


class CallJournal:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._db = open_private(self.path, _SCHEMA, SCHEMA_VERSION, JournalError)

    def close(self) -> None:
        self._db.close()

    def orphans(self) -> list[Orphan]:
        """Every call left by a previous run; a row that cannot be read is skipped (and
        removed by :meth:`forget` like the others)."""
        out = []
        rows = self._db.execute(
            "SELECT tenant, info, started_at, seq, finals, dialog, updated_at FROM calls"
        )
        for tenant, info, started_at, seq, finals, dialog, updated_at in rows:
            try:
                fields = json.loads(info)
                version = int(fields.pop("version", 1))
                conversation = _conversation(fields.pop("conversation", None))
                fields["headers"] = tuple(tuple(h) for h in fields.get("headers", ()))
                call_info = CallInfo(**fields)
                parsed = tuple(_final(f) for f in json.loads(finals))
                dlg = Dialog.from_dict(json.loads(dialog)) if dialog else None
            except (ValueError, TypeError, KeyError, DialogError):
                continue
            out.append(Orphan(tenant, call_info, started_at, seq, parsed, dlg, updated_at,
                              version, conversation))  # fmt: skip
        return out

    def record(self, tenant: str, events: CallEvents, event: Event, dialog: Dialog | None,
               now: float) -> None:  # fmt: skip
        """Every event of a call, in order, as it goes out."""
        if event.type == CALL_STARTED:
            self.started(tenant, events, event.seq, dialog, now)
        else:
            self.event(event, now)

    def started(
        self, tenant: str, events: CallEvents, seq: int, dialog: Dialog | None, now: float
    ) -> None:
        info: dict[str, Any] = {
            "call_id": events.info.call_id,
            "sip_call_id": events.info.sip_call_id,
            "from_uri": events.info.from_uri,
            "to_uri": events.info.to_uri,
            "codec": events.info.codec,
            "sample_rate": events.info.sample_rate,
            "node": events.info.node,
            "headers": [list(h) for h in events.info.headers],
            "version": events.version,
            "conversation": None if events.conversation is None else events.conversation.as_dict(),
        }
        self._db.execute(
            "INSERT OR REPLACE INTO calls (call_id, tenant, info, started_at, seq, finals,"
            " dialog, updated_at) VALUES (?, ?, ?, ?, ?, '[]', ?, ?)",
            (
                events.info.call_id,
                tenant,
                json.dumps(info),
                events.started_at,
                seq,
                None if dialog is None else json.dumps(dialog.as_dict()),
                now,
            ),  # fmt: skip
        )

    def dialog(self, call_id: str, dialog: Dialog) -> None:
        self._db.execute(
            "UPDATE calls SET dialog = ? WHERE call_id = ?", (json.dumps(dialog.as_dict()), call_id)
        )

    def event(self, event: Event, now: float) -> None:
        """After ``call.started``: remember the ``seq`` (and a final's words); forget the call
        at ``call.ended``."""
        if event.type == CALL_ENDED:
            self.forget(event.call_id)
        elif event.type == TRANSCRIPT_FINAL:
            body = event.as_dict()
            final = [body["utterance"], body["start"], body["end"], body["text"],
                     body.get("stream"), body.get("speaker")]  # fmt: skip
            self._db.execute(
                "UPDATE calls SET seq = ?, finals = json_insert(finals, '$[#]', json(?)),"
                " updated_at = ? WHERE call_id = ?",
                (event.seq, json.dumps(final), now, event.call_id),
            )
        else:
            self._db.execute(
                "UPDATE calls SET seq = ?, updated_at = ? WHERE call_id = ?",
                (event.seq, now, event.call_id),
            )

    def forget(self, call_id: str) -> None:
        self._db.execute("DELETE FROM calls WHERE call_id = ?", (call_id,))


def _final(row: list[Any]) -> FinalText:
    """A final as the journal keeps it (rows from before SIPREC have four fields)."""
    u, s, e, text = row[:4]
    stream = row[4] if len(row) > 4 else None
    who = row[5] if len(row) > 5 else None
    speaker = None
    if isinstance(who, dict):
        speaker = Speaker(who.get("participant_id"), who.get("name"), who.get("aor"), stream or "")
    return FinalText(int(u), float(s), float(e), str(text), stream, speaker)


def _conversation(obj: Any) -> Conversation | None:
    if not isinstance(obj, dict):
        return None
    return Conversation(
        str(obj["id"]),
        str(obj["kind"]),
        tuple(obj.get("session_ids", ())),
        tuple(obj.get("call_ids", ())),
        str(obj.get("metadata", "none")),
    )
