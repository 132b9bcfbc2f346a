"""Events into the call as SIP INFO (RFC 6086): the :class:`~sip_bridge.delivery.sink.ResultSink`
that needs the pjsua2 call. Which events go, and when a peer's refusal stops them, is the call's
:class:`~sip_bridge.delivery.info_policy.InfoPolicy`.

Main loop thread only: PJSUA2 runs ``mainThreadOnly``, so ``sendRequest`` is called right where
the event is handed over, and the INFO's answer comes back in the call's transaction callback
(:meth:`InfoSink.transaction`). Never after the call's DISCONNECTED: its pjsua2 call is gone.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import pjsua2 as pj

from sip_bridge.calls.call_state import CallState, header
from sip_bridge.delivery.events import Event

log = logging.getLogger(__name__)


class InfoSink:
    def __init__(self, package: str) -> None:
        self._package = package  # delivery.info_package

    def event(self, call: CallState, event: Event) -> None:
        if call.disconnected_at is None and call.info.wants(event.type, time.monotonic()):
            self._send(call, event)

    def _send(self, call: CallState, event: Event) -> None:
        prm = pj.CallSendRequestParam()
        prm.method = "INFO"
        prm.txOption.contentType = "application/json"
        prm.txOption.msgBody = event.body.decode()
        prm.txOption.headers.append(header("Info-Package", self._package))
        prm.txOption.headers.append(header("Content-Disposition", "Info-Package"))
        try:
            call.sip.sendRequest(prm)
        except pj.Error as exc:
            log.warning("call %s: INFO not sent: %s", call.call_id, exc.info())

    def transaction(self, call: CallState, tsx: Any) -> None:
        """A transaction of the call changed state: the answer to one of our INFOs?"""
        if tsx.method != "INFO" or tsx.role != pj.PJSIP_ROLE_UAC:
            return
        done = (pj.PJSIP_TSX_STATE_COMPLETED, pj.PJSIP_TSX_STATE_TERMINATED)
        if tsx.state in done and call.info.answered(tsx.statusCode):
            log.warning(
                "call %s: peer refused INFO (%d %s); captions continue by webhook only",
                call.call_id, tsx.statusCode, tsx.statusText,
            )  # fmt: skip
