"""INVITEs a media process does not take: no tenant of ours, or no room on the workers.

Each is counted by outcome and answered on the main loop's next turn, just after the incoming-call
callback that decided it: an INVITE whose offer PJSIP did not find (none, or in a multipart body
it cannot split) is torn down inside ``answer`` when the answer is final, and PJSUA2 then frees
that INVITE a second time when the callback returns (an assertion in sip_transport.c aborts
the process). Its pjsua2 call is kept until it has disconnected, then released (never left to
Python's GC: see ``audio_tap.release``).
"""

from __future__ import annotations

import logging
import time

import pjsua2 as pj

from sip_bridge import metrics, sip_headers
from sip_bridge.calls.audio_tap import release
from sip_bridge.calls.call_state import BridgeCall, header

log = logging.getLogger(__name__)


class Refusals:
    def __init__(self, calls_per_worker: int, max_backlog_s: float) -> None:
        self._limits = (calls_per_worker, max_backlog_s)  # for the log (inference.*)
        self._refused: dict[str, BridgeCall] = {}  # INVITEs we refused, until DISCONNECTED
        self._unanswered: list[tuple[BridgeCall, pj.CallOpParam]] = []  # refused, not yet sent
        self.over_capacity = 0  # INVITEs refused because every worker was full or behind
        self._next_capacity_log = 0.0

    def over_capacity_503(self, sip_call: BridgeCall) -> None:
        """Every worker has its calls (inference.calls_per_worker) or is behind: 503, which
        the front answers the caller with its Retry-After, without trying the other media
        processes (they share the workers). Logged once a minute, counted every time."""
        self.over_capacity += 1
        now = time.monotonic()
        if now >= self._next_capacity_log:
            self._next_capacity_log = now + 60.0
            log.warning(
                "call %s: refused with 503, every worker is at capacity (%d calls each, "
                "inference.calls_per_worker) or behind (over %g s of audio waiting); "
                "%d refused so far", sip_call.bridge_call_id, *self._limits,
                self.over_capacity,
            )  # fmt: skip
        self.refuse(sip_call, 503, sip_headers.OVER_CAPACITY_REASON, outcome="over_capacity")

    def refuse(
        self,
        sip_call: BridgeCall,
        status: int,
        reason: str,
        warning: str = "",
        outcome: str = "refused",
    ) -> None:
        """Refuse an INVITE we do not take (no tenant of ours; an offer we cannot use); the
        answer goes out on :meth:`answer_refused`, outside the incoming-call callback."""
        op = pj.CallOpParam()
        op.statusCode = status
        op.reason = reason
        if warning:
            op.txOption.headers.append(header("Warning", warning))
        self._unanswered.append((sip_call, op))
        self._refused[sip_call.bridge_call_id] = sip_call  # released once DISCONNECTED
        metrics.CALLS.labels(outcome).inc()

    def answer_refused(self) -> None:
        """Send the answers of the INVITEs refused since the last turn (main loop, no callback
        running). A caller that gave up first (CANCEL) has its call gone already: logged."""
        unanswered, self._unanswered = self._unanswered, []
        for sip_call, op in unanswered:
            try:
                sip_call.answer(op)
            except pj.Error as exc:
                log.warning("call %s: refusing failed: %s", sip_call.bridge_call_id, exc.info())
            self.call_state(sip_call)  # an INVITE without an offer is over at once

    def call_state(self, sip_call: BridgeCall) -> None:
        """The state of a call that is not ours changed: a refused one is released once it
        has disconnected."""
        refused = self._refused.get(sip_call.bridge_call_id)
        if refused is not None and refused.getInfo().state == pj.PJSIP_INV_STATE_DISCONNECTED:
            del self._refused[sip_call.bridge_call_id]
            release(refused)

    def release_all(self) -> None:
        """Shutting down: answer those not answered yet, release those still waiting for their
        DISCONNECTED."""
        self.answer_refused()
        for refused in self._refused.values():
            release(refused)
        self._refused.clear()
