"""Every event of a call, and its dialog, into the call journal, so that the media process that
takes this one's index after a crash can end the call (``orphans``): the journal's
:class:`~sip_bridge.delivery.sink.ResultSink`.

Main loop thread only. A failing disk costs the journal, never the call: an SQLite error is
logged (once, until a write succeeds again) and the call goes on.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable

from sip_bridge.calls import dialogs
from sip_bridge.calls.call_state import CallState
from sip_bridge.calls.journal import CallJournal
from sip_bridge.delivery.events import Event

log = logging.getLogger(__name__)


class JournalSink:
    def __init__(self, journal: CallJournal, index: int) -> None:
        self.journal = journal
        self.index = index  # the media process's, for the log
        self._failing = False

    def event(self, call: CallState, event: Event) -> None:
        if call.events is not None:
            events, now = call.events, time.time()
            self._write(lambda: self.journal.record(call.tenant.name, events, event,
                                                    call.dialog, now))  # fmt: skip

    def answer_sent(self, call: CallState, sent: str) -> None:
        """Our answer to the call's INVITE is going out: a 2xx completes the dialog (it has our
        tag), which is journaled once the call has started."""
        if not sent.startswith("SIP/2.0 2"):
            return
        try:
            call.dialog = dialogs.from_messages(call.invite, sent)
        except dialogs.DialogError as exc:
            log.warning("call %s: dialog not journaled (%s): if this process dies, the call"
                        " is not hung up for the PBX", call.call_id, exc)  # fmt: skip
        call.invite_cseq = dialogs.invite_cseq(call.invite)
        call.invite = ""
        dialog = call.dialog
        if dialog is not None and call.events is not None:  # else call.started journals it
            self._write(lambda: self.journal.dialog(call.call_id, dialog))

    def _write(self, write: Callable[[], None]) -> None:
        try:
            write()
        except sqlite3.Error as exc:
            if not self._failing:
                log.error("media process %d: call journal %s: %s (calls go on; a crash now"
                          " leaves them to the PBX's timers)", self.index, self.journal.path,
                          exc)  # fmt: skip
            self._failing = True
        else:
            self._failing = False
